"""Losses of the GLM tasks, written once and shared by every solver.

Each loss is the negative log-likelihood (up to terms free of the coefficients) as a function of the linear
predictor ``eta`` (for ``smoothed_hinge``, the smoothed hinge of a linear SVM); ``loss_gradient`` follows scipy's argument order with a Gaussian prior
``0.5 * sum(l2 * (coef - prior_mean)**2)`` so it serves fixed effects, per-entity fallbacks and the stacked
reference solver alike.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.special import expit


class Loss:
    """Pointwise loss ℓ(y, η) with first/second derivatives in η."""

    name = "base"

    def pointwise(self, y: np.ndarray, eta: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def derivatives(self, y: np.ndarray, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def mean(self, eta: np.ndarray) -> np.ndarray:
        """The inverse link: the model's prediction of E[y]."""
        raise NotImplementedError

    def check_response(self, y: np.ndarray, column: str) -> None:
        """Raise ValueError naming ``column`` when ``y`` is outside the task's support."""

    def total(self, y, eta, weight) -> float:
        return float(np.dot(weight, self.pointwise(y, eta)))

    def loss_gradient(self, coef: np.ndarray, X, y: np.ndarray, weight: np.ndarray, offset: np.ndarray,
                      l2: np.ndarray | float, prior_mean: np.ndarray | float = 0.0) -> tuple[float, np.ndarray]:
        """Objective Σ w ℓ(y, offset + X coef) + ½ Σ l2 (coef − prior_mean)² and its gradient."""
        eta = offset + X @ coef
        d1, _ = self.derivatives(y, eta)
        diff = coef - prior_mean
        value = self.total(y, eta, weight) + 0.5 * float(np.sum(l2 * diff * diff))
        grad = X.T @ (weight * d1) + l2 * diff
        return value, np.asarray(grad).ravel()

    def hessian_product(self, coef, X, y, weight, offset, l2):
        """A function v ↦ H v, the Hessian of ``loss_gradient``'s objective at ``coef``."""
        eta = offset + X @ coef
        _, d2 = self.derivatives(y, eta)
        curvature = weight * d2

        def hessp(v: np.ndarray) -> np.ndarray:
            return np.asarray(X.T @ (curvature * (X @ v))).ravel() + l2 * v

        return hessp

    def hessian(self, coef, X, y, weight, offset, l2) -> np.ndarray:
        """The dense Hessian (only for small dimension, e.g. posterior variances)."""
        eta = offset + X @ coef
        _, d2 = self.derivatives(y, eta)
        Xw = sp.diags(weight * d2) @ X if sp.issparse(X) else X * (weight * d2)[:, None]
        H = X.T @ Xw
        H = H.toarray() if sp.issparse(H) else np.asarray(H)
        H[np.diag_indices_from(H)] += l2
        return H


class LogisticLoss(Loss):
    name = "logistic"

    def pointwise(self, y, eta):
        return np.logaddexp(0.0, eta) - y * eta

    def derivatives(self, y, eta):
        p = expit(eta)
        return p - y, p * (1.0 - p)

    def mean(self, eta):
        return expit(eta)

    def check_response(self, y, column):
        bad = (y != 0) & (y != 1)
        if bad.any():
            raise ValueError(f"response {column!r} must be 0 or 1 for task logistic; "
                             f"{int(bad.sum())} rows have other values (e.g. {y[bad][0]!r})")


class SquaredLoss(Loss):
    name = "linear"

    def pointwise(self, y, eta):
        r = eta - y
        return 0.5 * r * r

    def derivatives(self, y, eta):
        return eta - y, np.ones_like(eta)

    def mean(self, eta):
        return eta


class PoissonLoss(Loss):
    name = "poisson"

    def pointwise(self, y, eta):
        return np.exp(eta) - y * eta

    def derivatives(self, y, eta):
        mu = np.exp(eta)
        return mu - y, mu

    def mean(self, eta):
        return np.exp(eta)

    def check_response(self, y, column):
        bad = y < 0
        if bad.any():
            raise ValueError(f"response {column!r} must be a non-negative count for task poisson; "
                             f"{int(bad.sum())} rows are negative (e.g. {y[bad][0]!r})")


class SmoothedHingeLoss(Loss):
    """Rennie's smoothed hinge loss of a linear SVM (Photon-ML's ``SmoothedHingeLossFunction``).

    Labels y ∈ {0, 1} map to s = 2y − 1 ∈ {−1, +1}; with the margin z = s·η the loss is ½ − z for z ≤ 0,
    ½(1 − z)² for 0 < z < 1 and 0 for z ≥ 1. It is once differentiable; the second derivative used by the
    Newton solvers is the generalised one, 1 on 0 < z < 1 and 0 elsewhere, so curvature can vanish and the
    prior precision (l2) keeps the Newton systems positive definite. ``mean`` returns the decision value η
    itself (predict positive when η > 0): an SVM has no probability, and AUC and the other ranking metrics
    use η.
    """

    name = "smoothed_hinge"

    def pointwise(self, y, eta):
        z = (2.0 * y - 1.0) * eta
        return np.where(z <= 0.0, 0.5 - z, 0.5 * np.square(np.maximum(1.0 - z, 0.0)))

    def derivatives(self, y, eta):
        s = 2.0 * y - 1.0
        z = s * eta
        dz = np.where(z <= 0.0, -1.0, np.minimum(z - 1.0, 0.0))
        return s * dz, ((z > 0.0) & (z < 1.0)).astype(float)

    def mean(self, eta):
        return np.asarray(eta, float)

    def check_response(self, y, column):
        bad = (y != 0) & (y != 1)
        if bad.any():
            raise ValueError(f"response {column!r} must be 0 or 1 for task smoothed_hinge; "
                             f"{int(bad.sum())} rows have other values (e.g. {y[bad][0]!r})")


LOSSES: dict[str, type[Loss]] = {"logistic": LogisticLoss, "linear": SquaredLoss, "poisson": PoissonLoss,
                                 "smoothed_hinge": SmoothedHingeLoss}


def get_loss(task: str) -> Loss:
    """The loss object of a task name (``logistic``, ``linear``, ``poisson``, ``smoothed_hinge``)."""
    try:
        return LOSSES[task]()
    except KeyError:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(LOSSES)}") from None
