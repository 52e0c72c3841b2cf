"""Coordinates: each one trains on the residual offset and scores; nothing else (as in Photon-ML).

``FixedCoordinate`` solves one GLM with a registered solver over a ``FixedData`` source (``LocalFixedData``
here, the Spark backend's partitioned one there); ``RandomCoordinate`` solves all entities as a batch with
``batch_newton`` over a ``RandomDesign``. Every coordinate, of either backend, exposes what the PBCD driver
(``glmix_core.pbcd``) uses: ``fit(offset)``, ``score()``, ``params``, ``prior()``, ``penalty()``,
``variances(offset, kind)``, ``to_original(params)``, ``last_iterations`` and ``last_kkt``.

With normalization, ``params`` (and ``coef``/``values``, the prior and the penalty) live in the normalized
space, where the L2 penalty applies; ``to_original`` gives the original-scale coefficients that are saved
and score raw data, and ``variances`` are those of the original-scale coefficients.

``last_kkt`` is the coordinate's stopping measure, taken by ``fit`` before it moves: the largest
curvature-scaled gradient |g_j| / H_jj of its fitted objective at the offset it was given (the Newton step
each coefficient would take alone, in original units), with L1's subgradient at zero coefficients. PBCD
stops after a sweep in which every coordinate started within the tolerance.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from .design import RandomDesign
from .index_map import FeatureIndexMap
from .losses import Loss
from .solvers import (
    FIXED_SOLVERS,
    FixedObjective,
    GLMObjective,
    batch_hessian,
    batch_inverse_diagonal_dual,
    batch_newton,
    solve_trust_ncg,
)

log = logging.getLogger(__name__)

MAX_DENSE_VARIANCE = 3000  # full posterior variances need a dense Hessian inverse; skipped above this
NEWTON_STEPS_PER_SWEEP = 1
NEWTON_STEPS_FIXED_PER_SWEEP = 2
VARIANCE_KINDS = ("none", "simple", "full")


def _reciprocal(diag: np.ndarray) -> np.ndarray:
    """1 / diag, NaN where the curvature is not positive (no usable variance)."""
    return np.divide(1.0, diag, out=np.full(diag.shape, np.nan), where=diag > 0)


def scaled_gradient(grad: np.ndarray, diag: np.ndarray, params: np.ndarray, l1: np.ndarray | float = 0.0,
                    factor: np.ndarray | float = 1.0) -> float:
    """max_j |g_j| / H_jj · factor_j, the KKT measure (``g`` with the penalty's smooth part; ``l1`` per
    coefficient: at a zero coefficient only |g| beyond l1 counts, elsewhere g + l1 · sign)."""
    if grad.size == 0:
        return 0.0
    l1 = np.broadcast_to(l1, grad.shape)
    g = np.where(params != 0, grad + l1 * np.sign(params), np.maximum(np.abs(grad) - l1, 0.0))
    step = np.abs(g) / np.maximum(diag, 1e-300) * np.abs(factor)
    return float(np.max(step))


class FixedData(Protocol):
    """Where a fixed effect's rows live: the fit rows (and fitting weights) behind its objective, and every
    row for scoring. The design may already be normalized (``FixedCoordinate`` fits in that space)."""

    n_features: int
    n_rows: int

    def objective(self, offset: np.ndarray, l2: np.ndarray) -> FixedObjective: ...

    def score(self, coef: np.ndarray) -> np.ndarray: ...

    def curvature(self, coef: np.ndarray, offset: np.ndarray) -> np.ndarray: ...

    def hessian(self, coef: np.ndarray, offset: np.ndarray, l2: np.ndarray) -> np.ndarray: ...


class LocalFixedData:
    """``FixedData`` in memory: ``X`` (CSR, every row) and the fit rows/weights of negative down-sampling."""

    def __init__(self, loss: Loss, X: sp.csr_matrix, y: np.ndarray, weight: np.ndarray,
                 fit_rows: np.ndarray | None = None, fit_weight: np.ndarray | None = None):
        self.loss, self.X = loss, X.tocsr()
        self.n_rows, self.n_features = X.shape
        self.fit_rows = fit_rows
        if fit_rows is None:
            self.Xf, self.yf, self.wf = self.X, y, weight
        else:
            self.Xf, self.yf = self.X[fit_rows], y[fit_rows]
            self.wf = weight[fit_rows] if fit_weight is None else fit_weight

    def _offset(self, offset: np.ndarray) -> np.ndarray:
        return offset if self.fit_rows is None else offset[self.fit_rows]

    def objective(self, offset: np.ndarray, l2: np.ndarray) -> GLMObjective:
        return GLMObjective(self.loss, self.Xf, self.yf, self.wf, self._offset(offset), l2)

    def score(self, coef: np.ndarray) -> np.ndarray:
        return self.X @ coef

    def curvature(self, coef: np.ndarray, offset: np.ndarray) -> np.ndarray:
        """diag X' diag(w ℓ'') X of the data term over the fit rows."""
        _, d2 = self.loss.derivatives(self.yf, self._offset(offset) + self.Xf @ coef)
        return np.asarray(self.Xf.multiply(self.Xf).T @ (self.wf * d2)).ravel()

    def hessian(self, coef: np.ndarray, offset: np.ndarray, l2: np.ndarray) -> np.ndarray:
        return self.loss.hessian(coef, self.Xf, self.yf, self.wf, self._offset(offset), l2)


