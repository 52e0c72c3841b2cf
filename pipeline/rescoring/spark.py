"""Re-scoring on Spark: members partitioned, the laid-out model and job side broadcast, Arrow batches per block.

Two ways, both cutting members into the same blocks as the local engine (block ``b`` = member IDs in
``[bounds[b-1], bounds[b])``), so that every floating-point operation, and so every recommendation, is the
local engine's:

- :func:`rescore_ranges`, when the profile and candidate partitions are in member order (what the feature job,
  the local first stage and the Spark first stage write): each Spark partition is a range of consecutive
  blocks, and its task reads just that member range's row groups from the partitions (which the workers see,
  as every Spark step here reads and writes the data folder) and scores block by block. Nothing is shuffled.
- :func:`rescore_frame`, for partitions in any order: the member table (profiles, first-stage candidates and
  recent applies as list columns, one row per member, built by a group-by over every candidate pair) is
  range-partitioned by block and sorted by (block, member_id); each partition's Arrow batches are regrouped
  into whole blocks. At 1M members × 1,000 candidates that group-by shuffles 10⁹ rows and took 2.5× the local
  engine's time on 2 cores.

Either way each block is scored with :func:`pipeline.rescoring.block.score_member_block`, and each task writes
its partition's recommendations itself (:func:`write_partition_file`): one file per partition, whose names in
order hold the rows in (member_id, rank) order like the local engine's one file. The action that runs it is
:func:`collect_written`, which sums the tasks' counts.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.rescoring.block import (
    PROFILE_COLUMNS,
    BlockResult,
    MemberBlock,
    recommendation_writer,
    score_member_block,
)
from pipeline.rescoring.layout import Rescorer
from pipeline.rescoring.stream import member_blocks

BLOCK = "_block"
BLOCKS_PER_PARTITION = 32
# Members per partition of rescore_ranges by default: each task reads its range's row groups of both partitions
# (a profile row group can hold the whole day's members), so tasks much smaller than the first stage's
# 20k-member partitions spend their time reading rows they drop.
RANGE_MEMBERS = 20_000
COUNTS = ("members", "members_on_fallback", "members_with_coefficients", "pairs_scored")
# What each Spark task returns: its partition and what it wrote and counted.
WRITTEN_SCHEMA = pa.schema([("partition", pa.int64()), ("recommendations", pa.int64()),
                            *((name, pa.int64()) for name in COUNTS)])


def _flat(table: pa.Table, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(member_id, value) of every element of the list column ``column``."""
    lists = table[column].combine_chunks()
    if isinstance(lists, pa.ChunkedArray):  # an empty table
        lists = pa.array([], lists.type)
    members = table["member_id"].to_numpy().astype(np.int64)
    parents = pc.list_parent_indices(lists).to_numpy().astype(np.int64)
    values = pc.list_flatten(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    return members[parents], values


def block_of_rows(table: pa.Table) -> MemberBlock:
    """A :class:`MemberBlock` from member rows with profile columns and the list columns
    ``candidate_job_ids`` and ``applied_job_ids``."""
    cand_m, cand_j = _flat(table, "candidate_job_ids")
    app_m, app_j = _flat(table, "applied_job_ids")
    return MemberBlock.of(table.select(PROFILE_COLUMNS), cand_m, cand_j, app_m, app_j)


def score_partition(
    batches: Iterator[pa.RecordBatch],
    rescorer: Rescorer,
    top_n: int,
    max_per_company: int | None,
) -> Iterator[BlockResult]:
    """Batches of member rows sorted by (block, member_id) in (the grouping path), one result per block out.

    Rows of one block may arrive over several batches; a block is scored once its last row has been seen.
    """
    pending: list[pa.Table] = []
    current = None
    for batch in batches:
        if batch.num_rows == 0:
            continue
        table = pa.Table.from_batches([batch])
        blocks = table[BLOCK].to_numpy()
        starts = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]])
        for start, stop in zip(starts, [*starts[1:], len(blocks)], strict=True):
            if current is not None and blocks[start] != current:
                yield _score(pending, rescorer, top_n, max_per_company)
                pending = []
            current = blocks[start]
            pending.append(table.slice(start, stop - start))
    if pending:
        yield _score(pending, rescorer, top_n, max_per_company)


