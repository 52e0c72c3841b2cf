"""The score exchange between layouts (paper Figure 2): only per-row scores move, joined by row id.

Every RDD here has exactly one element per partition, so RDDs of the same layout can be ``zip``-ped. The
"home" layout is the input's partitioning (fixed effect, labels, total score); each random-effect coordinate
has its own layout partitioned by entity. A score vector travels as ``(row_ids, values)`` pieces, one per
target partition, through a single ``partitionBy`` shuffle, and is aligned to the target's row order by
sorting on row id (vectorised, no per-row Python).
"""

from __future__ import annotations

import numpy as np

from .blocks import ROW_BITS, ROW_MASK, split_by


def _gather(pieces):
    """One ``(row_ids, values)`` per partition from the routed pieces (empty arrays when none arrived)."""
    ids, vals = [], []
    for _, (i, v) in pieces:
        ids.append(i)
        vals.append(v)
    if not ids:
        yield np.zeros(0, np.int64), np.zeros(0)
        return
    yield np.concatenate(ids), np.concatenate(vals)


def route_to_layout(home_keys, home_values, coordinate: str, num_parts: int):
    """Send a home-aligned per-row vector to ``coordinate``'s entity layout.

    ``home_keys`` elements: ``{"row_ids": int64[n], "dest": {coordinate: int64[n]}}``; ``home_values``
    elements: float[n]. Result: RDD with ``num_parts`` partitions of one ``(row_ids, values)`` each.
    """

    def split(pair):
        keys, values = pair
        ids = keys["row_ids"]
        for d, sel in split_by(keys["dest"][coordinate], num_parts):
            yield d, (ids[sel], values[sel])

    return (home_keys.zip(home_values).flatMap(split)
            .partitionBy(num_parts, lambda d: d).mapPartitions(_gather, preservesPartitioning=True))


def route_home(pieces, home_keys):
    """Send ``(row_ids, values)`` elements of a layout back home; result: home-aligned float[n] per partition.

    Rows that receive nothing get 0 (a coordinate contributes nothing to rows it does not score).
    """
    num_home = home_keys.getNumPartitions()

    def split(piece):
        ids, values = piece
        for d, sel in split_by(ids >> ROW_BITS, num_home):
            yield d, (ids[sel], values[sel])

    routed = pieces.flatMap(split).partitionBy(num_home, lambda d: d).mapPartitions(
        _gather, preservesPartitioning=True)

    def scatter(pair):
        keys, (ids, values) = pair
        out = np.zeros(keys["row_ids"].size)
        out[ids & ROW_MASK] = values
        return out

    return home_keys.zip(routed).map(scatter)


def align(row_ids: np.ndarray, received_ids: np.ndarray, received_values: np.ndarray) -> np.ndarray:
    """``received_values`` reordered to follow ``row_ids`` (every id of ``row_ids`` must have been received)."""
    if row_ids.size == 0:
        return np.zeros(0)
    order = np.argsort(received_ids, kind="stable")
    pos = np.searchsorted(received_ids[order], row_ids)
    if received_ids.size != row_ids.size or not np.array_equal(received_ids[order][pos], row_ids):
        raise RuntimeError("score exchange lost rows: the layouts disagree on row ids (was the input "
                           "recomputed with a different order? cache the input DataFrame)")
    return received_values[order][pos]
