"""The per-coordinate random-effect design, built once per fit.

Rows are grouped by entity (``np.argsort``), each entity's design is condensed to the columns it has data for
(paper §3.2.3), and entities are packed into chunks of similar (rows, columns) size so a chunk is one padded
dense array (E, N, D) solved by ``batch_newton``. Entities with more than ``max_dense_features`` condensed
columns go to a per-entity sparse fallback.

Coefficients live in one flat array over the (entity, column) "pairs" sorted by entity then column; chunks
and the fallback only hold index maps into it, so scoring, warm start and saving share one layout.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

log = logging.getLogger(__name__)

CHUNK_ELEMENTS = 2_000_000  # dense elements per chunk: E * (N * D + D * D); bounds working memory
CACHE_ELEMENTS = 60_000_000  # keep dense chunks between iterations when the total padded size is below this


@dataclass
class Chunk:
    """Entities solved together: padded row ids (E, N), pair ids (E, D) (-1 = padding), dense Z (E, N, D)."""

    rows: np.ndarray
    row_mask: np.ndarray
    pairs: np.ndarray
    nz_slots: tuple[np.ndarray, np.ndarray, np.ndarray]
    nz_values: np.ndarray
    dense: np.ndarray | None = None

    def design(self) -> np.ndarray:
        if self.dense is not None:
            return self.dense
        Z = np.zeros(self.rows.shape + (self.pairs.shape[1],))
        Z[self.nz_slots] = self.nz_values
        return Z


@dataclass
class LargeEntity:
    """An entity with many condensed columns, solved alone on a sparse local design."""

    rows: np.ndarray
    pairs: np.ndarray
    design: sp.csr_matrix


class RandomDesign:
    """Entity grouping, condensed column maps and chunks of one random-effect coordinate.

    ``Z``: CSR (n rows × p features); ``codes``: entity code per row in [0, n_entities); ``fit_rows``: boolean
    mask of the rows that take part in fitting (active-data bounds). Entities without fit rows get no
    coefficients; rows whose entity has none score 0.
    """

    def __init__(self, Z: sp.csr_matrix, codes: np.ndarray, n_entities: int, fit_rows: np.ndarray,
                 max_dense_features: int = 256):
        n, p = Z.shape
        self.n_rows, self.n_features = n, p
        rows = np.flatnonzero(fit_rows)
        rows = rows[np.argsort(codes[rows], kind="stable")]
        Zf = Z[rows].tocoo()
        nz_local_row = Zf.row.astype(np.int64)
        nz_entity = codes[rows][nz_local_row]
        keys = nz_entity * p + Zf.col
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
            chunk = Chunk(rows[row_ids], row_mask, pair_ids, nz_slots, Zf.data[sel])
            if cache:
                chunk.dense = chunk.design()
            self.chunks.append(chunk)
        self.large: list[LargeEntity] = []
        for e in large_ent:
            sel = np.flatnonzero(nz_entity == e)
            local_rows = nz_local_row[sel] - row_start[e]
            design = sp.csr_matrix((Zf.data[sel], (local_rows, nz_local_col[sel])), shape=(counts[e], dims[e]))
            self.large.append(LargeEntity(rows[row_start[e]:row_start[e] + counts[e]],
                                          pair_start[e] + np.arange(dims[e]), design))
        log.debug("random design: %d entities with coefficients, %d pairs, %d chunks (cached=%s), %d large",
                  int(has_coef.sum()), self.pair_keys.size, len(self.chunks), cache, len(self.large))
        # scoring map over every nonzero of the full Z: its pair (rows outside the fit may miss a pair)
        if fit_rows.all():
            self.score_rows, self.score_values, self.score_pairs = rows[nz_local_row], Zf.data, nz_pair
            return
        Zc = Z.tocoo()
        all_keys = codes[Zc.row] * p + Zc.col
        pos = np.minimum(np.searchsorted(self.pair_keys, all_keys), max(self.pair_keys.size - 1, 0))
        found = self.pair_keys.size > 0
        hit = (self.pair_keys[pos] == all_keys) if found else np.zeros(all_keys.size, bool)
        self.score_rows = Zc.row.astype(np.int64)[hit]
        self.score_values = Zc.data[hit]
        self.score_pairs = pos[hit]

    @property
    def n_pairs(self) -> int:
        return int(self.pair_keys.size)

    def score(self, pair_values: np.ndarray) -> np.ndarray:
        """Per-row score z_n' α_{e(n)} for the given coefficient values of every pair."""
        return np.bincount(self.score_rows, weights=self.score_values * pair_values[self.score_pairs],
                           minlength=self.n_rows)
