"""Scoring one block of members: filters, fallback pool, the GLMix score by one product plus gathers, top N,
and the score's parts ("why this job") for the kept pairs only.

The same function runs in the local engine's worker processes and in the Spark engine's ``mapInArrow``
partitions, so both engines write the same recommendations.

Parts (columns of :data:`RECOMMENDATION_SCHEMA` after ``model_version``, see :func:`pair_parts`)::

    score = part_global + part_member + part_job
    part_global = part_main + part_cross + Σ_f cos_<f>
    part_main   = b₀ + b_pos·slot + member one-hot main effects + job one-hot main effects
    part_cross  = region match + member×job crosses
    cos_<f>     = b_f · clip(cos_f(m, j), 0, 1)
    part_member = α_m0 + α_m·s_j,   part_job = β_j0 + q_m·β_j

They are computed pair by pair after the top N (gathers and row-wise sparse dots over the kept pairs), so they
cost O(top N) per member; they equal the score up to float rounding (the product path leaves out the
[0, 1] clip of unit-norm fields, which changes a cosine by at most ~1e-12).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from pipeline.features.pairs import PairRows, ProfileBlock, field_cosine
from pipeline.features.vocab import CATEGORICAL_FIELDS, FIELDS
from pipeline.rescoring.layout import IdIndex, Rescorer, unit_nonnegative

DEFAULT_MAX_PER_COMPANY = 10
# The score's parts, in the order of the recommendations' columns (see the module docstring).
COSINE_COLUMNS = tuple(f"cos_{f}" for f in FIELDS)
PART_COLUMNS = ("part_global", "part_member", "part_job", "part_main", "part_cross", *COSINE_COLUMNS)
RECOMMENDATION_SCHEMA = pa.schema(
    [
        pa.field("member_id", pa.int64()),
        pa.field("rank", pa.int32()),
        pa.field("job_id", pa.int64()),
        pa.field("score", pa.float64()),
        pa.field("model_version", pa.string()),
        *(pa.field(name, pa.float64()) for name in PART_COLUMNS),
    ]
)
PROFILE_COLUMNS = ["member_id", *FIELDS]


def recommendation_writer(path) -> pq.ParquetWriter:
    """A Parquet writer of :data:`RECOMMENDATION_SCHEMA` rows at ``path``: what both engines write."""
    # Dictionary pages only where values repeat: on the float columns they cost a third of the write time
    # and make the file larger.
    return pq.ParquetWriter(path, RECOMMENDATION_SCHEMA, compression="zstd",
                            use_dictionary=["member_id", "model_version"])


def sorted_distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (``np.unique`` without its slow hash path on large int arrays)."""
    ordered = np.sort(values)
    if len(ordered) == 0:
        return ordered
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]]


