"""A three-day backfill from the UI's Backfill dialog under Airflow's real scheduler: time per stage, and a
screenshot of the DAG's grid afterwards (headless Chromium).

What a new user does with `make ui`, scripted: a synthetic marketplace whose last day is yesterday, the jobrec
Airflow stack (api-server, scheduler, dag-processor, triggerer; LocalExecutor) on a free port, the full retrain
triggered through the REST API for the first day, then a backfill of the next three days posted with exactly
the body the Backfill dialog sends by default ("Missing Runs", max active runs 1). Prints, per day, each
task's seconds (as Airflow recorded them) and the run's wall time, then writes the grid screenshot.

    .venv/bin/python bench/bench_airflow_backfill.py            # 500 members x 150 jobs
    .venv/bin/python bench/bench_airflow_backfill.py --full     # 2,000 x 500 (the issue's marketplace)

Needs Debian's `chromium` (apt-get install -y chromium) and the `playwright` Python package (test extras) for
the screenshot; without them it measures and says the screenshot was skipped. Writes
`bench/out/airflow_backfill.json` and `bench/out/airflow_backfill_grid.png`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
OUT = REPO / "bench" / "out"
CHROMIUM = "/usr/bin/chromium"


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    parse = dt.datetime.fromisoformat
    return round((parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds(), 1)


def screenshot(base_url: str, token: str, path: Path, dag_id: str = "jobrec_daily") -> str | None:
    """Open the DAG's page (grid) in headless Chromium, logged in with ``token``; returns the path or why not."""
    if not Path(CHROMIUM).exists():
        return f"skipped: {CHROMIUM} not found (apt-get install -y chromium)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return "skipped: the playwright package is not installed (pip install -e '.[test]')"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        context.add_cookies([{"name": "_token", "value": token, "url": base_url}])
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.goto(f"{base_url}/dags/{dag_id}", wait_until="networkidle")
        page.wait_for_timeout(3000)  # the grid fetches its runs after the first paint
        page.screenshot(path=str(path), full_page=True)
        browser.close()
    return str(path) + (f" (console errors: {errors[:3]})" if errors else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="the issue's size: 2,000 members x 500 jobs")
    parser.add_argument("--members", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the data folder (printed) after the run")
    args = parser.parse_args(argv)
    members = args.members or (2000 if args.full else 500)
    jobs = args.jobs or (500 if args.full else 150)

    from pipeline.airflow_client import AirflowClient, finished_runs, wait_for
    from pipeline.airflow_stack import AirflowStack
    from pipeline.config import Settings
    from pipeline.net import free_port
    from pipeline.synth import generate_marketplace

    today = dt.datetime.now(dt.UTC).date()
    # Data up to the day before yesterday: the scheduled runs that unpausing creates are for yesterday, which
    # has no data, so they wait (as on a new user's machine) and stay out of the measurement. The weekly
    # retrain is scheduled for today's weekday for the same reason (by default its run would be for the last
    # Saturday, which may fall inside these days and train beside the backfill).
    days = [(today - dt.timedelta(days=n)).isoformat() for n in range(5, 1, -1)]
    first, backfilled = days[0], days[1:]
    home = Path(tempfile.mkdtemp(prefix="jobrec-bench-airflow-"))
    os.environ.update({"JOBREC_HOME": str(home), "JOBREC_SPARK_MASTER": "local[2]",
                       "JOBREC_FULL_RETRAIN_CRON": f"0 0 * * {today.isoweekday() % 7}"})
    os.environ.pop("REDIS_URL", None)  # the embedded Redis of this home
    settings = Settings.from_env()
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"marketplace: {members} members x {jobs} jobs, days {days[0]}..{days[-1]} under {home}")
    generate_marketplace(home, members=members, jobs=jobs, days=len(days), start=first, seed=7,
                         impressions_per_day=10 * members)
    stack = AirflowStack(settings, port=free_port())
    result: dict = {"members": members, "jobs": jobs, "days": days}
    wall = time.monotonic()
    try:
        stack.start()
        result["stack_start_s"] = round(time.monotonic() - wall, 1)
        token = stack.token()
        api = AirflowClient(stack.base_url, token)
        for dag_id in ("jobrec_full_retrain", "jobrec_daily"):
            api.set_paused(dag_id, False)
        conf = {"top_n": 20, "gate_margin": 0.05}
        t0 = time.monotonic()
        api.trigger("jobrec_full_retrain", first, {"window_days": 1})
        full = wait_for("the full retrain", lambda: finished_runs(api, "jobrec_full_retrain", [first]), timeout=1800)
        result["full_retrain_s"] = round(time.monotonic() - t0, 1)
        t0 = time.monotonic()
        api.backfill("jobrec_daily", backfilled[0], backfilled[-1], conf)
        runs = wait_for("the backfill", lambda: finished_runs(api, "jobrec_daily", backfilled, "backfill"),
                        timeout=3600)
        result["backfill_wall_s"] = round(time.monotonic() - t0, 1)
        table: dict[str, dict[str, float | None]] = {}
        for run in [*full, *runs]:
            tasks = api.task_instances(run["dag_id"], run["dag_run_id"])
            table[f"{run['dag_id']} {run['ds']}"] = {
                "state": run["state"], "run_s": _seconds(run["start_date"], run["end_date"]),
                **{ti["task_id"]: (round(ti["duration"], 1) if ti.get("duration") is not None else None)
                   for ti in tasks},
            }
        result["runs"] = table
        result["screenshot"] = screenshot(stack.base_url, token, OUT / "airflow_backfill_grid.png")
    finally:
        stack.stop()
        if not args.keep:
            from serving_store.connection import stop_embedded

            stop_embedded(home / "redis", save=False)
            shutil.rmtree(home, ignore_errors=True)
    for name, row in result["runs"].items():
        print(f"\n{name}: {row['state']} in {row['run_s']} s")
        for task, seconds in row.items():
            if task not in ("state", "run_s"):
                print(f"  {task:<22} {seconds} s")
    print(f"\nstack start {result['stack_start_s']} s; full retrain {result['full_retrain_s']} s; "
          f"backfill of 3 days {result['backfill_wall_s']} s wall")
    print(f"grid screenshot: {result['screenshot']}")
    (OUT / "airflow_backfill.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {OUT / 'airflow_backfill.json'}")
    return 0 if all(r["state"] == "success" for r in result["runs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
