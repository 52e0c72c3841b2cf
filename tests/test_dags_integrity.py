"""DagBag integrity: both jobrec DAGs import cleanly and carry the policies the project relies on."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from pipeline.airflow_env import DAGS_FOLDER, configure_airflow
from pipeline.config import Settings

# One Airflow home per pytest process (Airflow reads its config once per process, at import).
configure_airflow(
    Settings(home=Path(tempfile.gettempdir()) / f"jobrec-test-airflow-{os.getpid()}"), export_home=False
)

pytestmark = pytest.mark.slow

EXPECTED_DAGS = {"jobrec_daily", "jobrec_full_retrain"}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))


def test_both_dags_import_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert EXPECTED_DAGS <= set(dagbag.dag_ids)


def test_every_dag_has_docs_tags_owner_and_a_timezone_aware_start(dagbag) -> None:
    for dag_id in EXPECTED_DAGS:
        dag = dagbag.get_dag(dag_id)
        assert dag.doc_md and dag_id in dag.doc_md
        assert "jobrec" in dag.tags
        assert dag.start_date.tzinfo is not None
        assert dag.max_active_runs == 2, "a run waiting for late data must not block a manual run"
        assert dag.catchup is False


def test_no_task_depends_on_past_so_the_backfill_dialogs_default_works(dagbag) -> None:
    # Airflow refuses a backfill with reprocess behaviour "none" (the dialog's default, "Missing Runs") when
    # any task has depends_on_past; the order comes from the backfill's max_active_runs and the parent rule.
    for dag_id in EXPECTED_DAGS:
        assert not [t.task_id for t in dagbag.get_dag(dag_id).tasks if t.depends_on_past], dag_id


def test_every_pool_a_task_uses_is_created_with_the_metadata_db(dagbag) -> None:
    # A task in a pool that does not exist is never scheduled; airflow_env.ensure_pools creates POOLS.
    from pipeline.pools import POOLS

    created = {name for name, _, _ in POOLS} | {"default_pool"}
    for dag_id in EXPECTED_DAGS:
        used = {t.pool for t in dagbag.get_dag(dag_id).tasks}
        assert used <= created, (dag_id, used - created)
    # The heavy steps of both DAGs take one machine's memory each: one at a time across the two DAGs too.
    heavy = {(dag_id, t.task_id): t.pool for dag_id in EXPECTED_DAGS for t in dagbag.get_dag(dag_id).tasks
             if t.task_id in ("retrain", "retrieve_candidates", "rescore", "train_full")}
    assert heavy == dict.fromkeys(heavy, "jobrec_compute") and len(heavy) == 4
    # The weekly fit does not hold the features pool: the daily run builds its features meanwhile.
    assert dagbag.get_dag("jobrec_full_retrain").get_task("prepare_window").pool == "jobrec_features"


def _scheduler_dag(dagbag, dag_id: str):
    """The DAG as the scheduler sees it (serialized), with the core timetable."""
    from airflow.serialization.serialized_objects import DagSerialization

    return DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dagbag.get_dag(dag_id)))


def _utc(*args):
    import datetime as dt

    return dt.datetime(*args, tzinfo=dt.UTC)


def test_the_scheduled_daily_run_created_after_midnight_processes_the_day_that_ended(dagbag) -> None:
    from airflow.timetables.base import DataInterval, TimeRestriction

    timetable = _scheduler_dag(dagbag, "jobrec_daily").timetable
    info = timetable.next_dagrun_info(
        last_automated_data_interval=DataInterval(_utc(2026, 11, 30), _utc(2026, 12, 1)),
        restriction=TimeRestriction(_utc(2024, 1, 1), None, catchup=True),
    )
    assert info.run_after == _utc(2026, 12, 2), "created once the day has ended"
    assert info.logical_date == _utc(2026, 12, 1), "ds is the finished day, not the day just beginning"


def test_the_weekly_full_retrain_window_ends_on_the_last_finished_day(dagbag) -> None:
    from airflow.timetables.base import DataInterval, TimeRestriction

    timetable = _scheduler_dag(dagbag, "jobrec_full_retrain").timetable
    info = timetable.next_dagrun_info(
        last_automated_data_interval=DataInterval(_utc(2026, 11, 21), _utc(2026, 11, 22)),
        restriction=TimeRestriction(_utc(2024, 1, 1), None, catchup=True),
    )
    assert info.run_after == _utc(2026, 11, 29)  # Sunday 00:00
    assert info.logical_date == _utc(2026, 11, 28), "the Saturday that just ended is the window's last day"


def test_a_backfill_from_jan_2_to_jan_4_creates_exactly_those_three_days(dagbag) -> None:
    dag = _scheduler_dag(dagbag, "jobrec_daily")
    infos = list(dag.iter_dagrun_infos_between(_utc(2024, 1, 2), _utc(2024, 1, 4)))
    assert [i.logical_date.date().isoformat() for i in infos] == ["2024-01-02", "2024-01-03", "2024-01-04"]


def test_both_dags_start_by_waiting_for_the_days_raw_data_without_holding_a_slot(dagbag) -> None:
    from pipeline.dag_sensors import RawDataLandedSensor

    for dag_id in EXPECTED_DAGS:
        dag = dagbag.get_dag(dag_id)
        sensor = dag.get_task("wait_for_raw_data")
        assert isinstance(sensor, RawDataLandedSensor) and sensor.mode == "reschedule"
        assert [t.task_id for t in dag.roots] == ["wait_for_raw_data"]
        assert {"raw_poke_interval_seconds", "raw_wait_timeout_seconds"} <= set(dag.params)


def test_every_task_retries_with_backoff_but_not_on_bad_input(dagbag) -> None:
    for dag_id in EXPECTED_DAGS:
        for t in dagbag.get_dag(dag_id).tasks:
            assert t.retries >= 1, t.task_id
            assert t.retry_exponential_backoff, t.task_id
            decision = t.retry_policy.evaluate(FileNotFoundError("raw partition missing"), 1, 3)
            assert decision.action.value == "fail", t.task_id
            assert t.retry_policy.evaluate(ConnectionError("redis down"), 1, 3).action.value == "default"


def test_gate_failure_is_not_retried(dagbag) -> None:
    from pipeline.training import GateFailedError

    task = dagbag.get_dag("jobrec_daily").get_task("gate")
    assert task.retry_policy.evaluate(GateFailedError("auc dropped"), 1, 3).action.value == "fail"


def test_daily_dag_exposes_the_trigger_form_params(dagbag) -> None:
    params = dagbag.get_dag("jobrec_daily").params
    for name in ("top_n", "candidates_k", "skip_publish", "engine", "retrain_mode", "gate_margin"):
        assert name in params, name
    assert params["retrain_mode"] == "incremental"
    assert params["skip_publish"] is False
    full = dagbag.get_dag("jobrec_full_retrain").params
    for name in ("window_days", "l2_search", "tuning_trials", "l2_grid", "engine", "gate_margin"):
        assert name in full, name


def test_daily_dag_wires_tasks_in_pipeline_order(dagbag) -> None:
    dag = dagbag.get_dag("jobrec_daily")
    order = ["wait_for_raw_data", "validate_raw", "build_features", "wait_for_parent_model", "retrain", "gate", "rescore", "publish", "verify", "run_report"]
    for upstream, downstream in zip(order, order[1:], strict=False):
        assert downstream in dag.get_task(upstream).downstream_task_ids, (upstream, downstream)
    assert "rescore" in dag.get_task("retrieve_candidates").downstream_task_ids
    assert "retrieve_candidates" in dag.get_task("update_index").downstream_task_ids


def test_dag_files_do_no_heavy_imports_at_top_level() -> None:
    for path in DAGS_FOLDER.glob("*.py"):
        top_level = [
            line for line in path.read_text().splitlines() if line.startswith(("import ", "from "))
        ]
        for line in top_level:
            if line.startswith(("from pipeline.dag_defaults import", "from pipeline.dag_sensors import",
                                "from pipeline.pools import")):
                continue  # the DAGs' shared defaults, sensors and pools: checked to stay light below
            assert not any(heavy in line for heavy in ("pyspark", "numpy", "pandas", "pipeline", "redis")), line


def test_trigger_form_params_that_mirror_settings_default_to_the_environment(monkeypatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("JOBREC_TOP_N", "7")
    monkeypatch.setenv("JOBREC_CANDIDATES_K", "77")
    monkeypatch.setenv("JOBREC_RAW_WAIT_TIMEOUT_SECONDS", "30")
    params = DagBag(dag_folder=str(DAGS_FOLDER)).get_dag("jobrec_daily").params
    assert (params["top_n"], params["candidates_k"], params["raw_wait_timeout_seconds"]) == (7, 77, 30)


def test_shared_dag_defaults_import_nothing_heavy() -> None:
    import subprocess
    import sys

    code = ("import sys, pipeline.dag_defaults, pipeline.dag_sensors, pipeline.pools; "
            "print(sorted(m for m in ('numpy', 'pandas', 'pyspark', 'redis', 'pyarrow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_run_without_a_logical_date_fails_with_a_clear_message() -> None:
    from pipeline.airflow_env import call_pipeline

    with pytest.raises(ValueError, match="trigger it with a logical date"):
        call_pipeline("pipeline.report:write_run_report", None, {}, results={})


def test_task_wrapper_applies_trigger_form_params_and_times_the_call(tmp_path, monkeypatch) -> None:
    import json

    from pipeline.airflow_env import call_pipeline

    monkeypatch.setenv("JOBREC_HOME", str(tmp_path))
    result = call_pipeline(
        "pipeline.report:write_run_report", "2024-01-02", {"top_n": 7}, results={"x": {"rows": 1}}
    )
    assert result["seconds"] >= 0
    report = json.loads((tmp_path / "reports" / "ds=2024-01-02" / "run.json").read_text())
    assert report["counts"] == {"x.rows": 1}


def test_embedded_airflow_uses_sqlite_under_jobrec_home_and_the_repo_dags() -> None:
    from pipeline.airflow_env import airflow_env

    env = airflow_env(Settings(home=Path("/srv/jobrec")))
    assert env["AIRFLOW_HOME"] == "/srv/jobrec/airflow"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(DAGS_FOLDER)
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "sqlite:////srv/jobrec/airflow/airflow.db"
