"""Benchmark: one daily run of the ``jobrec_daily`` DAG end to end, broken down by task.

    .venv/bin/python bench/bench_daily.py            # small: 2,000 members × 500 jobs
    .venv/bin/python bench/bench_daily.py --full     # the issue's size: 100,000 members × 20,000 jobs
    .venv/bin/python bench/bench_daily.py --members 1000000 --jobs 100000 --home /tmp/day1m   # the 1M day
    .venv/bin/python bench/bench_daily.py --full --home /tmp/day100k --engine spark           # DAG engine=spark
    .venv/bin/python bench/bench_daily.py --full --home /tmp/day100k --scheduler              # as operated

With ``--home`` the data folder is kept and its setup reused by the next run with the same sizes
(``--setup-only`` builds just the setup), so a change can be timed again without rebuilding it.

Setup (not timed as the daily run): a synthetic marketplace of two days and the periodic DAG on day 1 (full
GLMix, promoted). Measured: the daily DAG for day 2 run with ``dag.test()`` (real Airflow, SQLite metadata
DB, local Spark, Whoosh, glmix_core, embedded Redis): its wall time, each task's time from the run report,
and peak memory: per task (from the run report: the task's process plus its worker processes, by PSS,
:mod:`pipeline.memory`), and per process (this process's max RSS — tasks run in-process —, the max RSS of
finished child processes, and the peak RSS (VmHWM) of the still-running Spark JVM). Beside retrieval's and re-scoring's task times it
prints each one's same-run SciPy sparse-product limit (``bench_rescore.scipy_limits``: the plain product of the
day's member blocks with the job matrix, measured on the same data right after the run, with the same worker
processes) and the ratios. Writes ``bench/out/daily.json`` (the latest run) and a copy named for the run's
size, engine and mode, e.g. ``bench/out/daily_1000000x100000_spark_scheduler.json``, which a run of
another size does not overwrite.

``--scheduler`` runs the day as users do instead: the Airflow stack (api-server, scheduler, dag-processor,
triggerer; LocalExecutor, each task in a process of its own, so e.g. a task's Spark JVM ends with it) on a free
port, the run triggered through the REST API. Its wall time is the run's, from the API; each task's time is
given twice: the task function's (run report) and the task instance's (Airflow, with process start).

``--serving-redis`` measures as on a machine that also serves lookups: before the run, the embedded Redis is
started and holds the number of versions the store keeps (``JOBREC_VERSIONS_KEPT``, 3), filled by publishing
day 2's recommendations left by an earlier run in this home (a first run has none: run the day once, then again
with the flag). Without it the embedded Redis is whatever state the home left it in (a fresh home: not running
until the run's publish starts it).

Both modes sample the machine's used memory (``MemTotal - MemAvailable`` of ``/proc/meminfo``, i.e. without
reclaimable page cache) every half second during the run: the peak, and the peak over the level before the run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "bench" / "out"
OUT = OUT_DIR / "daily.json"
START = "2024-01-01"
DAY2 = "2024-01-02"


def _peak_rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class MachineMemory:
    """Samples the machine's used memory (``MemTotal - MemAvailable``, MiB) in a thread while in the block."""

    def __init__(self, every: float = 0.5) -> None:
        import threading

        self.every = every
        self.before = self.peak = self._used()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="machine-memory", daemon=True)

    @staticmethod
    def _used() -> float:
        fields = {}
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = int(value.split()[0])
        return (fields["MemTotal"] - fields["MemAvailable"]) / 1024

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, self._used())

    def __enter__(self) -> MachineMemory:
        self.before = self.peak = self._used()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._used())

    def result(self) -> dict[str, float]:
        return {"before_mib": round(self.before), "peak_mib": round(self.peak),
                "peak_over_before_mib": round(self.peak - self.before)}


