"""The local engine's subspace acceleration (``glmix_core.fitting.SubspaceAccelerator``) on Spark.

After each sweep, minimise the objective over θ_start + D c, where D holds the sweep's step and the previous
``memory`` accepted steps. All the pieces are sums, so they distribute: the per-row score changes S (n × m)
live at home next to the labels; each coordinate adds its prior's quadratic terms (A, b) from where its
coefficients live (the driver for the fixed effect, the entity partitions for random effects); the m-sized
Newton iterations run on the driver from ``treeAggregate``-d gradients and Hessians.
"""

from __future__ import annotations

import numpy as np

MEMORY = 2


def quadratic_terms(directions: list[np.ndarray], start: np.ndarray, mean, prec) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) of ½ Σ prec (start + D c − mean)² − const = ½ c'Ac + b'c for one coordinate's coefficients."""
    D = np.stack(directions, axis=1)
    PD = D * np.asarray(prec)[:, None] if np.ndim(prec) else D * prec
    return D.T @ PD, PD.T @ (start - mean)


def subspace_newton(loss, rows, A: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """Minimise loss(start_total + S c) + ½ c'Ac + b'c from c = e₁ with a monotone line search
    (None when the sweep moved nothing).

    ``rows``: RDD of ``(y, w, start_total, S)`` per home partition. Mirrors the local accelerator's loop.
    """
    m = A.shape[0]

    def passed(c):
        bc = rows.context.broadcast(c)

        def seq(acc, blk):
            y, w, t0, S = blk
            if y.size == 0:
                return acc
            eta = t0 + S @ bc.value
            d1, d2 = loss.derivatives(y, eta)
            return (acc[0] + loss.total(y, eta, w), acc[1] + S.T @ (w * d1), acc[2] + S.T @ (S * (w * d2)[:, None]))

        def comb(x, z):
            return x[0] + z[0], x[1] + z[1], x[2] + z[2]

        value, g, H = rows.treeAggregate((0.0, np.zeros(m), np.zeros((m, m))), seq, comb)
        bc.unpersist()
        return value + 0.5 * c @ A @ c + b @ c, g + A @ c + b, H + A

    c = np.zeros(m)
    c[0] = 1.0
    fc, g, H = passed(c)
    if H[0, 0] - A[0, 0] <= 0 and A[0, 0] <= 0:
        return None  # the sweep moved nothing
    for _ in range(20):
        try:
            delta = -np.linalg.solve(H + 1e-12 * np.trace(H) / m * np.eye(m), g)
        except np.linalg.LinAlgError:
            break
        t, improved = 1.0, False
        while t > 1e-6:
            trial = c + t * delta
            ft, gt, Ht = passed(trial)
            if ft <= fc + 1e-4 * t * (g @ delta):
                improved = True
                break
            t *= 0.5
        if not improved:
            break
        small = abs(fc - ft) <= 1e-15 * max(abs(ft), 1.0)
        c, fc, g, H = trial, ft, gt, Ht
        if small:
            break
    return c
