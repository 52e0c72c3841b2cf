"""End to end: the real DAGs run with ``dag.test()`` (and an Airflow backfill) on a tiny synthetic marketplace.

Everything is real: Airflow 3 with a SQLite metadata DB, local Spark for validation/features, Whoosh,
glmix_core, and a real Redis server (the ``redis_server`` fixture). The tests share one marketplace and
run in file order as one story: full retrain → a day → its rerun → a three-day backfill with the UI dialog's
default ("Missing Runs") → a backfill of older days again ("All Runs") that must not move the served day
nor evict rollback versions → a worse model injected → a day whose raw data never lands.
The same DAGs under Airflow's real scheduler and REST API: ``tests/test_airflow_scheduler.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline.airflow_env import configure_airflow
from pipeline.config import Settings

# One Airflow home per pytest process (Airflow reads its config once per process, at import).
configure_airflow(
    Settings(home=Path(tempfile.gettempdir()) / f"jobrec-test-airflow-{os.getpid()}"), export_home=False
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

START = "2024-05-01"
D1, D2, D3, D4, D5, D6 = (f"2024-05-0{i}" for i in range(1, 7))
TOP_N = 10
CONF = {"top_n": TOP_N, "candidates_k": 50, "gate_margin": 0.15}


@pytest.fixture(scope="module")
def home(tmp_path_factory, redis_server):
    """A 6-day marketplace of 300 members, the full model of day 1 promoted, REDIS_URL/JOBREC_HOME set."""
    import redis

    from pipeline.airflow_env import run_dag
    from pipeline.synth import generate_marketplace

    root = tmp_path_factory.mktemp("e2e") / "jobrec_home"
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JOBREC_HOME", str(root))
        patch.setenv("REDIS_URL", redis_server)
        patch.setenv("JOBREC_SPARK_MASTER", "local[2]")
        patch.setenv("JOBREC_SPARK_SHUFFLE_PARTITIONS", "4")
        patch.setenv("JOBREC_SPARK_DRIVER_MEMORY", "2g")
        generate_marketplace(root, members=300, jobs=120, days=6, start=START, seed=11, impressions_per_day=4000)
        full = run_dag("jobrec_full_retrain", D1, {"window_days": 1, "l2_grid": [1.0, 10.0]})
        assert full["state"] == "success", full
        yield Settings.from_env()


def _lookup(settings: Settings):
    from serving_store.connection import connect
    from serving_store.lookup import Lookup

    return Lookup(connect(settings.redis_url))


def _sorted(path: Path, keys: list[str]) -> pa.Table:
    from pipeline.storage import read_partition

    table = read_partition(path)
    return table.sort_by([(k, "ascending") for k in keys])


def _day_outputs(settings: Settings, ds: str) -> dict[str, pa.Table]:
    layout = settings.layout
    return {
        "training": _sorted(layout.features("training", ds), ["impression_id"]),
        "model": _sorted(layout.model_daily(ds) / "coefficients.parquet", ["coordinate", "entity", "feature"]),
        "candidates": _sorted(layout.candidates(ds), ["member_id", "rank"]),
        "recommendations": _sorted(layout.recommendations(ds), ["member_id", "rank"]),
    }


def _some_members(settings: Settings, ds: str, n: int = 5) -> list[int]:
    recs = _sorted(settings.layout.recommendations(ds), ["member_id", "rank"])
    return sorted(set(recs.column("member_id").to_pylist()))[:n]


def test_daily_run_publishes_to_redis_and_a_lookup_returns_top_n(home) -> None:
    from pipeline.airflow_env import run_dag

    result = run_dag("jobrec_daily", D2, CONF)
    assert result["state"] == "success", result
    assert set(result["tasks"].values()) == {"success"}
    lookup = _lookup(home)
    assert lookup.served()["ds"] == D2
    for member in _some_members(home, D2):
        recs = lookup.get(member)
        assert recs.source == "member"
        assert len(recs.job_ids) == TOP_N
        assert len(set(recs.job_ids)) == TOP_N
    report = json.loads(home.layout.report(D2).read_text())
    assert set(report["timings_seconds"]) >= {"validate_raw", "build_features", "retrain", "gate", "publish"}
    assert report["tasks"]["retrain"]["parent"] == f"full-{D1}"


def test_running_the_same_day_twice_leaves_identical_outputs(home) -> None:
    from pipeline.airflow_env import run_dag

    before = _day_outputs(home, D2)
    members = _some_members(home, D2)
    lists_before = [_lookup(home).get(m).job_ids for m in members]
    result = run_dag("jobrec_daily", D2, CONF)
    assert result["state"] == "success", result
    after = _day_outputs(home, D2)
    for name in before:
        assert before[name].equals(after[name]), name
    assert [_lookup(home).get(m).job_ids for m in members] == lists_before


def test_a_backfill_with_the_dialogs_defaults_runs_three_days_in_date_order_each_from_the_day_before(home) -> None:
    from pipeline.airflow_env import run_backfill
    from pipeline.training import read_lineage

    runs = run_backfill("jobrec_daily", D3, D5, CONF)  # reprocess "none": the dialog's "Missing Runs"
    assert [r["ds"] for r in runs] == [D3, D4, D5]
    assert all(r["state"] == "success" for r in runs), runs
    assert all(r["run_type"] == "backfill" for r in runs), runs
    parents = {ds: read_lineage(home.layout.model_daily(ds))["parent"]["version"] for ds in (D3, D4, D5)}
    assert parents == {D3: f"daily-{D2}", D4: f"daily-{D3}", D5: f"daily-{D4}"}
    report = json.loads(home.layout.report(D4).read_text())
    assert report["tasks"]["retrain"]["parent"] == f"daily-{D3}"
    assert _lookup(home).served()["ds"] == D5


def test_backfilling_older_days_again_keeps_the_newest_served_and_every_rollback_version(home) -> None:
    from pipeline.airflow_env import run_backfill
    from pipeline.publishing import serving_keys
    from serving_store.connection import connect
    from serving_store.publisher import list_versions, served_history

    client = connect(home.redis_url)
    keys = serving_keys(home)
    served = _lookup(home).served()
    rollback_targets = served_history(client, keys)[: home.versions_kept]
    member = _some_members(home, D5, 1)[0]
    newest_list = _lookup(home).get(member).job_ids
    parents_before = _day_outputs(home, D4)["model"]

    runs = run_backfill("jobrec_daily", D3, D4, CONF, reprocess="completed")  # the dialog's "All Runs"
    assert [(r["ds"], r["state"]) for r in runs] == [(D3, "success"), (D4, "success")]
    # Published for inspection only: the pointer only moves forward, the served lists stay.
    assert _lookup(home).served()["version"] == served["version"]
    assert _lookup(home).get(member).job_ids == newest_list
    assert set(rollback_targets) <= set(list_versions(client, keys)), "a backfill evicted a rollback version"
    # Same parents, same data: the rerun reproduces the day's model.
    assert _day_outputs(home, D4)["model"].equals(parents_before)


def test_an_injected_worse_model_is_stopped_by_the_gate_and_the_old_lists_stay_served(home) -> None:
    from pipeline.airflow_env import run_dag
    from pipeline.training import LINEAGE_FILE, holdout_auc, load_model, load_training_day, split_holdout

    served = _lookup(home).served()
    member = _some_members(home, D5, 1)[0]
    served_list = _lookup(home).get(member).job_ids
    # The worse model for D6: D5's model with every coefficient negated, claiming D5 as its parent.
    bad = home.layout.model_daily(D6)
    shutil.copytree(home.layout.model_daily(D5), bad)
    table = pq.read_table(bad / "coefficients.parquet")
    negated = table.set_column(table.schema.get_field_index("value"), "value", pc.negate(table.column("value")))
    pq.write_table(negated, bad / "coefficients.parquet")
    lineage = json.loads((bad / LINEAGE_FILE).read_text())
    lineage.update(ds=D6, version=f"daily-{D6}", parent={"kind": "daily", "version": f"daily-{D5}"})
    (bad / LINEAGE_FILE).write_text(json.dumps(lineage))

    result = run_dag("jobrec_daily", D6, CONF, mark_success_pattern="retrain")
    assert result["tasks"]["validate_raw"] == "success" and result["tasks"]["build_features"] == "success"
    _, holdout = split_holdout(load_training_day(D6, home))
    assert holdout_auc(load_model(home.layout.model_daily(D5)), holdout) > 0.6, "precondition: D5 has signal"
    assert result["state"] == "failed"
    assert result["tasks"]["gate"] == "failed"
    assert result["tasks"]["publish"] == "upstream_failed"
    assert not home.layout.recommendations(D6).exists()
    assert _lookup(home).served()["version"] == served["version"]
    assert _lookup(home).get(member).job_ids == served_list


def test_a_day_whose_day_before_has_no_model_fails_before_retraining_naming_the_day_to_run_first(home, capfd) -> None:
    from pipeline.airflow_env import run_dag

    d4_model = home.layout.model_daily(D4)
    aside = d4_model.parent / ".aside-d4"
    d4_model.rename(aside)
    try:
        capfd.readouterr()
        result = run_dag("jobrec_daily", D5, CONF)
        output = "".join(capfd.readouterr())
    finally:
        aside.rename(d4_model)
    assert result["state"] == "failed"
    assert result["tasks"]["wait_for_parent_model"] == "failed"
    assert result["tasks"]["retrain"] == "upstream_failed"
    assert f"no model for ds={D4}, the day before ds={D5}" in output
    assert f"Run jobrec_daily for {D4} first" in output


def test_a_day_whose_raw_data_never_lands_times_out_naming_what_is_missing_and_touches_nothing(home, capfd) -> None:
    from pipeline.airflow_env import run_dag

    later = _day_outputs(home, D4)
    kept = _day_outputs(home, D3)
    served = _lookup(home).served()
    shutil.rmtree(home.layout.raw("impressions", D3))
    (home.layout.raw("applies", D3) / "_SUCCESS").unlink()  # files there, but not marked landed
    capfd.readouterr()
    result = run_dag("jobrec_daily", D3, {**CONF, "raw_wait_timeout_seconds": 0})
    output = "".join(capfd.readouterr())
    assert result["state"] == "failed"
    assert result["tasks"]["wait_for_raw_data"] == "failed"
    assert all(state == "upstream_failed" for task, state in result["tasks"].items() if task != "wait_for_raw_data")
    assert f"raw data for ds={D3} did not land within 0:00:00" in output
    assert f"impressions (no folder: {home.layout.raw('impressions', D3)})" in output
    assert f"applies (no _SUCCESS: {home.layout.raw('applies', D3) / '_SUCCESS'})" in output
    assert "members" not in output.split("did not land within", 1)[1].split("\n", 1)[0]
    for name, table in _day_outputs(home, D4).items():
        assert table.equals(later[name]), name
    for name, table in _day_outputs(home, D3).items():
        assert table.equals(kept[name]), name
    assert _lookup(home).served()["version"] == served["version"]
