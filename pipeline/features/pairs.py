"""The one function that turns (member profile, job profile, context) into the three feature bags.

Used by the Spark training job (inside ``mapInArrow``, one Arrow batch at a time) and by re-scoring (one
block of members' candidate pairs at a time), so training and serving features cannot drift apart.

Bags (``list<struct<name: string, value: double>>``):

- ``global`` (x, fixed effect), in this order per row: ``cos:<field>`` for the six fields (always present,
  in [0, 1]); ``ctx:position`` = position − 1 (0 at the top slot; scoring uses the canonical position 1, so
  the context term vanishes there); ``x:region=match`` (1 when member and job regions are equal);
  ``m:<field>=<term>`` and ``j:<field>=<term>`` (1) for the categorical fields; and crosses
  ``x:<field>=<member term>|<field>=<job term>`` (1) for industry, function and seniority, restricted to the
  field's most frequent terms by the day's document frequency (:data:`CROSS_TOP_TERMS`).
- ``job_features`` (z for the per-member coordinate): the job's profile restricted to
  :data:`RANDOM_EFFECT_FIELDS`, ``<field>=<term>`` → weight.
- ``member_features`` (z for the per-job coordinate): the member's profile likewise.

Why the random effects see only the categorical fields: a member sees a handful of jobs a day, each with
dozens of title and skill terms, so per-member coefficients on every term are both unidentifiable and slow
(the per-entity designs get wider than they are long). On the synthetic marketplace, restricting the
per-entity features (paper §3.2.3) gives the same test AUC with ~20× faster fits (bench/bench_accuracy.py).
Title and skill similarity still reach the model through the global ``cos:*`` features. Re-scoring multiplies
full profiles by the coefficients, so features without coefficients simply contribute nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from pipeline.features.vocab import CATEGORICAL_FIELDS, FIELDS, Vocab

# Profile fields the random effects' bags carry (see the module docstring for why).
RANDOM_EFFECT_FIELDS: tuple[str, ...] = CATEGORICAL_FIELDS

# Crosses use the k most frequent terms of these fields (member term × job term, same field).
CROSS_TOP_TERMS: dict[str, int] = {"industry": 10, "function": 20, "seniority": 10}
# Re-scoring has no impression yet: every candidate is scored as if shown in the first slot.
CANONICAL_POSITION = 1

BAG_TYPE = pa.list_(pa.struct([pa.field("name", pa.string()), pa.field("value", pa.float64())]))
PROFILE_TYPE = pa.list_(pa.struct([pa.field("term", pa.string()), pa.field("weight", pa.float64())]))


@dataclass(frozen=True)
class GlobalSpace:
    """Every possible global feature of one day, named and numbered from the day's vocab.

    Attributes:
        vocab: the day's vocab.
        names: feature names; a feature's id is its position here.
        member_base, job_base: id of the first ``m:<field>=`` / ``j:<field>=`` feature per categorical field
            (id = base + the term's field-local code).
        cross_ids: per cross field, a (terms × terms) int table of cross feature ids (-1: not a feature).
    """

    vocab: Vocab
    names: pa.Array
    member_base: dict[str, int]
    job_base: dict[str, int]
    cross_ids: dict[str, np.ndarray]

    @classmethod
    def from_vocab(cls, vocab: Vocab, cross_top_terms: dict[str, int] | None = None) -> GlobalSpace:
        cross_top_terms = CROSS_TOP_TERMS if cross_top_terms is None else cross_top_terms
        names: list[str] = [f"cos:{f}" for f in FIELDS] + ["ctx:position", "x:region=match"]
        member_base: dict[str, int] = {}
        job_base: dict[str, int] = {}
        for prefix, base in (("m", member_base), ("j", job_base)):
            for f in CATEGORICAL_FIELDS:
                base[f] = len(names)
                names.extend(f"{prefix}:{f}={t}" for t in vocab.terms(f).to_pylist())
        cross_ids: dict[str, np.ndarray] = {}
        for f, k in cross_top_terms.items():
            terms = vocab.terms(f).to_pylist()
            df = vocab.df(f)
            # Most frequent first, ties by term, terms unseen today never selected.
            top = sorted((i for i in range(len(terms)) if df[i] > 0), key=lambda i: (-df[i], terms[i]))[:k]
            table = np.full((len(terms), len(terms)), -1, dtype=np.int64)
            for a in sorted(top, key=lambda i: terms[i]):
                for b in sorted(top, key=lambda i: terms[i]):
                    table[a, b] = len(names)
                    names.append(f"x:{f}={terms[a]}|{f}={terms[b]}")
            cross_ids[f] = table
        return cls(vocab, pa.array(names, pa.string()), member_base, job_base, cross_ids)

    def ids_of(self, feature_names: pa.Array) -> np.ndarray:
        """Id of each feature name (-1 for names that are not global features of this day)."""
        codes = pc.index_in(feature_names, value_set=self.names)
        return pc.fill_null(codes, -1).to_numpy(zero_copy_only=False).astype(np.int64)


@dataclass(frozen=True)
class ProfileBlock:
    """Profiles of a block of members or jobs as sparse matrices over the vocab's global term indices.

    Attributes:
        fields: per field, a CSR matrix (rows × vocab size) of TF-IDF weights.
        codes: per categorical field, the row's field-local term code (-1 when the field is empty).
        code_weights: per categorical field, the weight of that term, or None when some row holds more
            than one term (then cosines go through the matrices).
    """

    fields: dict[str, sp.csr_matrix]
    codes: dict[str, np.ndarray]
    code_weights: dict[str, np.ndarray | None]

    @property
    def num_rows(self) -> int:
        return next(iter(self.fields.values())).shape[0]

    def combined(self) -> sp.csr_matrix:
        """All fields in one matrix (fields own disjoint columns): the profile as random-effect features."""
        total = self.fields[FIELDS[0]].copy()
        for f in FIELDS[1:]:
            total = total + self.fields[f]
        return total.tocsr()

    @classmethod
    def from_table(cls, table: pa.Table, vocab: Vocab, prefix: str = "") -> ProfileBlock:
        """Build from the six profile columns ``<prefix><field>`` of ``table`` (nulls read as empty)."""
        n = table.num_rows
        fields: dict[str, sp.csr_matrix] = {}
        codes: dict[str, np.ndarray] = {}
        code_weights: dict[str, np.ndarray | None] = {}
        for f in FIELDS:
            rows, terms, weights = _flatten_profile(table[prefix + f])
            local = vocab.local_codes(f, terms)
            known = local >= 0  # a profile only holds vocab terms; guard against foreign input anyway
            cols = vocab.indices(f)[local[known]] if len(vocab.indices(f)) else np.zeros(0, np.int64)
            fields[f] = sp.csr_matrix((weights[known], (rows[known], cols)), shape=(n, max(vocab.size, 1)))
            if f in CATEGORICAL_FIELDS:
                code = np.full(n, -1, dtype=np.int64)
                code[rows[known]] = local[known]
                codes[f] = code
                weight = np.zeros(n)
                weight[rows[known]] = weights[known]
                single = not len(rows) or np.bincount(rows[known], minlength=n).max(initial=0) <= 1
                code_weights[f] = weight if single else None
        return cls(fields, codes, code_weights)


def _flatten_profile(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array, np.ndarray]:
    """(row, term, weight) of every entry of a ``list<struct<term, weight>>`` column."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], PROFILE_TYPE)
    rows = pc.list_parent_indices(column).to_numpy().astype(np.int64)
    flat = pc.list_flatten(column)
    terms = pc.struct_field(flat, "term")
    weights = pc.fill_null(pc.struct_field(flat, "weight"), 0.0).to_numpy(zero_copy_only=False)
    return rows, terms, np.asarray(weights, dtype=np.float64)


def unique_inverse(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct values, position of each value among them), by one stable sort.

    Same result as ``np.unique(values, return_inverse=True)``, whose hash-based path in NumPy 2.3 is many
    times slower on large int arrays.
    """
    values = np.asarray(values)
    if len(values) < 2 or bool(np.all(values[1:] >= values[:-1])):  # already sorted: a block's member rows
        order = np.arange(len(values))
    else:
        order = np.argsort(values, kind="stable")
    ordered = values[order]
    first = np.ones(len(ordered), dtype=bool)
    first[1:] = ordered[1:] != ordered[:-1]
    inverse = np.empty(len(values), dtype=np.int64)
    inverse[order] = np.cumsum(first) - 1
    return ordered[first], inverse


@dataclass(frozen=True)
class PairRows:
    """Row pairs (left[i], right[i]) with their distinct rows, computed once per block."""

    left: np.ndarray
    right: np.ndarray
    left_unique: np.ndarray
    left_local: np.ndarray
    right_unique: np.ndarray
    right_local: np.ndarray

    @classmethod
    def of(cls, left: np.ndarray, right: np.ndarray) -> PairRows:
        lu, ll = unique_inverse(left)
        ru, rl = unique_inverse(right)
        return cls(left, right, lu, ll, ru, rl)

    @property
    def repeated(self) -> bool:
        """Few distinct rows on both sides (a block of members × their candidates): use block products."""
        dense_cells = len(self.left_unique) * len(self.right_unique)
        return dense_cells <= max(64 * len(self.left), 1) and dense_cells <= 16_000_000


def rowwise_dot(left: sp.csr_matrix, right: sp.csr_matrix, pairs: PairRows) -> np.ndarray:
    """``left[pairs.left[i]] · right[pairs.right[i]]`` for every i, without densifying whole matrices.

    Row-aligned pairs (training) multiply gathered rows; repeated rows (re-scoring: each member paired with
    its candidates) take one sparse product of the distinct rows and read the pairs from it.
    """
    if pairs.repeated:
        block = (left[pairs.left_unique] @ right[pairs.right_unique].T).toarray()
        return block[pairs.left_local, pairs.right_local]
    product = left[pairs.left].multiply(right[pairs.right])
    return np.asarray(product.sum(axis=1)).ravel()


def field_cosine(members: ProfileBlock, jobs: ProfileBlock, pairs: PairRows, field: str) -> np.ndarray:
    """Cosine of one field for every pair; categorical fields with one term per row compare codes."""
    mw, jw = members.code_weights.get(field), jobs.code_weights.get(field)
    if mw is not None and jw is not None:
        mc, jc = members.codes[field][pairs.left], jobs.codes[field][pairs.right]
        return np.where((mc >= 0) & (mc == jc), mw[pairs.left] * jw[pairs.right], 0.0)
    return rowwise_dot(members.fields[field], jobs.fields[field], pairs)


@dataclass(frozen=True)
class GlobalFeatures:
    """Global features of a block of pairs in coordinate form, as groups of (row, feature id, value).

    ``value`` None means 1.0 for every entry of the group.
    """

    num_rows: int
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]

    def score(self, coefficients: np.ndarray) -> np.ndarray:
        """x'b per row for a coefficient vector indexed by feature id."""
        total = np.zeros(self.num_rows)
        for row, feature, value in self.parts:
            contribution = coefficients[feature] if value is None else coefficients[feature] * value
            if len(row) == self.num_rows:  # dense group: one entry per row, rows in order
                total += contribution
            else:
                total += np.bincount(row, weights=contribution, minlength=self.num_rows)
        return total

    def coordinates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, feature, value) sorted by row; within a row, groups keep their order."""
        row = np.concatenate([p[0] for p in self.parts])
        feature = np.concatenate([p[1] for p in self.parts])
        value = np.concatenate([p[2] if p[2] is not None else np.ones(len(p[0])) for p in self.parts])
        order = np.argsort(row, kind="stable")
        return row[order], feature[order], value[order]

    def to_bag(self, space: GlobalSpace) -> pa.Array:
        row, feature, value = self.coordinates()
        return _pack_bag(self.num_rows, row, space.names.take(pa.array(feature)), value)


def pair_features(
    members: ProfileBlock,
    member_rows: np.ndarray,
    jobs: ProfileBlock,
    job_rows: np.ndarray,
    position: np.ndarray,
    space: GlobalSpace,
    pairs: PairRows | None = None,
) -> GlobalFeatures:
    """Global features (x) of the pairs (``members[member_rows[i]]``, ``jobs[job_rows[i]]``) at ``position[i]``.

    Cosines are clipped to [0, 1] (profiles are non-negative and unit-norm; the clip only removes rounding).
    ``pairs`` may pass the block's :class:`PairRows` when the caller already built it.
    """
    n = len(member_rows)
    rows = np.arange(n, dtype=np.int64)
    pairs = pairs if pairs is not None else PairRows.of(member_rows, job_rows)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
    for fid, f in enumerate(FIELDS):
        cos = np.clip(field_cosine(members, jobs, pairs, f), 0.0, 1.0)
        parts.append((rows, np.full(n, fid, np.int64), cos))
    # Linear in the slot (0 at the top): position bias is monotone and roughly linear over the first slots.
    slot = np.maximum(np.asarray(position, dtype=np.float64), 1.0) - 1.0
    parts.append((rows, np.full(n, len(FIELDS), np.int64), slot))
    m_codes = {f: members.codes[f][member_rows] for f in CATEGORICAL_FIELDS}
    j_codes = {f: jobs.codes[f][job_rows] for f in CATEGORICAL_FIELDS}
    same_region = (m_codes["region"] >= 0) & (m_codes["region"] == j_codes["region"])
    parts.append((rows[same_region], np.full(int(same_region.sum()), len(FIELDS) + 1, np.int64), None))
    for codes, base in ((m_codes, space.member_base), (j_codes, space.job_base)):
        for f in CATEGORICAL_FIELDS:
            have = codes[f] >= 0
            parts.append((rows[have], base[f] + codes[f][have], None))
    for f, table in space.cross_ids.items():
        mc, jc = m_codes[f], j_codes[f]
        both = (mc >= 0) & (jc >= 0)
        ids = np.full(n, -1, np.int64)
        ids[both] = table[mc[both], jc[both]]
        hit = ids >= 0
        parts.append((rows[hit], ids[hit], None))
    return GlobalFeatures(n, parts)


def profile_bag(table: pa.Table, prefix: str = "", fields: tuple[str, ...] = FIELDS) -> pa.Array:
    """The profile columns ``<prefix><field>`` of ``table`` (for ``fields``, in that order) as one bag
    ``<field>=<term>`` → weight per row."""
    rows_parts, name_parts, value_parts = [], [], []
    for f in fields:
        rows, terms, weights = _flatten_profile(table[prefix + f])
        rows_parts.append(rows)
        name_parts.append(pc.binary_join_element_wise(pa.scalar(f), terms, "="))
        value_parts.append(weights)
    row = np.concatenate(rows_parts)
    order = np.argsort(row, kind="stable")  # per row: fields in FIELDS order, terms in profile order
    names = pa.concat_arrays([a.cast(pa.string()) for a in name_parts]).take(pa.array(order))
    return _pack_bag(table.num_rows, row[order], names, np.concatenate(value_parts)[order])


def profile_feature_names(vocab: Vocab, width: int | None = None) -> pa.Array:
    """The profile feature name ``<field>=<term>`` (as in :func:`profile_bag`) of each vocab index.

    Position ``i`` names the feature whose profile weight sits in column ``i`` of a :class:`ProfileBlock`
    matrix; indices without a term (and positions up to ``width``, default ``vocab.size``) are null.
    """
    width = vocab.size if width is None else width
    names = pa.concat_arrays(
        [pc.binary_join_element_wise(pa.scalar(f), vocab.terms(f).cast(pa.string()), "=") for f in FIELDS]
    )
    index = np.concatenate([vocab.indices(f) for f in FIELDS])
    position = np.full(width, -1, dtype=np.int64)
    position[index] = np.arange(len(index))
    return names.take(pa.array(position, mask=position < 0))


def _pack_bag(n: int, row: np.ndarray, names: pa.Array, value: np.ndarray) -> pa.Array:
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(row, minlength=n), out=offsets[1:])
    items = pa.StructArray.from_arrays([names, pa.array(value, pa.float64())], names=["name", "value"])
    return pa.ListArray.from_arrays(pa.array(offsets), items).cast(BAG_TYPE)


def feature_bags(batch: pa.Table, space: GlobalSpace, member_prefix: str = "m_", job_prefix: str = "j_") -> pa.Table:
    """The three bags for row-aligned pairs: ``batch`` holds ``position`` and both profiles' six columns.

    This is what the Spark training job calls on each Arrow batch.
    """
    members = ProfileBlock.from_table(batch, space.vocab, member_prefix)
    jobs = ProfileBlock.from_table(batch, space.vocab, job_prefix)
    rows = np.arange(batch.num_rows, dtype=np.int64)
    position = batch["position"].to_numpy(zero_copy_only=False)
    features = pair_features(members, rows, jobs, rows, position, space)
    return pa.table(
        {
            "global": features.to_bag(space),
            "job_features": profile_bag(batch, job_prefix, RANDOM_EFFECT_FIELDS),
            "member_features": profile_bag(batch, member_prefix, RANDOM_EFFECT_FIELDS),
        }
    )
