"""Building coordinates from rows: the one recipe both backends follow.

The local backend applies these functions to the whole table; the Spark backend applies the same ones to
each partition's rows with the feature vocabulary, normalization and row keys computed over all partitions,
so a partition's coordinate is exactly the slice of the local one (same active rows, reweighting, feature
selection, normalization, warm start and incremental prior).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from .coordinates import PairIndex, RandomCoordinate
from .data import encode_entities, feature_matrix, numeric_column
from .design import RandomDesign
from .errors import DataError
from .index_map import FeatureIndexMap
from .losses import Loss
from .model import RandomEffectModel
from .normalization import Normalization, make_normalization
from .sampling import bounded_sample, entity_reweighting
from .spec import CoordinateSpec, GLMixSpec


def row_arrays(spec: GLMixSpec, loss: Loss, table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(response, weight, offset) of ``table``'s rows, checked: a ``DataError`` names the column when the
    response is outside the task's support or a weight is negative."""
    y = numeric_column(table, spec.response, "response")
    loss.check_response(y, spec.response)
    weight = numeric_column(table, spec.weight, "weight") if spec.weight else np.ones(table.num_rows)
    if (weight < 0).any():
        raise DataError(f"weight column {spec.weight!r} has negative values")
    offset = numeric_column(table, spec.offset, "offset") if spec.offset else np.zeros(table.num_rows)
    return y, weight, offset


def active_rows(codes: np.ndarray, n_entities: int, cspec: CoordinateSpec,
                keys: np.ndarray | None = None) -> np.ndarray:
    """Rows that take part in fitting a random effect: entities with >= ``min_samples`` rows, and at most
    ``max_samples`` rows per entity: those with the smallest hash of (row key, ``seed``)
    (``sampling.bounded_sample``; ``keys`` default to the row positions), so reruns take the same rows.
    Fitting reweights the kept rows of a bounded entity by n_e / max_samples (``sampling.entity_reweighting``)."""
    counts = np.bincount(codes, minlength=n_entities)
    keep = counts[codes] >= cspec.min_samples
    if cspec.max_samples is not None and (counts > cspec.max_samples).any():
        keys = np.arange(codes.size, dtype=np.uint64) if keys is None else keys
        keep &= bounded_sample(codes, n_entities, keys, cspec.max_samples, cspec.seed)
    return keep


def normalized_fixed_design(X: sp.csr_matrix, normalization: Normalization | None) -> sp.csr_matrix:
    """The fixed effect's design in its fitting space: X · diag(factor) (the shift is left to the intercept)."""
    return X if normalization is None else (X @ sp.diags(normalization.factor)).tocsr()


def incremental_prior(prev: RandomEffectModel, design: RandomDesign, entity_ids: pa.Array,
                      features: FeatureIndexMap, l2: float, forgetting: float):
    """(start values, prior mean, prior precision) from the previous model: the mean is its coefficient, the
    precision of the normalized coefficient γ · factor² / variance (a standardized intercept keeps γ / variance,
    ignoring its covariances), and ``l2`` where no variance is usable (a model saved with variance: none)."""
    value, variance, found = prev.lookup(entity_ids, features, design.pair_entity, design.pair_col)
    usable = found & np.isfinite(variance) & (variance > 0)
    prec = np.where(usable, forgetting * design.pair_factor**2 / np.where(usable, variance, 1.0), l2)
    return value, value, prec


def random_coordinate(cspec: CoordinateSpec, loss: Loss, table: pa.Table, y: np.ndarray, weight: np.ndarray, *,
                      rtol: float, keys: np.ndarray | None = None, previous: RandomEffectModel | None = None,
                      incremental: bool = False, forgetting: float = 1.0,
                      vocabulary: FeatureIndexMap | None = None,
                      normalization: Normalization | None | str = "auto") -> RandomCoordinate:
    """The random-effect coordinate of ``table``'s rows.

    ``keys``: row keys of the active-data bound (default: row positions). ``previous``: warm-start model
    (matched by entity ID and feature name); with ``incremental`` also the prior. ``vocabulary``: the
    feature columns (default: built from ``table``); ``normalization``: given, or ``"auto"`` to compute it
    from ``table`` as ``cspec.normalization`` says. The coordinate carries ``pairs`` (a ``PairIndex``) and
    ``reweighted`` (True when active-data bounds reweight rows: it then fits a sample, not the full data).
    """
    codes, ids = encode_entities(table, cspec.entity)
    Z, feats = feature_matrix(table, cspec.features, cspec.feature_bags, cspec.intercept, vocabulary=vocabulary)
    if isinstance(normalization, str):
        normalization = make_normalization(cspec.normalization, Z, cspec.intercept)
    fit_rows = active_rows(codes, len(ids), cspec, keys)
    factor = entity_reweighting(codes, len(ids), fit_rows)
    reweighted = bool((factor != 1).any())
    design = RandomDesign(Z, codes, len(ids), fit_rows, cspec.max_dense_features, intercept=cspec.intercept,
                          y=y, features_to_samples_ratio=cspec.features_to_samples_ratio,
                          normalization=normalization)
    entity_ids = pa.array(ids, pa.string())
    coef0 = prior_mean = prior_prec = None
    if previous is not None:
        if incremental:
            coef0, prior_mean, prior_prec = incremental_prior(previous, design, entity_ids, feats, cspec.l2,
                                                              forgetting)
        else:
            coef0 = previous.lookup(entity_ids, feats, design.pair_entity, design.pair_col)[0]
    coord = RandomCoordinate(cspec.name, loss, design, y, weight * factor if reweighted else weight, l2=cspec.l2,
                             rtol=rtol, coef0=coef0, prior_mean=prior_mean, prior_prec=prior_prec)
    coord.pairs = PairIndex(entity_ids, feats, design.pair_entity, design.pair_col)
    coord.reweighted = reweighted
    return coord
