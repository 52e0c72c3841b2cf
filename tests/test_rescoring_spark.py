"""Re-scoring on a real local Spark session writes exactly the local engine's recommendations."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from rescoring_world import DAY, make_world

from pipeline.scoring import rescore
from pipeline.storage import read_partition

pytestmark = pytest.mark.slow


def _shuffle_candidates_into_two_files(settings) -> None:
    """Rewrite the day's candidates as two part files with rows in random member order (as a Spark job that
    hash-partitions members writes them)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.storage import atomic_directory

    table = read_partition(settings.layout.candidates(DAY))
    table = table.take(pa.array(np.random.default_rng(5).permutation(table.num_rows)))
    half = table.num_rows // 2
    with atomic_directory(settings.layout.candidates(DAY)) as tmp:
        pq.write_table(table.slice(0, half), tmp / "part-00000.parquet", row_group_size=100)
        pq.write_table(table.slice(half), tmp / "part-00001.parquet", row_group_size=100)


@pytest.mark.parametrize("candidates_in_member_order", [True, False], ids=["member-ranges", "grouped"])
def test_spark_engine_writes_the_same_recommendations_as_the_local_engine(settings, spark, caplog,
                                                                          candidates_in_member_order):
    from pipeline.rescoring.stream import in_key_order, partition_files

    make_world(settings, seed=11)
    if not candidates_in_member_order:
        _shuffle_candidates_into_two_files(settings)
    assert in_key_order(partition_files(settings.layout.candidates(DAY))) is candidates_in_member_order
    local_report = rescore(DAY, settings, top_n=6, max_per_company=2, block_members=8)
    local = read_partition(settings.layout.recommendations(DAY))
    with caplog.at_level("INFO", logger="pipeline.scoring"):
        spark_report = rescore(DAY, settings, top_n=6, max_per_company=2, block_members=8, engine="spark")
    distributed = read_partition(settings.layout.recommendations(DAY))
    assert local.num_rows > 0
    assert distributed.equals(local)  # same rows, same order, same bits
    for key in ("members", "members_on_fallback", "members_with_coefficients", "pairs_scored", "recommendations",
                "blocks"):
        assert spark_report[key] == local_report[key], key
    assert spark_report["engine"] == "spark"
    way = "member ranges read by the tasks" if candidates_in_member_order else "candidates grouped by member"
    assert way in caplog.text


def test_member_ranges_on_several_partitions_score_each_block_once(settings, spark, tmp_path):
    """More partitions than cores: each task reads its own member range and writes its own file; blocks are not
    cut or repeated, and the files in name order are the local engine's rows."""
    import numpy as np
    import pyarrow as pa

    from pipeline.features.pairs import GlobalSpace
    from pipeline.features.vocab import load_vocab
    from pipeline.rescoring.layout import build_rescorer
    from pipeline.rescoring.spark import collect_written, rescore_ranges
    from pipeline.rescoring.stream import partition_files, read_key_column
    from pipeline.scoring import _active_jobs, _applied_pairs

    world = make_world(settings, seed=17)
    local_report = rescore(DAY, settings, top_n=5, max_per_company=2, block_members=6)
    local = read_partition(settings.layout.recommendations(DAY))

    jobs = world.jobs.sort_by("job_id")
    rescorer = build_rescorer(world.model, GlobalSpace.from_vocab(load_vocab(DAY, settings)), jobs,
                              _active_jobs(jobs, DAY), "world", 25)
    profiles = partition_files(settings.layout.features("member_profiles", DAY))
    candidates = partition_files(settings.layout.candidates(DAY))
    ids = np.unique(read_key_column(profiles))
    bounds = ids[6::6]
    applied_members, applied_jobs = _applied_pairs(DAY, settings, 60)
    out = tmp_path / "out"
    out.mkdir()
    frame = rescore_ranges(spark, rescorer, [str(f) for f in profiles], [str(f) for f in candidates],
                           applied_members, applied_jobs, bounds, 5, 2, members=len(ids), partitions=5,
                           target_dir=str(out))
    assert frame.rdd.getNumPartitions() == 5
    counts = collect_written(frame, out)
    files = sorted(out.iterdir())
    assert [f.name for f in files] == [f"part-0000{p}.parquet" for p in range(5)]
    assert pa.concat_tables([pq.read_table(f) for f in files]).equals(local)
    for name in ("members", "members_on_fallback", "pairs_scored", "recommendations"):
        assert counts[name] == local_report[name], name


