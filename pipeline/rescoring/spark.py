"""Re-scoring on Spark: members partitioned, the laid-out model and job side broadcast, Arrow batches per block.

Two ways, both cutting members into the same blocks as the local engine (block ``b`` = member IDs in
``[bounds[b-1], bounds[b])``), so that every floating-point operation, and so every recommendation, is the
local engine's:

- :func:`rescore_ranges`, when the profile and candidate partitions are in member order (what the feature job,
  the local first stage and the Spark first stage write): each Spark partition is a range of consecutive
  blocks, and its task reads just that member range's row groups from the partitions (which the workers see,
  as every Spark step here reads and writes the data folder) and scores block by block. Nothing is shuffled.
- :func:`rescore_frame`, for partitions in any order: the member table (profiles, first-stage candidates and recent applies as list columns, one row per member,
built by a group-by over every candidate pair) is range-partitioned by block and sorted by (block, member_id);
each partition's Arrow batches are regrouped into whole blocks. At 1M members × 1,000 candidates that
group-by shuffles 10⁹ rows and took 2.5× the local engine's time on 2 cores.

Either way each block is scored with :func:`pipeline.rescoring.block.score_member_block`, and the output part
files, read in name order, are in (member_id, rank) order like the local engine's one file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.rescoring.block import (
    PROFILE_COLUMNS,
    RECOMMENDATION_SCHEMA,
    BlockResult,
    MemberBlock,
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
    on_block: Callable[[BlockResult], None] | None = None,
) -> Iterator[pa.RecordBatch]:
    """The ``mapInArrow`` function: batches sorted by (block, member_id) in, recommendations out.

    Rows of one block may arrive over several batches; a block is scored once its last row has been seen.
    ``on_block`` is called with each block's result (the counts of the run report).
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
                yield from _score(pending, rescorer, top_n, max_per_company, on_block)
                pending = []
            current = blocks[start]
            pending.append(table.slice(start, stop - start))
    if pending:
        yield from _score(pending, rescorer, top_n, max_per_company, on_block)


def _score(parts: list[pa.Table], rescorer: Rescorer, top_n: int, cap: int | None,
           on_block: Callable[[BlockResult], None] | None) -> Iterator[pa.RecordBatch]:
    result = score_member_block(rescorer, block_of_rows(pa.concat_tables(parts)), top_n, cap)
    if on_block is not None:
        on_block(result)
    if result.recommendations.num_rows:
        yield result.recommendations


def _counters(spark) -> dict:
    return {name: spark.sparkContext.accumulator(0) for name in COUNTS}


def _adder(counters: dict) -> Callable[[BlockResult], None]:
    def count(result: BlockResult) -> None:
        for name, counter in counters.items():
            counter.add(int(getattr(result, name)))
    return count


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
    partitions: int | None = None,
):
    """(DataFrame of :data:`RECOMMENDATION_SCHEMA` with partitions in member order, counters), reading each
    partition's member range straight from the files (see the module docstring).

    ``profile_files``/``candidate_files``: the partitions' Parquet files in name order, in member order
    (:func:`pipeline.rescoring.stream.in_key_order`; a task raises ``ValueError`` otherwise) and readable at these
    paths by the workers. ``applied_members`` (sorted) / ``applied_jobs``: pairs to drop. ``members``: the
    profiled members, which sets the default ``partitions``: one per core, or one per :data:`RANGE_MEMBERS`
    members when that is more. ``counters`` as for :func:`rescore_frame`.
    """
    from pathlib import Path

    from pyspark.sql.pandas.types import from_arrow_schema

    n = partitions or max(spark.sparkContext.defaultParallelism, math.ceil(members / RANGE_MEMBERS))
    runs = block_ranges(bounds, n)
    shared_runs = spark.sparkContext.broadcast(runs)
    shared_applied = spark.sparkContext.broadcast((np.asarray(applied_members, np.int64),
                                                   np.asarray(applied_jobs, np.int64)))
    shared = spark.sparkContext.broadcast(rescorer)
    profile_paths, candidate_paths = [Path(f) for f in profile_files], [Path(f) for f in candidate_files]
    counters = _counters(spark)
    count = _adder(counters)

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        members, jobs = shared_applied.value
        for batch in batches:
            for run in batch.column(0).to_numpy(zero_copy_only=False).tolist():
                lo, hi, inner = shared_runs.value[run]
                blocks = member_blocks(profile_paths, candidate_paths, inner, members, jobs, within=(lo, hi))
                for block in blocks:
                    result = score_member_block(shared.value, block, top_n, max_per_company)
                    count(result)
                    if result.recommendations.num_rows:
                        yield result.recommendations

    # One row (the run's index) per partition, in order: a partition's output is its run's members in order.
    ids = spark.range(0, len(runs), 1, numPartitions=len(runs))
    return ids.mapInArrow(score, from_arrow_schema(RECOMMENDATION_SCHEMA)), counters


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
    partitions: int | None = None,
):
    """(DataFrame of :data:`RECOMMENDATION_SCHEMA` with partitions in member order, counters).

    ``applied``: (member_id, job_id) pairs to drop; ``bounds``: the member blocks' boundaries (ascending
    member IDs, as for the local engine); ``partitions``: Spark partitions (default one per core, or one per
    :data:`BLOCKS_PER_PARTITION` blocks when that is more). ``counters``: a Spark accumulator per name of :data:`COUNTS`,
    summed over the blocks once an action has run the frame (a retried task would count its blocks twice).
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
    counters = _counters(spark)
    count = _adder(counters)

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return score_partition(batches, shared.value, top_n, max_per_company, count)

    return blocked.mapInArrow(score, from_arrow_schema(RECOMMENDATION_SCHEMA)), counters

