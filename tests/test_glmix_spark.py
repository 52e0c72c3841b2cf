"""The Spark engine (``glmix_core.spark_engine.fit_spark``) finds the local engine's model on the same data."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from glmix_core import DataError, GLMixSpec, fit
from glmix_core.simulate import full_spec_dict, make_truth, simulate
from glmix_core.spark_engine import fit_spark

SORT = [("coordinate", "ascending"), ("entity", "ascending"), ("feature", "ascending")]
SPEC = GLMixSpec.from_dict(full_spec_dict("logistic", l2_fixed=0.5, l2_member=2.0, l2_job=1.5, tolerance=1e-12,
                                          max_iterations=400))
TRUTH = make_truth(120, 30, n_global=3, seed=5)


@pytest.fixture(autouse=True)
def _workers_use_this_python(spark, monkeypatch):
    # Python workers must run this interpreter (the venv with pyarrow); pipeline.spark.get_spark does not
    # set PYSPARK_PYTHON, so point this session's workers at it.
    monkeypatch.setattr(spark.sparkContext, "pythonExec", sys.executable)


def _day(day: int, rows: int = 2000) -> pa.Table:
    return simulate(TRUTH, rows, day=day, seed=5)[0]


def _assert_same_model(spark_model, local_model) -> None:
    assert spark_model.metadata["fit"]["objective"] == pytest.approx(local_model.metadata["fit"]["objective"],
                                                                     rel=1e-6)
    mine, theirs = spark_model.coefficients().sort_by(SORT), local_model.coefficients().sort_by(SORT)
    for column in ("coordinate", "entity", "feature"):
        assert mine.column(column).to_pylist() == theirs.column(column).to_pylist()
    np.testing.assert_allclose(mine.column("value").to_numpy(), theirs.column("value").to_numpy(), atol=1e-4)


@pytest.fixture(scope="module")
def day0(tmp_path_factory) -> tuple[pa.Table, str]:
    table = _day(0)
    path = tmp_path_factory.mktemp("glmix_spark") / "day0.parquet"
    pq.write_table(table, path)
    return table, str(path)


@pytest.fixture(scope="module")
def day0_models(spark, day0):
    table, path = day0
    spark.sparkContext.pythonExec = sys.executable
    return fit(SPEC, table), fit_spark(SPEC, path, spark=spark, num_partitions=3)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a Spark job per optimizer pass: minutes on a busy 2-core machine
def test_spark_engine_model_equals_local_engine_with_two_random_effects(day0_models):
    local, distributed = day0_models
    assert distributed.metadata["fit"]["engine"] == "spark"
    assert {"per_member", "per_job"} <= set(distributed.coordinates)
    _assert_same_model(distributed, local)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a Spark job per optimizer pass: minutes on a busy 2-core machine
def test_spark_engine_daily_update_with_locked_fixed_effect_and_incremental_prior_equals_local(spark, day0_models,
                                                                                               tmp_path):
    previous, _ = day0_models
    # day 1 sees only some members: the others must keep yesterday's coefficients (incremental carry-over)
    today = _day(1, rows=1200)
    today = today.filter(pa.compute.less(today.column("member_id"), 1090))
    options = {"warm_start": previous, "lock": ["global"], "incremental": {"forgetting": 0.8}}
    local = fit(SPEC, today, **options)
    pq.write_table(today, tmp_path / "day1.parquet")
    frame = spark.read.parquet(str(tmp_path / "day1.parquet"))  # a DataFrame input this time
    distributed = fit_spark(SPEC, frame, spark=spark, num_partitions=2, **options)
    assert distributed.coordinates["global"] is previous.coordinates["global"]
    _assert_same_model(distributed, local)
    member_entities = set(distributed.coordinates["per_member"].entity_ids.to_pylist())
    assert member_entities == set(previous.coordinates["per_member"].entity_ids.to_pylist())


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a Spark job per optimizer pass: minutes on a busy 2-core machine
def test_spark_engine_names_a_missing_feature_bag(spark, day0):
    _, path = day0
    bad = GLMixSpec.from_dict({**SPEC.to_dict(), "coordinates": [
        {"name": "global", "type": "fixed", "feature_bags": ["no_such_bag"]}]})
    with pytest.raises(DataError, match="no_such_bag"):
        fit_spark(bad, path, spark=spark)


def test_glmix_core_and_its_spark_engine_import_without_pyspark():
    code = ("import sys, glmix_core, glmix_core.spark_engine; "
            "assert 'pyspark' not in sys.modules, 'pyspark was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
