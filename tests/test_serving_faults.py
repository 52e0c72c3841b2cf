"""Faults of the serving side, each the probe of issue 15 replayed against the real components: a real
``redis-server`` process (SIGKILLed, restarted empty, paused with SIGSTOP, password-protected) and the HTTP
service under uvicorn on a loopback port.
"""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
from serving_helpers import RedisProcess, running_service

from pipeline.cli import main
from serving_store import publisher
from serving_store.api import create_app
from serving_store.connection import ServingStoreAuthError, ServingStoreUnavailable, connect
from serving_store.keys import Keys
from serving_store.lookup import Lookup, NothingPublished
from serving_store.publisher import (
    PublishFailed,
    RecommendationLists,
    claim_version,
    publish_lists,
    served_version,
)

KEYS = Keys()


def day_lists(member_ids, day: int, n_jobs: int = 10) -> RecommendationLists:
    """Lists whose job IDs encode the day (job // 10^6 == day), so a list from another day is visible."""
    member_ids = np.asarray(member_ids, dtype=np.int64)
    rng = np.random.default_rng(day)
    jobs = day * 1_000_000 + rng.integers(0, 1_000_000, size=(member_ids.size, n_jobs))
    return RecommendationLists.from_columns(
        np.repeat(member_ids, n_jobs),
        np.tile(np.arange(1, n_jobs + 1), member_ids.size),
        jobs.ravel(),
        np.tile(np.linspace(1.0, 0.1, n_jobs), member_ids.size),
    )


@pytest.fixture
def redis_proc(tmp_path):
    server = RedisProcess(tmp_path / "redis").start()
    yield server
    server.kill()


def publish(client, lists, ds, **kwargs):
    return publish_lists(client, lists, ds=ds, model_version=f"m-{ds}", batch_size=50, **kwargs)


# ------------------------------------------------------------ item 2: no version id is ever reused


