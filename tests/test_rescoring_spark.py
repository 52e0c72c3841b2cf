"""Re-scoring on a real local Spark session writes exactly the local engine's recommendations."""

from __future__ import annotations

import pytest
from rescoring_world import DAY, make_world

from pipeline.scoring import rescore
from pipeline.storage import read_partition

pytestmark = pytest.mark.slow


def test_spark_engine_writes_the_same_recommendations_as_the_local_engine(settings, spark):
    make_world(settings, seed=11)
    local_report = rescore(DAY, settings, top_n=6, max_per_company=2, block_members=8)
    local = read_partition(settings.layout.recommendations(DAY))
    spark_report = rescore(DAY, settings, top_n=6, max_per_company=2, block_members=8, engine="spark")
    distributed = read_partition(settings.layout.recommendations(DAY))
    assert local.num_rows > 0
    assert distributed.equals(local)  # same rows, same order, same bits
    for key in ("members", "members_on_fallback", "members_with_coefficients", "pairs_scored", "recommendations",
                "blocks"):
        assert spark_report[key] == local_report[key], key
    assert spark_report["engine"] == "spark"
