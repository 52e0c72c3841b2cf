"""Pipeline tasks of the first stage: the daily job index update and the top-k candidate retrieval.

``update_index(ds)`` brings the latest earlier index (normally yesterday's) to the jobs of
``features/job_profiles/ds=`` and swaps it in at ``index/jobs/ds=`` atomically (a full build when there is
no earlier index or ``rebuild=True``). ``retrieve_candidates(ds)`` scores every member of
``features/member_profiles/ds=`` against the open jobs of that index with the LR-Cosine field weights and
writes ``candidates/ds=`` (member_id, job_id, score, rank).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import Settings
from pipeline.progress import progress
from pipeline.storage import Layout, atomic_directory, check_ds, column_batches, read_partition

log = logging.getLogger(__name__)


def day_bounds_us(ds: str) -> tuple[int, int]:
    """(start, end) of the UTC day ``ds`` in µs since the epoch."""
    start = dt.datetime.fromisoformat(check_ds(ds)).replace(tzinfo=dt.UTC)
    start_us = int(start.timestamp()) * 1_000_000
    return start_us, start_us + 86_400 * 1_000_000


def field_weights_path(settings: Settings) -> Path:
    """Where the full retrain writes the LR-Cosine field weights (docs/architecture.md)."""
    return settings.layout.field_weights()


def _previous_index(layout: Layout, ds: str) -> Path | None:
    """The latest index partition strictly before ``ds`` (yesterday's when the pipeline runs daily)."""
    earlier = [d for d in layout.partitions(layout.index(ds).parent) if d < ds]
    return layout.index(earlier[-1]) if earlier else None


def update_index(ds: str, settings: Settings, *, rebuild: bool = False) -> dict:
    """Update (or rebuild) the Whoosh job index of ``ds`` from ``features/job_profiles/ds=``.

    Jobs already expired at the start of ``ds`` are not indexed. Re-running a day rebuilds that day's
    partition from the same earlier index, so it is idempotent; a failed run leaves the old partition.
    Returns the run's counts (documents, added, deleted, segments, optimised, size_bytes, mode, seconds).
    """
    from retrieval import index as job_index

    layout = settings.layout
    started = time.perf_counter()
    jobs = read_partition(layout.features("job_profiles", ds))
    start_us, _ = day_bounds_us(ds)
    previous = None if rebuild else _previous_index(layout, ds)
    with atomic_directory(layout.index(ds)) as tmp:
        if previous is not None:
            stats = job_index.update_index(previous, tmp, jobs, active_from_us=start_us)
        else:
            stats = job_index.build_index(tmp, jobs, active_from_us=start_us)
    mode = f"update from {previous.name}" if previous is not None else "rebuild"
    return {"ds": ds, "mode": mode, **stats.as_dict(), "seconds": round(time.perf_counter() - started, 3)}


def read_applies(layout: Layout, ds: str) -> pa.Table:
    """(member_id, job_id) of every apply in the raw partitions up to and including ``ds``."""
    parent = layout.raw("applies", ds).parent
    days = [d for d in layout.partitions(parent) if d <= ds]
    tables = [read_partition(layout.raw("applies", d), columns=["member_id", "job_id"]) for d in days]
    if not tables:
        return pa.table({"member_id": pa.array([], pa.int64()), "job_id": pa.array([], pa.int64())})
    return pa.concat_tables(tables, promote_options="default")


def candidate_batches(
    job_matrix,
    members: pa.Table,
    field_weights: dict[str, float],
    k: int,
    *,
    applies: pa.Table | None = None,
    open_at_us: int | None = None,
    region_filter: bool = False,
    processes: int = 1,
    block_size: int = 256,
    on_members: Callable[[int], None] | None = None,
) -> Iterable[pa.RecordBatch]:
    """Candidate record batches for ``members`` against ``job_matrix`` (a ``retrieval.batch.JobMatrix``).

    Filters: jobs not open at ``open_at_us`` (posted after or expired by it), (member, job) pairs in
    ``applies``, and with ``region_filter`` jobs outside the member's region. ``on_members(n)`` is called as
    each block of ``n`` members is done (a :class:`pipeline.progress.Progress`'s ``update``).
    """
    from retrieval import batch
    from retrieval.profiles import region_strings

    if open_at_us is not None:
        job_matrix = job_matrix.select(job_matrix.open_at(open_at_us))
    member_ids, queries = batch.member_queries(members, job_matrix, field_weights)
    applied_rows = applied_cols = member_codes = job_codes = None
    if applies is not None and applies.num_rows:
        applied_rows, applied_cols = batch.applied_pairs(
            member_ids, job_matrix.job_ids, applies["member_id"].to_numpy(), applies["job_id"].to_numpy()
        )
    if region_filter:
        member_codes, job_codes = batch.region_codes(region_strings(members), job_matrix.regions)
    filters = batch.Filters(applied_rows, applied_cols, member_codes, job_codes)
    log.info("retrieving top %d of %d open jobs for %d members", k, job_matrix.n_jobs, len(member_ids))
    return batch.retrieve(
        job_matrix, queries, member_ids, k, filters=filters, block_size=block_size, processes=processes,
        on_members=on_members,
    )


def write_candidates(target: Path, batches: Iterable[pa.RecordBatch], rank_counts: np.ndarray | None = None) -> int:
    """Stream candidate batches into the partition ``target`` atomically; returns the row count.

    ``rank_counts``, when given (an int64 array of length k + 1), gets ``rank_counts[r] +=`` the rows of
    rank ``r``: see :func:`candidates_per_member`.
    """
    from retrieval.batch import CANDIDATE_SCHEMA

    rows = 0
    with atomic_directory(target) as tmp:
        # Dictionary pages on member_id only: on the other columns they cost more than half of the write time
        # (the day's largest file, 100M rows at 100k members) and make the file larger.
        with pq.ParquetWriter(tmp / "part-00000.parquet", CANDIDATE_SCHEMA, compression="zstd",
                              use_dictionary=["member_id"]) as writer:
            for record_batch in batches:
                writer.write_batch(record_batch)
                rows += record_batch.num_rows
                if rank_counts is not None and record_batch.num_rows:
                    ranks = record_batch.column("rank").to_numpy(zero_copy_only=False)
                    rank_counts += np.bincount(ranks, minlength=len(rank_counts))[: len(rank_counts)]
    return rows


def candidates_per_member(rank_counts: np.ndarray, members: int) -> dict[str, int]:
    """How many members got exactly c candidates, for each c that occurs: ``{"c": members}`` (JSON keys).

    Every member with c candidates has exactly one row of each rank 1..c, so ``rank_counts[c]`` (rows of
    rank c) is the number of members with at least c candidates; ``members`` (those scored) gives c = 0.
    """
    at_least = np.asarray(rank_counts, dtype=np.int64).copy()
    at_least[0] = members
    exactly = at_least - np.r_[at_least[1:], 0]
    return {str(c): int(n) for c, n in enumerate(exactly) if n > 0}


def _applied_lists(members: pa.Table, applies: pa.Table) -> pa.ListArray:
    """Per member row, the job IDs it applied to (list<int64>), aligned with ``members``."""
    applied_members = applies["member_id"].to_numpy()
    order = np.argsort(applied_members, kind="stable")
    applied_members, applied_jobs = applied_members[order], applies["job_id"].to_numpy()[order]
    member_ids = members["member_id"].to_numpy()
    lo = np.searchsorted(applied_members, member_ids, "left")
    lengths = np.searchsorted(applied_members, member_ids, "right") - lo
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    positions = np.repeat(lo - offsets[:-1], lengths) + np.arange(offsets[-1])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(applied_jobs[positions], pa.int64()))


