"""The reference solver: the same MAP objective as one big sparse GLM on the stacked design
``[X | Z_1 ⊗ e_entity | Z_2 ⊗ e_entity | ...]`` with a per-block L2, solved by scipy.

This is what a user would do without GLMix, and the oracle of the correctness tests: the optimum does not
depend on the algorithm, so PBCD must land on the same point.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import scipy.optimize as opt
import scipy.sparse as sp

from .building import active_rows
from .data import encode_entities, feature_matrix
from .design import RandomDesign
from .local_backend import row_inputs
from .losses import Loss
from .model import FixedEffectModel, GLMixModel, RandomEffectModel
from .spec import GLMixSpec

log = logging.getLogger(__name__)


@dataclass
class StackedProblem:
    """The stacked design, its per-column L2 and the pieces needed to turn a solution back into a model."""

    spec: GLMixSpec
    loss: Loss
    X: sp.csr_matrix
    l2: np.ndarray
    y: np.ndarray
    weight: np.ndarray
    offset: np.ndarray
    blocks: list[tuple]

    def objective(self, coef: np.ndarray) -> float:
        return self.loss.loss_gradient(coef, self.X, self.y, self.weight, self.offset, self.l2)[0]


def stacked_problem(spec: GLMixSpec, data: pa.Table) -> StackedProblem:
    """Build the stacked design of ``spec`` on ``data`` (same columns, condensing and bounds as ``fit``)."""
    loss, y, weight, offset = row_inputs(spec, data)
    mats, l2s, blocks = [], [], []
    for c in spec.coordinates:
        if c.type == "fixed":
            X, feats = feature_matrix(data, c.features, c.feature_bags, c.intercept)
            pen = np.full(X.shape[1], c.l2)
            if c.intercept:
                pen[0] = 0.0
            mats.append(X)
            l2s.append(pen)
            blocks.append((c, feats, None, None))
        else:
            codes, ids = encode_entities(data, c.entity)
            Z, feats = feature_matrix(data, c.features, c.feature_bags, c.intercept)
            d = RandomDesign(Z, codes, len(ids), active_rows(codes, len(ids), c), c.max_dense_features)
            block = sp.csr_matrix((d.score_values, (d.score_rows, d.score_pairs)), shape=(data.num_rows, d.n_pairs))
            mats.append(block)
            l2s.append(np.full(d.n_pairs, c.l2))
            blocks.append((c, feats, pa.array(ids, pa.string()), d))
    return StackedProblem(spec, loss, sp.hstack(mats, format="csr"), np.concatenate(l2s), y, weight, offset, blocks)


def solve_stacked(problem: StackedProblem, *, method: str = "lbfgs", gtol: float = 1e-8, max_iter: int = 100_000,
                  coef0: np.ndarray | None = None,
                  callback: Callable[[np.ndarray, float], bool] | None = None) -> tuple[np.ndarray, float, int]:
    """Minimise the stacked objective with scipy (``lbfgs`` = L-BFGS-B, ``trust-ncg`` = Newton with exact
    Hessian-vector products). ``callback(coef, objective)`` returning True stops early.
    Returns (coefficients, objective, iterations)."""
    P = problem
    x0 = np.zeros(P.X.shape[1]) if coef0 is None else coef0
    args = (P.X, P.y, P.weight, P.offset, P.l2)

    def cb(intermediate_result):
        if callback is not None and callback(intermediate_result.x, float(intermediate_result.fun)):
            raise StopIteration

    t0 = time.perf_counter()
    if method == "lbfgs":
        res = opt.minimize(P.loss.loss_gradient, x0, args=args, jac=True, method="L-BFGS-B", callback=cb,
                           options={"gtol": gtol, "ftol": 1e-16, "maxiter": max_iter, "maxcor": 20,
                                    "maxfun": 10 * max_iter})
    elif method == "trust-ncg":
        res = opt.minimize(lambda c: P.loss.loss_gradient(c, *args)[0], x0,
                           jac=lambda c: P.loss.loss_gradient(c, *args)[1],
                           hessp=lambda c, v: P.loss.hessian_product(c, *args)(v), method="trust-ncg",
                           callback=cb, options={"gtol": gtol, "maxiter": max_iter})
    else:
        raise ValueError(f"unknown method {method!r}; use 'lbfgs' or 'trust-ncg'")
    log.info("stacked %s: objective %.12g in %d iterations, %.2fs", method, res.fun, res.nit,
             time.perf_counter() - t0)
    return res.x, float(res.fun), int(res.nit)


def to_model(problem: StackedProblem, coef: np.ndarray) -> GLMixModel:
    """The stacked solution as a GLMixModel (same coefficient layout as ``fit``'s)."""
    out, start = {}, 0
    for c, feats, ids, d in problem.blocks:
        if d is None:
            out[c.name] = FixedEffectModel(c, feats, coef[start:start + len(feats)].copy())
            start += len(feats)
        else:
            values = coef[start:start + d.n_pairs]
            start += d.n_pairs
            out[c.name] = RandomEffectModel.from_pairs(
                c, ids.take(pa.array(d.pair_entity)), pa.array(feats, pa.string()).take(pa.array(d.pair_col)),
                values.copy(), np.full(values.size, np.nan))
    return GLMixModel(problem.spec, out, {})
