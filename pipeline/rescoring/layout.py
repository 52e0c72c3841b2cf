"""A GLMix model laid out for re-scoring by member blocks: the score as one sparse product plus gathers.

For a pair (member m, job j) scored at the canonical position, :func:`pipeline.features.pairs.pair_features`
and the model's three coordinates give

    score = b₀ + b_pos·slot + Σ_f b_f·clip(cos_f(m, j), 0, 1)               (per-field cosines)
          + Σ_f b[m:f=c_m,f] + Σ_f b[j:f=c_j,f]                              (one-hot main effects)
          + b_region·[c_m,region = c_j,region ≥ 0] + Σ_f b[x:f=c_m,f|f=c_j,f]  (region match, crosses)
          + α_m0 + α_m·s_j + β_j0 + q_m·β_j                                  (random effects)

with q_m (s_j) the member's (job's) profile over the vocab's term columns (fields own disjoint columns), c the
field-local term code of a categorical field (:attr:`ProfileBlock.codes`). Profiles are non-negative and
unit-norm per field, so the clip only removes rounding and the cosine part is linear; then

    score = u_m · v_j + const_m + const_j + gathers(c_m, c_j)
    u_m = [b_field ⊙ q_m + α_m | q_m],   v_j = [s_j | β_j]      (width 2·vocab)

``u_m · v_j`` for a block of members against every active job is one product (:meth:`JobSide.scores`,
split by term density: the terms most jobs carry as dense rows, the rest sparse; :class:`SplitProduct`); the
pairs are read from it. A field whose profiles are not non-negative and
unit-norm (to :data:`NORM_SLACK`) on some row is left out of ``u_m`` and its clipped cosine is computed pair
by pair instead (:func:`pipeline.features.pairs.field_cosine`), so the decomposition is exact for any input.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from glmix_core import GLMixModel
from pipeline.features.pairs import CANONICAL_POSITION, GlobalSpace, ProfileBlock, profile_feature_names
from pipeline.features.vocab import CATEGORICAL_FIELDS, FIELDS

log = logging.getLogger(__name__)

# A profile row whose per-field L2 norm is at most 1 + NORM_SLACK (and whose weights are >= 0) has cosines in
# [0, (1 + NORM_SLACK)²]: the [0, 1] clip changes a score by at most ~2·NORM_SLACK·|b_f|.
NORM_SLACK = 1e-12
_INT64_MAX = "9223372036854775807"


def lookup(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Position of each of ``ids`` in the ascending ``sorted_ids`` (-1 when absent)."""
    if len(sorted_ids) == 0:
        return np.full(len(ids), -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return np.where(sorted_ids[pos] == ids, pos, -1).astype(np.int64)


def integer_entity_ids(ids: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(int64 value, mask) of the string entity IDs that an int64 ID, cast to a string, can equal.

    glmix_core compares entity IDs as strings (an int64 column is cast with Arrow's decimal form), so only
    canonical decimal strings within int64 (no sign on zero, no leading zeros or blanks) ever match a member or
    job ID; the others are masked out.
    """
    ids = ids.cast(pa.string())
    canonical = pc.fill_null(pc.match_substring_regex(ids, r"^(0|-?[1-9][0-9]{0,18})$"), False)
    digits = pc.utf8_ltrim(ids, "-")
    fits = pc.or_(
        pc.less(pc.utf8_length(digits), 19),
        pc.or_(pc.less_equal(digits, _INT64_MAX),
               pc.and_(pc.starts_with(ids, "-"), pc.equal(digits, "9223372036854775808"))),
    )
    keep = pc.fill_null(pc.and_(canonical, fits), False)
    mask = keep.to_numpy(zero_copy_only=False)
    values = np.zeros(len(ids), dtype=np.int64)
    if mask.any():
        values[mask] = pc.cast(ids.filter(keep), pa.int64()).to_numpy(zero_copy_only=False)
    return values, mask


@dataclass(frozen=True)
class IdIndex:
    """Position of int64 IDs among the ascending distinct ``ids``: a dense table when the IDs are compact
    (a gather per lookup), else a binary search."""

    ids: np.ndarray
    table: np.ndarray | None

    @classmethod
    def of(cls, ids: np.ndarray) -> IdIndex:
        ids = np.asarray(ids, dtype=np.int64)
        table = None
        if len(ids) and int(ids[-1]) - int(ids[0]) < 8 * len(ids) + 1024:
            table = np.full(int(ids[-1]) - int(ids[0]) + 1, -1, dtype=np.int64)
            table[ids[::-1] - ids[0]] = np.arange(len(ids))[::-1]  # a repeated ID maps to its first position
        return cls(ids, table)

    def positions(self, values: np.ndarray) -> np.ndarray:
        """Position of each of ``values`` in ``ids`` (-1 when absent)."""
        values = np.asarray(values, dtype=np.int64)
        if self.table is None:
            return lookup(self.ids, values)
        out = np.full(len(values), -1, dtype=np.int64)
        inside = (values >= self.ids[0]) & (values <= self.ids[-1])
        out[inside] = self.table[values[inside] - self.ids[0]]
        return out


@dataclass(frozen=True)
class EntityCoefficients:
    """The random effects of one entity column (``member_id`` or ``job_id``), summed over its coordinates.

    Attributes:
        keys: ascending int64 entity IDs that have coefficients.
        matrix: CSR ``len(keys) × width`` coefficients over the profile term columns.
        intercept: intercept per key.
    """

    keys: np.ndarray
    matrix: sp.csr_matrix
    intercept: np.ndarray

    def rows(self, ids: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
        """(coefficient rows, intercepts, found mask) of ``ids`` in their order; zeros for unknown IDs."""
        pos = lookup(self.keys, np.asarray(ids, dtype=np.int64))
        found = pos >= 0
        select = sp.csr_matrix(
            (np.ones(int(found.sum())), (np.flatnonzero(found), pos[found])), shape=(len(ids), len(self.keys))
        )
        intercept = np.where(found, self.intercept[np.maximum(pos, 0)] if len(self.keys) else 0.0, 0.0)
        return (select @ self.matrix).tocsr(), intercept, found

    @classmethod
    def of(cls, model: GLMixModel, entity: str, features: pa.Array) -> EntityCoefficients:
        """Sum of the model's random-effect coordinates keyed by ``entity`` over the columns ``features``
        (``GLMixModel.coefficient_matrix``); empty when the model has none."""
        parts = []
        for coordinate in model.spec.coordinates:
            if coordinate.type == "random" and coordinate.entity == entity:
                part = model.coefficient_matrix(coordinate.name, features)
                keys, keep = integer_entity_ids(part.entity_ids)
                parts.append((keys[keep], part.matrix[np.flatnonzero(keep)], part.intercept[keep]))
        width = len(features)
        if not parts:
            return cls(np.zeros(0, np.int64), sp.csr_matrix((0, width)), np.zeros(0))
        keys = np.unique(np.concatenate([p[0] for p in parts]))
        matrix = sp.csr_matrix((len(keys), width))
        intercept = np.zeros(len(keys))
        for part_keys, part_matrix, part_intercept in parts:
            pos = np.searchsorted(keys, part_keys)
            select = sp.csr_matrix((np.ones(len(pos)), (pos, np.arange(len(pos)))), shape=(len(keys), len(pos)))
            matrix = matrix + select @ part_matrix
            intercept += np.bincount(pos, weights=part_intercept, minlength=len(keys))
        return cls(keys, matrix.tocsr(), intercept)


def _with_none(values: np.ndarray, none: float | int) -> np.ndarray:
    """``values`` plus one trailing entry, so that indexing with code -1 reads ``none``."""
    return np.append(values, none)


@dataclass(frozen=True)
class FixedLayout:
    """The fixed effect split by the kind of global feature (ids from :class:`GlobalSpace`).

    Attributes:
        intercept: b₀ plus the position term at :data:`CANONICAL_POSITION`.
        cosine: b per field of :data:`FIELDS` (the ``cos:<field>`` features).
        member_main, job_main: per categorical field, b of ``m:``/``j:<field>=<term>`` by field-local code,
            with a trailing 0 (code -1 reads it).
        region_match: b of ``x:region=match``.
        cross_slot: per cross field, the slot of each field-local code (the field's top terms get 0..k-1,
            any other code and -1 get k).
        cross_table: per cross field, the (k+1)×(k+1) coefficients of the crosses by slots (row k and
            column k are 0).
    """

    intercept: float
    cosine: np.ndarray
    member_main: dict[str, np.ndarray]
    job_main: dict[str, np.ndarray]
    region_match: float
    cross_slot: dict[str, np.ndarray]
    cross_table: dict[str, np.ndarray]

    @classmethod
    def of(cls, fixed: np.ndarray, intercept: float, space: GlobalSpace) -> FixedLayout:
        """Split ``fixed`` (one coefficient per ``space.names`` entry) and the model intercept."""
        n_fields = len(FIELDS)
        slot = max(float(CANONICAL_POSITION), 1.0) - 1.0
        member_main, job_main = {}, {}
        for f in CATEGORICAL_FIELDS:
            n_terms = len(space.vocab.terms(f))
            member_main[f] = _with_none(fixed[space.member_base[f]: space.member_base[f] + n_terms], 0.0)
            job_main[f] = _with_none(fixed[space.job_base[f]: space.job_base[f] + n_terms], 0.0)
        cross_slot, cross_table = {}, {}
        for f, ids in space.cross_ids.items():
            top = np.flatnonzero((ids >= 0).any(axis=1) | (ids >= 0).any(axis=0))
            k = len(top)
            slots = np.full(ids.shape[0], k, dtype=np.int64)
            slots[top] = np.arange(k)
            table = np.zeros((k + 1, k + 1))
            sub = ids[np.ix_(top, top)]
            table[:k, :k] = np.where(sub >= 0, fixed[np.maximum(sub, 0)], 0.0)
            cross_slot[f], cross_table[f] = _with_none(slots, k), table
        return cls(
            intercept=float(intercept) + float(fixed[n_fields]) * slot,
            cosine=np.asarray(fixed[:n_fields], dtype=np.float64).copy(),
            member_main=member_main,
            job_main=job_main,
            region_match=float(fixed[n_fields + 1]),
            cross_slot=cross_slot,
            cross_table=cross_table,
        )

    def constants(self, codes: dict[str, np.ndarray], main: dict[str, np.ndarray]) -> np.ndarray:
        """Σ over categorical fields of the main effect of each row's code (``main`` = member_ or job_main)."""
        n = len(next(iter(codes.values())))
        total = np.zeros(n)
        for f in CATEGORICAL_FIELDS:
            total += main[f][codes[f]]
        return total


def unit_nonnegative(matrix: sp.csr_matrix) -> bool:
    """Whether every row of ``matrix`` has non-negative entries and L2 norm ≤ 1 + :data:`NORM_SLACK`."""
    if matrix.nnz == 0:
        return True
    data = matrix.data
    if not (np.isfinite(data).all() and data.min() >= 0.0):
        return False
    squares = np.bincount(np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr)), weights=data * data)
    return bool(squares.max() <= (1.0 + NORM_SLACK) ** 2)


# A term (row of the job-side product) carried by more than this share of the active jobs is multiplied as a
# dense row: the categorical terms and the per-job coefficients on them fill most of the block × jobs scores,
# and a sparse product that yields a dense result spends most of its time building it.
DENSE_TERM_SHARE = 1 / 32


@dataclass(frozen=True)
class SplitProduct:
    """A sparse ``terms × columns`` matrix split by term density, for dot products with member vectors.

    Terms carried by more than :data:`DENSE_TERM_SHARE` of the columns are kept as dense rows (a SciPy
    CSR × dense product, a simple loop over each member's non-zeros), the others as CSR (a sparse product
    with a small result). Every entry is summed in an order fixed by the member row alone, so a member's
    scores do not depend on the other members of its block (bit-identical across block sizes and engines).

    Attributes:
        dense_terms, sparse_terms: the terms (rows of the original matrix) of each part, ascending.
        dense: ``len(dense_terms) × columns`` float64.
        sparse: CSR ``len(sparse_terms) × columns``.
    """

    dense_terms: np.ndarray
    sparse_terms: np.ndarray
    dense: np.ndarray
    sparse: sp.csr_matrix

    @classmethod
    def of(cls, matrix: sp.csr_matrix, dense_share: float = DENSE_TERM_SHARE) -> SplitProduct:
        matrix = matrix.tocsr()
        per_term = np.diff(matrix.indptr)
        dense = per_term > dense_share * max(matrix.shape[1], 1)
        dense_terms, sparse_terms = np.flatnonzero(dense), np.flatnonzero(~dense)
        sparse = matrix[sparse_terms].tocsr()
        sparse.sort_indices()
        return cls(dense_terms, sparse_terms, matrix[dense_terms].toarray(), sparse)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.dense_terms) + len(self.sparse_terms), self.dense.shape[1])

    def to_csr(self) -> sp.csr_matrix:
        """The whole matrix as CSR again (terms in their original order)."""
        stacked = sp.vstack([sp.csr_matrix(self.dense), self.sparse], format="csr")
        order = np.argsort(np.concatenate([self.dense_terms, self.sparse_terms]), kind="stable")
        return stacked[order].tocsr()

    def _split(self, members: sp.csr_matrix, offset: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """``members`` (whose column c is term ``offset + c``) as its dense-term and sparse-term parts."""
        members = sp.csr_matrix(members)
        n_terms = self.shape[0]
        is_dense = np.zeros(n_terms, dtype=bool)
        is_dense[self.dense_terms] = True
        position = np.empty(n_terms, dtype=np.int64)
        position[self.dense_terms] = np.arange(len(self.dense_terms))
        position[self.sparse_terms] = np.arange(len(self.sparse_terms))
        term = members.indices.astype(np.int64) + offset
        row = np.repeat(np.arange(members.shape[0]), np.diff(members.indptr))
        parts = []
        for keep, width in ((is_dense[term], len(self.dense_terms)), (~is_dense[term], len(self.sparse_terms))):
            indptr = np.zeros(members.shape[0] + 1, dtype=np.int64)
            np.cumsum(np.bincount(row[keep], minlength=members.shape[0]), out=indptr[1:])
            parts.append(sp.csr_matrix((members.data[keep], position[term[keep]], indptr),
                                       shape=(members.shape[0], width)))
        return parts[0], parts[1]

    def block(self, members: sp.csr_matrix, offset: int = 0) -> np.ndarray:
        """Dense ``members @ matrix[offset:offset + members' width]`` (rows × columns): member vectors whose
        column c is term ``offset + c``."""
        on_dense, on_sparse = self._split(members, offset)
        out = on_dense @ self.dense if on_dense.nnz else np.zeros((members.shape[0], self.shape[1]))
        rest = (on_sparse @ self.sparse).tocsr()
        if rest.nnz:  # a CSR product holds each (row, column) once, so the fancy += adds every entry
            flat = np.repeat(np.arange(rest.shape[0]) * out.shape[1], np.diff(rest.indptr)) + rest.indices
            out.ravel()[flat] += rest.data
        return out

    def pairs(self, members: sp.csr_matrix, rows: np.ndarray, columns: np.ndarray, offset: int = 0) -> np.ndarray:
        """``members[rows[i]] · matrix[offset:, columns[i]]`` for every i (member column c is term
        ``offset + c``), without the block × columns product."""
        on_dense, on_sparse = self._split(members, offset)
        rows, columns = np.asarray(rows, dtype=np.int64), np.asarray(columns, dtype=np.int64)
        counts = np.diff(on_dense.indptr)[rows]
        pair = np.repeat(np.arange(len(rows)), counts)
        starts = np.repeat(on_dense.indptr[rows] - np.r_[0, np.cumsum(counts)[:-1]], counts)
        entry = starts + np.arange(len(pair))
        flat = on_dense.indices[entry].astype(np.int64) * self.dense.shape[1] + columns[pair]
        contribution = on_dense.data[entry] * self.dense.ravel()[flat]
        out = np.bincount(pair, weights=contribution, minlength=len(rows)).astype(np.float64, copy=False)
        if on_sparse.nnz and self.sparse.nnz:
            # The sparse terms' product has a small result: compute it for the block, scatter it into a
            # rows × columns scratch (a block's members × active jobs: the scores a block product would fill)
            # and gather the pairs, so each pair gets the very value the block product adds (same bits as
            # :meth:`block`). Sorting the product's indices to binary-search them cost a third of re-scoring.
            rest = (on_sparse @ self.sparse).tocsr()
            if rest.nnz:
                n_columns = self.shape[1]
                scratch = np.zeros(rest.shape[0] * n_columns)
                flat = np.repeat(np.arange(rest.shape[0], dtype=np.int64) * n_columns, np.diff(rest.indptr))
                flat += rest.indices
                scratch[flat] = rest.data  # a CSR product holds each (row, column) once
                out += scratch[rows * n_columns + columns]
        return out


@dataclass(frozen=True)
class JobSide:
    """The day's jobs, laid out once per run and shared with every block (workers, Spark broadcast).

    The open jobs are the columns of :meth:`scores`; every per-job array but ``column`` is indexed by column.

    Attributes:
        job_ids: ascending job IDs of the day's job profiles (a job row is a position here).
        index: :class:`IdIndex` of ``job_ids``.
        column: per job row, its column (-1 for jobs that are not active).
        rows: per column, its job row (ascending: columns are in job_id order).
        product: ``[s_j | β_j]ᵀ`` of the columns (2·width × columns), split by term density.
        company: per column, a dense company code (for the per-company cap).
        constant: per column, β_j0 plus the job's main effects.
        codes: per categorical field, the column's field-local code (-1: none).
        cross_slot: per cross field, the slot of the column's code in ``FixedLayout.cross_table``.
        profiles: the columns' job profiles (for fields scored pair by pair).
        exact_fields: fields whose cosine is computed pair by pair for every block (some job row is not
            non-negative and unit-norm there).
        with_coefficients: how many job rows have per-job coefficients.
        beta0: per column, the per-job intercept β_j0.
    """

    job_ids: np.ndarray
    index: IdIndex
    column: np.ndarray
    rows: np.ndarray
    product: SplitProduct
    company: np.ndarray
    constant: np.ndarray
    codes: dict[str, np.ndarray]
    cross_slot: dict[str, np.ndarray]
    profiles: ProfileBlock
    exact_fields: tuple[str, ...]
    with_coefficients: int
    beta0: np.ndarray

    @property
    def n_active(self) -> int:
        return len(self.rows)

    def columns_of(self, job_ids: np.ndarray) -> np.ndarray:
        """Column of each job ID (-1 for unknown or inactive jobs)."""
        rows = self.index.positions(job_ids)
        return np.where(rows >= 0, self.column[np.maximum(rows, 0)], -1) if len(self.column) else rows

    def scores(self, members: sp.csr_matrix) -> np.ndarray:
        """Dense ``members @ product`` (block rows × columns) for member vectors ``u_m`` (2·width wide)."""
        return self.product.block(members)

    def pair_dots(self, members: sp.csr_matrix, rows: np.ndarray, columns: np.ndarray, *, on_beta: bool) -> np.ndarray:
        """Per pair, the member vector ``members[rows[i]]`` (width wide) dotted with column ``columns[i]``'s job
        profile s_j (``on_beta`` false) or its per-job coefficients β_j (``on_beta`` true)."""
        width = self.product.shape[0] // 2
        return self.product.pairs(members, rows, columns, offset=width if on_beta else 0)


@dataclass(frozen=True)
class Rescorer:
    """Everything a member block needs to be scored, built once per run (:func:`build_rescorer`).

    Attributes:
        version: the model version written next to every recommendation.
        space: the day's global feature space (its vocab builds member profile blocks).
        fixed: the fixed effect by feature kind.
        members: per-member random effects over the profile term columns.
        jobs: the job side.
        field_columns: per field, the vocab term columns it owns.
        fallback: columns of the fallback pool (active jobs by member-independent score, best first).
        pairwise: score only the candidate pairs (:meth:`SplitProduct.pairs`) instead of every block member
            against every active job and reading the pairs from that (:meth:`JobSide.scores`); the same bits
            either way. Worth it when members have few candidates among many active jobs
            (:func:`pairwise_pays`).
    """

    version: str
    space: GlobalSpace
    fixed: FixedLayout
    members: EntityCoefficients
    jobs: JobSide
    field_columns: dict[str, np.ndarray]
    fallback: np.ndarray
    pairwise: bool = False

    @property
    def width(self) -> int:
        return max(self.space.vocab.size, 1)

    def column_weights(self, exact_fields: set[str]) -> np.ndarray:
        """b_f on the columns of each field scored by the product (0 on ``exact_fields``)."""
        weights = np.zeros(self.width)
        for fid, f in enumerate(FIELDS):
            if f not in exact_fields:
                weights[self.field_columns[f]] = self.fixed.cosine[fid]
        return weights


# Scoring a candidate pair on its own costs about as much as this many cells of the block × active-jobs product
# (measured on one block at 100k members × 20k jobs: ~770 ns a pair against ~15 ns a cell), so with 1000
# candidates per member the pairs pay from about 50k active jobs on.
PAIR_COST_IN_CELLS = 50


def pairwise_pays(candidates_per_member: float, active_jobs: int) -> bool:
    """Whether scoring the candidate pairs alone beats the block product (see ``Rescorer.pairwise``)."""
    return candidates_per_member * PAIR_COST_IN_CELLS < active_jobs


def fixed_effect(model: GLMixModel, space: GlobalSpace, version: str = "") -> tuple[np.ndarray, float]:
    """(coefficient per ``space.names`` entry, intercept) summed over the model's fixed coordinates."""
    fixed, intercept, unmapped = np.zeros(len(space.names)), 0.0, 0
    for coordinate in model.spec.coordinates:
        if coordinate.type == "fixed":
            part = model.coefficient_matrix(coordinate.name, space.names)
            fixed += part.vector
            intercept += float(part.intercept[0])
            unmapped += part.unmapped
    if unmapped:
        log.info("model %s: %d fixed-effect features are not in this day's feature space", version, unmapped)
    return fixed, intercept


def build_rescorer(
    model: GLMixModel,
    space: GlobalSpace,
    job_table: pa.Table,
    active: np.ndarray,
    version: str,
    fallback_pool: int,
) -> Rescorer:
    """Lay ``model`` out over the day's feature ``space`` and jobs.

    ``job_table``: the day's job profiles sorted by job_id (job_id, company_id and the six profile columns);
    ``active``: per row of ``job_table``, whether the job may be recommended. The fallback pool holds the
    ``fallback_pool`` active jobs with the highest member-independent score (b₀ + job main effects + β_j0),
    ties by job_id.
    """
    fixed_vector, intercept = fixed_effect(model, space, version)
    fixed = FixedLayout.of(fixed_vector, intercept, space)
    features = profile_feature_names(space.vocab, max(space.vocab.size, 1))
    members = EntityCoefficients.of(model, "member_id", features)
    job_coefficients = EntityCoefficients.of(model, "job_id", features)

    job_ids = job_table["job_id"].to_numpy(zero_copy_only=False).astype(np.int64)
    active = np.asarray(active, dtype=bool)
    rows = np.flatnonzero(active)
    _, company = np.unique(job_table["company_id"].to_numpy(zero_copy_only=False)[rows], return_inverse=True)
    profiles = ProfileBlock.from_table(job_table.take(pa.array(rows, pa.int64())), space.vocab)
    beta, beta0, found = job_coefficients.rows(job_ids[rows])
    column = np.full(len(job_ids), -1, dtype=np.int64)
    column[rows] = np.arange(len(rows))
    product = SplitProduct.of(sp.hstack([profiles.combined(), beta], format="csr").T.tocsr())
    constant = beta0 + fixed.constants(profiles.codes, fixed.job_main)
    cross_slot = {f: slots[profiles.codes[f]] for f, slots in fixed.cross_slot.items()}
    exact = tuple(f for f in FIELDS if not unit_nonnegative(profiles.fields[f]))
    if exact:
        log.info("job profiles of fields %s are not unit-norm and non-negative: their cosines go pair by pair",
                 list(exact))
    jobs = JobSide(
        job_ids=job_ids, index=IdIndex.of(job_ids), column=column, rows=rows, product=product,
        company=company.astype(np.int64), constant=constant, codes=profiles.codes, cross_slot=cross_slot,
        profiles=profiles, exact_fields=exact, with_coefficients=int(found.sum()),
        beta0=np.asarray(beta0, dtype=np.float64),
    )
    prior = fixed.intercept + constant
    pool = np.lexsort((job_ids[rows], -prior))[:fallback_pool]
    field_columns = {f: space.vocab.indices(f) for f in FIELDS}
    return Rescorer(version, space, fixed, members, jobs, field_columns, pool)
