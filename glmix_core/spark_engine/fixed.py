"""The fixed effect's rows on Spark: a ``FixedData`` whose sums run over partitions.

Each home partition keeps its block of the (normalized) design ``X`` with the fit rows and weights of
negative down-sampling; ``FixedCoordinate`` and the ``FIXED_SOLVERS`` run unchanged on the driver. Only
p-sized sums come back (``treeAggregate``); the per-row offset is shared once per block solve (``share``). For p up
to ``DENSE_HESSIAN_MAX`` the dense Hessian comes back with the gradient in the same pass, so the solver's
Hessian-vector products cost no extra Spark job.
"""

from __future__ import annotations

import numpy as np

from ..losses import Loss
from .blocks import share

DENSE_HESSIAN_MAX = 1000
SCORES_KEPT = 3


def _add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a + b


class SparkGLMObjective:
    """``FixedObjective`` over the partitions of ``data`` at a broadcast offset: every evaluation at a new
    point is one pass returning the value, gradient, Hessian diagonal, dense Hessian (small p) and the
    per-row scores X c (kept by ``data`` so scoring the accepted point costs no job)."""

    def __init__(self, data: SparkFixedData, offset, l2: np.ndarray):
        self.data, self.l2, self.offset = data, l2, offset
        self.dense = data.n_features <= DENSE_HESSIAN_MAX
        self._at: dict | None = None

    def _pass(self, coef: np.ndarray) -> dict:
        if self._at is None or not np.array_equal(self._at["coef"], coef):
            value, grad, diag, H = self.data.sums(coef, self.offset, hessian=self.dense)
            if H is not None:
                H[np.diag_indices_from(H)] += self.l2
            self._at = {"coef": coef.copy(), "value": value + 0.5 * float(np.sum(self.l2 * coef * coef)),
                        "grad": grad + self.l2 * coef, "diag": diag + self.l2, "H": H}
        return self._at

    def value_grad(self, coef: np.ndarray) -> tuple[float, np.ndarray]:
        at = self._pass(coef)
        return at["value"], at["grad"]

    def gradient_diagonal(self, coef: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        at = self._pass(coef)
        return at["grad"], at["diag"]

    def hessp(self, coef: np.ndarray, v: np.ndarray) -> np.ndarray:
        if self.dense:
            return self._pass(coef)["H"] @ v
        return self.data.hessian_product(coef, v, self.offset) + self.l2 * v


class SparkFixedData:
    """``FixedData`` over ``blocks``: an RDD with one dict per home partition, ``{"start": first global row,
    "X": CSR block, "fit": fit row positions or None, "Xf", "y", "w": the fit rows' design, labels and
    weights}``."""

    def __init__(self, loss: Loss, blocks, n_rows: int, n_features: int):
        self.loss, self.blocks, self.n_rows, self.n_features = loss, blocks, n_rows, n_features
        self.sc = blocks.context
        self._offset = None
        self._scored: list[tuple[np.ndarray, np.ndarray]] = []  # (coef, X coef) of the last passes

    def sums(self, coef: np.ndarray, offset, hessian: bool):
        """(Σ w ℓ, Σ X'(w ℓ'), diag Σ X' diag(w ℓ'') X, that Hessian or None) over the fit rows at ``coef``:
        one Spark job, which also leaves X coef of every row for ``score``."""
        loss, c = self.loss, coef.copy()  # p floats travel in the closure: no broadcast round trip

        def part(blk):
            X, y, w, off = _fit_rows(blk, offset.value)
            scores = np.asarray(blk["X"] @ c).ravel()
            if X.shape[0] == 0:
                return blk["start"], scores, 0.0, None, None, None
            eta = off + (scores if blk["fit"] is None else scores[blk["fit"]])
            d1, d2 = loss.derivatives(y, eta)
            H = _weighted_gram(X, w * d2) if hessian else None
            diag = np.diag(H).copy() if hessian else np.asarray(X.multiply(X).T @ (w * d2)).ravel()
            return blk["start"], scores, loss.total(y, eta, w), np.asarray(X.T @ (w * d1)).ravel(), diag, H

        pieces = self.blocks.map(part).collect()
        p = coef.size
        scores = np.zeros(self.n_rows)
        value, grad, diag, H = 0.0, np.zeros(p), np.zeros(p), np.zeros((p, p)) if hessian else None
        for start, rows, v, g, dg, h in pieces:
            scores[start:start + rows.size] = rows
            if g is not None:
                value, grad, diag = value + v, grad + g, diag + dg
                if hessian:
                    H += h
        self._remember(coef, scores)
        return float(value), grad, diag, H

    def _remember(self, coef: np.ndarray, scores: np.ndarray) -> None:
        # a solver's last pass may be at a rejected trial point: keep a few
        self._scored = [(coef.copy(), scores), *self._scored][:SCORES_KEPT]

    def hessian_product(self, coef: np.ndarray, v: np.ndarray, offset) -> np.ndarray:
        loss, c, vec = self.loss, coef.copy(), v.copy()

        def seq(acc, blk):
            X, y, w, off = _fit_rows(blk, offset.value)
            if X.shape[0] == 0:
                return acc
            _, d2 = loss.derivatives(y, off + X @ c)
            return _add(acc, np.asarray(X.T @ (w * d2 * (X @ vec))).ravel())

        out = self.blocks.treeAggregate(None, seq, _add)
        return np.zeros(coef.size) if out is None else out

    def objective(self, offset: np.ndarray, l2: np.ndarray) -> SparkGLMObjective:
        """The objective at ``offset`` (shared once; the previous objective's broadcast is released)."""
        if self._offset is not None:
            self._offset.unpersist()
        self._offset = share(self.sc, offset, offset.nbytes)
        return SparkGLMObjective(self, self._offset, l2)

    def score(self, coef: np.ndarray) -> np.ndarray:
        for at, scores in self._scored:
            if np.array_equal(at, coef):
                return scores
        c = coef.copy()
        pieces = self.blocks.map(lambda blk: (blk["start"], np.asarray(blk["X"] @ c).ravel())).collect()
        out = np.zeros(self.n_rows)
        for start, values in pieces:
            out[start:start + values.size] = values
        self._remember(coef, out)
        return out

    def _at_offset(self, coef: np.ndarray, offset: np.ndarray, hessian: bool):
        bc = share(self.sc, offset, offset.nbytes)
        try:
            return self.sums(coef, bc, hessian=hessian)
        finally:
            bc.unpersist()

    def curvature(self, coef: np.ndarray, offset: np.ndarray) -> np.ndarray:
        return self._at_offset(coef, offset, hessian=False)[2]

    def hessian(self, coef: np.ndarray, offset: np.ndarray, l2: np.ndarray) -> np.ndarray:
        H = self._at_offset(coef, offset, hessian=True)[3]
        H[np.diag_indices_from(H)] += l2
        return H


DENSE_GRAM_MAX_CELLS = 1 << 22  # rows x features up to which X' diag(v) X goes through a dense copy (32 MiB)


def _weighted_gram(X, v: np.ndarray) -> np.ndarray:
    """X' diag(v) X as a dense array: a sparse X' times the row-scaled X made dense when that is small (BLAS,
    ~5x faster than the sparse x sparse product for a few dense columns), else sparse x sparse."""
    scaled = X.multiply(v[:, None])
    if X.shape[0] * X.shape[1] <= DENSE_GRAM_MAX_CELLS:
        return np.asarray(X.T @ scaled.toarray())
    return np.asarray((X.T @ scaled.tocsr()).todense())


def _fit_rows(blk: dict, offset: np.ndarray):
    """The block's fit rows: (X, y, w, offset) with the offset sliced from the global vector."""
    off = offset[blk["start"]:blk["start"] + blk["X"].shape[0]]
    return blk["Xf"], blk["y"], blk["w"], off if blk["fit"] is None else off[blk["fit"]]
