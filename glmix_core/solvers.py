"""Solvers. Fixed-effect solvers take an objective object and are kept in ``FIXED_SOLVERS``;
``batch_newton`` solves many small per-entity problems at once on stacked dense arrays.

Fixed-effect signature: ``solve(objective, coef0, l1, gtol, max_iter) -> SolverResult``, where ``objective``
follows ``FixedObjective``: ``value_grad(c)`` (objective with its L2 term and gradient), ``hessp(c, v)`` and
``l2`` (per coefficient; zero marks the unpenalised intercept, which also gets no L1). ``GLMObjective`` is the
in-memory one; the Spark backend passes one whose sums run over partitions, so both backends use the same
solvers.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import scipy.optimize as opt

from .losses import Loss

log = logging.getLogger(__name__)


@dataclass
class SolverResult:
    """The common result of every solver: coefficients, iterations, convergence flag and final objective."""

    coef: np.ndarray
    n_iter: int
    converged: bool
    objective: float


class FixedObjective(Protocol):
    """Σ w ℓ(y, offset + X c) + ½ Σ l2 c², as the fixed-effect solvers see it."""

    l2: np.ndarray

    def value_grad(self, coef: np.ndarray) -> tuple[float, np.ndarray]: ...

    def hessp(self, coef: np.ndarray, v: np.ndarray) -> np.ndarray: ...

    def gradient_diagonal(self, coef: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class GLMObjective:
    """The in-memory ``FixedObjective`` over a design ``X`` (sparse, dense or a linear operator)."""

    def __init__(self, loss: Loss, X, y: np.ndarray, weight: np.ndarray, offset: np.ndarray, l2):
        self.loss, self.X, self.y, self.weight, self.offset = loss, X, y, weight, offset
        self.l2 = np.broadcast_to(np.asarray(l2, float), (X.shape[1],))
        self._at: tuple[np.ndarray, tuple[float, np.ndarray]] | None = None

    def value_grad(self, coef: np.ndarray) -> tuple[float, np.ndarray]:
        if self._at is None or not np.array_equal(self._at[0], coef):
            self._at = (coef.copy(), self.loss.loss_gradient(coef, self.X, self.y, self.weight, self.offset, self.l2))
        return self._at[1]

    def hessp(self, coef: np.ndarray, v: np.ndarray) -> np.ndarray:
        return self.loss.hessian_product(coef, self.X, self.y, self.weight, self.offset, self.l2)(v)

    def gradient_diagonal(self, coef: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The gradient and the Hessian's diagonal at ``coef`` (the KKT measure's inputs)."""
        _, d2 = self.loss.derivatives(self.y, self.offset + self.X @ coef)
        diag = np.asarray(self.X.multiply(self.X).T @ (self.weight * d2)).ravel() + self.l2
        return self.value_grad(coef)[1], diag


def solve_trust_ncg(objective: FixedObjective, coef0: np.ndarray, l1: float, gtol: float,
                    max_iter: int) -> SolverResult:
    """Trust-region Newton-CG (TRON-like) with exact Hessian-vector products."""
    if l1 > 0:
        return solve_lbfgs(objective, coef0, l1, gtol, max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = opt.minimize(lambda c: objective.value_grad(c)[0], coef0, jac=lambda c: objective.value_grad(c)[1],
                           hessp=objective.hessp, method="trust-ncg", options={"gtol": gtol, "maxiter": max_iter})
    return SolverResult(res.x, int(res.nit), bool(res.success), float(res.fun))


def solve_newton_cg(objective: FixedObjective, coef0: np.ndarray, l1: float, gtol: float,
                    max_iter: int) -> SolverResult:
    """Line-search Newton-CG with exact Hessian-vector products (stops on a small gradient)."""
    if l1 > 0:
        return solve_lbfgs(objective, coef0, l1, gtol, max_iter)
    coef = np.array(coef0, dtype=float)
    value, grad = objective.value_grad(coef)
    for it in range(1, max_iter + 1):
        if np.linalg.norm(grad) <= gtol:
            return SolverResult(coef, it - 1, True, value)
        op = _Operator(lambda v, c=coef: objective.hessp(c, v), coef.size)
        step, _ = _cg(op, -grad, tol=min(0.5, np.sqrt(np.linalg.norm(grad))) * np.linalg.norm(grad))
        slope = float(grad @ step)
        if slope >= 0:
            step, slope = -grad, -float(grad @ grad)
        t = 1.0
        while True:
            new_value, new_grad = objective.value_grad(coef + t * step)
            if new_value <= value + 1e-4 * t * slope or t < 1e-10:
                break
            t *= 0.5
        coef, value, grad = coef + t * step, new_value, new_grad
    return SolverResult(coef, max_iter, bool(np.linalg.norm(grad) <= gtol), value)


def solve_lbfgs(objective: FixedObjective, coef0: np.ndarray, l1: float, gtol: float,
                max_iter: int) -> SolverResult:
    """scipy L-BFGS-B; with ``l1`` > 0 the coefficients are split as u − v with u, v ≥ 0 (bound-constrained)."""
    p = coef0.size
    options = {"gtol": gtol, "ftol": 1e-15, "maxiter": max_iter, "maxcor": 20}
    if l1 > 0:
        # the intercept (l2 == 0 there, by convention unpenalised) gets no L1 either
        l1_vec = np.where(objective.l2 > 0, l1, 0.0)

        def fun(uv):
            value, grad = objective.value_grad(uv[:p] - uv[p:])
            return value + float(l1_vec @ (uv[:p] + uv[p:])), np.concatenate([grad + l1_vec, -grad + l1_vec])

        x0 = np.concatenate([np.maximum(coef0, 0), np.maximum(-coef0, 0)])
        res = opt.minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=[(0, None)] * (2 * p), options=options)
        return SolverResult(res.x[:p] - res.x[p:], int(res.nit), bool(res.success), float(res.fun))
    res = opt.minimize(objective.value_grad, coef0, jac=True, method="L-BFGS-B", options=options)
    return SolverResult(res.x, int(res.nit), bool(res.success), float(res.fun))