def _score(parts: list[pa.Table], rescorer: Rescorer, top_n: int, cap: int | None) -> BlockResult:
    return score_member_block(rescorer, block_of_rows(pa.concat_tables(parts)), top_n, cap)


def part_file(partition: int) -> str:
    """The name of Spark partition ``partition``'s recommendations file: name order = partition order."""
    return f"part-{partition:05d}.parquet"


def write_partition_file(results: Iterable[BlockResult], target_dir: str) -> pa.RecordBatch:
    """Write one Spark task's block results to ``target_dir/part-NNNNN.parquet`` (NNNNN: its partition) and
    return its :data:`WRITTEN_SCHEMA` row.

    The task writes with pyarrow (the local engine's writer settings): routing 10⁸ rows of 16 columns through
    Spark's JVM Parquet writer cost a third of re-scoring's time. The file appears under its final name only
    once complete (written under a name unique to the task attempt, then renamed), so a retried or
    speculative attempt replaces it with the same rows and a failed one leaves only a dot-file, which
    :func:`collect_written` removes. Partitions without recommendations write no file.
    """
    from pyspark import TaskContext

    context = TaskContext.get()
    partition, attempt = context.partitionId(), context.taskAttemptId()
    folder = Path(target_dir)
    final = folder / part_file(partition)
    temporary = folder / f".{final.name}.attempt-{attempt}"
    totals = dict.fromkeys(COUNTS, 0)
    rows, writer = 0, None
    try:
        for result in results:
            for name in COUNTS:
                totals[name] += int(getattr(result, name))
            if result.recommendations.num_rows:
                writer = writer or recommendation_writer(temporary)
                writer.write_batch(result.recommendations)
                rows += result.recommendations.num_rows
    finally:
        if writer is not None:
            writer.close()
    if writer is not None:
        os.replace(temporary, final)
    return pa.RecordBatch.from_pylist([{"partition": partition, "recommendations": rows, **totals}],
                                      schema=WRITTEN_SCHEMA)


def collect_written(frame, target_dir: Path) -> dict:
    """Run ``frame`` (one :data:`WRITTEN_SCHEMA` row per task, from :func:`write_partition_file`) and return
    the summed counts (a retried partition counted once); removes failed attempts' leftovers."""
    rows = {}
    for row in frame.collect():
        rows[row["partition"]] = row  # attempts of one partition report the same rows
    for leftover in Path(target_dir).glob(".part-*.attempt-*"):
        leftover.unlink()
    return {name: sum(int(row[name]) for row in rows.values()) for name in ("recommendations", *COUNTS)}


def block_ranges(bounds: np.ndarray, partitions: int) -> list[tuple[int | None, int | None, np.ndarray]]:
    """Cut the ``len(bounds) + 1`` blocks into at most ``partitions`` runs of consecutive blocks: per run the
    member range ``(lo, hi)`` (None: open) and the block boundaries inside it."""
    bounds = np.asarray(bounds, dtype=np.int64)
    blocks = len(bounds) + 1
    per = math.ceil(blocks / max(partitions, 1))
    runs = []
    for first in range(0, blocks, per):
        last = min(first + per, blocks)  # blocks first .. last-1
        lo = None if first == 0 else int(bounds[first - 1])
        hi = None if last == blocks else int(bounds[last - 1])
        runs.append((lo, hi, bounds[first:last - 1]))
    return runs