def test_a_redis_restart_without_persistence_mid_publish_never_serves_the_failed_publishs_lists(redis_proc):
    """SIGKILL mid-publish + restart empty: before, the pending batches were resent into the new server as
    orphans of version 2, and once ``seq`` reached 2 again a member absent that day got the failed publish's
    list as ``source: member``."""
    client = connect(redis_proc.url, retries=8, backoff_base=0.01, backoff_cap=0.1)
    first = publish(client, day_lists(np.arange(1, 401), day=1), "2026-01-01")
    restarted = []

    def kill_and_restart(members_written: int) -> None:
        if members_written >= 200 and not restarted:
            redis_proc.restart()  # SIGKILL, then an empty server at the same socket
            restarted.append(True)

    with pytest.raises((PublishFailed, ServingStoreUnavailable)):
        publish(client, day_lists(np.arange(1, 401), day=2), "2026-01-02", on_batch=kill_and_restart)
    assert restarted
    admin = redis_proc.admin()
    assert list(admin.scan_iter("jobrec:v*")) == [], "the failed publish left keys in the new server"

    # The new server's seq starts again: publish past the failed version's number, looking members up
    # after each publish; those of the failed publish that are absent from the later days get the fallback.
    lookup = Lookup(client, KEYS)
    ids = [first.version]
    for day in (3, 4, 5):
        result = publish(client, day_lists(np.arange(1, 101), day=day), f"2026-01-0{day}")
        ids.append(result.version)
        for member in (150, 300, 400):
            got = lookup.get(member)
            assert (got.source, got.version) == ("fallback", result.version), (member, got.job_ids[:3])
        got = lookup.get(50)
        assert got.source == "member" and {j // 1_000_000 for j in got.job_ids} == {day}
    assert len(set(ids)) == len(ids), f"a version id was reused: {ids}"


def test_orphan_keys_of_unlisted_versions_are_swept_before_the_next_publish(redis_url):
    """Keys an older jobrec left under a version nobody lists (the probe's 135,396 ``jobrec:v5:m:*``) are
    removed, so they can neither be served nor fill the server; other keys are left alone."""
    admin = connect(redis_url)
    stale = day_lists([7, 8, 9], day=9)
    for i, member in enumerate(stale.member_ids):
        ids, scores = stale.items(i)
        admin.set(KEYS.member("1", int(member)), publisher.codec.encode(ids, scores))
    admin.set(KEYS.fallback("1"), b"x")
    admin.set("other:v1:m:7", b"not ours")
    admin.set("jobrec-other:v1:m:7", b"not ours")
    result = publish(admin, day_lists([1, 2, 3], day=1), "2026-01-01")
    assert not list(admin.scan_iter("jobrec:v1:*"))
    assert admin.get("other:v1:m:7") == b"not ours" and admin.get("jobrec-other:v1:m:7") == b"not ours"
    got = Lookup(admin, KEYS).get(7)
    assert (got.source, got.version) == ("fallback", result.version)


def test_the_writer_refuses_to_write_into_a_version_that_already_has_keys(redis_url, monkeypatch):
    client = connect(redis_url)
    first = publish(client, day_lists([1, 2, 3], day=1), "2026-01-01")
    taken = "20260102-2-00000000"
    monkeypatch.setattr(publisher, "new_version_id", lambda ds, seq: taken)
    client.set(KEYS.member(taken, 2), b"left by someone")
    with pytest.raises(PublishFailed, match="refusing to overwrite"):
        publish(client, day_lists([1, 2, 3], day=2), "2026-01-02")
    assert client.get(KEYS.member(taken, 2)) == b"left by someone"
    assert served_version(client, KEYS) == first.version
    client.hset(KEYS.meta(taken), "status", "complete")
    with pytest.raises(PublishFailed, match="already has keys"):
        publish(client, day_lists([1, 2, 3], day=2), "2026-01-02")


def test_lookups_never_read_a_version_that_is_not_complete(redis_url):
    client = connect(redis_url)
    publish(client, day_lists([1, 2, 3], day=1), "2026-01-01")
    writing = claim_version(client, KEYS, "2026-01-02", {"ds": "2026-01-02", "model_version": "m"})
    client.set(KEYS.member(writing, 1), publisher.codec.encode(np.array([99]), np.array([1.0])))
    client.set(KEYS.current, writing)  # a pointer at a version still being written (or half lost)
    lookup = Lookup(client, KEYS)
    with pytest.raises(NothingPublished, match="not complete"):
        lookup.get(1)
    with pytest.raises(NothingPublished, match="not complete"):
        lookup.get(1, version=writing)
    with running_service(create_app(redis_url)) as base:
        response = httpx.get(f"{base}/v1/members/1/recommendations")
    assert response.status_code == 503 and "not complete" in response.json()["detail"]


# ------------------------------------------------------------ item 6: every bad id is a 400


@pytest.fixture(scope="module")
def served_http(tmp_path_factory):
    server = RedisProcess(tmp_path_factory.mktemp("redis-http")).start()
    try:
        publish(connect(server.url), day_lists([5, 10**12], day=1), "2026-01-01")
        with running_service(create_app(server.url)) as base:
            yield base
    finally:
        server.kill()


@pytest.mark.parametrize(
    "bad_id",
    ["1" * 4301, "9" * 10_000, "-5", "1.5", "5.0", "1_000", "+5", "0x10", "١٢", "%00", str(2**63), "5e3"],
)
def test_every_malformed_member_id_is_a_400_never_a_500(served_http, bad_id):
    response = httpx.get(f"{served_http}/v1/members/{bad_id}/recommendations", timeout=10)
    assert response.status_code == 400, response.text[:300]
    detail = response.json()["detail"]
    assert detail.startswith("member_id must") and len(detail) < 300


@pytest.mark.parametrize("good_id", ["5", "0" * 5000 + "5", str(10**12)])
def test_well_formed_member_ids_are_served(served_http, good_id):
    response = httpx.get(f"{served_http}/v1/members/{good_id}/recommendations", timeout=10)
    assert response.status_code == 200 and response.json()["source"] == "member"


# ------------------------------------------------------------ item 7: a hung Redis is a fast 503


@pytest.mark.parametrize("budget", [None, 0.2])
def test_a_hung_redis_is_a_503_within_a_second(redis_proc, budget):
    """SIGSTOP the server: before, each request waited 2 s socket timeout × 4 tries (8.8 s) for its 503."""
    publish(connect(redis_proc.url), day_lists([1, 2, 3], day=1), "2026-01-01")
    app = create_app(redis_proc.url) if budget is None else create_app(redis_proc.url, redis_timeout=budget)
    limit = 1.0 if budget is None else budget + 0.3
    with running_service(app) as base, httpx.Client(base_url=base, timeout=30) as http:
        assert http.get("/v1/members/1/recommendations").status_code == 200
        redis_proc.pause()
        try:
            for path in ("/v1/members/1/recommendations", "/v1/members/77/recommendations",
                         "/v1/members/1/recommendations?explain=true", "/healthz"):  # fast path, FastAPI's route
                t0 = time.perf_counter()
                response = http.get(path)
                elapsed = time.perf_counter() - t0
                assert response.status_code == 503, response.text
                assert "did not answer" in response.json()["detail"]
                assert elapsed < limit, f"{path}: 503 after {elapsed:.2f}s"
        finally:
            redis_proc.resume()
        assert http.get("/v1/members/1/recommendations").status_code == 200  # recovers without a restart


def test_a_redis_hung_at_start_up_fails_the_service_start_with_a_message_within_its_budget(redis_proc):
    # The service's client has no socket timeout (each request is bounded by its budget instead), so the
    # start-up check needs a bound of its own: a paused server must not hang the start for good.
    from fastapi.testclient import TestClient

    redis_proc.pause()
    try:
        t0 = time.perf_counter()
        with pytest.raises(ServingStoreUnavailable, match="did not answer within .* at start-up"):
            with TestClient(create_app(redis_proc.url, redis_timeout=0.2, retries=1)):
                pass
        assert time.perf_counter() - t0 < 5.0
    finally:
        redis_proc.resume()


# ------------------------------------------------------------ item 9: credentials


@pytest.fixture
def locked_redis(tmp_path):
    server = RedisProcess(tmp_path / "redis", password="s3cret-pw").start()
    yield server
    server.kill()


@pytest.mark.parametrize("auth", [":wrong-pw@", ""])
def test_a_refused_redis_password_is_reported_as_such_without_retries(locked_redis, auth):
    admin = locked_redis.admin()
    before = admin.info("stats")["total_connections_received"]
    url = f"unix://{auth}{locked_redis.socket}"
    t0 = time.perf_counter()
    with pytest.raises(ServingStoreAuthError) as err:
        connect(url, retries=5)
    assert time.perf_counter() - t0 < 0.5
    assert admin.info("stats")["total_connections_received"] - before == 1, "retried a refused password"
    message = str(err.value)
    assert "refused the credentials" in message and "cannot reach" not in message
    assert "wrong-pw" not in message
    assert connect(locked_redis.url).ping()


def test_cli_and_http_service_report_a_wrong_redis_password(locked_redis, settings, monkeypatch, capsys):
    monkeypatch.setenv("JOBREC_HOME", str(settings.home))
    monkeypatch.setenv("REDIS_URL", f"unix://:wrong-pw@{locked_redis.socket}")
    for command in (["recs", "5"], ["serve", "--port", "1"], ["rollback"]):
        assert main(command) == 1
        err = capsys.readouterr().err
        assert "refused the credentials" in err and "wrong-pw" not in err, err


@pytest.fixture(scope="module")
def token_http(tmp_path_factory):
    server = RedisProcess(tmp_path_factory.mktemp("redis-token")).start()
    try:
        publish(connect(server.url), day_lists([5], day=1), "2026-01-01")
        with running_service(create_app(server.url, api_token="t0ken-abc")) as base:
            yield base
    finally:
        server.kill()


@pytest.mark.parametrize("path", ["/v1/members/5/recommendations", "/healthz"])
@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic dDBrZW4tYWJj", "Bearer t0ken-abcd", "t0ken-abc"])
def test_with_a_token_set_requests_without_it_are_401(token_http, path, header):
    headers = {"Authorization": header} if header else {}
    response = httpx.get(f"{token_http}{path}", headers=headers)
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert "bearer token" in response.json()["detail"]


def test_with_a_token_set_requests_with_it_are_served(token_http):
    headers = {"Authorization": "Bearer t0ken-abc"}
    assert httpx.get(f"{token_http}/v1/members/5/recommendations", headers=headers).status_code == 200
    assert httpx.get(f"{token_http}/healthz", headers=headers).status_code == 200
    assert httpx.get(f"{token_http}/openapi.json").status_code == 200


def test_without_a_token_no_authentication_is_asked(served_http):
    assert httpx.get(f"{served_http}/v1/members/5/recommendations").status_code == 200


def test_jobrec_serve_passes_the_token_and_the_redis_timeout_and_warns_when_bound_wider_without_a_token(
    redis_url, settings, monkeypatch, capsys
):
    import uvicorn

    runs = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: runs.append((app, kw)))
    monkeypatch.setenv("JOBREC_HOME", str(settings.home))
    monkeypatch.setenv("REDIS_URL", redis_url)
    publish(connect(redis_url), day_lists([5], day=1), "2026-01-01")
    assert main(["serve"]) == 0 and runs[-1][1]["host"] == "127.0.0.1"
    assert "warning" not in capsys.readouterr().err
    assert main(["serve", "--host", "0.0.0.0"]) == 0
    assert "without authentication" in capsys.readouterr().err
    monkeypatch.setenv("JOBREC_API_TOKEN", "t0ken-abc")
    monkeypatch.setenv("JOBREC_API_REDIS_TIMEOUT_SECONDS", "0.3")
    assert main(["serve", "--host", "0.0.0.0"]) == 0
    assert "warning" not in capsys.readouterr().err
    with running_service(runs[-1][0]) as base:
        assert httpx.get(f"{base}/healthz").status_code == 401
        ok = httpx.get(f"{base}/healthz", headers={"Authorization": "Bearer t0ken-abc"})
        assert ok.status_code == 200 and ok.json()["served"]["ds"] == "2026-01-01"
