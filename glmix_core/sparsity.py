"""Dropping small coefficients from a fitted model (Photon-ML's ``sparsity threshold``).

A dropped coefficient scores as 0 (absent features and pairs contribute nothing), so the saved model is
smaller and scores within |x| · threshold per dropped term of the unthresholded one. The fixed effect's
intercept is always kept.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .data import INTERCEPT
from .model import CoordinateModel, FixedEffectModel, RandomEffectModel


def sparsify(coord: CoordinateModel, threshold: float) -> CoordinateModel:
    """A copy of ``coord`` without the coefficients whose magnitude is below ``threshold`` (never the fixed
    effect's intercept; random-effect entities left without coefficients are dropped)."""
    if threshold <= 0:
        return coord
    if isinstance(coord, FixedEffectModel):
        keep = np.abs(coord.coef) >= threshold
        if coord.spec.intercept:
            pos = coord.features.index_of(pa.array([INTERCEPT], pa.string()))
            keep[pos[pos >= 0]] = True
        idx = np.flatnonzero(keep)
        variance = None if coord.variance is None else coord.variance[idx]
        return FixedEffectModel(coord.spec, coord.features.name_of(idx), coord.coef[idx], variance)
    keep = np.abs(coord.value) >= threshold
    used, local = np.unique(coord.pair_entity[keep], return_inverse=True)
    return RandomEffectModel(coord.spec, coord.entity_ids.take(pa.array(used, pa.int64())), coord.features,
                             local.astype(np.int64), coord.pair_feature[keep], coord.value[keep],
                             coord.variance[keep])
