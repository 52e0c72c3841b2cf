"""``jobrec publish | rollback | recs | serve``: the serving store from the command line.

``recs`` imports only what a lookup needs (the settings, redis-py and the serving store's lookup: no NumPy,
no pyarrow, no ``pipeline.publishing``, not the OpenTelemetry SDK redis-py would pull in), so a call costs
little more than Python's and redis-py's start.
``serve`` runs uvicorn (uvloop, httptools with :mod:`serving_store.http_protocol`'s coalesced writes) with
``--workers`` processes, by default one per available core up to :data:`MAX_DEFAULT_WORKERS`; each worker
builds its app with :func:`serving_app` from the environment.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from pipeline.config import Settings
    from serving_store.keys import Keys

MAX_DEFAULT_WORKERS = 4


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("publish", help="publish a day's recommendations to Redis and serve them")
    p.add_argument("--ds", required=True, help="the day to publish (YYYY-MM-DD)")
    p.add_argument("--force", action="store_true", help="serve it even if a newer day is served (backfill)")
    p.add_argument(
        "--explanations", action=argparse.BooleanOptionalAction, default=None,
        help="also store each recommendation's score parts (default JOBREC_PUBLISH_EXPLANATIONS)",
    )
    p.set_defaults(func=_publish)

    p = subparsers.add_parser("rollback", help="serve the previously served version again")
    p.set_defaults(func=_rollback)

    p = subparsers.add_parser("recs", help="print a member's served recommendations")
    p.add_argument("member_id", help="member ID (non-negative integer)")
    p.add_argument("--limit", type=int, default=None, help="at most this many jobs (default: all, top N)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--explain", action="store_true",
        help="show each job's score parts (global with its cosine terms, per member, per job) when published",
    )
    p.set_defaults(func=_recs)

    p = subparsers.add_parser("serve", help="run the HTTP lookup service")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="bind address (default 127.0.0.1: local only; set JOBREC_API_TOKEN before binding wider)",
    )
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help=f"worker processes (default: one per available core, at most {MAX_DEFAULT_WORKERS}; "
        f"here {default_workers()})",
    )
    p.set_defaults(func=_serve)


def default_workers() -> int:
    """Worker processes ``jobrec serve`` starts by default: the cores this process may run on, capped at
    :data:`MAX_DEFAULT_WORKERS` (a lookup is one Redis round trip; more processes than cores only queue)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT_WORKERS))


def serving_keys(settings: Settings) -> Keys:
    """Key names under ``JOBREC_REDIS_PREFIX``: :func:`pipeline.publishing.serving_keys`, without importing
    ``pipeline.publishing`` (NumPy, pyarrow) into ``recs`` and ``serve`` (tests/test_serving_speed_paths.py
    checks both agree)."""
    from serving_store.keys import DEFAULT_PREFIX, Keys

    return Keys(settings.redis_prefix or DEFAULT_PREFIX)


def _fail(command: str, exc: BaseException) -> int:
    print(f"jobrec {command}: error: {exc}", file=sys.stderr)
    return 1


def _publish(args: argparse.Namespace) -> int:
    from pipeline.config import Settings
    from pipeline.publishing import publish
    from serving_store.connection import ServingStoreUnavailable
    from serving_store.publisher import PublishFailed

    try:
        report = publish(args.ds, Settings.from_env(), force=args.force, explanations=args.explanations)
    except (ServingStoreUnavailable, PublishFailed) as exc:
        return _fail("publish", exc)
    print(report["message"])
    print(
        f"{report['members']} members, {report['bytes_written'] / 2**20:.1f} MiB, "
        f"{report['timings']['total_s']:.1f}s; deleted old versions: {report['deleted_versions'] or 'none'}"
        f"; explanations {'published' if report.get('explanations') else 'not published'}"
    )
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from pipeline.config import Settings
    from pipeline.publishing import rollback
    from serving_store.connection import ServingStoreUnavailable

    try:
        report = rollback(Settings.from_env())
    except ServingStoreUnavailable as exc:
        return _fail("rollback", exc)
    print(
        f"rolled back: version {report['to_version']} (ds {report['ds']}) is served again, "
        f"replacing version {report['from_version']}"
    )
    return 0


