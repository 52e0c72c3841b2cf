"""Coordinates: each one trains on the residual offset and scores; nothing else (as in Photon-ML).

``FixedCoordinate`` solves one sparse GLM with a registered solver; ``RandomCoordinate`` solves all entities
as a batch with ``batch_newton`` over a ``RandomDesign``. Both expose ``fit(offset)``, ``score()``,
``penalty()`` and ``variances()``.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from .design import RandomDesign
from .losses import Loss
from .solvers import FIXED_SOLVERS, batch_hessian, batch_inverse_diagonal_dual, batch_newton

log = logging.getLogger(__name__)

MAX_DENSE_VARIANCE = 3000
NEWTON_STEPS_PER_SWEEP = 1
NEWTON_STEPS_FIXED_PER_SWEEP = 3  # exact posterior variances need a dense Hessian inverse; skipped above this


class FixedCoordinate:
    """The fixed effect b: one coefficient per feature; the intercept (column ``(intercept)``) is unpenalised."""

    def __init__(self, name: str, loss: Loss, X: sp.csr_matrix, features: list[str], y, weight, *,
                 l2: float, l1: float, solver: str, intercept: bool, rtol: float, coef0=None):
        self.name, self.loss, self.X, self.features = name, loss, X.tocsr(), features
        self.y, self.weight = y, weight
        self.l2 = np.full(X.shape[1], float(l2))
        if intercept:
            self.l2[0] = 0.0
        self.l1, self.solver = float(l1), FIXED_SOLVERS[solver]
        self.coef = np.zeros(X.shape[1]) if coef0 is None else np.asarray(coef0, float).copy()
        # gradient scale at b = 0 (with no offset) sets an absolute tolerance that is stable across sweeps
        _, g0 = loss.loss_gradient(np.zeros(X.shape[1]), self.X, y, weight, np.zeros(X.shape[0]), self.l2)
        self.gtol = max(rtol, 1e-12) * (1.0 + float(np.linalg.norm(g0)))
        self.last_iterations = 0
        self.max_iter = 1000 if solver == "lbfgs" or l1 > 0 else NEWTON_STEPS_FIXED_PER_SWEEP

    def fit(self, offset: np.ndarray) -> np.ndarray:
        # Newton-type solvers take a few steps per sweep (PBCD repeats the sweep anyway, so an exact block
        # solve early on is wasted work); the final sweeps start at the block optimum and stop at gtol.
        result = self.solver(self.loss, self.X, self.y, self.weight, offset, self.coef, self.l2, self.l1,
                             self.gtol, self.max_iter)
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

    def prior(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(mean, precision) of the quadratic penalty, or None when the penalty is not quadratic (L1)."""
        return None if self.l1 > 0 else (np.zeros_like(self.coef), self.l2)

    def penalty(self) -> float:
        return 0.5 * float(np.sum(self.l2 * self.coef**2)) + self.l1 * float(np.sum(np.abs(self.coef[self.l2 > 0])))

    def variances(self, offset: np.ndarray) -> np.ndarray | None:
        """Diagonal of the inverse Hessian at the solution (None when too many features or L1 is used)."""
        if self.X.shape[1] > MAX_DENSE_VARIANCE or self.l1 > 0:
            return None
        H = self.loss.hessian(self.coef, self.X, self.y, self.weight, offset, self.l2)
        H[np.diag_indices_from(H)] += 1e-12
        try:
            return np.diag(np.linalg.inv(H)).copy()
        except np.linalg.LinAlgError:
            return None


class RandomCoordinate:
    """A random effect: coefficients per (entity, condensed feature) pair, solved as a batch.

    ``prior_mean``/``prior_prec`` are per pair: zero and ``l2`` by default; an incremental update passes the
    previous posterior mean and (inflated) posterior precision instead.
    """

    def __init__(self, name: str, loss: Loss, design: RandomDesign, y, weight, *, l2: float, rtol: float,
                 coef0=None, prior_mean=None, prior_prec=None):
        self.name, self.loss, self.design = name, loss, design
        self.y, self.weight = y, weight
        self.l2 = float(l2)
        n = design.n_pairs
        self.values = np.zeros(n) if coef0 is None else np.asarray(coef0, float).copy()
        self.prior_mean = np.zeros(n) if prior_mean is None else prior_mean
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

        mean, prec = self.prior_mean[ent.pairs], self.prior_prec[ent.pairs]
        # shift by the prior mean so the solver's zero-centred penalty applies: coef = mean + delta
        off = offset[ent.rows] + ent.design @ mean
        y, w = self.y[ent.rows], self.weight[ent.rows]
        _, g0 = self.loss.loss_gradient(np.zeros(mean.size), ent.design, y, w, np.zeros(y.size), prec)
        gtol = self.rtol * (1.0 + float(np.linalg.norm(g0)))
        res = solve_trust_ncg(self.loss, ent.design, y, w, off, self.values[ent.pairs] - mean, prec, 0.0, gtol, 500)
        return mean + res.coef, res.n_iter

    def score(self) -> np.ndarray:
        return self.design.score(self.values)

    @property
    def params(self) -> np.ndarray:
        return self.values

    @params.setter
    def params(self, value: np.ndarray) -> None:
        self.values = value

    def prior(self) -> tuple[np.ndarray, np.ndarray]:
        return self.prior_mean, self.prior_prec

    def penalty(self) -> float:
        diff = self.values - self.prior_mean
        return 0.5 * float(np.sum(self.prior_prec * diff * diff))

    def variances(self, offset: np.ndarray) -> np.ndarray:
        """Per-pair posterior variances: diagonal of each entity's inverse Hessian at the solution."""
        out = np.full(self.design.n_pairs, np.nan)
        for chunk in self.design.chunks:
            valid, coef, _, prec, y, w, off = self._chunk_arrays(chunk, offset)
            Z = chunk.design()
            if Z.shape[1] < Z.shape[2]:
                diag = batch_inverse_diagonal_dual(self.loss, Z, y, w, off, coef, prec)
            else:
                H = batch_hessian(self.loss, Z, y, w, off, coef, prec)
                diag = np.diagonal(np.linalg.inv(H), axis1=1, axis2=2)
            out[chunk.pairs[valid]] = diag[valid]
        for ent in self.design.large:
            if ent.pairs.size <= MAX_DENSE_VARIANCE:
                H = self.loss.hessian(self.values[ent.pairs], ent.design, self.y[ent.rows],
                                      self.weight[ent.rows], offset[ent.rows], self.prior_prec[ent.pairs])
                out[ent.pairs] = np.diag(np.linalg.inv(H))
        return out
