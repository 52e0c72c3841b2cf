"""Evaluation metrics, vectorised (no Python loop over rows or groups).

``auc`` handles ties by average ranks; grouped metrics take an array of group keys (any dtype) and group
with ``np.unique``/``np.lexsort``.
"""

from __future__ import annotations

import numpy as np


def rankdata(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank (as scipy.stats.rankdata, without its import cost)."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    new_block = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    block = np.cumsum(new_block) - 1
    first = np.flatnonzero(new_block)
    last = np.r_[first[1:], values.size] - 1
    ranks = np.empty(values.size)
    ranks[order] = ((first + last) / 2.0 + 1.0)[block]
    return ranks


def auc(y: np.ndarray, score: np.ndarray, weight: np.ndarray | None = None) -> float:
    """Area under the ROC curve (Mann–Whitney with average ranks for ties); NaN if one class is missing."""
    y = np.asarray(y, float)
    score = np.asarray(score, float)
    if weight is not None:
        return _weighted_auc(y, score, np.asarray(weight, float))
    pos = y > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _weighted_auc(y, score, weight) -> float:
    order = np.argsort(-score, kind="stable")
    s, yp, w = score[order], y[order] > 0.5, weight[order]
    wp, wn = np.where(yp, w, 0.0), np.where(yp, 0.0, w)
    distinct = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tp, fp = np.cumsum(wp)[distinct], np.cumsum(wn)[distinct]
    if tp[-1] == 0 or fp[-1] == 0:
        return float("nan")
    tp, fp = np.r_[0, tp], np.r_[0, fp]
    return float(np.trapezoid(tp, fp) / (tp[-1] * fp[-1]))


def aupr(y: np.ndarray, score: np.ndarray, weight: np.ndarray | None = None) -> float:
    """Area under the precision-recall curve as average precision, Σ_t (R_t − R_{t−1}) P_t over the distinct
    score thresholds t in decreasing order (ties form one threshold; as scikit-learn's
    ``average_precision_score``); NaN without positives."""
    y = np.asarray(y, float) > 0.5
    score = np.asarray(score, float)
    w = np.ones(score.size) if weight is None else np.asarray(weight, float)
    order = np.argsort(-score, kind="stable")
    s = score[order]
    distinct = np.r_[np.flatnonzero(np.diff(s)), s.size - 1] if s.size else np.zeros(0, np.int64)
    tp = np.cumsum(np.where(y[order], w[order], 0.0))[distinct]
    seen = np.cumsum(w[order])[distinct]
    if tp.size == 0 or tp[-1] <= 0:
        return float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(seen > 0, tp / seen, 0.0)
    recall_step = np.diff(np.r_[0.0, tp]) / tp[-1]
    return float(np.sum(recall_step * precision))


def log_loss(y: np.ndarray, prob: np.ndarray, eps: float = 1e-15) -> float:
    """Mean binary cross-entropy of probabilities ``prob``."""
    p = np.clip(np.asarray(prob, float), eps, 1 - eps)
    y = np.asarray(y, float)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def rmse(y: np.ndarray, prediction: np.ndarray, weight: np.ndarray | None = None) -> float:
    """Root mean squared error (weighted by ``weight`` when given)."""
    r = np.asarray(y, float) - np.asarray(prediction, float)
    return float(np.sqrt(np.average(r * r, weights=weight)))


def poisson_deviance(y: np.ndarray, mean: np.ndarray) -> float:
    """Mean Poisson deviance."""
    y, mu = np.asarray(y, float), np.maximum(np.asarray(mean, float), 1e-300)
    term = np.where(y > 0, y * np.log(np.where(y > 0, y, 1) / mu), 0.0)
    return float(2 * np.mean(term - (y - mu)))


def _group_order(groups: np.ndarray, score: np.ndarray):
    """Codes of the groups, and row order by (group, descending score)."""
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    order = np.lexsort((-np.asarray(score, float), codes))
    return codes, order


def group_codes(groups: np.ndarray) -> np.ndarray:
    """Dense int64 codes 0..G−1 of group keys (any dtype; sorted key order)."""
    return np.unique(np.asarray(groups), return_inverse=True)[1].astype(np.int64).ravel()


def group_auc(y: np.ndarray, score: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-group AUC (NaN for a group without both classes), rows and positives per group, for dense group
    ``codes`` (0..G−1, e.g. from ``group_codes``). Ties get average ranks within their group."""
    y = np.asarray(y, float) > 0.5
    score = np.asarray(score, float)
    codes = np.asarray(codes, np.int64)
    n_groups = int(codes.max()) + 1 if codes.size else 0
    # average ranks within group: rank the (group, score) pairs, then subtract the group's start
    order = np.lexsort((score, codes))
    sc, cs = score[order], codes[order]
    new_block = np.r_[True, (np.diff(sc) != 0) | (np.diff(cs) != 0)]
    block = np.cumsum(new_block) - 1
    first = np.flatnonzero(new_block)
    last = np.r_[first[1:], sc.size] - 1
    avg_rank_global = (first + last) / 2.0 + 1.0
    group_start = np.searchsorted(cs, np.arange(n_groups))
    ranks = np.empty(score.size)
    ranks[order] = avg_rank_global[block] - group_start[cs]
    n_pos = np.bincount(codes, weights=y, minlength=n_groups)
    n_all = np.bincount(codes, minlength=n_groups)
    n_neg = n_all - n_pos
    rank_sum = np.bincount(codes, weights=np.where(y, ranks, 0.0), minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        aucs = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    aucs[(n_pos == 0) | (n_neg == 0)] = np.nan
    return aucs, n_all, n_pos.astype(np.int64)


def per_entity_auc(y: np.ndarray, score: np.ndarray, groups: np.ndarray) -> dict:
    """AUC within each group (sharded AUC), averaged over groups that have both classes: plain mean and
    mean weighted by group size, with the number of groups used."""
    aucs, n_all, _ = group_auc(y, score, group_codes(groups))
    ok = np.isfinite(aucs)
    if not ok.any():
        return {"mean": float("nan"), "weighted_mean": float("nan"), "groups": 0}
    return {"mean": float(aucs[ok].mean()), "weighted_mean": float(np.average(aucs[ok], weights=n_all[ok])),
            "groups": int(ok.sum())}


def group_precision_at_k(y: np.ndarray, score: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    """Per group (dense ``codes`` 0..G−1): the fraction of positives among the group's top-k rows by score,
    over min(k, group size). Ties keep row order."""
    y = np.asarray(y, float)
    codes = np.asarray(codes, np.int64)
    order = np.lexsort((-np.asarray(score, float), codes))
    cs = codes[order]
    n_groups = int(cs.max()) + 1 if cs.size else 0
    start = np.searchsorted(cs, np.arange(n_groups))
    rank = np.arange(cs.size) - start[cs]
    top = rank < k
    hits = np.bincount(cs[top], weights=y[order][top], minlength=n_groups)
    denom = np.minimum(np.bincount(cs, minlength=n_groups), k)
    with np.errstate(invalid="ignore", divide="ignore"):
        return hits / denom


def precision_at_k(y: np.ndarray, score: np.ndarray, groups: np.ndarray, k: int) -> float:
    """Mean over groups of the fraction of positives among each group's top-k rows by score
    (groups with fewer than k rows use all their rows as the denominator's cap: min(k, size))."""
    per_group = group_precision_at_k(y, score, group_codes(groups), k)
    return float(np.mean(per_group)) if per_group.size else float("nan")


def ndcg_at_k(y: np.ndarray, score: np.ndarray, groups: np.ndarray, k: int) -> float:
    """Mean NDCG@k over groups with at least one positive (gain = label, discount 1/log2(rank + 1))."""
    y = np.asarray(y, float)
    codes, order = _group_order(groups, score)
    cs = codes[order]
    n_groups = cs.max() + 1 if cs.size else 0
    start = np.searchsorted(cs, np.arange(n_groups))
    rank = np.arange(cs.size) - start[cs]
    discount = 1.0 / np.log2(rank + 2.0)
    top = rank < k
    dcg = np.bincount(cs[top], weights=(y[order] * discount)[top], minlength=n_groups)
    # ideal: the same group sorted by label
    ideal_order = np.lexsort((-y, codes))
    ci = codes[ideal_order]
    irank = np.arange(ci.size) - start[ci]
    itop = irank < k
    idcg = np.bincount(ci[itop], weights=(y[ideal_order] / np.log2(irank + 2.0))[itop], minlength=n_groups)
    ok = idcg > 0
    return float(np.mean(dcg[ok] / idcg[ok])) if ok.any() else float("nan")