def contains(sorted_values: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Whether each of ``values`` is in the ascending ``sorted_values`` (binary search)."""
    if len(sorted_values) == 0:
        return np.zeros(len(values), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_values, values), len(sorted_values) - 1)
    return sorted_values[pos] == values


def rank_in_groups(sorted_keys: np.ndarray) -> np.ndarray:
    """0-based position of each element inside its run of equal keys (``sorted_keys`` grouped)."""
    n = len(sorted_keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    return np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))


def select_top(
    member_rows: np.ndarray,
    job_rows: np.ndarray,
    scores: np.ndarray,
    company: np.ndarray,
    top_n: int,
    max_per_company: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Company cap then top N per member: (member_rows, job_rows, scores, 1-based ranks), sorted by rank.

    ``company`` holds a dense company code per job row. Equal scores keep the input order, so feeding
    pairs in (member, job_id) order breaks ties on job_id. This sorts every pair; re-scoring uses
    :func:`top_per_member`, which gives the same result sorting only each member's best pairs (this function
    is its reference in the tests).
    """
    order = np.argsort(-scores, kind="stable")
    order = order[np.argsort(member_rows[order], kind="stable")]
    return _capped_top(member_rows[order], job_rows[order], scores[order], company, top_n, max_per_company)


def _capped_top(rows: np.ndarray, jobs: np.ndarray, values: np.ndarray, company: np.ndarray, top_n: int,
                max_per_company: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Of pairs sorted by row and, within a row, best first: at most ``max_per_company`` per (row, company),
    then the first ``top_n`` per row; (rows, jobs, values, 1-based rank)."""
    if max_per_company is not None and len(rows):
        # Stable sort on (row, company) keeps score order inside each group: rank = offset in group.
        key = rows.astype(np.int64) * (int(company.max()) + 1) + company[jobs]
        by_group = np.argsort(key, kind="stable")
        keep = np.empty(len(rows), dtype=bool)
        keep[by_group] = rank_in_groups(key[by_group]) < max_per_company
        rows, jobs, values = rows[keep], jobs[keep], values[keep]
    rank = rank_in_groups(rows)
    keep = rank < top_n
    return rows[keep], jobs[keep], values[keep], rank[keep] + 1


@dataclass(frozen=True)
class MemberBlock:
    """The inputs of one block of members.

    Attributes:
        member_ids: ascending distinct member IDs of the block (profile members and candidate members).
        profiles: ``member_id`` and the six profile columns, one row per entry of ``member_ids`` (empty
            profiles for members that have none).
        candidate_members, candidate_jobs: the block's first-stage candidate pairs (any order, repeats
            allowed).
        applied_members, applied_jobs: pairs to drop (jobs the members applied to lately).
    """

    member_ids: np.ndarray
    profiles: pa.Table
    candidate_members: np.ndarray
    candidate_jobs: np.ndarray
    applied_members: np.ndarray
    applied_jobs: np.ndarray

    @classmethod
    def of(
        cls,
        profiles: pa.Table,
        candidate_members: np.ndarray,
        candidate_jobs: np.ndarray,
        applied_members: np.ndarray | None = None,
        applied_jobs: np.ndarray | None = None,
    ) -> MemberBlock:
        """A block from its members' profile rows (any order; at most one row per member) and candidates.

        Members that have candidates but no profile row get an empty profile (they still get scored).
        """
        profiles = profiles.select(PROFILE_COLUMNS)
        candidate_members = np.asarray(candidate_members, dtype=np.int64)
        known = profiles["member_id"].to_numpy(zero_copy_only=False).astype(np.int64)
        distinct = sorted_distinct(candidate_members)
        extra = distinct[~contains(np.sort(known), distinct)]
        if len(extra):
            empty = pa.table({"member_id": pa.array(extra, pa.int64()),
                              **{f: pa.nulls(len(extra), profiles.schema.field(f).type) for f in FIELDS}})
            profiles = pa.concat_tables([profiles, empty.cast(profiles.schema)])
        ids = profiles["member_id"].to_numpy(zero_copy_only=False).astype(np.int64)
        in_order = len(ids) < 2 or bool(np.all(ids[1:] > ids[:-1]))
        order = np.arange(len(ids)) if in_order else np.argsort(ids, kind="stable")
        # ``take`` copies the rows into buffers of their own even when already in order: the profiles are
        # usually a slice of a whole row group, and pickling a slice (to a worker process) sends the whole
        # row group's buffers (39 MB per block of 266 members at 100k members, ~15 GB over a day's blocks).
        profiles, ids = profiles.take(pa.array(order)), ids[order]
        none = np.zeros(0, np.int64)
        return cls(
            ids, profiles, candidate_members, np.asarray(candidate_jobs, dtype=np.int64),
            none if applied_members is None else np.asarray(applied_members, dtype=np.int64),
            none if applied_jobs is None else np.asarray(applied_jobs, dtype=np.int64),
        )


@dataclass(frozen=True)
class BlockResult:
    """A block's recommendations (rows of :data:`RECOMMENDATION_SCHEMA`) and counts for the run report."""

    recommendations: pa.RecordBatch
    members: int
    members_on_fallback: int
    members_with_coefficients: int
    pairs_scored: int


def _member_positions(members: IdIndex, ids: np.ndarray) -> np.ndarray:
    """``members.positions(ids)``, looking up each run of equal IDs once (candidates come grouped by member)."""
    if len(ids) < 2:
        return members.positions(ids)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    if len(starts) * 8 > len(ids):
        return members.positions(ids)
    return np.repeat(members.positions(ids[starts]), np.diff(np.r_[starts, len(ids)]))


def block_pairs(rescorer: Rescorer, block: MemberBlock) -> tuple[np.ndarray, np.ndarray, int]:
    """(member row, active job column) of each pair to score, and how many members got the fallback pool.

    Candidate pairs survive when the job is known and active and the member did not apply to it; members
    left with nothing get the fallback pool (minus jobs they applied to). Each pair appears once, pairs are
    grouped by member row (ascending), in any order inside a member.
    """
    jobs = rescorer.jobs
    n_members, n_cols = len(block.member_ids), jobs.n_active
    members = IdIndex.of(block.member_ids)
    m_rows, cols = _member_positions(members, block.candidate_members), jobs.columns_of(block.candidate_jobs)
    keep = (m_rows >= 0) & (cols >= 0)
    am, ac = members.positions(block.applied_members), jobs.columns_of(block.applied_jobs)
    applied = (am >= 0) & (ac >= 0)
    applied_keys = sorted_distinct(am[applied] * n_cols + ac[applied])
    if len(applied_keys):  # look up only the candidates of members who applied somewhere
        applicant = np.zeros(n_members + 1, dtype=bool)
        applicant[am[applied]] = True
        check = np.flatnonzero(applicant[m_rows] & keep)
        keep[check] &= ~contains(applied_keys, m_rows[check] * n_cols + cols[check])
    m_rows, cols = m_rows[keep], cols[keep]
    grouped = len(m_rows) < 2 or bool(np.all(m_rows[1:] >= m_rows[:-1]))
    if grouped:  # the usual input (candidates in member order): check for repeated pairs without sorting
        seen = np.zeros((n_members, n_cols), dtype=bool)
        seen[m_rows, cols] = True
        grouped = int(np.count_nonzero(seen)) == len(m_rows)
        del seen
    if not grouped:
        keys = sorted_distinct(m_rows * n_cols + cols)
        m_rows, cols = keys // n_cols, keys % n_cols
    without = np.flatnonzero(np.bincount(m_rows, minlength=n_members) == 0)
    pool = rescorer.fallback
    if len(without) and len(pool):
        fm, fc = np.repeat(without, len(pool)), np.tile(pool, len(without))
        fallback = ~contains(applied_keys, fm * n_cols + fc)
        m_rows, cols = np.concatenate([m_rows, fm[fallback]]), np.concatenate([cols, fc[fallback]])
        order = np.argsort(m_rows, kind="stable")
        m_rows, cols = m_rows[order], cols[order]
    return m_rows, cols, int(len(without))


def pair_scores(
    rescorer: Rescorer,
    members: ProfileBlock,
    alpha: sp.csr_matrix,
    alpha0: np.ndarray,
    m_rows: np.ndarray,
    cols: np.ndarray,
) -> np.ndarray:
    """The GLMix linear predictor of the pairs (``members`` row, active job column), pairs grouped by member
    row in ascending order (see :mod:`pipeline.rescoring.layout`).

    ``alpha``/``alpha0``: the members' random-effect rows and intercepts.
    """
    jobs, fixed = rescorer.jobs, rescorer.fixed
    counts = np.bincount(m_rows, minlength=members.num_rows)
    exact = set(jobs.exact_fields) | {f for f in FIELDS if not unit_nonnegative(members.fields[f])}
    profile = members.combined()
    weighted = (profile @ sp.diags(rescorer.column_weights(exact))).tocsr() + alpha
    vectors = sp.hstack([weighted, profile], format="csr")
    if rescorer.pairwise:
        score = jobs.product.pairs(vectors, m_rows, cols)
    else:
        score = jobs.scores(vectors).ravel()[m_rows * jobs.n_active + cols]
    # Member terms are repeated over the member's pairs (pairs come grouped by member).
    member_constant = fixed.intercept + alpha0 + fixed.constants(members.codes, fixed.member_main)
    score += np.repeat(member_constant, counts)
    score += jobs.constant[cols]
    m_region = np.repeat(members.codes["region"], counts)
    score += fixed.region_match * ((m_region >= 0) & (m_region == jobs.codes["region"][cols]))
    for f, table in fixed.cross_table.items():
        width = table.shape[1]
        member_slot = np.repeat(fixed.cross_slot[f][members.codes[f]] * width, counts)
        score += table.ravel()[member_slot + jobs.cross_slot[f][cols]]
    if exact:
        pairs = PairRows.of(m_rows, cols)
        for fid, f in enumerate(FIELDS):
            if f in exact:
                cosine = field_cosine(members, jobs.profiles, pairs, f)
                score += fixed.cosine[fid] * np.clip(cosine, 0.0, 1.0)
    return score


def pair_parts(
    rescorer: Rescorer,
    members: ProfileBlock,
    alpha: sp.csr_matrix,
    alpha0: np.ndarray,
    m_rows: np.ndarray,
    cols: np.ndarray,
) -> dict[str, np.ndarray]:
    """The score's parts (one array per name of :data:`PART_COLUMNS`) of the pairs (``members`` row, active
    job column), any order; ``part_global + part_member + part_job`` is :func:`pair_scores` of the same pairs
    up to float rounding. Vectorized over the pairs: meant for the kept top N, not every candidate.
    """
    jobs, fixed = rescorer.jobs, rescorer.fixed
    m_rows, cols = np.asarray(m_rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    n = len(m_rows)
    parts: dict[str, np.ndarray] = {}
    if n == 0:
        return {name: np.zeros(0) for name in PART_COLUMNS}
    parts["part_member"] = alpha0[m_rows] + jobs.pair_dots(alpha, m_rows, cols, on_beta=False)
    parts["part_job"] = jobs.beta0[cols] + jobs.pair_dots(members.combined(), m_rows, cols, on_beta=True)
    main = np.full(n, fixed.intercept)
    for f in CATEGORICAL_FIELDS:
        main += fixed.member_main[f][members.codes[f][m_rows]] + fixed.job_main[f][jobs.codes[f][cols]]
    parts["part_main"] = main
    m_region = members.codes["region"][m_rows]
    cross = fixed.region_match * ((m_region >= 0) & (m_region == jobs.codes["region"][cols]))
    for f, table in fixed.cross_table.items():
        cross = cross + table[fixed.cross_slot[f][members.codes[f][m_rows]], jobs.cross_slot[f][cols]]
    parts["part_cross"] = cross
    total = main + cross
    pairs = PairRows.of(m_rows, cols)
    for fid, f in enumerate(FIELDS):
        if members.code_weights.get(f) is not None and jobs.profiles.code_weights.get(f) is not None:
            cosine = field_cosine(members, jobs.profiles, pairs, f)
        else:
            cosine = jobs.pair_dots(members.fields[f], m_rows, cols, on_beta=False)
        term = fixed.cosine[fid] * np.clip(cosine, 0.0, 1.0)
        parts[COSINE_COLUMNS[fid]] = term
        total = total + term
    parts["part_global"] = total
    return parts


def _ranked(padded: np.ndarray, padded_cols: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``padded`` (scores, -inf = no entry), the slots of its ``width`` best entries by score
    descending then column ascending, exact under ties: (rows × ≤width slot array, valid mask)."""
    n, w = padded.shape
    if width < w:
        threshold = np.partition(padded, w - width, axis=1)[:, w - width]
        flat = np.flatnonzero((padded >= threshold[:, None]) & (padded > -np.inf))
        rows = flat // w
        counts = np.bincount(rows, minlength=n)
        k = int(counts.max()) if len(rows) else 0
        target = rows * k + (np.arange(len(rows)) - np.r_[0, np.cumsum(counts)[:-1]][rows])
        compact = np.full((n, k), -np.inf)
        compact.ravel()[target] = padded.ravel()[flat]
        compact_slots = np.zeros((n, k), dtype=np.int64)
        compact_slots.ravel()[target] = flat - rows * w
        compact_cols = np.zeros((n, k), dtype=np.int64)
        compact_cols.ravel()[target] = padded_cols.ravel()[flat]
        order = np.lexsort((compact_cols, -compact), axis=1)[:, :width]
        return np.take_along_axis(compact_slots, order, 1), np.take_along_axis(compact, order, 1) > -np.inf
    order = np.lexsort((padded_cols, -padded), axis=1)[:, :width]
    return order, np.take_along_axis(padded, order, 1) > -np.inf


def top_per_member(
    rows: np.ndarray,
    cols: np.ndarray,
    scores: np.ndarray,
    n_rows: int,
    company: np.ndarray,
    top_n: int,
    max_per_company: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Same result as :func:`select_top` for pairs grouped by row (``rows`` ascending, any column order inside a
    row; ``company`` per column; equal scores rank by column), without sorting every pair.

    Each row's pairs go into one padded row; only a prefix of each row's best pairs (found by a partition,
    ties included) is sorted: ``top_n`` without a company cap, ``2·top_n`` with one, and rows whose prefix
    leaves fewer than ``top_n`` pairs after the cap are redone over all their pairs.
    """
    if len(rows) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0), empty
    counts = np.bincount(rows, minlength=n_rows)
    width = int(counts.max())
    if bool(np.all(counts == width)):  # every row has as many pairs: the padded arrays are reshapes
        padded, padded_cols = scores.reshape(n_rows, width), np.asarray(cols).reshape(n_rows, width)
    else:
        flat = rows * width + (np.arange(len(rows)) - np.r_[0, np.cumsum(counts)[:-1]][rows])
        padded = np.full((n_rows, width), -np.inf)
        padded.ravel()[flat] = scores
        padded_cols = np.zeros((n_rows, width), dtype=np.int64)
        padded_cols.ravel()[flat] = cols
    prefix = top_n if max_per_company is None else 2 * top_n
    out = _top_of_rows(padded, padded_cols, company, top_n, max_per_company, min(prefix, width))
    if max_per_company is not None and prefix < width:
        short = np.flatnonzero((np.bincount(out[0], minlength=n_rows) < top_n) & (counts > prefix))
        if len(short):
            again = _top_of_rows(padded[short], padded_cols[short], company, top_n, max_per_company, width)
            keep = ~np.isin(out[0], short)
            merged = [np.concatenate([a[keep], b]) for a, b in zip(out, (short[again[0]], *again[1:]), strict=True)]
            order = np.argsort(merged[0], kind="stable")
            out = tuple(a[order] for a in merged)
    return out


def _top_of_rows(padded, padded_cols, company, top_n, max_per_company, prefix):
    slots, valid = _ranked(padded, padded_cols, prefix)
    rows = np.broadcast_to(np.arange(len(padded))[:, None], slots.shape)[valid]
    chosen = np.take_along_axis(padded_cols, slots, 1)[valid]
    values = np.take_along_axis(padded, slots, 1)[valid]
    return _capped_top(rows, chosen, values, company, top_n, max_per_company)


def score_member_block(
    rescorer: Rescorer, block: MemberBlock, top_n: int, max_per_company: int | None
) -> BlockResult:
    """Score one block's pairs (:func:`block_pairs`) and keep each member's top N (the company cap first)."""
    members = ProfileBlock.from_table(block.profiles, rescorer.space.vocab)
    alpha, alpha0, found = rescorer.members.rows(block.member_ids)
    m_rows, cols, on_fallback = block_pairs(rescorer, block)
    scores = pair_scores(rescorer, members, alpha, alpha0, m_rows, cols)
    rm, rc, rs, rank = top_per_member(
        m_rows, cols, scores, len(block.member_ids), rescorer.jobs.company, top_n, max_per_company
    )
    parts = pair_parts(rescorer, members, alpha, alpha0, rm, rc)
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array(block.member_ids[rm], pa.int64()),
            pa.array(rank, pa.int32()),
            pa.array(rescorer.jobs.job_ids[rescorer.jobs.rows[rc]], pa.int64()),
            pa.array(rs, pa.float64()),
            pa.repeat(pa.scalar(rescorer.version, pa.string()), len(rm)),
            *(pa.array(parts[name], pa.float64()) for name in PART_COLUMNS),
        ],
        schema=RECOMMENDATION_SCHEMA,
    )
    return BlockResult(batch, len(block.member_ids), on_fallback, int(found.sum()), int(len(m_rows)))
