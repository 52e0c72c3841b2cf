"""Both backends of ``glmix_core.fit`` run the same driver: every option, the same model.

Each case fits the same data with ``engine="local"`` and ``engine="spark"`` (a real local Spark session) and
compares objectives, coefficients and scores. Rows keep their order on Spark, so row-position sampling keys
agree; cases that sample also name a ``uid`` column, as a cluster user would.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from glmix_core import DataError, GLMixSpec, fit
from glmix_core.simulate import full_spec_dict, make_truth, simulate

pytestmark = pytest.mark.filterwarnings("ignore::glmix_core.ConvergenceWarning")

SORT = [("coordinate", "ascending"), ("entity", "ascending"), ("feature", "ascending")]
TRUTH = make_truth(60, 15, n_global=3, seed=5)


def _day(day: int, rows: int = 1200) -> pa.Table:
    table = simulate(TRUTH, rows, day=day, seed=5)[0]
    return table.append_column("uid", pa.array([f"r{day}-{i}" for i in range(table.num_rows)]))


def _spec(**changes) -> GLMixSpec:
    # a few sweeps: both backends take the same path, so they agree whether or not the fit has converged
    raw = full_spec_dict("logistic", l2_fixed=0.5, l2_member=2.0, l2_job=1.5, max_iterations=8)
    coordinate_changes = changes.pop("coordinates", {})
    raw.update(changes)
    for c in raw["coordinates"]:
        c.update(coordinate_changes.get(c["name"], {}))
    return GLMixSpec.from_dict(raw)


def _assert_same_model(spark_model, local_model, atol: float = 1e-5) -> None:
    assert spark_model.metadata["fit"]["engine"] == "spark"
    assert spark_model.metadata["fit"]["objective"] == pytest.approx(local_model.metadata["fit"]["objective"],
                                                                     rel=1e-8)
    mine, theirs = spark_model.coefficients().sort_by(SORT), local_model.coefficients().sort_by(SORT)
    for column in ("coordinate", "entity", "feature"):
        assert mine.column(column).to_pylist() == theirs.column(column).to_pylist()
    np.testing.assert_allclose(mine.column("value").to_numpy(), theirs.column("value").to_numpy(), atol=atol)
    mv = mine.column("variance").to_numpy(zero_copy_only=False).astype(float)
    tv = theirs.column("variance").to_numpy(zero_copy_only=False).astype(float)
    np.testing.assert_array_equal(np.isnan(mv), np.isnan(tv))
    np.testing.assert_allclose(mv[~np.isnan(mv)], tv[~np.isnan(tv)], rtol=1e-4, atol=1e-8)


@pytest.fixture(scope="module")
def day0() -> pa.Table:
    return _day(0)


CASES = {
    "plain": ({}, {}),
    "normalization": ({"coordinates": {"global": {"normalization": "standardization"},
                                       "per_member": {"normalization": "scale_with_max_magnitude"},
                                       "per_job": {"normalization": "scale_with_standard_deviation"}}}, {}),
    "down_sampling": ({"uid": "uid", "coordinates": {"global": {"down_sampling_rate": 0.4}}}, {}),
    "active_data_bounds": ({"uid": "uid", "coordinates": {"per_member": {"max_samples": 12, "min_samples": 3}}},
                           {}),
    "feature_selection": ({"coordinates": {"per_member": {"features_to_samples_ratio": 0.5}}}, {}),
    "variance_none": ({"variance": "none"}, {}),
    "variance_simple": ({"variance": "simple"}, {}),
    "l1_lbfgs_sparsity": ({"sparsity_threshold": 1e-3,
                           "coordinates": {"global": {"l1": 0.5, "solver": "lbfgs"}}}, {}),
    "evaluators_best_model": ({"evaluators": ["auc", "auc:member_id"]}, {"validation": True}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_both_backends_fit_the_same_model(spark, day0, case):
    changes, extra = CASES[case]
    spec = _spec(**changes)
    kwargs = {"validation": _day(7, 600)} if extra.get("validation") else {}
    local = fit(spec, day0, **kwargs)
    distributed = fit(spec, day0, engine="spark", spark=spark, num_partitions=3, **kwargs)
    _assert_same_model(distributed, local)
    np.testing.assert_allclose(distributed.score(day0), local.score(day0), atol=1e-5)
    if extra.get("validation"):
        assert distributed.metadata["fit"]["best"] == local.metadata["fit"]["best"]
        assert len(distributed.metadata["fit"]["validation_history"]) == len(local.metadata["fit"]["validation_history"])
        mine, theirs = distributed.metadata["metrics"]["validation"], local.metadata["metrics"]["validation"]
        assert mine.keys() == theirs.keys()
        for key in ("auc", "log_loss", "auc:member_id"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-9)


def test_both_backends_warm_start_lock_and_incremental_update_alike(spark, day0, tmp_path):
    spec = _spec()
    previous = fit(spec, day0)
    # day 1 sees only some members: the others keep yesterday's coefficients (incremental carry-over)
    today = _day(1, rows=900)
    today = today.filter(pc.less(today.column("member_id"), 1040))
    for options in ({"warm_start": previous},
                    {"warm_start": previous, "lock": ["global"], "incremental": {"forgetting": 0.8}}):
        local = fit(spec, today, **options)
        pq.write_table(today, tmp_path / "day1.parquet")
        frame = spark.read.parquet(str(tmp_path / "day1.parquet"))  # a Spark DataFrame input this time
        distributed = fit(spec, frame, engine="spark", spark=spark, num_partitions=2, **options)
        _assert_same_model(distributed, local)
    assert distributed.coordinates["global"] is previous.coordinates["global"]
    members = set(distributed.coordinates["per_member"].entity_ids.to_pylist())
    assert members == set(previous.coordinates["per_member"].entity_ids.to_pylist())


def test_spark_backend_reads_a_parquet_folder_in_the_local_backends_row_order(spark, tmp_path):
    folder = tmp_path / "days"
    folder.mkdir()
    tables = [_day(d, 500) for d in (2, 3)]
    for d, table in zip((2, 3), tables, strict=True):
        pq.write_table(table, folder / f"day{d}.parquet", row_group_size=170)
    spec = _spec(uid=None, coordinates={"per_member": {"max_samples": 8}})  # keys are row positions here
    local = fit(spec, pa.concat_tables(tables))
    distributed = fit(spec, str(folder), engine="spark", spark=spark, num_partitions=3)
    _assert_same_model(distributed, local)


def test_spark_backend_names_a_missing_column_and_bad_values_and_keeps_nothing_cached(spark, day0):
    cached_before = spark.sparkContext._jsc.getPersistentRDDs().size()
    bad = GLMixSpec.from_dict({**_spec().to_dict(), "coordinates": [
        {"name": "global", "type": "fixed", "feature_bags": ["no_such_bag"]}]})
    with pytest.raises(DataError, match="no_such_bag"):
        fit(bad, day0, engine="spark", spark=spark)
    negative = day0.set_column(day0.schema.get_field_index("label"), "label",
                               pa.array(np.full(day0.num_rows, 2.0)))
    with pytest.raises(DataError, match="label"):
        fit(_spec(), negative, engine="spark", spark=spark)
    assert spark.sparkContext._jsc.getPersistentRDDs().size() == cached_before  # a failed fit releases its cache


def test_glmix_core_and_its_spark_backend_import_without_pyspark():
    code = ("import sys, glmix_core, glmix_core.spark_engine, glmix_core.spark_engine.backend; "
            "assert 'pyspark' not in sys.modules, 'pyspark was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_spark_layouts_get_a_partition_per_quarter_million_rows_at_least_the_parallelism(tmp_path) -> None:
    from glmix_core.spark_engine.backend import PARTITION_ROWS, _known_rows, default_partitions

    assert default_partitions(2, 1000) == 2
    assert default_partitions(2, None) == 2
    assert default_partitions(2, 2_393_765) == 10  # a 1M-member day: ten partitions, not the two of local[2]
    assert default_partitions(16, 10 * PARTITION_ROWS) == 16
    table = _day(0, rows=300)
    pq.write_table(table.slice(0, 100), tmp_path / "a.parquet")
    pq.write_table(table.slice(100), tmp_path / "b.parquet")
    assert _known_rows(table) == _known_rows(str(tmp_path)) == _known_rows(tmp_path / "a.parquet") + 200 == 300
