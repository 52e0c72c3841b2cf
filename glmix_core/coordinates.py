"""Coordinates: each one trains on the residual offset and scores; nothing else (as in Photon-ML).

``FixedCoordinate`` solves one sparse GLM with a registered solver; ``RandomCoordinate`` solves all entities
as a batch with ``batch_newton`` over a ``RandomDesign``. Both expose ``fit(offset)``, ``score()``,
``penalty()``, ``variances()`` and ``to_original(params)``.

With normalization, ``params`` (and ``coef``/``values``, the prior and the penalty) live in the normalized
space, where the L2 penalty applies; ``to_original`` gives the original-scale coefficients that are saved
and score raw data, and ``variances`` are those of the original-scale coefficients.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from .design import RandomDesign
from .losses import Loss
from .normalization import Normalization
from .solvers import FIXED_SOLVERS, batch_hessian, batch_inverse_diagonal_dual, batch_newton

log = logging.getLogger(__name__)

MAX_DENSE_VARIANCE = 3000  # full posterior variances need a dense Hessian inverse; skipped above this
NEWTON_STEPS_PER_SWEEP = 1
NEWTON_STEPS_FIXED_PER_SWEEP = 3
VARIANCE_KINDS = ("none", "simple", "full")


def _reciprocal(diag: np.ndarray) -> np.ndarray:
    """1 / diag, NaN where the curvature is not positive (no usable variance)."""
    return np.divide(1.0, diag, out=np.full(diag.shape, np.nan), where=diag > 0)


class FixedCoordinate:
    """The fixed effect b: one coefficient per feature; the intercept (column ``(intercept)``) is unpenalised.

    ``normalization``: the coordinate fits on X · diag(factor). The shift of standardization is absorbed
    exactly by the unpenalised intercept, so it changes neither the optimum nor the original-scale
    coefficients and the design stays sparse. ``fit_rows``/``fit_weight``: fit on these rows with these
    weights only (negative down-sampling) while ``score`` still covers every row. ``coef0`` is in the
    original scale.
    """

    def __init__(self, name: str, loss: Loss, X: sp.csr_matrix, features, y, weight, *,
                 l2: float, l1: float, solver: str, intercept: bool, rtol: float, coef0=None,
                 normalization: Normalization | None = None, fit_rows: np.ndarray | None = None,
                 fit_weight: np.ndarray | None = None):
        self.name, self.loss, self.features = name, loss, features
        self.factor = None if normalization is None else normalization.factor
        X = X.tocsr()
        self.X = X if self.factor is None else (X @ sp.diags(self.factor)).tocsr()
        self.y, self.weight = y, weight
        self.fit_rows = fit_rows
        if fit_rows is None:
            self.Xf, self.yf, self.wf = self.X, y, weight
        else:
            self.Xf, self.yf = self.X[fit_rows], y[fit_rows]
            self.wf = weight[fit_rows] if fit_weight is None else fit_weight
        self.l2 = np.full(X.shape[1], float(l2))
        if intercept:
            self.l2[0] = 0.0
        self.l1, self.solver = float(l1), FIXED_SOLVERS[solver]
        self.coef = np.zeros(X.shape[1]) if coef0 is None else self.to_normalized(np.asarray(coef0, float))
        # gradient scale at b = 0 (with no offset) sets an absolute tolerance that is stable across sweeps
        _, g0 = loss.loss_gradient(np.zeros(X.shape[1]), self.Xf, self.yf, self.wf, np.zeros(self.Xf.shape[0]),
                                   self.l2)
        self.gtol = max(rtol, 1e-12) * (1.0 + float(np.linalg.norm(g0)))
        self.last_iterations = 0
        self.max_iter = 1000 if solver == "lbfgs" or l1 > 0 else NEWTON_STEPS_FIXED_PER_SWEEP

    def _fit_offset(self, offset: np.ndarray) -> np.ndarray:
        return offset if self.fit_rows is None else offset[self.fit_rows]

    def fit(self, offset: np.ndarray) -> np.ndarray:
        # Newton-type solvers take a few steps per sweep (PBCD repeats the sweep anyway, so an exact block
        # solve early on is wasted work); the final sweeps start at the block optimum and stop at gtol.
        result = self.solver(self.loss, self.Xf, self.yf, self.wf, self._fit_offset(offset), self.coef, self.l2,
                             self.l1, self.gtol, self.max_iter)
        self.coef, self.last_iterations = result.coef, result.n_iter
        return self.coef

    def score(self) -> np.ndarray:
        return self.X @ self.coef

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
        off = self._fit_offset(offset)
        if kind == "simple":
            _, d2 = self.loss.derivatives(self.yf, off + self.Xf @ self.coef)
            diag = np.asarray(self.Xf.multiply(self.Xf).T @ (self.wf * d2)).ravel() + self.l2
            var = _reciprocal(diag)
        else:
            if self.X.shape[1] > MAX_DENSE_VARIANCE:
                return None
            H = self.loss.hessian(self.coef, self.Xf, self.yf, self.wf, off, self.l2)
            H[np.diag_indices_from(H)] += 1e-12
            try:
                var = np.diag(np.linalg.inv(H)).copy()
            except np.linalg.LinAlgError:
                return None
        # b = factor · b', so Var(b) = factor² Var(b') (and 1 / diag of the original-space Hessian likewise)
        return var if self.factor is None else var * self.factor**2


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
        # Newton steps per entity per sweep: the sweep is repeated anyway, so an inexact block solve saves
        # the extra factorisation a convergence check would cost; PBCD converges to the same optimum.
        self.newton_steps = NEWTON_STEPS_PER_SWEEP
        self._static: dict[int, tuple] = {}

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
        iterations = 0
        for chunk in self.design.chunks:
            valid, coef, mean, prec, y, w, off = self._chunk_arrays(chunk, offset)
            coef, it = batch_newton(self.loss, chunk.design(), y, w, off, coef, mean, prec, self.rtol,
                                    max_iter=self.newton_steps)
            self.values[chunk.pairs[valid]] = coef[valid]
            iterations = max(iterations, it)
        for ent in self.design.large:
            coef, it = self._fit_large(ent, offset)
            self.values[ent.pairs] = coef
            iterations = max(iterations, it)
        self.last_iterations = iterations
        return self.values

    def _fit_large(self, ent, offset):
        """Fallback for an entity with many features: trust-region Newton-CG on its sparse local design."""
        from .solvers import solve_trust_ncg

        design = ent.operator()
        mean, prec = self.prior_mean[ent.pairs], self.prior_prec[ent.pairs]
        # shift by the prior mean so the solver's zero-centred penalty applies: coef = mean + delta
        off = offset[ent.rows] + design @ mean
        y, w = self.y[ent.rows], self.weight[ent.rows]
        _, g0 = self.loss.loss_gradient(np.zeros(mean.size), design, y, w, np.zeros(y.size), prec)
        gtol = self.rtol * (1.0 + float(np.linalg.norm(g0)))
        res = solve_trust_ncg(self.loss, design, y, w, off, self.values[ent.pairs] - mean, prec, 0.0, gtol, 500)
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