def retrieve_spark(
    spark,
    job_matrix,
    members: pa.Table,
    field_weights: dict[str, float],
    k: int,
    *,
    applies: pa.Table | None = None,
    region_filter: bool = False,
    partitions: int | None = None,
):
    """The Spark variant of the batch engine: a DataFrame of candidates (member_id, job_id, score, rank), its
    partitions in (member_id, rank) order.

    The job matrix (already restricted to open jobs) is broadcast once; members are split into ranges of member
    IDs (``partitions``, default :func:`spark_partitions`) and each partition is scored with
    ``retrieval.batch.score_member_batches`` through ``mapInArrow``. The applied-to jobs travel with each
    member as an ``applied_job_ids`` list column.
    """
    from retrieval.batch import CANDIDATE_SCHEMA, score_member_batches

    if applies is not None and applies.num_rows:
        members = members.append_column("applied_job_ids", _applied_lists(members, applies))
    shared = spark.sparkContext.broadcast(job_matrix)
    weights = dict(field_weights)

    def score_partition(batches):
        return score_member_batches(batches, shared.value, weights, k, region_filter=region_filter)

    frame = spark.createDataFrame(members)
    # Ranges of member IDs, sorted: the part files, in name order, are then in member order, which lets Spark
    # re-scoring read each task's members without a shuffle (pipeline.rescoring.spark.rescore_ranges).
    frame = (frame.repartitionByRange(partitions or spark_partitions(spark, members.num_rows), "member_id")
             .sortWithinPartitions("member_id"))
    from pyspark.sql.pandas.types import from_arrow_schema

    return frame.mapInArrow(score_partition, from_arrow_schema(CANDIDATE_SCHEMA))


