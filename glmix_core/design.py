"""The per-coordinate random-effect design, built once per fit.

Rows are grouped by entity (``np.argsort``), each entity's design is condensed to the columns it has data for
(paper §3.2.3), and entities are packed into chunks of similar (rows, columns) size so a chunk is one padded
dense array (E, N, D) solved by ``batch_newton``. Entities with more than ``max_dense_features`` condensed
columns go to a per-entity sparse fallback.

Coefficients live in one flat array over the (entity, column) "pairs" sorted by entity then column; chunks
and the fallback only hold index maps into it, so scoring, warm start and saving share one layout.

Two Photon-ML controls act here: per-entity feature selection (``features_to_samples_ratio``: an entity keeps
its top ⌈ratio · rows⌉ columns by |Pearson correlation| with the response; dropped pairs get no coefficient)
and normalization (a ``Normalization``: chunks and the fallback solve on the normalized design, coefficient
values live in the normalized space and ``to_original`` / ``to_normalized`` convert them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .normalization import Normalization

log = logging.getLogger(__name__)

CHUNK_ELEMENTS = 2_000_000  # dense elements per chunk: E * (N * D + D * D); bounds working memory
CACHE_ELEMENTS = 60_000_000  # keep dense chunks between iterations when the total padded size is below this


def _narrow(a: np.ndarray) -> np.ndarray:
    """int64 indices as int32 when they fit (pickling only)."""
    if a.dtype == np.int64 and (a.size == 0 or (a.max() < 2**31 and a.min() >= -(2**31))):
        return a.astype(np.int32)
    return a


def _widen(a: np.ndarray) -> np.ndarray:
    return a.astype(np.int64) if a.dtype == np.int32 else a


@dataclass
class Chunk:
    """Entities solved together: padded row ids (E, N), pair ids (E, D) (-1 = padding), dense Z (E, N, D).

    With normalization, ``scale``/``shift`` (E, D) turn Z into the normalized design Z·scale − shift on the
    real rows (``shift`` = mean · factor, zero at the intercept and padding; None without a shift).
    """

    rows: np.ndarray
    row_mask: np.ndarray
    pairs: np.ndarray
    nz_slots: tuple[np.ndarray, np.ndarray, np.ndarray]
    nz_values: np.ndarray
    dense: np.ndarray | None = None
    scale: np.ndarray | None = None
    shift: np.ndarray | None = None

    def __getstate__(self) -> dict:
        # pickled (Spark's cached partitions): 32-bit indices, no padded dense copy; restored on load
        state = dict(self.__dict__, dense=None)
        state["rows"], state["pairs"] = _narrow(self.rows), _narrow(self.pairs)
        state["nz_slots"] = tuple(_narrow(a) for a in self.nz_slots)
        return state

    def __setstate__(self, state: dict) -> None:
        state["rows"], state["pairs"] = _widen(state["rows"]), _widen(state["pairs"])
        state["nz_slots"] = tuple(_widen(a) for a in state["nz_slots"])
        self.__dict__.update(state)

    def design(self, raw: bool = False) -> np.ndarray:
        """The padded dense design: normalized (what the solver sees) or, with ``raw``, the original one."""
        if self.dense is not None and not (raw and self.scale is not None):
            return self.dense
        Z = np.zeros(self.rows.shape + (self.pairs.shape[1],))
        Z[self.nz_slots] = self.nz_values
        if raw or self.scale is None:
            return Z
        Z *= self.scale[:, None, :]
        if self.shift is not None:
            Z -= self.shift[:, None, :] * self.row_mask[:, :, None]
        return Z


@dataclass
class LargeEntity:
    """An entity with many condensed columns, solved alone on a sparse local design (``design`` is the
    original one; ``operator()`` the normalized one the solver sees)."""

    rows: np.ndarray
    pairs: np.ndarray
    design: sp.csr_matrix
    scale: np.ndarray | None = None
    shift: np.ndarray | None = None

    def operator(self):
        """The normalized design: the CSR itself, a scaled CSR, or a linear operator Z·diag(scale) − 1·shiftᵀ
        when there is a shift (never densified)."""
        if self.scale is None:
            return self.design
        scaled = (self.design @ sp.diags(self.scale)).tocsr()
        if self.shift is None:
            return scaled
        shift = self.shift

        def matvec(v):
            v = np.ravel(v)
            return scaled @ v - float(shift @ v)

        def rmatvec(u):
            u = np.ravel(u)
            return scaled.T @ u - shift * float(u.sum())

        return spla.LinearOperator(scaled.shape, matvec=matvec, rmatvec=rmatvec, dtype=float)


def select_features(row_entity: np.ndarray, y: np.ndarray, nz_row: np.ndarray, nz_col: np.ndarray,
                    nz_value: np.ndarray, n_entities: int, n_cols: int, ratio: float,
                    intercept: bool) -> np.ndarray:
    """Per-entity feature selection: the mask of the nonzeros to keep.

    Rows are given by their entity (``row_entity``) and response ``y``; nonzeros by row, column and value.
    Each entity with n_e rows keeps its ⌈ratio · n_e⌉ columns of largest |Pearson correlation| between the
    column (zeros included) and ``y`` over its rows; equal correlations keep the lower column index; a column
    constant over the entity's rows (or a constant response) has correlation 0. The intercept (column 0 when
    ``intercept``) is always kept and does not count toward the limit. Vectorised over all entities.
    """
    n_e = np.bincount(row_entity, minlength=n_entities).astype(float)
    sy = np.bincount(row_entity, weights=y, minlength=n_entities)
    syy = np.bincount(row_entity, weights=y * y, minlength=n_entities)
    keys = row_entity[nz_row] * n_cols + nz_col
    pair_keys, inv = np.unique(keys, return_inverse=True)
    sz = np.bincount(inv, weights=nz_value, minlength=pair_keys.size)
    szz = np.bincount(inv, weights=nz_value * nz_value, minlength=pair_keys.size)
    szy = np.bincount(inv, weights=nz_value * y[nz_row], minlength=pair_keys.size)
    pe, pcol = pair_keys // n_cols, pair_keys % n_cols
    n = n_e[pe]
    cov = n * szy - sz * sy[pe]
    var_z = np.maximum(n * szz - sz * sz, 0.0)
    var_y = np.maximum(n * syy[pe] - sy[pe] ** 2, 0.0)
    denom = np.sqrt(var_z * var_y)
    # relative cut: a column equal to a constant up to rounding has no correlation
    tiny = 1e-12 * np.maximum(n * szz, 1e-300) * np.maximum(n * syy[pe], 1e-300)
    corr = np.where(denom * denom > tiny, np.abs(cov) / np.where(denom > 0, denom, 1.0), 0.0)
    is_intercept = (pcol == 0) if intercept else np.zeros(pcol.size, bool)
    limit = np.ceil(np.round(ratio * n_e, 9)).astype(np.int64)
    # within each entity: the intercept first, then by |corr| descending, then by column
    order = np.lexsort((pcol, -corr, ~is_intercept, pe))
    counts = np.bincount(pe, minlength=n_entities)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(pe.size, dtype=np.int64)
    rank[order] = np.arange(pe.size) - start[pe[order]]
    has_intercept = np.bincount(pe[is_intercept], minlength=n_entities)
    keep_pair = is_intercept | (rank - has_intercept[pe] < limit[pe])
    return keep_pair[inv]


class RandomDesign:
    """Entity grouping, condensed column maps and chunks of one random-effect coordinate.

    ``Z``: CSR (n rows × p features); ``codes``: entity code per row in [0, n_entities); ``fit_rows``: boolean
    mask of the rows that take part in fitting (active-data bounds). Entities without fit rows get no
    coefficients; rows whose entity has none score 0. ``intercept``: column 0 is the intercept.
    ``features_to_samples_ratio`` (needs the response ``y``): per-entity feature selection over the fit rows
    (``select_features``). ``normalization``: the solver sees the normalized design; ``pair_factor`` and
    ``pair_mean`` are its factor and shift per pair.
    """

    def __init__(self, Z: sp.csr_matrix, codes: np.ndarray, n_entities: int, fit_rows: np.ndarray,
                 max_dense_features: int = 256, *, intercept: bool = False, y: np.ndarray | None = None,
                 features_to_samples_ratio: float | None = None, normalization: Normalization | None = None):
        n, p = Z.shape
        self.n_rows, self.n_features = n, p
        self.intercept = intercept
        rows = np.flatnonzero(fit_rows)
        rows = rows[np.argsort(codes[rows], kind="stable")]
        Zf = Z[rows].tocoo()
        nz_local_row = Zf.row.astype(np.int64)
        nz_col, nz_data = Zf.col.astype(np.int64), Zf.data
        if features_to_samples_ratio is not None:
            if y is None:
                raise ValueError("feature selection needs the response y")
            keep = select_features(codes[rows], y[rows], nz_local_row, nz_col, nz_data, n_entities, p,
                                   features_to_samples_ratio, intercept)
            nz_local_row, nz_col, nz_data = nz_local_row[keep], nz_col[keep], nz_data[keep]
            log.debug("feature selection kept %d of %d nonzeros", int(keep.sum()), keep.size)
        nz_entity = codes[rows][nz_local_row]
        keys = nz_entity * p + nz_col
        # distinct (entity, column) pairs by one sort (faster than np.unique + searchsorted at 10M entries)
        order = np.argsort(keys)
        sorted_keys = keys[order]
        first = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]] if keys.size else np.zeros(0, bool)
        self.pair_keys = sorted_keys[first]
        nz_pair = np.empty(keys.size, dtype=np.int64)
        nz_pair[order] = np.cumsum(first) - 1
        del order, sorted_keys, first
        self.pair_entity = self.pair_keys // p
        self.pair_col = self.pair_keys % p
        dims = np.bincount(self.pair_entity, minlength=n_entities)
        pair_start = np.concatenate([[0], np.cumsum(dims)[:-1]])
        self.normalization = normalization
        if normalization is not None:
            self.pair_factor = normalization.factor[self.pair_col]
            self.pair_mean = normalization.shift[self.pair_col]
            self.pair_shift = self.pair_mean * self.pair_factor
        else:  # read-only broadcasts: no memory per pair
            self.pair_factor = np.broadcast_to(1.0, self.pair_keys.shape)
            self.pair_mean = self.pair_shift = np.broadcast_to(0.0, self.pair_keys.shape)
        self.has_shift = bool(np.any(self.pair_shift != 0))
        if self.has_shift and not intercept:
            raise ValueError("a normalization shift needs an intercept to absorb it")
        # the intercept pair of every entity with coefficients (column 0 sorts first within the entity)
        self.intercept_pairs = np.flatnonzero(self.pair_col == 0) if intercept else np.zeros(0, np.int64)
        nz_local_col = nz_pair - pair_start[nz_entity]
        counts = np.bincount(codes[rows], minlength=n_entities)
        row_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        row_slot = np.arange(rows.size) - row_start[codes[rows]]
        has_coef = dims > 0
        self.n_entities = n_entities
        self.entity_has_coef = has_coef

        dense_ent = np.flatnonzero(has_coef & (dims <= max_dense_features))
        large_ent = np.flatnonzero(dims > max_dense_features)
        # bucket entities geometrically by (columns, rows) so padding wastes at most ~1.25² per chunk
        bd = np.ceil(np.log(np.maximum(dims[dense_ent], 1)) / np.log(1.25)).astype(np.int64)
        bn = np.ceil(np.log(np.maximum(counts[dense_ent], 1)) / np.log(1.25)).astype(np.int64)
        order = np.lexsort((counts[dense_ent], dims[dense_ent], bn, bd))
        dense_ent, bd, bn = dense_ent[order], bd[order], bn[order]
        bucket_key = bd * 10_000 + bn
        cuts = np.flatnonzero(np.diff(bucket_key)) + 1
        chunk_of_entity = np.full(n_entities, -1, dtype=np.int64)
        pos_of_entity = np.zeros(n_entities, dtype=np.int64)
        specs = []
        for members in np.split(dense_ent, cuts) if dense_ent.size else []:
            N, D = int(counts[members].max()), int(dims[members].max())
            per_chunk = max(1, CHUNK_ELEMENTS // (N * D + D * D))
            for start in range(0, members.size, per_chunk):
                ents = members[start:start + per_chunk]
                chunk_of_entity[ents] = len(specs)
                pos_of_entity[ents] = np.arange(ents.size)
                specs.append((ents, N, D))
        # group nonzeros by chunk once
        nz_chunk = chunk_of_entity[nz_entity]
        nz_order = np.argsort(nz_chunk, kind="stable")
        nz_bounds = np.searchsorted(nz_chunk[nz_order], np.arange(len(specs) + 1))
        total = sum(e.size * N * D for e, N, D in specs)
        cache = total <= CACHE_ELEMENTS
        self.chunks: list[Chunk] = []
        for k, (ents, N, D) in enumerate(specs):
            slot = np.arange(N)
            row_mask = slot[None, :] < counts[ents][:, None]
            row_ids = np.where(row_mask, row_start[ents][:, None] + slot[None, :], 0)
            col = np.arange(D)
            pair_ids = np.where(col[None, :] < dims[ents][:, None], pair_start[ents][:, None] + col[None, :], -1)
            sel = nz_order[nz_bounds[k]:nz_bounds[k + 1]]
            nz_slots = (pos_of_entity[nz_entity[sel]], row_slot[nz_local_row[sel]], nz_local_col[sel])
            chunk = Chunk(rows[row_ids], row_mask, pair_ids, nz_slots, nz_data[sel])
            if normalization is not None:
                safe = np.maximum(pair_ids, 0)
                chunk.scale = np.where(pair_ids >= 0, self.pair_factor[safe], 1.0)
                if self.has_shift:
                    chunk.shift = np.where(pair_ids >= 0, self.pair_shift[safe], 0.0)
            if cache:
                chunk.dense = chunk.design()
            self.chunks.append(chunk)
        self.large: list[LargeEntity] = []
        for e in large_ent:
            sel = np.flatnonzero(nz_entity == e)
            local_rows = nz_local_row[sel] - row_start[e]
            design = sp.csr_matrix((nz_data[sel], (local_rows, nz_local_col[sel])), shape=(counts[e], dims[e]))
            pairs = pair_start[e] + np.arange(dims[e])
            large = LargeEntity(rows[row_start[e]:row_start[e] + counts[e]], pairs, design)
            if normalization is not None:
                large.scale = self.pair_factor[pairs]
                large.shift = self.pair_shift[pairs] if self.has_shift else None
            self.large.append(large)
        log.debug("random design: %d entities with coefficients, %d pairs, %d chunks (cached=%s), %d large",
                  int(has_coef.sum()), self.pair_keys.size, len(self.chunks), cache, len(self.large))
        # scoring map over every nonzero of the full Z: its pair (rows outside the fit may miss a pair)
        if fit_rows.all():
            self.score_rows, self.score_values, self.score_pairs = rows[nz_local_row], nz_data, nz_pair
            return
        Zc = Z.tocoo()
        all_keys = codes[Zc.row] * p + Zc.col
        pos = np.minimum(np.searchsorted(self.pair_keys, all_keys), max(self.pair_keys.size - 1, 0))
        found = self.pair_keys.size > 0
        hit = (self.pair_keys[pos] == all_keys) if found else np.zeros(all_keys.size, bool)
        self.score_rows = Zc.row.astype(np.int64)[hit]
        self.score_values = Zc.data[hit]
        self.score_pairs = pos[hit]

    # the arrays rebuilt on load instead of pickled, and the int64 ones pickled as int32
    _DERIVED = ("pair_keys", "pair_factor", "pair_mean", "pair_shift")
    _INDICES = ("pair_entity", "pair_col", "intercept_pairs", "score_rows", "score_pairs")

    def __getstate__(self) -> dict:
        """A compact pickle (Spark keeps designs in cached partitions and reads them on every update): pair
        keys and the unnormalized pair scalings are rebuilt on load, indices travel as int32."""
        state = {k: v for k, v in self.__dict__.items() if k not in self._DERIVED}
        if self.normalization is not None:
            state.update(pair_factor=self.pair_factor, pair_mean=self.pair_mean, pair_shift=self.pair_shift)
        for k in self._INDICES:
            state[k] = _narrow(state[k])
        return state

    def __setstate__(self, state: dict) -> None:
        for k in self._INDICES:
            state[k] = _widen(state[k])
        self.__dict__.update(state)
        self.pair_keys = self.pair_entity * self.n_features + self.pair_col
        if self.normalization is None:
            self.pair_factor = np.broadcast_to(1.0, self.pair_keys.shape)
            self.pair_mean = self.pair_shift = np.broadcast_to(0.0, self.pair_keys.shape)

    @property
    def n_pairs(self) -> int:
        return int(self.pair_keys.size)

    def score(self, pair_values: np.ndarray) -> np.ndarray:
        """Per-row score z_n' α_{e(n)} for the given original-scale coefficient values of every pair."""
        return np.bincount(self.score_rows, weights=self.score_values * pair_values[self.score_pairs],
                           minlength=self.n_rows)

    @property
    def scaling(self) -> PairScaling:
        """The map between the normalized pair values the solver fits and the original-scale ones."""
        if self.normalization is None:
            return PairScaling(None, None, self.pair_entity, self.intercept_pairs, self.n_entities)
        return PairScaling(self.pair_factor, self.pair_shift if self.has_shift else None, self.pair_entity,
                           self.intercept_pairs, self.n_entities)

    def to_original(self, values: np.ndarray) -> np.ndarray:
        """Normalized-space pair values → original-scale values (the same array when not normalized)."""
        return self.scaling.to_original(values)

    def to_normalized(self, values: np.ndarray) -> np.ndarray:
        """The inverse of ``to_original`` (e.g. for warm-start values)."""
        return self.scaling.to_normalized(values)