FIXED_SOLVERS = {"trust-ncg": solve_trust_ncg, "newton-cg": solve_newton_cg, "lbfgs": solve_lbfgs}


class _Operator:
    def __init__(self, matvec, n):
        self.matvec, self.n = matvec, n


def _cg(op: _Operator, b: np.ndarray, tol: float, max_iter: int = 250) -> tuple[np.ndarray, int]:
    """Conjugate gradients for the Newton system (stops at residual ``tol`` or on negative curvature)."""
    x = np.zeros_like(b)
    r = b.copy()
    d = r.copy()
    rr = float(r @ r)
    for it in range(max_iter):
        if np.sqrt(rr) <= tol:
            return x, it
        Ad = op.matvec(d)
        curv = float(d @ Ad)
        if curv <= 0:
            return (x if it else b), it
        alpha = rr / curv
        x += alpha * d
        r -= alpha * Ad
        rr_new = float(r @ r)
        d = r + (rr_new / rr) * d
        rr = rr_new
    return x, max_iter


# ---------------------------------------------------------------------------------------------------------
# batched Newton for random effects


def batch_objective(loss: Loss, Z, y, w, offset, coef, prior_mean, prior_prec) -> np.ndarray:
    """Per-entity objective: Σ_n w ℓ(y, offset + Z coef) + ½ Σ prec (coef − mean)²; arrays stacked on axis 0."""
    eta = offset + np.matmul(Z, coef[:, :, None])[:, :, 0]
    diff = coef - prior_mean
    return np.einsum("en,en->e", w, loss.pointwise(y, eta)) + 0.5 * np.einsum("ed,ed->e", prior_prec * diff, diff)


def batch_hessian(loss: Loss, Z, y, w, offset, coef, prior_prec) -> np.ndarray:
    """Stacked Hessians (E, D, D) at ``coef``."""
    eta = offset + np.matmul(Z, coef[:, :, None])[:, :, 0]
    _, d2 = loss.derivatives(y, eta)
    H = np.matmul(Z.transpose(0, 2, 1), Z * (w * d2)[:, :, None])
    idx = np.arange(Z.shape[2])
    H[:, idx, idx] += prior_prec
    return H


