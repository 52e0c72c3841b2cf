"""Per-coordinate feature normalization (Photon-ML's ``NormalizationType``), without densifying the design.

A normalized feature is x' = (x − shift) · factor:

- ``standardization``: factor = 1 / std, shift = mean (the shift only when the coordinate has an intercept,
  as in Photon-ML; without one it is scaling by 1 / std);
- ``scale_with_standard_deviation``: factor = 1 / std;
- ``scale_with_max_magnitude``: factor = 1 / max |x|.

Statistics are unweighted, over all training rows of the coordinate; std is the sample standard deviation
(n − 1, as Photon-ML's summary); a feature with zero std or max |x| keeps factor 1. The intercept column is
never scaled or shifted. Coefficients are fitted (and penalised) in the normalized space and reported in the
original scale: with b' the normalized coefficients, b_j = factor_j · b'_j and the intercept absorbs the
shift, b_0 = b'_0 − Σ_j shift_j · factor_j · b'_j, so η = x'·b' = x·b and scoring raw data needs no statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .spec import NORMALIZATIONS


@dataclass(frozen=True)
class Normalization:
    """Column ``factor`` and ``shift`` arrays (length p) of one coordinate's design; see the module doc."""

    kind: str
    factor: np.ndarray
    shift: np.ndarray

    @property
    def has_shift(self) -> bool:
        return bool(np.any(self.shift != 0))


@dataclass(frozen=True)
class ColumnSums:
    """Mergeable column statistics of a design: rows, Σx, Σx², max |x| per column (zeros included)."""

    n: int
    total: np.ndarray
    squares: np.ndarray
    max_abs: np.ndarray

    @classmethod
    def of(cls, X: sp.spmatrix) -> ColumnSums:
        X = sp.csc_matrix(X)
        max_abs = np.asarray(abs(X).max(axis=0).todense()).ravel() if X.shape[0] else np.zeros(X.shape[1])
        return cls(X.shape[0], np.asarray(X.sum(axis=0)).ravel(), np.asarray(X.multiply(X).sum(axis=0)).ravel(),
                   max_abs)

    def merge(self, other: ColumnSums) -> ColumnSums:
        return ColumnSums(self.n + other.n, self.total + other.total, self.squares + other.squares,
                          np.maximum(self.max_abs, other.max_abs))


def feature_statistics(sums: ColumnSums | sp.spmatrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, sample std, max |x|) of every column, zeros included, never densifying."""
    if not isinstance(sums, ColumnSums):
        sums = ColumnSums.of(sums)
    n = sums.n
    mean = sums.total / max(n, 1)
    var = np.maximum(sums.squares - n * mean * mean, 0.0) / max(n - 1, 1)
    return mean, np.sqrt(var), sums.max_abs


def make_normalization(kind: str, X: sp.spmatrix | ColumnSums, intercept: bool) -> Normalization | None:
    """The normalization of design ``X`` (or of its merged ``ColumnSums``, e.g. over Spark partitions; column
    0 is the intercept when ``intercept``), or None for ``none``."""
    if kind not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}; got {kind!r}")
    if kind == "none":
        return None
    mean, std, max_abs = feature_statistics(X)
    spread = max_abs if kind == "scale_with_max_magnitude" else std
    factor = np.where(spread > 0, 1.0 / np.where(spread > 0, spread, 1.0), 1.0)
    shift = mean.copy() if kind == "standardization" and intercept else np.zeros_like(mean)
    if intercept and factor.size:
        factor[0], shift[0] = 1.0, 0.0
    return Normalization(kind, factor, shift)
