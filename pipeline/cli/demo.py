"""``jobrec demo``: the whole product on a small synthetic marketplace, and ``jobrec demo --ui``: Airflow's UI.

``jobrec demo`` generates a marketplace under ``$JOBREC_HOME``, runs the periodic DAG once (full GLMix on the
first day, promoted) and the daily DAG for each following day with ``dag.test()`` (real Airflow 3, SQLite
metadata DB under ``$JOBREC_HOME/airflow``), then prints one member's recommendations read back from Redis
and where to look. The terminal gets a short progress view (per run: one line per task with its state and
seconds, then the holdout AUC); every Airflow, Spark and pipeline log line goes to
``$JOBREC_HOME/logs/demo-<timestamp>.log`` (see :mod:`pipeline.cli.demo_output`). ``jobrec demo --ui`` starts
Airflow's api-server, scheduler, dag-processor and triggerer (:class:`pipeline.airflow_stack.AirflowStack`) with
the jobrec DAGs loaded (generating the marketplace first if there is none), prints the URL, the login and
working trigger/backfill commands, and runs until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TextIO

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="synthetic marketplace → full retrain → daily runs (Airflow dag.test) → recommendations from Redis",
    )
    demo.add_argument("--members", type=int, default=2000)
    demo.add_argument("--jobs", type=int, default=500)
    demo.add_argument("--days", type=int, default=4, help="days of data: day 1 trains the full model")
    demo.add_argument("--start", default="2024-01-01", help="first day, YYYY-MM-DD")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--impressions-per-member", type=int, default=10)
    demo.add_argument("--top-n", type=int, default=20)
    demo.add_argument("--gate-margin", type=float, default=0.05, help="AUC drop the gate tolerates")
    demo.add_argument("--member", type=int, default=None, help="member whose list is printed")
    demo.add_argument(
        "--ui",
        action="store_true",
        help="instead: start Airflow (api-server, scheduler, dag-processor, triggerer; LocalExecutor) with the "
        "jobrec DAGs on the marketplace under $JOBREC_HOME (generated if missing), print the URL, login and a "
        "working backfill command, and run until Ctrl-C / SIGTERM, which stops every Airflow process",
    )
    demo.add_argument("--port", type=int, default=8080,
                      help="with --ui: port of the UI, REST API and the execution API the tasks call (default 8080)")
    demo.add_argument("--host", default="127.0.0.1",
                      help="with --ui: address the api-server binds (default 127.0.0.1, this machine only; "
                      "0.0.0.0 for every interface)")
    demo.add_argument("--parallelism", type=int, default=None,
                      help="with --ui: LocalExecutor worker processes (default min(CPU cores, 4))")
    demo.set_defaults(func=_demo)


def _days(start: str, days: int) -> list[str]:
    from pipeline.storage import shift_ds

    return [shift_ds(start, i) for i in range(days)]


def _generate(settings, args) -> None:
    from pipeline.synth import generate_marketplace

    print(f"generating a marketplace: {args.members} members, {args.jobs} jobs, {args.days} days "
          f"from {args.start} under {settings.home}")
    generate_marketplace(
        settings.home,
        members=args.members,
        jobs=args.jobs,
        days=args.days,
        start=args.start,
        seed=args.seed,
        impressions_per_day=args.impressions_per_member * args.members,
    )


def _demo(args: argparse.Namespace) -> int:
    """Run the demo; the terminal shows progress, ``$JOBREC_HOME/logs/demo-<timestamp>.log`` everything."""
    import contextlib
    import time

    from pipeline.cli.demo_output import RunProgress, demo_log_path, log_offset, logs_to_file
    from pipeline.config import Settings
    from pipeline.report import report_path

    if args.days < 2:
        raise ValueError(f"--days must be at least 2 (day 1 trains the full model); got {args.days}")
    settings = Settings.from_env()
    if args.ui:
        return _ui(settings, args)
    log_path = demo_log_path(settings.layout.logs_dir())
    print(f"Full logs (Airflow, Spark, pipeline): {log_path}", flush=True)
    # From here on fds 1 and 2 are the log file (Airflow prints its logs and dag.test()'s task logs to
    # stdout, the Spark JVM and child processes inherit them); `out`/`err` are the terminal.
    with logs_to_file(log_path) as (out, err):
        try:
            from pipeline.airflow_env import configure_airflow, run_dag

            with contextlib.redirect_stdout(out):
                _generate(settings, args)
            airflow_home = configure_airflow(settings)
            days = _days(args.start, args.days)
            runs = [("jobrec_full_retrain", days[0], {"window_days": 1})]
            runs += [("jobrec_daily", ds, {"top_n": args.top_n, "gate_margin": args.gate_margin}) for ds in days[1:]]
            for dag_id, ds, conf in runs:
                since, started = log_offset(log_path), time.perf_counter()
                with RunProgress(out, dag_id, ds) as progress:
                    result = run_dag(dag_id, ds, conf)
                progress.finish(result.get("run_id"))
                if result["state"] != "success":
                    return _failed(dag_id, ds, result, log_path, since, err)
                line = f"  {result['state']} in {time.perf_counter() - started:.0f}s"
                with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                    if dag_id == "jobrec_full_retrain":
                        report = json.loads(report_path(ds, settings, "full_retrain").read_text())
                        line += f"; full model holdout AUC {report['tasks']['train_full']['holdout_auc']:.3f}"
                    else:
                        gate = json.loads(report_path(ds, settings).read_text())["tasks"]["gate"]
                        line += (f"; holdout AUC {gate['holdout_auc']:.3f} "
                                 f"(previous model {gate.get('parent_holdout_auc', float('nan')):.3f})")
                print(line, file=out)
            layout = settings.layout
            print("\nWhere to look:", file=out)
            print(f"  full log        {log_path}  (Airflow, Spark and every task's log)", file=out)
            reports = layout.reports_dir()
            print(f"  run reports     {reports}/ds=*/run.json (full_retrain.json for the full retrain); "
                  f"pages: {reports}/index.html (across days), ds=*/index.html", file=out)
            print(f"  models          {layout.models_dir()} (current.json = promoted full model; daily/ds=*)",
                  file=out)
            print(f"  recommendations {layout.recommendations(days[-1])}", file=out)
            print(f"  Airflow home    {airflow_home} (metadata DB; task log files of runs started from the UI)",
                  file=out)
            print("  the UI          jobrec demo --ui   (then trigger runs or backfills of these days by hand)", file=out)
            # the answer comes last: one member's list as served from Redis
            _print_member(settings, days[-1], args.member, args.top_n, out)
            return 0
        except Exception as exc:
            log.exception("jobrec demo failed")
            print(f"jobrec demo failed: {type(exc).__name__}: {exc}\nFull log: {log_path}", file=err)
            return 1
        finally:
            _stop_spark()


def _stop_spark() -> None:
    """Stop the Spark session the in-process tasks started, so the command exits promptly."""
    from pyspark.sql import SparkSession

    try:
        session = SparkSession.getActiveSession()
        if session is not None:
            session.stop()
    except Exception:  # stopping is best effort: never hide the demo's own outcome
        log.warning("could not stop the Spark session", exc_info=True)


def _failed(dag_id: str, ds: str, result: dict, log_path: Path, since: int, err: TextIO) -> int:
    """Say which task of a failed run failed and why: its error, the last lines of its log, the full log."""
    from pipeline.cli.demo_output import error_message, task_log_tail

    failed = [task for task, state in result["tasks"].items() if state == "failed"]
    task = failed[0] if failed else ""
    lines = task_log_tail(log_path, task, since=since, lines=None)
    print(f"\n{dag_id} for {ds} FAILED at {', '.join(failed) or '? (no task failed)'}", file=err)
    error = error_message(lines)
    if error:
        print(f"  {error}", file=err)
    print(f"Last lines of {'the log of ' + task if task else 'the log'}:", file=err)
    for line in lines[-20:]:
        print(f"  | {line}", file=err)
    print(f"Full log: {log_path}", file=err)
    return 1


def _print_member(settings, ds: str, member: int | None, top_n: int, out: TextIO | None = None) -> None:
    """Print ``member``'s list (default: the first member with recommendations) as served from Redis."""
    from pipeline.storage import read_partition
    from serving_store.connection import connect
    from serving_store.lookup import Lookup

    out = out or sys.stdout
    if member is None:
        member = int(read_partition(settings.layout.recommendations(ds), columns=["member_id"]).column(0)[0].as_py())
    lookup = Lookup(connect(settings))
    served = lookup.served() or {}
    recs = lookup.get(member, top_n)
    print(f"\nServed version {served.get('version')} (ds {served.get('ds')}, model {served.get('model_version')}); "
          f"member {member} ({recs.source} list):", file=out)
    cells = [f"{rank:3d}. job {job_id}  score {score:7.4f}"
             for rank, (job_id, score) in enumerate(zip(recs.job_ids, recs.scores, strict=True), start=1)]
    half = (len(cells) + 1) // 2  # two columns, ranks running down the first then the second
    for left, right in zip(cells[:half], [*cells[half:], ""], strict=False):
        print(f"  {left}      {right}".rstrip(), file=out)


