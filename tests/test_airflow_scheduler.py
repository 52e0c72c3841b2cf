"""The DAGs as operated: Airflow's real scheduler, executor, execution API and REST API, not ``dag.test()``.

One story per metadata database (the embedded SQLite default, and PostgreSQL with the LocalExecutor: the
production path of ``docker-compose.yml``), on a tiny synthetic marketplace whose last day is yesterday:

1. the stack starts (api-server, scheduler, dag-processor, triggerer: ``pipeline.airflow_stack``, what
   ``make ui`` runs) on a temporary home and a non-default port; the test logs in through ``/auth/token``;
2. both DAGs are unpaused while yesterday's raw data has not landed: the scheduler creates their runs for
   yesterday (the finished day; the weekly retrain's cron is set to today's weekday) and they wait in their
   sensors, they do not fail;
3. meanwhile a manual run of a day without data is not blocked by the waiting run, and fails at its sensor's
   short timeout with a message naming the missing tables and paths;
4. the full retrain is triggered through the REST API, then a backfill of three days is created with exactly
   the body the UI's Backfill dialog sends by default ("Missing Runs", max active runs 1): the days run in date
   order, each from the model of the day before;
5. yesterday's data lands: both waiting scheduled runs go on and succeed, and yesterday becomes the served day;
   no two heavy steps (the daily runs' retrain, retrieval, re-scoring and the weekly ``train_full``: pool
   ``jobrec_compute``) overlapped;
6. the stack stops and no process it started is left.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from pipeline.net import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

TOP_N = 10
DAILY_CONF = {"top_n": TOP_N, "candidates_k": 50, "gate_margin": 0.2}


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture(scope="module")
def postgres_url():
    """A real PostgreSQL server on a temporary data folder, bound to 127.0.0.1, stopped afterwards.

    Debian's ``postgresql`` package (``.ci/run`` installs it when missing). PostgreSQL refuses to run as
    root, so as root the server runs as the ``postgres`` system user.
    """
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not found: apt-get install -y postgresql (.ci/run does)")
    # Not under pytest's tmp folders: those are private to root, and the server may run as another user.
    data = Path(tempfile.mkdtemp(prefix="jobrec-test-pg-"))
    port = free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    initdb = subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "airflow", "--auth=trust",
                             "-E", "UTF8"], capture_output=True, text=True)
    assert initdb.returncode == 0, f"initdb failed: {initdb.stderr}"
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(data / "server.log"), "-w",
                    "-o", f"-h 127.0.0.1 -p {port} -k {data}", "start"], check=True, capture_output=True)
    try:
        subprocess.run([*as_user, str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "airflow",
                        "airflow"], check=True, capture_output=True)
        yield f"postgresql+psycopg2://airflow@127.0.0.1:{port}/airflow"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       check=False, capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgres"])
def metadata_db(request) -> str | None:
    """``None`` for the embedded SQLite database, else the URL of a PostgreSQL database."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_url")


def _task_log(airflow_home: Path, dag_id: str, run_id: str, task_id: str) -> str:
    folder = airflow_home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
    return "\n".join(p.read_text(errors="replace") for p in sorted(folder.glob("attempt=*.log")))


def _a_member(settings, ds: str) -> int:
    """A member that has a list for ``ds``."""
    from pipeline.storage import read_partition

    return int(read_partition(settings.layout.recommendations(ds), columns=["member_id"]).column(0)[0].as_py())