class FixedCoordinate:
    """The fixed effect b: one coefficient per feature; the intercept (column ``(intercept)``) is unpenalised.

    ``data`` holds the design, already multiplied by ``factor`` (normalization) when one is given: the shift
    of standardization is absorbed exactly by the unpenalised intercept, so it changes neither the optimum
    nor the original-scale coefficients and the design stays sparse. ``coef0`` is in the original scale.
    """

    def __init__(self, name: str, data: FixedData, features: FeatureIndexMap, *, l2: float, l1: float,
                 solver: str, intercept: bool, rtol: float, coef0=None, factor: np.ndarray | None = None):
        self.name, self.data, self.features = name, data, features
        self.factor = factor
        p = data.n_features
        self.l2 = np.full(p, float(l2))
        if intercept:
            self.l2[0] = 0.0
        self.l1, self.solver = float(l1), FIXED_SOLVERS[solver]
        self.coef = np.zeros(p) if coef0 is None else self.to_normalized(np.asarray(coef0, float))
        # gradient scale at b = 0 (with no offset) sets an absolute tolerance that is stable across sweeps
        _, g0 = data.objective(np.zeros(data.n_rows), self.l2).value_grad(np.zeros(p))
        self.gtol = max(rtol, 1e-12) * (1.0 + float(np.linalg.norm(g0)))
        self.last_iterations = 0
        self.last_kkt = float("inf")
        self.max_iter = 1000 if solver == "lbfgs" or l1 > 0 else NEWTON_STEPS_FIXED_PER_SWEEP

    def fit(self, offset: np.ndarray) -> np.ndarray:
        # Newton-type solvers take a few steps per sweep (PBCD repeats the sweep anyway, so an exact block
        # solve early on is wasted work); the final sweeps start at the block optimum and stop at gtol.
        objective = self.data.objective(offset, self.l2)
        grad, diag = objective.gradient_diagonal(self.coef)
        self.last_kkt = scaled_gradient(grad, diag, self.coef, np.where(self.l2 > 0, self.l1, 0.0),
                                        1.0 if self.factor is None else self.factor)
        result = self.solver(objective, self.coef, self.l1, self.gtol, self.max_iter)
        self.coef, self.last_iterations = result.coef, result.n_iter
        return self.coef

    def score(self) -> np.ndarray:
        return self.data.score(self.coef)

    @property
    def params(self) -> np.ndarray:
        return self.coef

    @params.setter
    def params(self, value: np.ndarray) -> None:
        self.coef = value

    def to_original(self, params: np.ndarray) -> np.ndarray:
        """Original-scale coefficients of ``params`` (a new array)."""
        return params * self.factor if self.factor is not None else np.array(params, float, copy=True)

    def to_normalized(self, coef: np.ndarray) -> np.ndarray:
        """The inverse of ``to_original`` (a new array)."""
        return coef / self.factor if self.factor is not None else np.array(coef, float, copy=True)

    def prior(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(mean, precision) of the quadratic penalty, or None when the penalty is not quadratic (L1)."""
        return None if self.l1 > 0 else (np.zeros_like(self.coef), self.l2)

    def penalty(self) -> float:
        return 0.5 * float(np.sum(self.l2 * self.coef**2)) + self.l1 * float(np.sum(np.abs(self.coef[self.l2 > 0])))

    def variances(self, offset: np.ndarray, kind: str = "full") -> np.ndarray | None:
        """Posterior variances of the original-scale coefficients at the solution, from the Hessian H of the
        fitted objective: ``full`` = diag(H⁻¹) (None above ``MAX_DENSE_VARIANCE`` features), ``simple`` =
        1 / diag(H) (any size), ``none`` = None. None with L1 (the objective has no Hessian)."""
        if kind not in VARIANCE_KINDS:
            raise ValueError(f"variance kind must be one of {VARIANCE_KINDS}; got {kind!r}")
        if kind == "none" or self.l1 > 0:
            return None
        if kind == "simple":
            var = _reciprocal(self.data.curvature(self.coef, offset) + self.l2)
        else:
            if self.data.n_features > MAX_DENSE_VARIANCE:
                return None
            H = self.data.hessian(self.coef, offset, self.l2)
            H[np.diag_indices_from(H)] += 1e-12
            try:
                var = np.diag(np.linalg.inv(H)).copy()
            except np.linalg.LinAlgError:
                return None
        # b = factor · b', so Var(b) = factor² Var(b') (and 1 / diag of the original-space Hessian likewise)
        return var if self.factor is None else var * self.factor**2


@dataclass
class PairIndex:
    """Which (entity, feature) each coefficient of a random effect belongs to: ``pair_entity`` indexes
    ``entity_ids``, ``pair_col`` indexes ``features``; pairs sorted by (entity code, column), so
    ``pair_keys`` (entity × features + column) is sorted."""

    entity_ids: pa.Array
    features: FeatureIndexMap
    pair_entity: np.ndarray
    pair_col: np.ndarray

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def pair_keys(self) -> np.ndarray:
        return self.pair_entity * max(self.n_features, 1) + self.pair_col


class RandomCoordinate:
    """A random effect: coefficients per (entity, condensed feature) pair, solved as a batch.

    ``prior_mean``/``prior_prec`` are per pair: zero and ``l2`` by default; an incremental update passes the
    previous posterior mean and (inflated) posterior precision instead. ``coef0`` and ``prior_mean`` are
    original-scale values (converted with ``design.to_normalized``); ``prior_prec`` is the precision of the
    normalized coefficients. ``weight`` is the per-row weight used in fitting (active-data reweighting
    included).
    """

    def __init__(self, name: str, loss: Loss, design: RandomDesign, y, weight, *, l2: float, rtol: float,
                 coef0=None, prior_mean=None, prior_prec=None):
        self.name, self.loss, self.design = name, loss, design
        self.y, self.weight = y, weight
        self.l2 = float(l2)
        n = design.n_pairs
        self.values = np.zeros(n) if coef0 is None else \
            np.array(design.to_normalized(np.asarray(coef0, float)), copy=True)
        self.prior_mean = np.zeros(n) if prior_mean is None else design.to_normalized(np.asarray(prior_mean, float))
        self.prior_prec = np.full(n, self.l2) if prior_prec is None else prior_prec
        self.rtol = max(rtol, 1e-14)
        self.last_iterations = 0
        self.last_kkt = float("inf")
        # Newton steps per entity per sweep: the sweep is repeated anyway, so an inexact block solve saves
        # the extra factorisation a convergence check would cost; PBCD converges to the same optimum.
        self.newton_steps = NEWTON_STEPS_PER_SWEEP
        self._static: dict[int, tuple] = {}

    def __getstate__(self) -> dict:
        # pickled (Spark's cached partitions): the default prior (mean 0, precision l2) is rebuilt on load and
        # the per-chunk caches are rebuilt on first use
        state = dict(self.__dict__, _static={})
        if not np.any(self.prior_mean) and np.all(self.prior_prec == self.l2):
            state.update(prior_mean=None, prior_prec=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.prior_mean is None:
            self.prior_mean = np.zeros(self.values.size)
            self.prior_prec = np.full(self.values.size, self.l2)

    def _chunk_arrays(self, chunk, offset):
        """Per-chunk coefficients and the static arrays (labels, weights, prior), the latter built once."""
        static = self._static.get(id(chunk))
        if static is None:
            static = self._static[id(chunk)] = self._static_arrays(chunk)
        valid, mean, prec, y, w = static
        coef = np.where(valid, self.values[np.where(valid, chunk.pairs, 0)], 0.0)
        return valid, coef, mean, prec, y, w, offset[chunk.rows]

    def _static_arrays(self, chunk):
        valid = chunk.pairs >= 0
        safe = np.where(valid, chunk.pairs, 0)
        mean = np.where(valid, self.prior_mean[safe], 0.0)
        prec = np.where(valid, self.prior_prec[safe], 1.0)
        y = self.y[chunk.rows]
        w = np.where(chunk.row_mask, self.weight[chunk.rows], 0.0)
        return valid, mean, prec, y, w

    def fit(self, offset: np.ndarray) -> np.ndarray:
        iterations, kkt = 0, 0.0
        factor = self.design.pair_factor
        for chunk in self.design.chunks:
            valid, coef, mean, prec, y, w, off = self._chunk_arrays(chunk, offset)
            scale = np.where(valid, np.abs(factor[np.where(valid, chunk.pairs, 0)]), 0.0)
            coef, it, measure = batch_newton(self.loss, chunk.design(), y, w, off, coef, mean, prec, self.rtol,
                                             max_iter=self.newton_steps, scale=scale)
            self.values[chunk.pairs[valid]] = coef[valid]
            iterations, kkt = max(iterations, it), max(kkt, measure)
        for ent in self.design.large:
            kkt = max(kkt, self._large_kkt(ent, offset))
            coef, it = self._fit_large(ent, offset)
            self.values[ent.pairs] = coef
            iterations = max(iterations, it)
        self.last_iterations, self.last_kkt = iterations, kkt
        return self.values

    def _fit_large(self, ent, offset):
        """Fallback for an entity with many features: trust-region Newton-CG on its sparse local design."""
        design = ent.operator()
        mean, prec = self.prior_mean[ent.pairs], self.prior_prec[ent.pairs]
        # shift by the prior mean so the solver's zero-centred penalty applies: coef = mean + delta
        off = offset[ent.rows] + design @ mean
        y, w = self.y[ent.rows], self.weight[ent.rows]
        _, g0 = self.loss.loss_gradient(np.zeros(mean.size), design, y, w, np.zeros(y.size), prec)
        gtol = self.rtol * (1.0 + float(np.linalg.norm(g0)))
        res = solve_trust_ncg(GLMObjective(self.loss, design, y, w, off, prec), self.values[ent.pairs] - mean, 0.0,
                              gtol, 500)
        return mean + res.coef, res.n_iter

    def score(self) -> np.ndarray:
        return self.design.score(self.design.to_original(self.values))

    @property
    def params(self) -> np.ndarray:
        return self.values

    @params.setter
    def params(self, value: np.ndarray) -> None:
        self.values = value

    def to_original(self, params: np.ndarray) -> np.ndarray:
        """Original-scale pair values of ``params`` (a new array)."""
        return np.array(self.design.to_original(params), float, copy=True)

    def prior(self) -> tuple[np.ndarray, np.ndarray]:
        return self.prior_mean, self.prior_prec

    def penalty(self) -> float:
        diff = self.values - self.prior_mean
        return 0.5 * float(np.sum(self.prior_prec * diff * diff))

    def _large_kkt(self, ent, offset: np.ndarray) -> float:
        """The KKT measure of one large (sparse-solved) entity at ``offset`` (module doc)."""
        design = ent.operator()
        coef, mean, prec = self.values[ent.pairs], self.prior_mean[ent.pairs], self.prior_prec[ent.pairs]
        y, w = self.y[ent.rows], self.weight[ent.rows]
        d1, d2 = self.loss.derivatives(y, offset[ent.rows] + design @ coef)
        grad = np.asarray(design.T @ (w * d1)).ravel() + prec * (coef - mean)
        c = w * d2
        Zr = ent.design
        scale = np.ones(ent.pairs.size) if ent.scale is None else ent.scale
        shift = np.zeros(ent.pairs.size) if ent.shift is None else ent.shift
        # diag of (Z·scale − shift)ᵀ C (Z·scale − shift) from three sums of the raw design
        diag = (scale**2 * np.asarray(Zr.multiply(Zr).T @ c).ravel()
                - 2 * scale * shift * np.asarray(Zr.T @ c).ravel() + shift**2 * c.sum()) + prec
        return scaled_gradient(grad, diag, coef, 0.0, self.design.pair_factor[ent.pairs])

    def _original_prior(self):
        """The prior's Hessian in the original scale: diagonal ``prec`` per pair plus, with a standardization
        shift, prec₀ · u uᵀ per entity (u = intercept 1, mean of each feature), since the normalized intercept
        is b'_0 = b_0 + Σ mean · b. Returns (prec, u, prec₀ per pair) with u and prec₀ None without a shift."""
        d = self.design
        prec = self.prior_prec if d.normalization is None else self.prior_prec / d.pair_factor**2
        if not d.has_shift:
            return prec, None, None
        prec = prec.copy()
        prec[d.intercept_pairs] = 0.0
        u = d.pair_mean.copy()
        u[d.intercept_pairs] = 1.0
        first = np.full(d.n_entities, 0, dtype=np.int64)
        first[d.pair_entity[d.intercept_pairs]] = d.intercept_pairs
        return prec, u, self.prior_prec[first[d.pair_entity]]

    def variances(self, offset: np.ndarray, kind: str = "full") -> np.ndarray:
        """Per-pair posterior variances of the original-scale coefficients from each entity's Hessian H at the
        solution: ``full`` = diag(H⁻¹), ``simple`` = 1 / diag(H) (no inversion), ``none`` = all NaN (stored as
        null). Large fallback entities above ``MAX_DENSE_VARIANCE`` columns get NaN with ``full``."""
        if kind not in VARIANCE_KINDS:
            raise ValueError(f"variance kind must be one of {VARIANCE_KINDS}; got {kind!r}")
        out = np.full(self.design.n_pairs, np.nan)
        if kind == "none":
            return out
        b = self.design.to_original(self.values)
        prec_all, u_all, p0_all = self._original_prior()
        for chunk in self.design.chunks:
            valid, _, _, _, y, w, off = self._chunk_arrays(chunk, offset)
            safe = np.where(valid, chunk.pairs, 0)
            coef = np.where(valid, b[safe], 0.0)
            prec = np.where(valid, prec_all[safe], 1.0)
            Z = chunk.design(raw=True)
            u = None if u_all is None else np.where(valid, u_all[safe], 0.0)
            p0 = None if p0_all is None else np.where(valid, p0_all[safe], 0.0)[:, 0]
            if kind == "simple":
                eta = off + np.matmul(Z, coef[:, :, None])[:, :, 0]
                _, d2 = self.loss.derivatives(y, eta)
                diag = np.einsum("en,end->ed", w * d2, Z * Z) + prec
                if u is not None:
                    diag += p0[:, None] * u * u
                var = _reciprocal(diag)
            elif u is None and Z.shape[1] < Z.shape[2]:
                var = batch_inverse_diagonal_dual(self.loss, Z, y, w, off, coef, prec)
            else:
                H = batch_hessian(self.loss, Z, y, w, off, coef, prec)
                if u is not None:
                    H += p0[:, None, None] * u[:, :, None] * u[:, None, :]
                var = np.diagonal(np.linalg.inv(H), axis1=1, axis2=2)
            out[chunk.pairs[valid]] = var[valid]
        for ent in self.design.large:
            if kind == "full" and ent.pairs.size > MAX_DENSE_VARIANCE:
                continue
            Z, coef, prec = ent.design, b[ent.pairs], prec_all[ent.pairs]
            y, w, off = self.y[ent.rows], self.weight[ent.rows], offset[ent.rows]
            u = None if u_all is None else u_all[ent.pairs]
            p0 = None if p0_all is None else float(p0_all[ent.pairs[0]])
            if kind == "simple":
                _, d2 = self.loss.derivatives(y, off + Z @ coef)
                diag = np.asarray(Z.multiply(Z).T @ (w * d2)).ravel() + prec
                out[ent.pairs] = _reciprocal(diag if u is None else diag + p0 * u * u)
            else:
                H = self.loss.hessian(coef, Z, y, w, off, prec)
                if u is not None:
                    H += p0 * np.outer(u, u)
                out[ent.pairs] = np.diag(np.linalg.inv(H))
        return out