class _StopRequested(BaseException):
    """Raised in the main thread by SIGINT/SIGTERM while ``jobrec demo --ui`` runs (a BaseException, like
    KeyboardInterrupt, so no ``except Exception`` on the way turns it into an error)."""


def _on_stop_signal(signum: int, _frame) -> None:
    # Only the first signal interrupts: a second Ctrl-C must not break the shutdown under way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _StopRequested(signal.Signals(signum).name)


def _ui(settings, args) -> int:
    """Run Airflow's components on the embedded setup until Ctrl-C/SIGTERM (exit 0) or a component dies (1)."""
    from pipeline.airflow_stack import AirflowStack, describe_exit

    if args.parallelism is not None and args.parallelism < 1:
        raise ValueError(f"--parallelism must be at least 1; got {args.parallelism}")
    if not settings.layout.partitions(settings.layout.raw_dir("impressions")):
        _generate(settings, args)
    days = settings.layout.partitions(settings.layout.raw_dir("impressions"))
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health poll otherwise
    stack = AirflowStack(settings, port=args.port, host=args.host, parallelism=args.parallelism)
    previous = {sig: signal.signal(sig, _on_stop_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"starting Airflow on {stack.base_url} (logs: {stack.log_file}) ...", flush=True)
        try:
            stack.start()
        except RuntimeError as exc:
            print(f"jobrec demo --ui: Airflow did not start: {exc}", file=sys.stderr)
            return 1
        _print_ui_banner(stack, days, {"top_n": args.top_n, "gate_margin": args.gate_margin})
        while True:
            dead = stack.exited()
            if dead:
                name, code = next(iter(dead.items()))
                print(f"jobrec demo --ui: airflow {name} {describe_exit(code)}; its output is in {stack.log_file}. "
                      "Stopping the other components.", file=sys.stderr, flush=True)
                stack.stop()
                return 1
            stack.pids()  # follow task processes, so stop() finds them even once their parent is gone
            time.sleep(1)
    except _StopRequested as stop:
        print(f"\n{stop}: stopping Airflow ...", flush=True)
        stack.stop()
        print("Airflow stopped.", flush=True)
        return 0
    finally:
        stack.stop()  # no-op when already stopped; covers any other exception
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _print_ui_banner(stack, days: list[str], daily_conf: dict) -> None:
    """The URL, the real login, where the logs are, and trigger/backfill commands for the marketplace's days
    (the daily runs with ``daily_conf``, as ``jobrec demo`` runs them, one day at a time in date order)."""
    from pipeline.storage import shift_ds

    airflow = str(Path(sys.executable).parent / "airflow")
    relative = os.path.relpath(airflow)
    if not relative.startswith(".."):
        airflow = relative  # e.g. .venv/bin/airflow from the repository
    cli = f"AIRFLOW_HOME={stack.airflow_home} {airflow}"
    bound = "this machine only" if stack.host in ("127.0.0.1", "localhost", "::1") else f"bound to {stack.host}"
    print(f"\nAirflow is ready: {stack.base_url}  ({bound}; LocalExecutor, parallelism {stack.parallelism})")
    print(f"  login     {stack.username} / {stack.password}   (from {stack.password_file})")
    print(f"  logs      {stack.log_file} (Airflow components); task logs under {stack.airflow_home / 'logs'}")
    print(f"  data      {stack.settings.home}; raw days {days[0]}..{days[-1]}")
    print("The DAGs start paused. Unpause both, train the full model on the first day, and once that run "
          "succeeded backfill the daily DAG over the other days (or the same from the UI: Trigger, Trigger → Backfill):")
    print(f"  {cli} dags unpause jobrec_full_retrain && {cli} dags unpause jobrec_daily")
    print(f"  {cli} dags trigger jobrec_full_retrain --logical-date {days[0]} --conf '{{\"window_days\": 1}}'")
    if len(days) > 1:
        print(f"  {cli} backfill create --dag-id jobrec_daily --max-active-runs 1 --dag-run-conf "
              f"'{json.dumps(daily_conf)}' --from-date {shift_ds(days[0], 1)} --to-date {days[-1]}")
    print("Once unpaused, each DAG also schedules a run for yesterday (the last finished day); it waits for "
          "yesterday's raw data, which this marketplace does not have, and fails after raw_wait_timeout_seconds.")
    print("Ctrl-C stops Airflow.", flush=True)
