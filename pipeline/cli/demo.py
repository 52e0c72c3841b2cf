"""``jobrec demo``: the whole product on a small synthetic marketplace, and ``jobrec demo --ui``: Airflow's UI.

``jobrec demo`` generates a marketplace under ``$JOBREC_HOME``, runs the periodic DAG once (full GLMix on the
first day, promoted) and the daily DAG for each following day with ``dag.test()`` (real Airflow 3, SQLite
metadata DB under ``$JOBREC_HOME/airflow``), then prints one member's recommendations read back from Redis
and where to look. ``jobrec demo --ui`` starts ``airflow standalone`` with the jobrec DAGs loaded (generating
the marketplace first if there is none) so runs and backfills can be triggered by hand.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

UI_USER, UI_PASSWORD = "admin", "admin"


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
    demo.add_argument("--ui", action="store_true", help="start `airflow standalone` with the DAGs instead")
    demo.add_argument("--port", type=int, default=8080, help="UI port with --ui")
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
    from pipeline.config import Settings

    if args.days < 2:
        raise ValueError(f"--days must be at least 2 (day 1 trains the full model); got {args.days}")
    settings = Settings.from_env()
    if args.ui:
        return _ui(settings, args)
    from pipeline.airflow_env import configure_airflow, run_dag

    _generate(settings, args)
    airflow_home = configure_airflow(settings)
    days = _days(args.start, args.days)
    print(f"Airflow home (SQLite metadata DB, task logs): {airflow_home}")
    print(f"jobrec_full_retrain for {days[0]} ...")
    result = run_dag("jobrec_full_retrain", days[0], {"window_days": 1})
    if result["state"] != "success":
        return _failed("jobrec_full_retrain", days[0], result, airflow_home)
    conf = {"top_n": args.top_n, "gate_margin": args.gate_margin}
    for ds in days[1:]:
        print(f"jobrec_daily for {ds} ...")
        result = run_dag("jobrec_daily", ds, conf)
        if result["state"] != "success":
            return _failed("jobrec_daily", ds, result, airflow_home)
        report = json.loads(settings.layout.report(ds).read_text())
        gate = report["tasks"].get("gate", {})
        print(f"  ok in {report['total_task_seconds']:.0f}s of task time; holdout AUC "
              f"{gate.get('holdout_auc', float('nan')):.3f} (previous model {gate.get('parent_holdout_auc', float('nan')):.3f})")
    _print_member(settings, days[-1], args.member, args.top_n)
    layout = settings.layout
    print("\nWhere to look:")
    print(f"  run reports     {layout.report(days[-1]).parent.parent}/ds=*/run.json")
    print(f"  models          {settings.home / 'models'} (current.json = promoted full model; daily/ds=*)")
    print(f"  recommendations {layout.recommendations(days[-1])}")
    print(f"  Airflow logs    {airflow_home / 'logs'}")
    print("  the UI          jobrec demo --ui   (then trigger runs or backfills of these days by hand)")
    _stop_spark()
    return 0


def _stop_spark() -> None:
    """Stop the Spark session the in-process tasks started, so the command exits promptly."""
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is not None:
        session.stop()


def _failed(dag_id: str, ds: str, result: dict, airflow_home) -> int:
    failed = sorted(task for task, state in result["tasks"].items() if state == "failed")
    print(f"{dag_id} for {ds} FAILED at {', '.join(failed) or '?'}: the task log above says why "
          f"(also under {airflow_home / 'logs'})", file=sys.stderr)
    return 1


def _print_member(settings, ds: str, member: int | None, top_n: int) -> None:
    from pipeline.storage import read_partition
    from serving_store.connection import connect
    from serving_store.lookup import Lookup

    if member is None:
        member = int(read_partition(settings.layout.recommendations(ds), columns=["member_id"]).column(0)[0].as_py())
    lookup = Lookup(connect(settings))
    served = lookup.served() or {}
    recs = lookup.get(member, top_n)
    print(f"\nServed version {served.get('version')} (ds {served.get('ds')}, model {served.get('model_version')}); "
          f"member {member} ({recs.source} list):")
    for rank, (job_id, score) in enumerate(zip(recs.job_ids, recs.scores, strict=True), start=1):
        print(f"  {rank:3d}. job {job_id}  score {score:.4f}")


def _ui(settings, args) -> int:
    """Start ``airflow standalone`` (api-server, scheduler, dag-processor, triggerer) on the embedded setup."""
    from pipeline.airflow_env import configure_airflow

    if not settings.layout.partitions(settings.home / "raw" / "impressions"):
        _generate(settings, args)
    airflow_home = configure_airflow(settings)
    # Simple auth manager: a known demo login instead of a generated password.
    (airflow_home / "simple_auth_manager_passwords.json.generated").write_text(
        json.dumps({UI_USER: UI_PASSWORD})
    )
    os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] = f"{UI_USER}:admin"
    os.environ["AIRFLOW__API__PORT"] = str(args.port)
    os.environ["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] = "True"
    days = settings.layout.partitions(settings.home / "raw" / "impressions")
    yesterday = (dt.date.fromisoformat(days[-1])).isoformat() if days else args.start
    print(f"Airflow UI: http://localhost:{args.port}  (login {UI_USER} / {UI_PASSWORD})")
    print(f"Data under {settings.home}; raw days {days[0] if days else '-'}..{yesterday}")
    print("The DAGs start paused: unpause jobrec_full_retrain and jobrec_daily (their scheduled run for "
          "today fails at validate_raw: the synthetic data are in the past). Trigger jobrec_full_retrain with "
          f"logical date {days[0] if days else args.start}, then backfill jobrec_daily over the following days: "
          "DAG page → Trigger → Backfill, or")
    print(f"  AIRFLOW_HOME={airflow_home} airflow backfill create --dag-id jobrec_daily "
          f"--from-date <first+1> --to-date {yesterday}")
    print("SQLite serialises writers: fine for this size, one run at a time; use docker-compose (Postgres) "
          "for concurrent use.")
    sys.stdout.flush()
    # `airflow standalone` starts its components as `airflow ...` subprocesses: find this venv's first.
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    os.execvpe(sys.executable, [sys.executable, "-m", "airflow", "standalone"], os.environ)
    return 0  # not reached