# Members per Spark partition of retrieval by default: 50 tasks of ~35 s at 1M members × 100k jobs in
# local[2] on this machine, so a failed task is retried cheaply and the progress lines (counted in tasks) move.
SPARK_PARTITION_MEMBERS = 20_000


def spark_partitions(spark, members: int) -> int:
    """Partitions of Spark retrieval: one per core, or one per :data:`SPARK_PARTITION_MEMBERS` members when
    that is more."""
    return max(spark.sparkContext.defaultParallelism, -(-members // SPARK_PARTITION_MEMBERS))


def default_processes() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def retrieve_candidates(
    ds: str,
    settings: Settings,
    k: int | None = None,
    *,
    region_filter: bool = False,
    processes: int | None = None,
    engine: str = "processes",
) -> dict:
    """Write ``candidates/ds=``: the top ``k`` (default ``settings.candidates_k``) open jobs per member.

    Reads the index of ``ds`` (run :func:`update_index` first), ``features/member_profiles/ds=``, the raw
    applies up to ``ds`` and the field weights (``models/lr_cosine/weights.json``, equal weights when absent).
    ``engine`` is ``processes`` (forked workers on this machine) or ``spark`` (member partitions on the
    Spark cluster of ``settings``). Returns counts for the run report.
    """
    from retrieval import batch
    from retrieval import index as job_index
    from retrieval.schema import load_field_weights

    if engine not in ("processes", "spark"):
        raise ValueError(f"engine must be 'processes' or 'spark'; got {engine!r}")
    k = int(k or settings.candidates_k)
    layout = settings.layout
    started = time.perf_counter()
    job_matrix = batch.JobMatrix.from_index(job_index.open_index(layout.index(ds)))
    members = read_partition(layout.features("member_profiles", ds))
    weights = load_field_weights(field_weights_path(settings))
    applies = read_applies(layout, ds)
    _, end_us = day_bounds_us(ds)
    if engine == "spark":
        from pipeline.spark import get_spark
        from pipeline.spark_progress import spark_progress

        open_jobs = job_matrix.select(job_matrix.open_at(end_us))
        spark = get_spark(settings)
        frame = retrieve_spark(spark, open_jobs, members, weights, k, applies=applies, region_filter=region_filter)
        with atomic_directory(layout.candidates(ds)) as tmp, spark_progress(spark, "retrieve", logger=log):
            frame.write.mode("overwrite").parquet(str(tmp / "spark"))
            for part in (tmp / "spark").glob("part-*.parquet"):
                part.rename(tmp / part.name)
            for leftover in (tmp / "spark").iterdir():
                leftover.unlink()
            (tmp / "spark").rmdir()
        # counted batch by batch: the whole rank column of a 1M-member day (10^9 rows) took the driver past
        # 12 GiB, and the kernel killed it
        rows, rank_counts = 0, np.zeros(k + 1, dtype=np.int64)
        for ranks in column_batches(layout.candidates(ds), "rank"):
            rows += ranks.size
            rank_counts += np.bincount(ranks, minlength=k + 1)[: k + 1]
    else:
        rank_counts = np.zeros(k + 1, dtype=np.int64)
        with progress(members.num_rows, "retrieve", unit="members", logger=log) as done:
            batches = candidate_batches(
                job_matrix, members, weights, k, applies=applies, open_at_us=end_us,
                region_filter=region_filter, processes=processes or default_processes(), on_members=done.update,
            )
            rows = write_candidates(layout.candidates(ds), batches, rank_counts)
    open_jobs_count = int(np.sum(job_matrix.open_at(end_us)))
    return {
        "ds": ds, "k": k, "members": members.num_rows, "open_jobs": open_jobs_count,
        "indexed_jobs": job_matrix.n_jobs, "applies_excluded_from": applies.num_rows, "candidates": rows,
        "candidates_per_member": candidates_per_member(rank_counts, members.num_rows),
        "engine": engine, "field_weights": weights, "seconds": round(time.perf_counter() - started, 3),
    }