def test_scheduled_runs_ui_backfills_and_late_data_under_the_real_scheduler(
    tmp_path, redis_server, metadata_db, monkeypatch
) -> None:
    import psutil

    from pipeline.airflow_client import AirflowClient, finished_runs, wait_for
    from pipeline.airflow_stack import AirflowStack
    from pipeline.config import Settings
    from pipeline.landing import mark_landed, missing_raw_partitions
    from pipeline.storage import LANDED_MARKER, RAW_TABLES
    from pipeline.synth import generate_marketplace
    from pipeline.training import read_lineage
    from serving_store.connection import connect
    from serving_store.lookup import Lookup

    started = time.monotonic()
    today = dt.datetime.now(dt.UTC).date()
    days = [(today - dt.timedelta(days=n)).isoformat() for n in range(5, 0, -1)]
    first, backfilled, yesterday = days[0], days[1:4], days[4]
    home = tmp_path / "jobrec_home"
    env = {
        "JOBREC_HOME": str(home),
        "REDIS_URL": redis_server,
        "JOBREC_SPARK_MASTER": "local[1]",
        "JOBREC_SPARK_SHUFFLE_PARTITIONS": "2",
        "JOBREC_SPARK_DRIVER_MEMORY": "1g",
        # scheduled runs take their params from the settings: the same as the manual runs' conf
        "JOBREC_TOP_N": str(DAILY_CONF["top_n"]),
        "JOBREC_CANDIDATES_K": str(DAILY_CONF["candidates_k"]),
        "JOBREC_GATE_MARGIN": str(DAILY_CONF["gate_margin"]),
        "JOBREC_RAW_POKE_INTERVAL_SECONDS": "20",
        # the weekly retrain fires today at 00:00 (for yesterday), as it does every Sunday by default
        "JOBREC_FULL_RETRAIN_CRON": f"0 0 * * {today.isoweekday() % 7}",
    }
    if metadata_db:
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = metadata_db
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings.from_env()
    generate_marketplace(home, members=200, jobs=60, days=5, start=first, seed=5, impressions_per_day=3000)
    for table in RAW_TABLES:  # yesterday's files are there, but the producer has not marked them landed
        (settings.layout.raw(table, yesterday) / LANDED_MARKER).unlink()
    assert len(missing_raw_partitions(yesterday, settings)) == 4

    stack = AirflowStack(settings, port=free_port(), extra_env=env)
    stages: dict[str, float] = {}
    pids: list[int] = []
    try:
        stack.start()
        pids = stack.pids()
        stages["start"] = time.monotonic() - started
        api = AirflowClient(stack.base_url, stack.token())

        # 2. Unpaused without yesterday's data: the scheduled runs are for yesterday, and wait.
        scheduled = {}
        for dag_id in ("jobrec_daily", "jobrec_full_retrain"):
            api.set_paused(dag_id, False)
            runs = wait_for(f"the scheduled run of {dag_id}", lambda d=dag_id: [
                r for r in api.runs(d) if r["run_type"] == "scheduled"], timeout=180)
            assert [r["ds"] for r in runs] == [yesterday], "a scheduled run processes the day that has ended"
            scheduled[dag_id] = runs[0]["dag_run_id"]
        for dag_id, run_id in scheduled.items():
            wait_for(f"{dag_id}'s scheduled run to wait in its sensor", lambda d=dag_id, r=run_id: api.task_states(
                d, r).get("wait_for_raw_data") == "up_for_reschedule", timeout=240)

        # 3. A manual run is not blocked by the waiting one; with no data at all it times out, clearly.
        no_data = (today - dt.timedelta(days=30)).isoformat()
        manual = api.trigger("jobrec_daily", no_data,
                             {**DAILY_CONF, "raw_wait_timeout_seconds": 20, "raw_poke_interval_seconds": 15})
        wait_for("the manual run without data to fail",
                 lambda: api.run("jobrec_daily", manual)["state"] == "failed", timeout=300)
        assert api.task_states("jobrec_daily", manual)["wait_for_raw_data"] == "failed"
        log_text = _task_log(stack.airflow_home, "jobrec_daily", manual, "wait_for_raw_data")
        assert f"raw data for ds={no_data} did not land within 0:00:20: missing members (no folder:" in log_text
        assert str(settings.layout.raw("impressions", no_data)) in log_text
        still = api.task_states("jobrec_daily", scheduled["jobrec_daily"])["wait_for_raw_data"]
        assert still in ("up_for_reschedule", "scheduled", "queued", "running"), f"the scheduled run stopped waiting: {still}"
        stages["waiting runs, manual run timed out"] = time.monotonic() - started

        # 4. The full retrain through the REST API, then a backfill with the Backfill dialog's default body.
        full = api.trigger("jobrec_full_retrain", first, {"window_days": 1, "l2_grid": [1.0, 10.0]})
        full_run = wait_for("the full retrain", lambda: finished_runs(api, "jobrec_full_retrain", [first]))[0]
        assert full_run["state"] == "success", api.task_states("jobrec_full_retrain", full)
        stages["full retrain"] = time.monotonic() - started
        dry_run = api.backfill("jobrec_daily", backfilled[0], backfilled[-1], DAILY_CONF, dry_run=True)
        assert [b["logical_date"][:10] for b in dry_run["backfills"]] == backfilled
        api.backfill("jobrec_daily", backfilled[0], backfilled[-1], DAILY_CONF)
        runs = wait_for("the three backfilled days", lambda: finished_runs(api, "jobrec_daily", backfilled),
                        timeout=1200)
        assert [(r["run_type"], r["state"]) for r in runs] == [("backfill", "success")] * 3, [
            api.task_states("jobrec_daily", r["dag_run_id"]) for r in runs]
        for earlier, later in zip(runs, runs[1:], strict=False):
            assert earlier["end_date"] <= later["start_date"], "backfilled days must run one at a time, in order"
        parents = [read_lineage(settings.layout.model_daily(d))["parent"]["version"] for d in backfilled]
        assert parents == [f"full-{first}", f"daily-{backfilled[0]}", f"daily-{backfilled[1]}"]
        stages["backfill of three days"] = time.monotonic() - started

        # 5. Yesterday's data lands: both scheduled runs go on; yesterday becomes the served day.
        mark_landed(yesterday, settings)
        for dag_id, run_id in scheduled.items():
            done = wait_for(f"{dag_id}'s scheduled run to finish", lambda d=dag_id, r=run_id: (
                api.run(d, r)["state"] in ("success", "failed")), timeout=900)
            assert done and api.run(dag_id, run_id)["state"] == "success", (dag_id, api.task_states(dag_id, run_id))
        assert read_lineage(settings.layout.model_daily(yesterday))["parent"]["version"] == f"daily-{backfilled[-1]}"
        assert read_lineage(settings.layout.model_full(f"full-{yesterday}"))["window"] == days
        lookup = Lookup(connect(settings.redis_url))
        assert lookup.served()["ds"] == yesterday
        assert len(lookup.get(_a_member(settings, yesterday)).job_ids) == TOP_N
        stages["scheduled runs after landing"] = time.monotonic() - started
        # The heavy steps of every daily run (backfilled and scheduled) and the weekly fits ran one at a time,
        # the scheduled daily and weekly runs of yesterday included, released together: pool jobrec_compute.
        assert api.call("GET", "/pools/jobrec_compute")["slots"] == 1
        heavy = sorted(
            (ti["start_date"], ti["end_date"], ti["dag_run_id"], ti["task_id"], ti["pool"])
            for dag_id in scheduled for r in api.runs(dag_id) if r["state"] == "success"
            for ti in api.task_instances(dag_id, r["dag_run_id"])
            if ti["task_id"] in ("retrain", "retrieve_candidates", "rescore", "train_full")
        )
        assert len(heavy) == 3 * 4 + 2 and {h[4] for h in heavy} == {"jobrec_compute"}, heavy
        for earlier, later in zip(heavy, heavy[1:], strict=False):
            assert earlier[1] <= later[0], f"heavy steps overlapped: {earlier[2:4]} and {later[2:4]}"
        # No red run but the deliberate no-data one.
        red = [r["dag_run_id"] for dag_id in scheduled for r in api.runs(dag_id)
               if r["state"] == "failed" and r["dag_run_id"] != manual]
        assert red == []
        pids = sorted(set(pids) | set(stack.pids()))
    except BaseException:
        # CI shows captured output only: what Airflow logged last is the failure's context (which request hung,
        # which task failed), and the stack's log folder is gone with the clean checkout.
        from pipeline.airflow_stack import _tail

        print(f"failed after the stages {stages}; the last lines of {stack.log_file}:\n{_tail(stack.log_file, 80)}")
        raise
    finally:
        stack.stop()
        stages["stopped"] = time.monotonic() - started
        print(f"scheduler story ({'postgres' if metadata_db else 'sqlite'}), seconds since start: {stages}")
    assert pids, "the stack was running"
    left = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert left == [], "processes left after stop"
