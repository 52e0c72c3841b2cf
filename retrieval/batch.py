"""Batch first-stage retrieval: the job index as a sparse term×job matrix, members scored in blocks.

:class:`JobMatrix` reads every posting list of the Whoosh index through its reader API into a CSR matrix
D (terms × jobs, columns in job_id order, values the exact float64 posting weights). A block of member
queries Q (members × terms, entries ``w_field · q_term``) is scored as ``Q @ D`` — the same sum
Σ_field w_field Σ_term q_term d_term the Whoosh :class:`~retrieval.weighting.CosineWeighting` computes —
and the top k of each row is found with ``np.argpartition``. Ranking: score descending, then job_id
ascending, so the result is deterministic even with exact ties. Only jobs matching at least one query term
(score > 0) are candidates, like a Whoosh search.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from retrieval.profiles import Vocabulary, check_profile_table, profiles_to_csr, region_strings, timestamps_us
from retrieval.schema import PROFILE_FIELDS, decode_term_weight
from retrieval.worker_processes import prepare_worker_process

log = logging.getLogger(__name__)

CANDIDATE_SCHEMA = pa.schema(
    [("member_id", pa.int64()), ("job_id", pa.int64()), ("score", pa.float64()), ("rank", pa.int32())]
)


@dataclass(frozen=True)
class JobMatrix:
    """Jobs as a term×job CSR matrix plus the per-job facts the filters need (arrays aligned on columns)."""

    matrix: sp.csr_matrix  # vocab.size × n_jobs
    job_ids: np.ndarray  # int64, ascending
    posted_at_us: np.ndarray  # int64
    expires_at_us: np.ndarray  # int64
    regions: np.ndarray  # str (object)
    vocab: Vocabulary

    @property
    def n_jobs(self) -> int:
        return len(self.job_ids)

    @functools.cached_property
    def split(self) -> SplitMatrix:
        """The matrix split into dense frequent-term rows and a sparse tail (built once, on first use)."""
        return SplitMatrix.of(self.matrix)

    def select(self, keep: np.ndarray) -> JobMatrix:
        """The jobs where the boolean array ``keep`` is true (vocabulary unchanged)."""
        cols = np.flatnonzero(keep)
        return JobMatrix(
            self.matrix[:, cols].tocsr(), self.job_ids[cols], self.posted_at_us[cols],
            self.expires_at_us[cols], self.regions[cols], self.vocab,
        )

    def open_at(self, end_us: int) -> np.ndarray:
        """Boolean mask of jobs posted before ``end_us`` and not expired by then (µs since epoch, UTC)."""
        return (self.posted_at_us < end_us) & (self.expires_at_us > end_us)

    @classmethod
    def from_index(cls, ix) -> JobMatrix:
        """Read the posting lists and stored job facts of a Whoosh job index (live documents only)."""
        started = time.perf_counter()
        with ix.reader() as reader:
            docnums, job_ids, posted, expires, regions = [], [], [], [], []
            for docnum, stored in reader.iter_docs():
                docnums.append(docnum)
                job_ids.append(stored["job_id"])
                posted.append(stored.get("posted_at_us", 0))
                expires.append(stored.get("expires_at_us", 0))
                regions.append(stored.get("job_region", ""))
            job_ids_arr = np.asarray(job_ids, dtype=np.int64)
            order = np.argsort(job_ids_arr, kind="stable")
            column_of_doc = np.full(reader.doc_count_all(), -1, dtype=np.int64)
            column_of_doc[np.asarray(docnums, dtype=np.int64)[order]] = np.arange(len(order))

            terms = {field: [t.decode("utf-8") for t in reader.lexicon(field)] for field in PROFILE_FIELDS}
            vocab = Vocabulary({field: pa.array(terms[field], pa.string()) for field in PROFILE_FIELDS})
            rows_all, docs_all, vals_all = [], [], []
            for field in PROFILE_FIELDS:
                # Segments each have their own lexicon; map their terms (bytes) to rows of the merged one.
                row_of_term = {t.encode("utf-8"): i + vocab.offsets[field] for i, t in enumerate(terms[field])}
                for segment, doc_offset in reader.leaf_readers():
                    for btext in segment.lexicon(field):
                        ids, vals = _read_postings(segment.postings(field, btext))
                        rows_all.append(np.full(len(ids), row_of_term[btext], dtype=np.int64))
                        docs_all.append(ids + doc_offset)
                        vals_all.append(vals)
        rows = np.concatenate(rows_all) if rows_all else np.zeros(0, np.int64)
        cols = column_of_doc[np.concatenate(docs_all)] if docs_all else np.zeros(0, np.int64)
        vals = np.concatenate(vals_all) if vals_all else np.zeros(0)
        if (cols < 0).any():
            raise RuntimeError("job index has postings of documents without stored fields; rebuild the index")
        # Deleted documents leave their terms in the lexicon until a merge: keep only terms with live
        # postings, so an updated index and a rebuilt one give the same vocabulary and matrix.
        live = np.zeros(vocab.size, dtype=bool)
        live[rows] = True
        new_row = np.cumsum(live) - 1
        vocab = Vocabulary({
            field: vocab.terms[field].filter(pa.array(live[start : start + len(vocab.terms[field])]))
            for field, start in vocab.offsets.items()
        })
        rows = new_row[rows]
        matrix = sp.csr_matrix((vals, (rows, cols)), shape=(vocab.size, len(order)))
        matrix.sort_indices()
        log.info(
            "read job index: %d jobs, %d terms, %d postings in %.1fs",
            len(order), vocab.size, matrix.nnz, time.perf_counter() - started,
        )
        return cls(
            matrix, job_ids_arr[order], np.asarray(posted, np.int64)[order],
            np.asarray(expires, np.int64)[order], np.asarray(regions, dtype=object)[order], vocab,
        )

    @classmethod
    def from_profiles(cls, jobs: pa.Table, vocab: Vocabulary | None = None) -> JobMatrix:
        """The same matrix built straight from a job profile table, without an index (reference path)."""
        check_profile_table(jobs, "job_id", "jobs")
        jobs = jobs.take(pa.array(np.argsort(jobs["job_id"].to_numpy(), kind="stable")))
        vocab = vocab or Vocabulary.from_tables(jobs)
        matrix = profiles_to_csr(jobs, vocab).T.tocsr()
        n = jobs.num_rows

        def column(name: str) -> np.ndarray:
            return timestamps_us(jobs[name]) if name in jobs.column_names else np.zeros(n, np.int64)

        regions = region_strings(jobs)
        return cls(matrix, jobs["job_id"].to_numpy(), column("posted_at"), column("expires_at"), regions, vocab)


def _read_postings(matcher) -> tuple[np.ndarray, np.ndarray]:
    """(docnums, exact weights) of one term's postings.

    Fast path for an on-disk Whoosh 3 codec matcher without deletions: decode whole blocks (ids tuple and the
    packed float64 values) instead of stepping posting by posting. Anything else (inlined postings, a
    deletion filter) goes through the generic matcher interface.
    """
    if type(matcher).__name__ == "W3LeafMatcher" and getattr(matcher, "_fixedsize", None) == 8:
        ids, vals = [], []
        while matcher.is_active():
            matcher._read_ids()
            ids.append(np.asarray(matcher._ids, dtype=np.int64))
            vals.append(np.frombuffer(matcher._data[2], dtype="<f8"))
            matcher._next_block()
        return np.concatenate(ids), np.concatenate(vals).astype(np.float64)
    ids_list, vals_list = [], []
    while matcher.is_active():
        ids_list.append(matcher.id())
        vals_list.append(decode_term_weight(matcher.value()))
        matcher.next()
    return np.asarray(ids_list, dtype=np.int64), np.asarray(vals_list, dtype=np.float64)


def top_k_rows(
    scores: np.ndarray, k: int, *, exact: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row of ``scores`` (members × jobs; entries <= 0 mean "not a candidate"), the k highest entries.

    Returns flat arrays (row, column, score, rank 1-based), rows ascending, within a row by score descending
    then column ascending; exact ties at the k-th place are resolved by lower column too.

    Instead of a partial sort of every row, a per-row threshold at or below the k-th largest score is read
    off a strided sample of the columns (``exact``: from a partial sort of the row); the entries at or above
    it (about k·(1+4/√μ), μ the expected sample hits) are then sorted exactly. Rows where the sampled
    threshold turns out too high are redone with ``exact``.
    """
    n_rows, n_cols = scores.shape
    kk = min(k, n_cols)
    if kk == 0 or n_rows == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0), empty.astype(np.int32)
    threshold = np.zeros(n_rows)
    if kk < n_cols and exact:
        threshold = np.partition(scores, n_cols - kk, axis=1)[:, n_cols - kk]
    elif kk < n_cols:
        step = max(1, min(16, n_cols // (4 * kk)))
        sample = scores[:, ::step]
        expected = kk * sample.shape[1] / n_cols
        rank = min(sample.shape[1], int(np.ceil(expected + 4.0 * np.sqrt(expected) + 1)))
        threshold = np.partition(sample, sample.shape[1] - rank, axis=1)[:, sample.shape[1] - rank]
    threshold = np.maximum(threshold, np.finfo(np.float64).tiny)  # only positive scores are candidates
    # Flat positions, then (row, column): 2-3x faster than the 2-D np.nonzero on a block × jobs array.
    flat = np.flatnonzero(scores >= threshold[:, None])
    rows, cols = np.divmod(flat, n_cols)
    counts = np.bincount(rows, minlength=n_rows)
    redo = np.flatnonzero((counts < kk) & (threshold > np.finfo(np.float64).tiny)) if not exact else []
    if len(redo):
        keep = ~np.isin(rows, redo)
        rows, cols, flat = rows[keep], cols[keep], flat[keep]
        counts[redo] = 0
    # Sort each row's candidates in a padded rows × max-candidates array: the flat positions list columns in
    # ascending order, so a stable sort on -score leaves tied scores in job order.
    width = int(counts.max()) if len(rows) else 0
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(len(rows)) - starts[rows]
    padded = np.full((n_rows, width), np.inf)
    padded[rows, slot] = -scores.ravel()[flat]
    padded_cols = np.zeros((n_rows, width), dtype=np.int64)
    padded_cols[rows, slot] = cols
    order = np.argsort(padded, axis=1, kind="stable")[:, :kk]
    values = -np.take_along_axis(padded, order, 1)
    top = np.take_along_axis(padded_cols, order, 1)
    keep = np.isfinite(values)
    out = [
        np.nonzero(keep)[0], top[keep], values[keep],
        np.broadcast_to(np.arange(1, order.shape[1] + 1, dtype=np.int32), order.shape)[keep],
    ]
    if len(redo):
        again = top_k_rows(scores[redo], k, exact=True)
        merged = [np.concatenate([a, b]) for a, b in zip(out, (redo[again[0]], *again[1:]), strict=True)]
        by_row = np.argsort(merged[0], kind="stable")
        out = [a[by_row] for a in merged]
    return out[0], out[1], out[2], out[3]


@dataclass(frozen=True)
class SplitMatrix:
    """The term×job matrix split for speed: rows of frequent terms dense (scored with one BLAS matrix
    product, where most members of a block share them), the long tail sparse (a sparse product)."""

    heavy_terms: np.ndarray  # term rows held dense
    heavy: np.ndarray  # len(heavy_terms) × n_jobs, C order
    light: sp.csr_matrix  # all terms × n_jobs with the heavy rows emptied

    @classmethod
    def of(cls, matrix: sp.csr_matrix, *, min_df_fraction: float = 1 / 32, max_heavy: int = 256) -> SplitMatrix:
        matrix = matrix.tocsr()
        df = np.diff(matrix.indptr)
        by_df = np.argsort(-df, kind="stable")[:max_heavy]
        heavy_terms = np.sort(by_df[df[by_df] >= max(1.0, min_df_fraction * matrix.shape[1])])
        heavy = np.ascontiguousarray(matrix[heavy_terms].toarray())
        keep_rows = np.ones(matrix.shape[0], dtype=bool)
        keep_rows[heavy_terms] = False
        light = sp.diags(keep_rows.astype(np.float64)) @ matrix
        light.eliminate_zeros()
        return cls(heavy_terms, heavy, light.tocsr())

    def scores(self, queries: sp.csr_matrix) -> np.ndarray:
        """Dense members × jobs scores ``queries @ matrix``."""
        out = queries[:, self.heavy_terms].toarray() @ self.heavy if len(self.heavy_terms) else None
        tail = (queries @ self.light).tocsr()
        if out is None:
            return tail.toarray()
        # (row, column) pairs are unique in a canonical CSR, so a plain fancy-index add is exact; on flat
        # positions it is faster than with a (rows, columns) pair of index arrays.
        flat = np.repeat(np.arange(tail.shape[0], dtype=np.int64) * out.shape[1], np.diff(tail.indptr))
        flat += tail.indices
        out = np.ascontiguousarray(out)  # so that ravel() is a view (a no-op for a matmul's result)
        out.ravel()[flat] += tail.data
        return out


def score_block(
    queries: sp.csr_matrix,
    jobs: sp.csr_matrix | SplitMatrix,
    k: int,
    *,
    exclude_rows: np.ndarray | None = None,
    exclude_cols: np.ndarray | None = None,
    member_regions: np.ndarray | None = None,
    job_regions: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Top-k of one block of member queries against all jobs, with the filters applied.

    ``exclude_rows``/``exclude_cols``: (row in block, job column) pairs to drop (jobs already applied to);
    ``member_regions``/``job_regions``: integer region codes, a member with code >= 0 only gets jobs of its
    region. Returns (row in block, job column, score, rank).
    """
    scores = jobs.scores(queries) if isinstance(jobs, SplitMatrix) else (queries @ jobs).toarray()
    if exclude_rows is not None and len(exclude_rows):
        scores[exclude_rows, exclude_cols] = 0.0
    if member_regions is not None:
        constrained = member_regions >= 0
        if constrained.any():
            mismatch = member_regions[constrained][:, None] != job_regions[None, :]
            sub = scores[constrained]
            sub[mismatch] = 0.0
            scores[constrained] = sub
    return top_k_rows(scores, k)


@dataclass(frozen=True)
class Filters:
    """Retrieval filters, aligned with the query rows and the job columns of a :class:`JobMatrix`.

    ``applied_rows``/``applied_cols``: (query row, job column) pairs to exclude. ``member_region_codes``:
    per query row a code into ``region_names`` (−1 = no region constraint), with ``job_region_codes`` the
    code of each job column; both None to disable the region constraint.
    """

    applied_rows: np.ndarray | None = None
    applied_cols: np.ndarray | None = None
    member_region_codes: np.ndarray | None = None
    job_region_codes: np.ndarray | None = None


def applied_pairs(
    member_ids: np.ndarray, job_ids: np.ndarray, applied_member_ids: np.ndarray, applied_job_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(query row, job column) pairs of applies whose member and job are both being scored, sorted by row.

    ``member_ids`` are the query rows' IDs (any order, unique) and ``job_ids`` the ascending job columns.
    """
    member_order = np.argsort(member_ids, kind="stable")
    sorted_members = member_ids[member_order]
    m_pos = np.searchsorted(sorted_members, applied_member_ids)
    j_pos = np.searchsorted(job_ids, applied_job_ids)
    m_ok = (m_pos < len(sorted_members)) & (sorted_members[np.minimum(m_pos, len(sorted_members) - 1)] == applied_member_ids)
    j_ok = (j_pos < len(job_ids)) & (job_ids[np.minimum(j_pos, max(len(job_ids) - 1, 0))] == applied_job_ids)
    ok = m_ok & j_ok
    rows, cols = member_order[m_pos[ok]], j_pos[ok]
    order = np.argsort(rows, kind="stable")
    return rows[order], cols[order]


def region_codes(member_regions: np.ndarray, job_regions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of region strings shared by members and jobs; empty/None member regions get −1."""
    names = np.unique(np.asarray([r or "" for r in job_regions], dtype=object).astype(str))
    job_codes = np.searchsorted(names, np.asarray(job_regions, dtype=object).astype(str))
    members = np.asarray(member_regions, dtype=object)
    empty = np.asarray([r is None or r == "" for r in members])
    members = np.where(empty, "", members).astype(str)
    pos = np.minimum(np.searchsorted(names, members), max(len(names) - 1, 0))
    found = (len(names) > 0) & (names[pos] == members) if len(names) else np.zeros(len(members), bool)
    # A member whose region no job has must get no job: give it a code no job carries.
    member_codes = np.where(found, pos, len(names))
    return np.where(empty, -1, member_codes).astype(np.int64), job_codes.astype(np.int64)


# State shared with forked worker processes (set before the pool starts, read-only in workers).
_SHARED: dict = {}


def _block_task(start: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    s = _SHARED
    stop = min(start + s["block_size"], s["queries"].shape[0])
    filters: Filters = s["filters"]
    kwargs = {}
    if filters.applied_rows is not None:
        lo, hi = np.searchsorted(filters.applied_rows, [start, stop])
        kwargs["exclude_rows"] = filters.applied_rows[lo:hi] - start
        kwargs["exclude_cols"] = filters.applied_cols[lo:hi]
    if filters.member_region_codes is not None:
        kwargs["member_regions"] = filters.member_region_codes[start:stop]
        kwargs["job_regions"] = filters.job_region_codes
    rows, cols, scores, ranks = score_block(s["queries"][start:stop], s["jobs"], s["k"], **kwargs)
    return start, rows + start, cols, scores, ranks


def retrieve(
    jobs: JobMatrix,
    queries: sp.csr_matrix,
    member_ids: np.ndarray,
    k: int,
    *,
    filters: Filters | None = None,
    block_size: int = 256,
    processes: int = 1,
    on_members: Callable[[int], None] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Top-k jobs of every query row, as record batches of :data:`CANDIDATE_SCHEMA`, in query-row order.

    ``queries`` is members × ``jobs.vocab`` terms (see :func:`member_queries`); ``processes`` > 1 scores
    blocks in forked worker processes that share the job matrix copy-on-write. ``on_members(n)``, when
    given, is called after each block's batch is consumed with the number of query rows (members) it
    covered, members without candidates included (a progress hook; without it a log line every 30 s).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1; got k={k}")
    if queries.shape[1] != jobs.matrix.shape[0]:
        raise ValueError("queries and job matrix use different vocabularies; build queries with jobs.vocab")
    _SHARED.update(
        queries=queries.tocsr(), jobs=jobs.split, k=k, block_size=block_size, filters=filters or Filters()
    )
    starts = range(0, queries.shape[0], block_size)
    started = time.perf_counter()
    try:
        if processes > 1 and len(starts) > 1:
            pool = multiprocessing.get_context("fork").Pool(
                processes, initializer=prepare_worker_process, initargs=(processes,)
            )
            finished = False
            try:
                yield from _batches(
                    pool.imap(_block_task, starts), member_ids, jobs.job_ids, started, block_size, on_members
                )
                # Normal end: workers exit on their own. No terminate() here: after close() it races with
                # exiting workers (it takes the task queue's lock for good) and once left a worker waiting
                # forever.
                pool.close()
                pool.join()
                finished = True
            finally:
                if not finished:  # error or early exit: kill the workers
                    pool.terminate()
                    pool.join()
        else:
            yield from _batches(map(_block_task, starts), member_ids, jobs.job_ids, started, block_size, on_members)
    finally:
        _SHARED.clear()


def _batches(
    results,
    member_ids: np.ndarray,
    job_ids: np.ndarray,
    started: float,
    block_size: int,
    on_members: Callable[[int], None] | None,
) -> Iterator[pa.RecordBatch]:
    last_log = started
    for start, rows, cols, scores, ranks in results:
        yield pa.RecordBatch.from_arrays(
            [pa.array(member_ids[rows]), pa.array(job_ids[cols]), pa.array(scores), pa.array(ranks)],
            schema=CANDIDATE_SCHEMA,
        )
        if on_members is not None:
            on_members(min(block_size, len(member_ids) - start))
            continue
        now = time.perf_counter()
        if now - last_log > 30:
            log.info("retrieval: %d members scored in %.0fs", start, now - started)
            last_log = now


def member_queries(
    members: pa.Table, jobs: JobMatrix, field_weights: Mapping[str, float]
) -> tuple[np.ndarray, sp.csr_matrix]:
    """(member_ids, query matrix members × job terms with entries ``w_field · q_term``) of a profile table."""
    check_profile_table(members, "member_id", "members")
    return members["member_id"].to_numpy(), profiles_to_csr(members, jobs.vocab, field_weights)


def score_member_batches(
    member_batches: Iterable[pa.RecordBatch],
    jobs: JobMatrix,
    field_weights: Mapping[str, float],
    k: int,
    *,
    region_filter: bool = False,
    block_size: int = 256,
) -> Iterator[pa.RecordBatch]:
    """Score Arrow batches of member profiles (one partition of a distributed member table).

    Each batch holds member_id, the six profile columns and optionally ``applied_job_ids`` (list<int64>,
    jobs to exclude for that member). This is the per-partition function of a Spark ``mapInArrow``:
    it depends only on Arrow, NumPy and SciPy, and yields batches of :data:`CANDIDATE_SCHEMA`.
    """
    from retrieval.profiles import region_strings

    for record_batch in member_batches:
        members = pa.Table.from_batches([record_batch])
        if members.num_rows == 0:
            continue
        member_ids, queries = member_queries(members, jobs, field_weights)
        applied_rows = applied_cols = member_codes = job_codes = None
        if "applied_job_ids" in members.column_names:
            lists = members["applied_job_ids"].combine_chunks()
            lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy()
            applied_members = np.repeat(member_ids, lengths)
            applied_jobs = pc.list_flatten(lists).to_numpy(zero_copy_only=False).astype(np.int64)
            applied_rows, applied_cols = applied_pairs(member_ids, jobs.job_ids, applied_members, applied_jobs)
        if region_filter:
            member_codes, job_codes = region_codes(region_strings(members), jobs.regions)
        filters = Filters(applied_rows, applied_cols, member_codes, job_codes)
        yield from retrieve(jobs, queries, member_ids, k, filters=filters, block_size=block_size)
