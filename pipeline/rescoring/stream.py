"""Streaming a partition by member blocks, and an ordered map over worker processes with bounded memory.

:func:`member_ranges` reads the rows of one or more Parquet files block by block, where block ``b`` holds the
rows whose ``member_id`` lies in ``[bounds[b-1], bounds[b])`` (the first block starts at −∞, the last ends at
+∞). When the files' row groups are in member order (their ``member_id`` statistics do not overlap, in file
order: what the local first stage and the feature job write) the row groups are read one after another and
only the rows of the current block (plus one row group) are held. Otherwise (e.g. the part files a Spark job
writes) one pass spills the rows into temporary bucket files of a bounded number of rows, each covering
consecutive blocks, which are then read back one at a time. Either way memory grows with the block, not with
the partition.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from pipeline.rescoring.block import PROFILE_COLUMNS, MemberBlock
from retrieval.worker_processes import prepare_worker_process

log = logging.getLogger(__name__)

KEY = "member_id"
DEFAULT_ROWS_PER_BUCKET = 4_000_000

T = TypeVar("T")
R = TypeVar("R")


def partition_files(path: Path) -> list[Path]:
    """The Parquet files of a partition folder in name order (or ``[path]`` for one file)."""
    path = Path(path)
    if path.is_file():
        return [path]
    files = sorted(p for p in path.glob("*.parquet") if not p.name.startswith((".", "_")))
    if not files:
        raise FileNotFoundError(f"partition has no Parquet files: {path}")
    return files


def read_key_column(files: Sequence[Path], column: str = KEY) -> np.ndarray:
    """One int64 column of every file, concatenated (e.g. the member IDs of a profile partition)."""
    parts = [pq.read_table(f, columns=[column])[column].to_numpy().astype(np.int64) for f in files]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def in_key_order(files: Sequence[Path], column: str = KEY) -> bool:
    """Whether the files' non-empty row groups, in file order, cover non-overlapping ascending ranges of
    ``column`` (from the Parquet statistics; False when a row group has none)."""
    previous_max = None
    for f in files:
        metadata = pq.ParquetFile(f).metadata
        index = metadata.schema.to_arrow_schema().get_field_index(column)
        if index < 0:
            raise ValueError(f"{f} has no column {column!r}")
        for g in range(metadata.num_row_groups):
            group = metadata.row_group(g)
            if group.num_rows == 0:
                continue
            stats = group.column(index).statistics
            if stats is None or not stats.has_min_max:
                return False
            if previous_max is not None and stats.min < previous_max:
                return False
            previous_max = stats.max
    return True


def _sorted_by_key(table: pa.Table, column: str = KEY) -> pa.Table:
    """``table`` stably sorted by ``column`` (returned as is when already in order)."""
    keys = table[column].to_numpy()
    if len(keys) < 2 or bool(np.all(keys[1:] >= keys[:-1])):
        return table
    return table.take(pa.array(np.argsort(keys, kind="stable")))


def _row_groups(files: Sequence[Path], columns: list[str], within: tuple[int | None, int | None] = (None, None),
                ) -> Iterator[pa.Table]:
    """The files' row groups in order; with ``within = (lo, hi)`` only the rows with lo <= member_id < hi (a bound
    of None is open), skipping row groups whose statistics lie outside (the files must be in key order)."""
    lo, hi = within
    bounded = lo is not None or hi is not None
    for f in files:
        parquet = pq.ParquetFile(f)
        index = parquet.schema_arrow.get_field_index(KEY)
        for g in range(parquet.metadata.num_row_groups):
            if bounded:
                stats = parquet.metadata.row_group(g).column(index).statistics
                if stats is not None and stats.has_min_max:
                    if hi is not None and stats.min >= hi:
                        return  # in key order: every later row group starts at or beyond hi too
                    if lo is not None and stats.max < lo:
                        continue
            group = parquet.read_row_group(g, columns=columns)
            if bounded:
                keys = group[KEY].to_numpy()
                keep = np.ones(len(keys), dtype=bool)
                if lo is not None:
                    keep &= keys >= lo
                if hi is not None:
                    keep &= keys < hi
                if not keep.all():
                    group = group.filter(pa.array(keep))
            yield group


def _empty(files: Sequence[Path], columns: list[str]) -> pa.Table:
    return pq.ParquetFile(files[0]).schema_arrow.empty_table().select(columns)


def _concat(parts: list[pa.Table], empty: pa.Table) -> pa.Table:
    return pa.concat_tables(parts) if parts else empty


def member_ranges(
    files: Sequence[Path],
    columns: list[str],
    bounds: np.ndarray,
    *,
    spill_dir: Path | None = None,
    rows_per_bucket: int = DEFAULT_ROWS_PER_BUCKET,
    within: tuple[int | None, int | None] | None = None,
) -> Iterator[pa.Table]:
    """Yield ``len(bounds) + 1`` tables (``columns`` of ``files``), block ``b`` with the rows whose member_id
    is in ``[bounds[b-1], bounds[b])``, each stably sorted by member_id (see the module docstring).

    ``bounds``: ascending int64 block boundaries. ``spill_dir``: where unordered input is bucketed (default a
    temporary folder); the bucket files are removed when the generator finishes or is closed. ``within``:
    ``(lo, hi)`` reads only the rows with lo <= member_id < hi (None: open), touching only the row groups that
    hold them; this needs files in key order (:func:`in_key_order`) and raises ``ValueError`` otherwise.
    """
    files = list(files)
    columns = list(dict.fromkeys([KEY, *columns]))
    bounds = np.asarray(bounds, dtype=np.int64)
    if within is not None:
        if not in_key_order(files):
            raise ValueError("reading a member range needs files in member order; "
                             f"{files[0].parent} is not (see in_key_order)")
        yield from _ordered_ranges(files, columns, bounds, within)
    elif in_key_order(files):
        yield from _ordered_ranges(files, columns, bounds)
    else:
        yield from _bucketed_ranges(files, columns, bounds, spill_dir, rows_per_bucket)


def _ordered_ranges(files: Sequence[Path], columns: list[str], bounds: np.ndarray,
                    within: tuple[int | None, int | None] = (None, None)) -> Iterator[pa.Table]:
    empty = _empty(files, columns)
    groups = _row_groups(files, columns, within)
    buffer: list[pa.Table] = []
    buffer_max: int | None = None
    exhausted = False
    for hi in [*bounds.tolist(), None]:
        # Read until a row at or beyond hi shows up: later row groups only hold larger member IDs.
        while not exhausted and (hi is None or buffer_max is None or buffer_max < hi):
            group = next(groups, None)
            if group is None:
                exhausted = True
                break
            if group.num_rows:
                group = _sorted_by_key(group)
                buffer.append(group)
                buffer_max = int(group[KEY][-1].as_py())
        out, rest = [], []
        for table in buffer:
            keys = table[KEY].to_numpy()
            cut = len(keys) if hi is None else int(np.searchsorted(keys, hi, side="left"))
            if cut:
                out.append(table.slice(0, cut))
            if cut < len(keys):
                rest.append(table.slice(cut))
        buffer = rest
        if not buffer:
            buffer_max = None
        yield _concat(out, empty)


def _bucketed_ranges(
    files: Sequence[Path], columns: list[str], bounds: np.ndarray, spill_dir: Path | None, rows_per_bucket: int
) -> Iterator[pa.Table]:
    empty = _empty(files, columns)
    n_blocks = len(bounds) + 1
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    n_buckets = max(1, min(n_blocks, math.ceil(total / max(rows_per_bucket, 1))))
    per_bucket = math.ceil(n_blocks / n_buckets)
    folder = Path(tempfile.mkdtemp(prefix="rescore-spill-", dir=spill_dir))
    log.info("input not in member order: bucketing %d rows into %d spill files", total, n_buckets)
    try:
        writers: dict[int, ipc.RecordBatchFileWriter] = {}
        try:
            for group in _row_groups(files, columns):
                if group.num_rows == 0:
                    continue
                bucket = np.searchsorted(bounds, group[KEY].to_numpy(), side="right") // per_bucket
                order = np.argsort(bucket, kind="stable")
                bucket = bucket[order]
                group = group.take(pa.array(order))
                starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
                for start, stop in zip(starts, [*starts[1:], len(bucket)], strict=True):
                    b = int(bucket[start])
                    if b not in writers:
                        writers[b] = ipc.new_file(folder / f"bucket-{b:06d}.arrow", group.schema)
                    writers[b].write_table(group.slice(start, stop - start))
        finally:
            for writer in writers.values():
                writer.close()
        for b in range(n_buckets):
            path = folder / f"bucket-{b:06d}.arrow"
            if path.exists():
                with ipc.open_file(path) as reader:
                    table = _sorted_by_key(reader.read_all())
                path.unlink()
            else:
                table = empty
            first, last = b * per_bucket, min((b + 1) * per_bucket, n_blocks)
            keys = table[KEY].to_numpy()
            cuts = [0, *np.searchsorted(keys, bounds[first:last - 1], side="left").tolist(), len(keys)]
            for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
                yield table.slice(lo, hi - lo)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def member_blocks(
    profile_files: Sequence[Path],
    candidate_files: Sequence[Path],
    bounds: np.ndarray,
    applied_members: np.ndarray,
    applied_jobs: np.ndarray,
    *,
    spill_dir: Path | None = None,
    within: tuple[int | None, int | None] | None = None,
) -> Iterator[MemberBlock]:
    """Yield a :class:`MemberBlock` per member range (``len(bounds) + 1`` blocks), streaming both partitions.

    ``applied_members`` must be sorted (as the scoring task reads them). ``within``: only the members with
    lo <= member_id < hi, for ``bounds`` inside that range (both partitions must then be in member order; see
    :func:`member_ranges`).
    """
    bounds = np.asarray(bounds, dtype=np.int64)
    if within is not None:
        lo, hi = within
        first = 0 if lo is None else int(np.searchsorted(applied_members, lo, side="left"))
        last = len(applied_members) if hi is None else int(np.searchsorted(applied_members, hi, side="left"))
        applied_members, applied_jobs = applied_members[first:last], applied_jobs[first:last]
    profiles = member_ranges(profile_files, PROFILE_COLUMNS, bounds, spill_dir=spill_dir, within=within)
    candidates = member_ranges(candidate_files, ["member_id", "job_id"], bounds, spill_dir=spill_dir, within=within)
    cuts = [0, *np.searchsorted(applied_members, bounds, side="left").tolist(), len(applied_members)]
    for b, (profile_rows, candidate_rows) in enumerate(zip(profiles, candidates, strict=True)):
        start, stop = cuts[b], cuts[b + 1]  # the block's applied pairs
        yield MemberBlock.of(
            profile_rows,
            candidate_rows["member_id"].to_numpy(zero_copy_only=False),
            candidate_rows["job_id"].to_numpy(zero_copy_only=False),
            applied_members[start:stop],
            applied_jobs[start:stop],
        )


def ordered_map(
    function: Callable[[T], R], items: Iterable[T], processes: int, *, in_flight: int | None = None
) -> Iterator[R]:
    """``map(function, items)`` in input order, on ``processes`` forked workers when more than one.

    At most ``in_flight`` items (default 2 per worker) are submitted and not yet returned, so the input is
    read as fast as the workers go, not ahead of them (``Pool.imap`` would read all of it). Module state set
    before the call is shared with the workers copy-on-write.
    """
    if processes <= 1:
        yield from map(function, items)
        return
    in_flight = in_flight or 2 * processes
    pool = multiprocessing.get_context("fork").Pool(processes, initializer=prepare_worker_process, initargs=(processes,))
    finished = False
    try:
        pending: deque = deque()
        for item in items:
            pending.append(pool.apply_async(function, (item,)))
            if len(pending) >= in_flight:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
        # Normal end: workers exit on their own. No terminate() here: after close() it races with exiting
        # workers (it takes the task queue's lock for good) and once left a worker waiting forever.
        pool.close()
        pool.join()
        finished = True
    finally:
        if not finished:  # error or early exit: kill the workers
            pool.terminate()
            pool.join()