def skip_redis_telemetry_sdk() -> None:
    """Keep redis-py from importing OpenTelemetry's metrics API and SDK in this process.

    redis-py (8.x) imports ``opentelemetry.metrics`` and ``opentelemetry.sdk.metrics`` when it can (Airflow
    installs them) for metrics that only an explicit ``redis.observability`` set-up turns on; jobrec never
    turns them on. The imports are a third of ``jobrec recs``'s time, so the one-lookup command marks both
    modules missing (redis-py's own "OpenTelemetry not installed" path) before importing redis-py. A process
    that already imported them keeps them."""
    for module in ("opentelemetry.metrics", "opentelemetry.sdk.metrics"):
        sys.modules.setdefault(module, None)  # type: ignore[arg-type]


def _recs(args: argparse.Namespace) -> int:
    skip_redis_telemetry_sdk()
    from pipeline.config import Settings
    from serving_store.connection import ServingStoreUnavailable, connect
    from serving_store.lookup import Lookup, NothingPublished

    settings = Settings.from_env()
    try:
        client = connect(settings, retries=2)
    except ServingStoreUnavailable as exc:
        return _fail("recs", exc)
    try:
        recs = Lookup(client, serving_keys(settings)).get(args.member_id, args.limit, explain=args.explain)
    except NothingPublished as exc:
        return _fail("recs", exc)
    finally:
        client.close()
    if args.json:
        print(json.dumps(recs.as_dict(), indent=2))
        return 0
    note = " (fallback: member has no list)" if recs.source == "fallback" else ""
    print(f"member {recs.member_id}: version {recs.version}, ds {recs.ds}, model {recs.model_version}{note}")
    for rank, (job, score) in enumerate(zip(recs.job_ids, recs.scores, strict=True), start=1):
        print(f"{rank:4d}  job {job:<12d} {score:.6f}")
        if recs.parts is not None:
            parts = recs.parts[rank - 1]
            cosines = "  ".join(f"{k[4:]} {v:+.3f}" for k, v in parts.items() if k.startswith("cos_"))
            print(f"        global {parts['part_global']:+.4f} (main {parts['part_main']:+.4f}, "
                  f"cross {parts['part_cross']:+.4f}, cosines: {cosines})  member {parts['part_member']:+.4f}"
                  f"  job {parts['part_job']:+.4f}")
    if args.explain:
        print(recs.as_dict()["explanations"]["note"])
    return 0


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def serving_app(settings: Settings | None = None, *, freeze_gc: bool = True) -> FastAPI:
    """The HTTP service's app for ``settings`` (default: from the environment); the factory each uvicorn
    worker process calls (``pipeline.cli.serving:serving_app``).

    With ``freeze_gc`` the objects alive once the app is built (modules, FastAPI's routes and models) move
    to the garbage collector's permanent generation (``gc.freeze()``): a full collection then scans only what
    requests allocate, instead of pausing a worker for tens of milliseconds (seen as the p99 under load).
    """
    import gc

    from pipeline.config import Settings
    from serving_store.api import create_app

    settings = settings or Settings.from_env()
    app = create_app(
        settings,
        keys=serving_keys(settings),
        default_limit=settings.top_n,
        redis_timeout=settings.api_redis_timeout_seconds,
        api_token=settings.api_token,
    )
    if freeze_gc:
        gc.collect()
        gc.freeze()
    return app


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from pipeline.config import Settings
    from serving_store.connection import ServingStoreUnavailable, connect
    from serving_store.http_protocol import HTTP_PROTOCOL

    workers = default_workers() if args.workers is None else args.workers
    if workers < 1:
        raise ValueError(f"--workers must be >= 1; got {workers}")
    settings = Settings.from_env()
    try:  # fail with a message (not a traceback from the app's startup) when Redis is unreachable
        connect(settings, retries=2).close()
    except ServingStoreUnavailable as exc:  # ServingStoreAuthError too: its own message, no retries
        return _fail("serve", exc)
    if args.host not in LOOPBACK and not settings.api_token:
        print(
            f"jobrec serve: warning: listening on {args.host} without authentication; "
            "set JOBREC_API_TOKEN to require a bearer token",
            file=sys.stderr,
        )
    # One worker: the app built here. Several: uvicorn's process manager spawns them, each calling the
    # factory (it needs an import string; the workers read the same environment).
    app = serving_app(settings) if workers == 1 else f"{__name__}:serving_app"
    uvicorn.run(
        app,
        factory=workers > 1,
        workers=workers,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http=HTTP_PROTOCOL,  # uvicorn's httptools protocol, one send per answer
        access_log=False,
        log_level="warning",
    )
    return 0