def test_a_task_attempt_publishes_its_file_whole_and_a_retry_counts_once(tmp_path, monkeypatch):
    """A partition's file appears only complete (written under an attempt's dot-name, then renamed); a failed
    attempt's leftover is removed, and a partition reported twice (a retry) is counted once."""
    import types

    import pyarrow as pa
    import pyspark

    from pipeline.rescoring.block import RECOMMENDATION_SCHEMA, BlockResult
    from pipeline.rescoring.spark import WRITTEN_SCHEMA, collect_written, write_partition_file

    def task(partition: int, attempt: int):
        return types.SimpleNamespace(partitionId=lambda: partition, taskAttemptId=lambda: attempt)

    recs = pa.RecordBatch.from_pylist(
        [{"member_id": 7, "rank": 1, "job_id": 3, "score": 0.5, "model_version": "v",
          **{c: 0.0 for c in RECOMMENDATION_SCHEMA.names[5:]}}], schema=RECOMMENDATION_SCHEMA)
    result = BlockResult(recs, members=1, members_on_fallback=0, members_with_coefficients=1, pairs_scored=4)

    def failing():
        yield result
        raise RuntimeError("executor lost")

    monkeypatch.setattr(pyspark.TaskContext, "get", staticmethod(lambda: task(3, 11)))
    with pytest.raises(RuntimeError, match="executor lost"):
        write_partition_file(failing(), str(tmp_path))
    assert [f.name for f in tmp_path.iterdir()] == [".part-00003.parquet.attempt-11"]  # never the final name

    monkeypatch.setattr(pyspark.TaskContext, "get", staticmethod(lambda: task(3, 12)))
    written = write_partition_file(iter([result, result]), str(tmp_path))
    assert written.schema == WRITTEN_SCHEMA
    assert pq.read_table(tmp_path / "part-00003.parquet").num_rows == 2

    class Frame:  # what the two attempts of partition 3 reported, plus an empty partition 4
        def collect(self):
            empty = {"partition": 4, "recommendations": 0, "members": 0, "members_on_fallback": 0,
                     "members_with_coefficients": 0, "pairs_scored": 0}
            return [written.to_pylist()[0], written.to_pylist()[0], empty]

    counts = collect_written(Frame(), tmp_path)
    assert counts == {"recommendations": 2, "members": 2, "members_on_fallback": 0, "members_with_coefficients": 2,
                      "pairs_scored": 8}
    assert [f.name for f in tmp_path.iterdir()] == ["part-00003.parquet"]
    assert pq.read_table(tmp_path / "part-00003.parquet")["member_id"].to_pylist() == [7, 7]


def test_block_runs_cover_every_block_once_in_order():
    import numpy as np

    from pipeline.rescoring.spark import block_ranges

    bounds = np.array([10, 20, 30, 40, 50, 60, 70], dtype=np.int64)  # 8 blocks
    runs = block_ranges(bounds, 3)
    assert [(lo, hi) for lo, hi, _ in runs] == [(None, 30), (30, 60), (60, None)]
    assert [inner.tolist() for _, _, inner in runs] == [[10, 20], [40, 50], [70]]
    assert [(lo, hi, inner.tolist()) for lo, hi, inner in block_ranges(bounds[:0], 4)] == [(None, None, [])]
    assert len(block_ranges(bounds, 100)) == 8  # never more runs than blocks


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
    got = pa.Table.from_batches([r.recommendations for r in score_partition(iter(batches), rescorer, 5, 2)
                                 if r.recommendations.num_rows])
    assert got.num_rows == local.num_rows > 0
    assert got.equals(local)