def rescore_ranges(
    spark,
    rescorer: Rescorer,
    profile_files: list[str],
    candidate_files: list[str],
    applied_members: np.ndarray,
    applied_jobs: np.ndarray,
    bounds: np.ndarray,
    top_n: int,
    max_per_company: int | None,
    *,
    members: int,
    target_dir: str,
    partitions: int | None = None,
):
    """A DataFrame that, when collected by :func:`collect_written`, writes the recommendations into
    ``target_dir`` (one file per partition, name order = member order), reading each partition's member range
    straight from the files (see the module docstring).

    ``profile_files``/``candidate_files``: the partitions' Parquet files in name order, in member order
    (:func:`pipeline.rescoring.stream.in_key_order`; a task raises ``ValueError`` otherwise) and readable at these
    paths by the workers, as ``target_dir`` is writable. ``applied_members`` (sorted) / ``applied_jobs``: pairs
    to drop. ``members``: the profiled members, which sets the default ``partitions``: one per core, or one
    per :data:`RANGE_MEMBERS` members when that is more.
    """
    from pyspark.sql.pandas.types import from_arrow_schema

    n = partitions or max(spark.sparkContext.defaultParallelism, math.ceil(members / RANGE_MEMBERS))
    runs = block_ranges(bounds, n)
    shared_runs = spark.sparkContext.broadcast(runs)
    shared_applied = spark.sparkContext.broadcast((np.asarray(applied_members, np.int64),
                                                   np.asarray(applied_jobs, np.int64)))
    shared = spark.sparkContext.broadcast(rescorer)
    profile_paths, candidate_paths = [Path(f) for f in profile_files], [Path(f) for f in candidate_files]

    def results(batches: Iterator[pa.RecordBatch]) -> Iterator[BlockResult]:
        members, jobs = shared_applied.value
        for batch in batches:
            for run in batch.column(0).to_numpy(zero_copy_only=False).tolist():
                lo, hi, inner = shared_runs.value[run]
                for block in member_blocks(profile_paths, candidate_paths, inner, members, jobs, within=(lo, hi)):
                    yield score_member_block(shared.value, block, top_n, max_per_company)

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        yield write_partition_file(results(batches), target_dir)

    # One row (the run's index) per partition, in order: partition p writes run p's members.
    ids = spark.range(0, len(runs), 1, numPartitions=len(runs))
    return ids.mapInArrow(write, from_arrow_schema(WRITTEN_SCHEMA))


def rescore_frame(
    spark,
    rescorer: Rescorer,
    profiles_path: str,
    candidates_path: str,
    applied: pa.Table,
    bounds: np.ndarray,
    top_n: int,
    max_per_company: int | None,
    *,
    target_dir: str,
    partitions: int | None = None,
):
    """A DataFrame that, when collected by :func:`collect_written`, writes the recommendations into
    ``target_dir`` (one file per partition, name order = member order), grouping the candidates per member.

    ``applied``: (member_id, job_id) pairs to drop; ``bounds``: the member blocks' boundaries (ascending
    member IDs, as for the local engine); ``partitions``: Spark partitions (default one per core, or one per
    :data:`BLOCKS_PER_PARTITION` blocks when that is more).
    """
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_schema
    from pyspark.sql.types import LongType, StructField, StructType

    profiles = spark.read.parquet(profiles_path).select(*PROFILE_COLUMNS)
    candidates = (
        spark.read.parquet(candidates_path).select("member_id", "job_id")
        .groupBy("member_id").agg(F.collect_list("job_id").alias("candidate_job_ids"))
    )
    members = profiles.join(candidates, "member_id", "full_outer")
    if applied.num_rows:
        applied_lists = (
            spark.createDataFrame(applied.select(["member_id", "job_id"]).cast(
                pa.schema([("member_id", pa.int64()), ("job_id", pa.int64())])))
            .groupBy("member_id").agg(F.collect_list("job_id").alias("applied_job_ids"))
        )
        members = members.join(applied_lists, "member_id", "left")
    else:
        members = members.withColumn("applied_job_ids", F.lit(None).cast("array<bigint>"))
    members = members.select(*PROFILE_COLUMNS, "candidate_job_ids", "applied_job_ids")

    shared_bounds = spark.sparkContext.broadcast(np.asarray(bounds, dtype=np.int64))

    def add_block(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            ids = batch.column(batch.schema.get_field_index("member_id")).to_numpy(zero_copy_only=False)
            block = np.searchsorted(shared_bounds.value, ids.astype(np.int64), side="right")
            yield pa.RecordBatch.from_arrays([*batch.columns, pa.array(block, pa.int64())],
                                             names=[*batch.schema.names, BLOCK])

    blocked_schema = StructType([*members.schema.fields, StructField(BLOCK, LongType(), nullable=False)])
    blocked = members.mapInArrow(add_block, blocked_schema)
    # At least one partition per core, and about BLOCKS_PER_PARTITION blocks per partition on large days.
    n = partitions or max(spark.sparkContext.defaultParallelism, math.ceil((len(bounds) + 1) / BLOCKS_PER_PARTITION))
    blocked = blocked.repartitionByRange(n, BLOCK).sortWithinPartitions(BLOCK, "member_id")

    shared = spark.sparkContext.broadcast(rescorer)

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        yield write_partition_file(score_partition(batches, shared.value, top_n, max_per_company), target_dir)

    return blocked.mapInArrow(write, from_arrow_schema(WRITTEN_SCHEMA))

