"""Deterministic, hash-keyed row sampling: fixed-effect negative down-sampling and per-entity active-data bounds.

Every decision is a function of (row key, seed, purpose) only, never of a stateful RNG, so a rerun on the same
rows takes the same sample regardless of row order, partitioning or process. The row key is the value of
the spec's ``uid`` column (integer or string) or, without one, the row position. Keys are mixed with the
splitmix64 finaliser (string keys are first hashed by ``index_map.hash_strings``, stable across processes,
unlike Python's salted ``hash``); each purpose (``STREAM_*``) gets its own stream so that down-sampling and
the active-data bound of the same rows are independent draws.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .data import DataError, require_columns

STREAM_DOWN_SAMPLING = 1
STREAM_ACTIVE_DATA = 2

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def mix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser applied elementwise to uint64 values (a bijection of 64-bit words)."""
    z = np.asarray(x, dtype=np.uint64)
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def row_keys(table: pa.Table, uid: str | None) -> np.ndarray:
    """One uint64 key per row: the ``uid`` column's values (integers as their 64-bit pattern, strings by a
    stable hash), or the row position when ``uid`` is None. Raises DataError for a missing, null or
    non-integer/non-string ``uid`` column."""
    n = table.num_rows
    if uid is None:
        return np.arange(n, dtype=np.uint64)
    require_columns(table, [uid], "uid")
    col = table.column(uid)
    if col.null_count:
        raise DataError(f"uid column {uid!r} has {col.null_count} null values; every row needs an ID")
    col = col.combine_chunks() if n else pa.array([], col.type)
    if pa.types.is_dictionary(col.type):
        col = col.dictionary.take(col.indices)
    if pa.types.is_integer(col.type):
        return col.to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        from .index_map import hash_strings

        return hash_strings(col)
    raise DataError(f"uid column {uid!r} must hold integer or string row IDs; it has type {col.type}")


def hash_keys(keys: np.ndarray, seed: int, stream: int) -> np.ndarray:
    """uint64 hash of each row key for ``seed`` and purpose ``stream`` (deterministic, order-free)."""
    salt = mix64(np.array([(int(seed) + int(_GOLDEN) * (stream + 1)) % 2**64], dtype=np.uint64))[0]
    return mix64(mix64(np.asarray(keys, dtype=np.uint64)) ^ salt)


def uniform(keys: np.ndarray, seed: int, stream: int) -> np.ndarray:
    """A uniform draw in [0, 1) per row key (the top 53 bits of ``hash_keys``)."""
    return (hash_keys(keys, seed, stream) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def down_sample(y: np.ndarray, weight: np.ndarray, keys: np.ndarray, rate: float,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Negative down-sampling of a binary response: every positive (``y == 1``) is kept, each negative is kept
    when its key's uniform draw is below ``rate``, and kept negatives are weighted by ``1 / rate`` (so the
    sample's expected data term equals the full data's). Returns (kept row indices, their weights)."""
    if not 0 < rate <= 1:
        raise ValueError(f"down-sampling rate must be in (0, 1]; got {rate}")
    if rate >= 1:
        return np.arange(y.size), weight.copy()
    positive = y == 1
    rows = np.flatnonzero(positive | (uniform(keys, seed, STREAM_DOWN_SAMPLING) < rate))
    return rows, np.where(positive[rows], weight[rows], weight[rows] / rate)


def bounded_sample(codes: np.ndarray, n_entities: int, keys: np.ndarray, max_samples: int,
                   seed: int) -> np.ndarray:
    """Hash-keyed reservoir sampling per entity: the mask of the ``max_samples`` rows of each entity with the
    smallest ``hash_keys(key, seed)`` (all rows of smaller entities; equal hashes keep the earlier row)."""
    counts = np.bincount(codes, minlength=n_entities)
    if not (counts > max_samples).any():
        return np.ones(codes.size, bool)
    order = np.lexsort((hash_keys(keys, seed, STREAM_ACTIVE_DATA), codes))
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(codes.size, dtype=np.int64)
    rank[order] = np.arange(codes.size) - start[codes[order]]
    return rank < max_samples


def entity_reweighting(codes: np.ndarray, n_entities: int, keep: np.ndarray) -> np.ndarray:
    """Per-row weight factor n_e / k_e for rows of an entity with n_e rows of which k_e are kept (1 when all
    are kept or none is): an entity bounded to ``max_samples`` rows keeps the scale of its data term, as in
    Photon-ML's active-data reweighting."""
    counts = np.bincount(codes, minlength=n_entities).astype(float)
    kept = np.bincount(codes[keep], minlength=n_entities).astype(float)
    factor = np.where(kept > 0, counts / np.maximum(kept, 1.0), 1.0)
    return factor[codes]