@dataclass
class PairScaling:
    """Normalized ↔ original pair values of a random effect: b = factor · b', and each entity's intercept
    absorbs the shift, b_0 = b'_0 − Σ shift · b'. ``factor`` None: no normalization (identity);
    ``shift`` None: no shift. Kept apart from the design so a driver can convert values it holds for
    designs that live elsewhere (the Spark backend's partitions)."""

    factor: np.ndarray | None
    shift: np.ndarray | None
    pair_entity: np.ndarray
    intercept_pairs: np.ndarray
    n_entities: int

    def to_original(self, values: np.ndarray) -> np.ndarray:
        if self.factor is None:
            return values
        out = values * self.factor
        if self.shift is not None:
            shift = np.bincount(self.pair_entity, weights=self.shift * values, minlength=self.n_entities)
            out[self.intercept_pairs] -= shift[self.pair_entity[self.intercept_pairs]]
        return out

    def to_normalized(self, values: np.ndarray) -> np.ndarray:
        if self.factor is None:
            return values
        out = values / self.factor
        if self.shift is not None:
            shift = np.bincount(self.pair_entity, weights=self.shift * out, minlength=self.n_entities)
            out[self.intercept_pairs] += shift[self.pair_entity[self.intercept_pairs]]
        return out

    @staticmethod
    def concat(parts: list[PairScaling]) -> PairScaling:
        """One scaling over the parts' pairs laid end to end (entity codes offset part by part)."""
        pair_offsets = np.cumsum([0] + [p.pair_entity.size for p in parts])
        entity_offsets = np.cumsum([0] + [p.n_entities for p in parts])
        pair_entity = np.concatenate([p.pair_entity + o for p, o in zip(parts, entity_offsets, strict=False)]
                                     + [np.zeros(0, np.int64)])
        intercept_pairs = np.concatenate([p.intercept_pairs + o for p, o in zip(parts, pair_offsets, strict=False)]
                                         + [np.zeros(0, np.int64)])
        n = int(pair_offsets[-1])
        factor = None
        if any(p.factor is not None for p in parts):
            factor = np.concatenate([np.ones(p.pair_entity.size) if p.factor is None else np.asarray(p.factor)
                                     for p in parts] + [np.zeros(0)])
        shift = None
        if any(p.shift is not None for p in parts):
            shift = np.concatenate([np.zeros(p.pair_entity.size) if p.shift is None else np.asarray(p.shift)
                                    for p in parts] + [np.zeros(0)])
        assert pair_entity.size == n
        return PairScaling(factor, shift, pair_entity.astype(np.int64), intercept_pairs.astype(np.int64),
                           int(entity_offsets[-1]))