def _woodbury_solve(Z: np.ndarray, curvature: np.ndarray, prec: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """(diag(prec) + Zᵀ diag(curvature) Z)⁻¹ rhs for stacked problems with fewer rows N than columns D.

    With B = diag(√curvature) Z: (P + BᵀB)⁻¹ = P⁻¹ − P⁻¹Bᵀ (I + B P⁻¹ Bᵀ)⁻¹ B P⁻¹, an N×N solve instead of
    D×D: most entities (members with a few impressions) have N ≪ D.
    """
    B = Z * np.sqrt(np.maximum(curvature, 0.0))[:, :, None]
    inv_prec = 1.0 / prec
    BP = B * inv_prec[:, None, :]
    K = np.matmul(BP, B.transpose(0, 2, 1))
    n = np.arange(Z.shape[1])
    K[:, n, n] += 1.0
    u = inv_prec * rhs
    v = np.linalg.solve(K, np.matmul(B, u[:, :, None]))
    return u - np.matmul(BP.transpose(0, 2, 1), v)[:, :, 0]


def batch_inverse_diagonal_dual(loss: Loss, Z, y, w, offset, coef, prec) -> np.ndarray:
    """diag(H⁻¹) per entity via the N×N dual form (see ``_woodbury_solve``); shape (E, D)."""
    eta = offset + np.matmul(Z, coef[:, :, None])[:, :, 0]
    _, d2 = loss.derivatives(y, eta)
    B = Z * np.sqrt(np.maximum(w * d2, 0.0))[:, :, None]
    inv_prec = 1.0 / prec
    BP = B * inv_prec[:, None, :]
    K = np.matmul(BP, B.transpose(0, 2, 1))
    n = np.arange(Z.shape[1])
    K[:, n, n] += 1.0
    return inv_prec - np.einsum("ead,ead->ed", BP, np.linalg.solve(K, BP))


def batch_newton(loss: Loss, Z: np.ndarray, y: np.ndarray, w: np.ndarray, offset: np.ndarray,
                 coef0: np.ndarray, prior_mean: np.ndarray, prior_prec: np.ndarray, step_tol: float,
                 max_iter: int = 50, scale: np.ndarray | float = 1.0) -> tuple[np.ndarray, int, float]:
    """Solve E independent small GLM problems with damped Newton, all at once.

    Shapes: ``Z`` (E, N, D) dense padded designs (padding rows have ``w`` = 0, padding columns are all-zero
    with ``prior_prec`` > 0 so their coefficient stays at ``prior_mean``), ``y``/``w``/``offset`` (E, N),
    ``coef0``/``prior_mean``/``prior_prec`` (E, D). An entity stops once its Newton step is at most
    ``step_tol`` in every coefficient (a distance to its optimum, the unit of the PBCD stopping rule, unlike
    an objective decrease, whose square root that distance would be); converged entities drop out of the
    active set. Returns the coefficients, the number of Newton iterations run and the KKT measure at
    ``coef0`` (max |g| / diag H · ``scale`` over every entity, from the first iteration's gradient).

    Screening: the Hessian is at least the prior precision P, so ‖g‖ / min P bounds the Newton step;
    entities whose bound already meets the stopping rule stop without forming their Hessian (one gradient
    pass instead of a factorisation).
    """
    coef = coef0.copy()
    kkt = 0.0
    active = np.arange(Z.shape[0])
    value = batch_objective(loss, Z, y, w, offset, coef, prior_mean, prior_prec)
    iterations = 0
    idx = np.arange(Z.shape[2])
    for iterations in range(1, max_iter + 1):  # noqa: B007 (the count is returned)
        Za, ya, wa, oa = Z[active], y[active], w[active], offset[active]
        ca, ma, pa_ = coef[active], prior_mean[active], prior_prec[active]
        eta = oa + np.matmul(Za, ca[:, :, None])[:, :, 0]
        d1, d2 = loss.derivatives(ya, eta)
        grad = np.matmul((wa * d1)[:, None, :], Za)[:, 0, :] + pa_ * (ca - ma)
        if iterations == 1:
            diag = np.einsum("en,end->ed", wa * d2, Za * Za) + pa_
            kkt = float(np.max(np.abs(grad) / diag * scale)) if grad.size else 0.0
        bound = np.sqrt(np.einsum("ed,ed->e", grad, grad)) / pa_.min(axis=1)
        quiet = bound <= step_tol
        if quiet.any():
            keep = ~quiet
            active = active[keep]
            if active.size == 0:
                break
            Za, ya, wa, oa, ca, ma, pa_ = Za[keep], ya[keep], wa[keep], oa[keep], ca[keep], ma[keep], pa_[keep]
            d2, grad = d2[keep], grad[keep]
        if Z.shape[1] < Z.shape[2]:
            step = -_woodbury_solve(Za, wa * d2, pa_, grad)
        else:
            H = np.matmul(Za.transpose(0, 2, 1), Za * (wa * d2)[:, :, None])
            H[:, idx, idx] += pa_
            try:
                step = -np.linalg.solve(H, grad[:, :, None])[:, :, 0]
            except np.linalg.LinAlgError:
                # a singular Hessian (zero curvature and tiny precision): least squares
                step = -np.matmul(np.linalg.pinv(H), grad[:, :, None])[:, :, 0]
        slope = np.einsum("ed,ed->e", grad, step)
        va = value[active]
        done = np.abs(step).max(axis=1) <= step_tol
        # backtracking line search, vectorised: entities still failing Armijo halve their step
        t = np.ones(len(active))
        pending = np.ones(len(active), bool)
        new_coef = ca.copy()
        new_val = va.copy()
        for _ in range(40):
            if not pending.any():
                break
            sel = np.flatnonzero(pending)
            trial = ca[sel] + t[sel, None] * step[sel]
            tv = batch_objective(loss, Za[sel], ya[sel], wa[sel], oa[sel], trial, ma[sel], pa_[sel])
            ok = tv <= va[sel] + 1e-4 * t[sel] * slope[sel]
            new_coef[sel[ok]] = trial[ok]
            new_val[sel[ok]] = tv[ok]
            pending[sel[ok]] = False
            t[sel[~ok]] *= 0.5
        coef[active] = new_coef
        value[active] = new_val
        # a step that could not decrease the objective means we are at numerical precision
        done |= pending | (np.abs(t[:, None] * step).max(axis=1) <= step_tol)
        active = active[~done]
        if active.size == 0:
            break
    return coef, iterations, kkt
