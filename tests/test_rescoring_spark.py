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


def test_a_partitions_batches_are_regrouped_into_whole_blocks(settings):
    """Spark cuts a partition into Arrow batches anywhere: blocks split over batches score as whole blocks."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from pipeline.features.pairs import GlobalSpace
    from pipeline.features.vocab import load_vocab
    from pipeline.rescoring.block import PROFILE_COLUMNS
    from pipeline.rescoring.layout import build_rescorer
    from pipeline.rescoring.spark import BLOCK, score_partition
    from pipeline.scoring import _active_jobs

    world = make_world(settings, seed=13)
    rescore(DAY, settings, top_n=5, max_per_company=2, block_members=6)
    local = read_partition(settings.layout.recommendations(DAY))

    space = GlobalSpace.from_vocab(load_vocab(DAY, settings))
    jobs = world.jobs.sort_by("job_id")
    rescorer = build_rescorer(world.model, space, jobs, _active_jobs(jobs, DAY), "world", 25)
    # One row per member: profile columns and candidate/applied lists, as the Spark engine's joins build them.
    cand = world.candidates.group_by("member_id").aggregate([("job_id", "list")])
    applied = world.applies.group_by("member_id").aggregate([("job_id", "list")])
    ids = pa.array(np.union1d(world.members["member_id"].to_numpy(), cand["member_id"].to_numpy()), pa.int64())

    def aligned(table: pa.Table, column: str) -> pa.ChunkedArray:  # table's column per entry of ids (or null)
        return table[column].take(pc.index_in(ids, value_set=table["member_id"]))

    members = pa.table({"member_id": ids, **{f: aligned(world.members, f) for f in PROFILE_COLUMNS[1:]},
                        "candidate_job_ids": aligned(cand, "job_id_list"),
                        "applied_job_ids": aligned(applied, "job_id_list")})
    profile_ids = np.sort(world.members["member_id"].to_numpy())
    bounds = profile_ids[6::6]
    block = np.searchsorted(bounds, members["member_id"].to_numpy(), side="right")
    members = members.append_column(BLOCK, pa.array(block, pa.int64()))
    batches = members.to_batches(max_chunksize=4)  # blocks of ~6 members cut over batches of 4 rows
    got = pa.Table.from_batches(list(score_partition(iter(batches), rescorer, 5, 2)))
    assert got.num_rows == local.num_rows > 0
    assert got.equals(local)