def _api_seconds(start: str | None, end: str | None) -> float | None:
    import datetime as dt

    if not start or not end:
        return None
    return round((dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds(), 1)


def fill_serving_store(settings) -> dict:
    """Start the embedded Redis and publish DAY2's recommendations until the store holds
    ``settings.versions_kept`` versions (the steady state of a machine that publishes every day).

    Returns ``{"versions", "used_memory_mib", "rss_mib"}`` of the Redis server afterwards. Raises SystemExit
    with what to do when there are no recommendations for DAY2 to publish yet."""
    from pipeline.publishing import publish, serving_keys
    from serving_store.connection import connect

    if not (settings.layout.recommendations(DAY2)).exists():
        raise SystemExit(f"--serving-redis needs day {DAY2}'s recommendations in {settings.home}: run this "
                         "bench once without the flag first, then again with it")
    client = connect(settings, client_name="jobrec-bench")
    versions = serving_keys(settings).versions
    while client.zcard(versions) < settings.versions_kept:
        print(f"filling the serving store: {client.zcard(versions)} of {settings.versions_kept} versions")
        publish(DAY2, settings)
    info = client.info("memory")
    return {"versions": client.zcard(versions), "used_memory_mib": round(info["used_memory"] / 2**20),
            "rss_mib": round(info["used_memory_rss"] / 2**20)}


def run_under_scheduler(settings, conf: dict) -> dict:
    """Run ``jobrec_daily`` for DAY2 under the real Airflow stack, triggered through the REST API.

    Returns ``{"state", "tasks", "wall_seconds", "task_instance_seconds", "stack_start_seconds",
    "machine_memory"}`` (the machine's memory sampled from the trigger to the run's end)."""
    from pipeline.airflow_client import FINISHED, AirflowClient, wait_for
    from pipeline.airflow_stack import AirflowStack
    from pipeline.net import free_port

    stack = AirflowStack(settings, port=free_port())
    started = time.perf_counter()
    try:
        stack.start()
        stack_start_s = round(time.perf_counter() - started, 1)
        api = AirflowClient(stack.base_url, stack.token())
        # A day has one run: the bench's earlier runs of DAY2 go. So do scheduled runs left waiting by an
        # earlier bench in this home (their days never get data here): two of them would fill the DAG's
        # max_active_runs and queue the measured run behind them.
        for earlier in api.runs("jobrec_daily"):
            if earlier["ds"] == DAY2 or (earlier["run_type"] == "scheduled" and earlier["state"] not in FINISHED):
                path = f"/dags/jobrec_daily/dagRuns/{earlier['dag_run_id']}"
                if earlier["state"] not in FINISHED:  # a running run cannot be deleted: it is failed first
                    api.call("PATCH", path, json={"state": "failed"})
                api.call("DELETE", path)
        # Unpausing lets the scheduler run the manual run; its own scheduled run (for yesterday, which has
        # no data here) waits in its sensor, rescheduled, beside the measurement.
        api.set_paused("jobrec_daily", False)
        with MachineMemory() as machine:
            run_id = api.trigger("jobrec_daily", DAY2, conf)
            run = wait_for("the daily run", lambda: (
                (r := api.run("jobrec_daily", run_id))["state"] in FINISHED and r), timeout=4 * 3600, every=2.0)
        tasks = api.task_instances("jobrec_daily", run_id)
        api.set_paused("jobrec_daily", True)
    finally:
        stack.stop()
    return {
        "state": run["state"],
        "tasks": {ti["task_id"]: ti["state"] for ti in tasks},
        "wall_seconds": _api_seconds(run["start_date"], run["end_date"]),
        "task_instance_seconds": {ti["task_id"]: round(ti["duration"], 1) for ti in tasks
                                  if ti.get("duration") is not None},
        "stack_start_seconds": stack_start_s,
        "machine_memory": machine.result(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="100k members × 20k jobs (the issue's size)")
    parser.add_argument("--members", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--home", default=None, help="data folder (default: a fresh temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the data folder")
    parser.add_argument("--no-limits", action="store_true",
                        help="skip the SciPy sparse-product limits (they redo retrieval's product: minutes at 1M)")
    parser.add_argument("--engine", choices=["local", "spark"], default="local",
                        help="the daily DAG's engine param: spark runs training, retrieval and re-scoring on Spark")
    parser.add_argument(
        "--scheduler", action="store_true",
        help="run the day under the real Airflow stack (scheduler, LocalExecutor: a process per task), "
        "triggered through the REST API, instead of dag.test() in this process",
    )
    parser.add_argument(
        "--serving-redis", action="store_true",
        help="start the embedded Redis before the run, holding JOBREC_VERSIONS_KEPT versions (publishes day 2's "
        "recommendations of an earlier run in this home), so the measured memory includes a serving store at "
        "its steady size",
    )
    parser.add_argument(
        "--setup-only", action="store_true",
        help="only build the setup (synthetic days + promoted model) in --home; a later run with the same "
        "--home, --members and --jobs reuses it and times only the daily run",
    )
    args = parser.parse_args()
    members = args.members or (100_000 if args.full else 2_000)
    jobs = args.jobs or (20_000 if args.full else 500)
    home = Path(args.home or tempfile.mkdtemp(prefix="jobrec-bench-daily-"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ["JOBREC_HOME"] = str(home)
    os.environ.pop("REDIS_URL", None)  # the embedded Redis under $JOBREC_HOME/redis

    from pipeline.airflow_env import configure_airflow, run_dag
    from pipeline.config import Settings
    from pipeline.synth import generate_marketplace

    settings = Settings.from_env()
    setup_marker = home / "bench_daily_setup.json"
    setup = json.loads(setup_marker.read_text()) if setup_marker.exists() else {}
    if setup.get("members") == members and setup.get("jobs") == jobs:
        print(f"reusing the setup in {home} (built in {setup['synth_seconds'] + setup['full_retrain_seconds']:.0f} s)")
        configure_airflow(settings)
        synth_s, full_s = setup["synth_seconds"], setup["full_retrain_seconds"]
    else:
        started = time.perf_counter()
        generate_marketplace(home, members=members, jobs=jobs, days=2, start=START, seed=1)
        synth_s = time.perf_counter() - started
        configure_airflow(settings)
        started = time.perf_counter()
        full = run_dag("jobrec_full_retrain", START, {"window_days": 1, "l2_grid": [1.0]})
        full_s = time.perf_counter() - started
        if full["state"] != "success":
            print(f"setup failed: jobrec_full_retrain {full}", file=sys.stderr)
            return 1
        setup_marker.write_text(json.dumps(
            {"members": members, "jobs": jobs, "synth_seconds": synth_s, "full_retrain_seconds": full_s}
        ))
    if args.setup_only:
        print(f"setup ready in {home}: synth {synth_s:.0f} s, full retrain {full_s:.0f} s")
        return 0

    conf = {"gate_margin": 0.05, "engine": args.engine}
    serving_redis = fill_serving_store(settings) if args.serving_redis else None
    if serving_redis:
        print(f"serving store at the start: {serving_redis['versions']} versions, Redis RSS "
              f"{serving_redis['rss_mib']} MiB")
    if args.scheduler:
        daily = run_under_scheduler(settings, conf)
        wall_s = daily["wall_seconds"]
        machine = daily["machine_memory"]
    else:
        with MachineMemory() as sampler:
            started = time.perf_counter()
            daily = run_dag("jobrec_daily", DAY2, conf)
            wall_s = time.perf_counter() - started
        machine = sampler.result()
    from pipeline.memory import descendants

    jvm_peak = max((_peak_rss_mib(pid) for pid in descendants(os.getpid())), default=0.0)
    self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    report = json.loads(settings.layout.report(DAY2).read_text()) if settings.layout.report(DAY2).exists() else {}
    timings = report.get("timings_seconds", {})
    limits = {}
    if daily["state"] == "success" and not args.no_limits:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_rescore import scipy_limits

        from pipeline.scoring import default_processes

        limits = scipy_limits(settings, DAY2, default_processes())
        for task, key in (("retrieve_candidates", "retrieval_limit_seconds"), ("rescore", "rescore_limit_seconds")):
            if timings.get(task) and limits.get(key):
                limits[f"{task}_over_its_limit"] = round(timings[task] / limits[key], 2)
        if timings.get("rescore") and timings.get("retrieve_candidates"):
            limits["rescore_over_retrieval"] = round(timings["rescore"] / timings["retrieve_candidates"], 2)
    result = {
        "members": members,
        "jobs": jobs,
        "cores": os.cpu_count(),
        "engine": args.engine,
        "mode": "scheduler" if args.scheduler else "dag.test()",
        "state": daily["state"],
        "tasks_state": daily["tasks"],
        "daily_wall_seconds": round(wall_s, 1),
        "task_seconds": {k: round(v, 1) for k, v in timings.items()},
        "task_peak_memory_mib": report.get("peak_memory_mib", {}),
        "task_spark_jvm_peak_mib": {t: r["spark_jvm_peak_mib"] for t, r in report.get("tasks", {}).items()
                                    if isinstance(r, dict) and "spark_jvm_peak_mib" in r},
        "sum_task_seconds": round(sum(timings.values()), 1),
        # dag.test() runs one task at a time; the scheduler runs independent tasks (update_index beside the
        # training branch) side by side, so there the sum exceeds the wall time and no overhead follows from it.
        **({} if args.scheduler else {"airflow_overhead_seconds": round(wall_s - sum(timings.values()), 1)}),
        "setup_synth_seconds": round(synth_s, 1),
        "setup_full_retrain_seconds": round(full_s, 1),
        "machine_memory": machine,
        "serving_redis_at_start": serving_redis,
        **({"task_instance_seconds": daily["task_instance_seconds"],
            "stack_start_seconds": daily["stack_start_seconds"]} if args.scheduler else {
            "peak_rss_mib": {
                "python_process": round(self_peak),
                "finished_children_max": round(children_peak),
                "spark_jvm": round(jvm_peak),
            }}),
        "scipy_limits": limits,
        "counts": report.get("counts", {}),
        "holdout_auc": report.get("metrics", {}).get("gate.holdout_auc"),
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    named = OUT_DIR / (f"daily_{members}x{jobs}_{args.engine}_{'scheduler' if args.scheduler else 'dagtest'}"
                       f"{'_serving_redis' if args.serving_redis else ''}.json")
    for path in (OUT, named):
        path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\njobrec_daily, one day, {members:,} members × {jobs:,} jobs on {os.cpu_count()} cores, "
          f"engine={args.engine}, {result['mode']}: {daily['state']}")
    if args.scheduler:
        print(f"  wall time        {wall_s:8.1f} s  (tasks summed {result['sum_task_seconds']} s: the scheduler runs "
              f"independent tasks side by side)")
    else:
        print(f"  wall time        {wall_s:8.1f} s  (tasks {result['sum_task_seconds']} s, Airflow overhead "
              f"{result['airflow_overhead_seconds']} s)")
    limit_of = {"retrieve_candidates": "retrieval_limit_seconds", "rescore": "rescore_limit_seconds"}
    task_memory = report.get("peak_memory_mib", {})
    instance_s = result.get("task_instance_seconds", {})
    print(f"  {'task':<20s} {'seconds':>10s} {'peak MiB':>9s}" + ("  task instance s" if instance_s else ""))
    for task, seconds in sorted(timings.items(), key=lambda kv: -kv[1]):
        peak = task_memory.get(task)
        extra = ""
        if task in limit_of and limits.get(limit_of[task]):
            extra = (f"   SciPy sparse-product limit {limits[limit_of[task]]:.1f} s, "
                     f"ratio {limits[f'{task}_over_its_limit']:.2f}")
        if instance_s:
            extra = f"  {instance_s.get(task, float('nan')):10.1f}{extra}"
        print(f"  {task:<20s} {seconds:8.1f} s {peak if peak is not None else float('nan'):9.0f}{extra}")
    if "rescore_over_retrieval" in limits:
        print(f"  rescore / retrieve_candidates: {limits['rescore_over_retrieval']:.2f}")
    if not args.scheduler:
        print(f"  peak RSS: python {self_peak:.0f} MiB, children {children_peak:.0f} MiB, "
              f"Spark JVM {jvm_peak:.0f} MiB")
    print(f"  machine memory used: peak {machine['peak_mib']} MiB ({machine['peak_over_before_mib']} MiB over the "
          f"{machine['before_mib']} MiB before the run)")
    print(f"  written to {named} (and {OUT.name})")
    if not args.keep and not args.home:
        from serving_store.connection import stop_embedded

        stop_embedded(home / "redis", save=False)
        shutil.rmtree(home, ignore_errors=True)
    return 0 if daily["state"] == "success" else 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Leftover non-daemon threads of the in-process Airflow/Spark stack can keep the interpreter from
    # exiting after the run; the figures are written, so leave now.
    os._exit(code)
