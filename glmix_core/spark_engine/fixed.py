"""The fixed effect on Spark: loss, gradient and Hessian(-vector) products aggregated over partitions.

The design X lives in the cached home blocks (one CSR per partition, columns = the global feature
vocabulary); only the coefficient vector is broadcast and only p-sized sums come back (``treeAggregate``).
The optimizer runs on the driver with scipy: trust-region Newton-CG (spec solver ``trust-ncg`` or
``newton-cg``) or L-BFGS-B (``lbfgs``, and whenever ``l1`` > 0, with the same u − v split as the local
engine). For a small p the exact Hessian comes back with the gradient in the same pass, so the inner CG
steps cost no extra Spark job; above ``DENSE_HESSIAN_MAX`` features each Hessian-vector product is one pass.
The objective, penalty and tolerance are the local engine's (``glmix_core.coordinates.FixedCoordinate``).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import scipy.optimize as opt

from ..coordinates import MAX_DENSE_VARIANCE
from ..losses import Loss

log = logging.getLogger(__name__)

DENSE_HESSIAN_MAX = 1000
MAX_ITERATIONS = 1000
# Newton steps per PBCD sweep when the Hessian is dense: each step is one Spark job, and the sweep repeats
# anyway (as the local engine's random effects do), so an inexact block solve reaches the same optimum sooner.
NEWTON_STEPS_PER_SWEEP = 3


def _add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a + b


class DistributedFixed:
    """Fixed coordinate over ``home`` (RDD of blocks with ``X``, ``y``, ``w``); coefficients on the driver."""

    def __init__(self, name: str, loss: Loss, home, features: list[str], *, l2: float, l1: float, solver: str,
                 intercept: bool, rtol: float, coef0: np.ndarray | None = None):
        self.name, self.loss, self.home, self.features = name, loss, home, features
        self.sc = home.context
        p = len(features)
        self.l2 = np.full(p, float(l2))
        if intercept:
            self.l2[0] = 0.0
        self.l1, self.solver = float(l1), solver
        self.coef = np.zeros(p) if coef0 is None else np.asarray(coef0, float).copy()
        self.last_iterations = 0
        self.passes = 0
        # gradient scale at b = 0 with no offset sets the absolute tolerance, as in the local engine
        _, g0, _ = self._pass(np.zeros(p), None, hessian=False)
        self.gtol = max(rtol, 1e-12) * (1.0 + float(np.linalg.norm(g0)))

    # -- distributed sums ---------------------------------------------------------------------------------
    def _inputs(self, offsets):
        if offsets is None:
            return self.home.map(lambda blk: (blk, None))
        return self.home.zip(offsets)

    def _pass(self, coef: np.ndarray, offsets, hessian: bool):
        """(Σ w ℓ, Σ X'(w ℓ'), Σ X' diag(w ℓ'') X or None) at ``coef``: one Spark job."""
        self.passes += 1
        loss, p = self.loss, coef.size
        bc = self.sc.broadcast(coef)

        def seq(acc, pair):
            blk, off = pair
            X, y, w = blk["X"], blk["y"], blk["w"]
            if X.shape[0] == 0:
                return acc
            eta = X @ bc.value if off is None else off + X @ bc.value
            d1, d2 = loss.derivatives(y, eta)
            grad = np.asarray(X.T @ (w * d1)).ravel()
            H = None
            if hessian:
                H = np.asarray((X.T @ X.multiply((w * d2)[:, None]).tocsr()).todense())
            return acc[0] + loss.total(y, eta, w), _add(acc[1], grad), _add(acc[2], H)

        def comb(a, b):
            return a[0] + b[0], _add(a[1], b[1]), _add(a[2], b[2])

        value, grad, H = self._inputs(offsets).treeAggregate((0.0, None, None), seq, comb)
        bc.unpersist()
        grad = np.zeros(p) if grad is None else grad
        if hessian and H is None:
            H = np.zeros((p, p))
        return float(value), grad, H

    def _hessp_pass(self, coef: np.ndarray, v: np.ndarray, offsets) -> np.ndarray:
        self.passes += 1
        loss = self.loss
        bc = self.sc.broadcast((coef, v))

        def seq(acc, pair):
            blk, off = pair
            X, y, w = blk["X"], blk["y"], blk["w"]
            if X.shape[0] == 0:
                return acc
            c, vec = bc.value
            eta = X @ c if off is None else off + X @ c
            _, d2 = loss.derivatives(y, eta)
            return _add(acc, np.asarray(X.T @ (w * d2 * (X @ vec))).ravel())

        out = self._inputs(offsets).treeAggregate(None, seq, _add)
        bc.unpersist()
        return np.zeros(coef.size) if out is None else out

    # -- solving ------------------------------------------------------------------------------------------
    def fit(self, offsets) -> np.ndarray:
        """Minimise Σ w ℓ(y, offset + X b) + ½ Σ l2 b² (+ l1 |b|) given home-aligned ``offsets``."""
        if self.l1 > 0 or self.solver == "lbfgs":
            coef, n_iter, ok = self._fit_lbfgs(offsets)
        elif self.coef.size <= DENSE_HESSIAN_MAX:
            coef, n_iter, ok = self._fit_newton(offsets, NEWTON_STEPS_PER_SWEEP)
            ok = ok or n_iter >= NEWTON_STEPS_PER_SWEEP
        else:
            coef, n_iter, ok = self._fit_trust_ncg(offsets)
            ok = ok or n_iter >= NEWTON_STEPS_PER_SWEEP
        if not ok and n_iter >= MAX_ITERATIONS:
            log.warning("coordinate %s: solver did not converge in %d iterations", self.name, n_iter)
        self.coef, self.last_iterations = coef, n_iter
        return coef

    def _fit_newton(self, offsets, steps: int):
        """At most ``steps`` damped Newton steps with the aggregated dense Hessian (one pass per step)."""
        l2 = self.l2
        c = self.coef.copy()

        def evaluate(x):
            value, grad, H = self._pass(x, offsets, hessian=True)
            H[np.diag_indices_from(H)] += l2
            return value + 0.5 * float(np.sum(l2 * x * x)), grad + l2 * x, H

        value, grad, H = evaluate(c)
        n_iter = 0
        while n_iter < steps and np.linalg.norm(grad) > self.gtol:
            n_iter += 1
            try:
                step = -np.linalg.solve(H, grad)
            except np.linalg.LinAlgError:
                step = -np.linalg.lstsq(H, grad, rcond=None)[0]
            slope, t = float(grad @ step), 1.0
            if slope >= 0:
                step, slope = -grad, -float(grad @ grad)
            while True:
                trial = c + t * step
                t_value, t_grad, t_H = evaluate(trial)
                if t_value <= value + 1e-4 * t * slope or t < 1e-10:
                    break
                t *= 0.5
            c, value, grad, H = trial, t_value, t_grad, t_H
        return c, n_iter, bool(np.linalg.norm(grad) <= self.gtol)

    def _fit_trust_ncg(self, offsets):
        l2 = self.l2
        dense = self.coef.size <= DENSE_HESSIAN_MAX
        cache: dict = {}

        def evaluate(c):
            if "at" not in cache or not np.array_equal(cache["at"], c):
                value, grad, H = self._pass(c, offsets, hessian=dense)
                cache.update(at=c.copy(), value=value + 0.5 * float(np.sum(l2 * c * c)), grad=grad + l2 * c, H=H)
            return cache

        def hessp(c, v):
            H = evaluate(c)["H"]
            if H is not None:
                return H @ v + l2 * v
            return self._hessp_pass(c, v, offsets) + l2 * v

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = opt.minimize(lambda c: evaluate(c)["value"], self.coef, jac=lambda c: evaluate(c)["grad"],
                               hessp=hessp, method="trust-ncg",
                               options={"gtol": self.gtol, "maxiter": NEWTON_STEPS_PER_SWEEP})
        return res.x, int(res.nit), bool(res.success)

    def _fit_lbfgs(self, offsets):
        l2, p = self.l2, self.coef.size

        def fun(c):
            value, grad, _ = self._pass(c, offsets, hessian=False)
            return value + 0.5 * float(np.sum(l2 * c * c)), grad + l2 * c

        options = {"gtol": self.gtol, "ftol": 1e-15, "maxiter": MAX_ITERATIONS, "maxcor": 20}
        if self.l1 > 0:
            l1_vec = np.where(l2 > 0, self.l1, 0.0)

            def split_fun(uv):
                value, grad = fun(uv[:p] - uv[p:])
                return value + float(l1_vec @ (uv[:p] + uv[p:])), np.concatenate([grad + l1_vec, -grad + l1_vec])

            x0 = np.concatenate([np.maximum(self.coef, 0), np.maximum(-self.coef, 0)])
            res = opt.minimize(split_fun, x0, jac=True, method="L-BFGS-B", bounds=[(0, None)] * (2 * p),
                               options=options)
            return res.x[:p] - res.x[p:], int(res.nit), bool(res.success)
        res = opt.minimize(fun, self.coef, jac=True, method="L-BFGS-B", options=options)
        return res.x, int(res.nit), bool(res.success)

    # -- scores, penalty, variances -----------------------------------------------------------------------
    def scores(self):
        """Home-aligned X b per partition (lazy RDD)."""
        bc = self.sc.broadcast(self.coef)
        return self.home.map(lambda blk: np.asarray(blk["X"] @ bc.value).ravel())

    def penalty(self) -> float:
        return 0.5 * float(np.sum(self.l2 * self.coef**2)) + self.l1 * float(np.sum(np.abs(self.coef[self.l2 > 0])))

    def variances(self, offsets) -> np.ndarray | None:
        """Diagonal of the inverse Hessian at the solution (None above ``MAX_DENSE_VARIANCE`` or with L1)."""
        if self.coef.size > MAX_DENSE_VARIANCE or self.l1 > 0:
            return None
        _, _, H = self._pass(self.coef, offsets, hessian=True)
        H[np.diag_indices_from(H)] += self.l2 + 1e-12
        try:
            return np.diag(np.linalg.inv(H)).copy()
        except np.linalg.LinAlgError:
            return None
