"""Model evaluation on a table, and the per-coordinate L2 grid search on a validation set."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pyarrow as pa

from . import metrics
from .data import numeric_column
from .losses import get_loss
from .model import GLMixModel
from .spec import GLMixSpec

log = logging.getLogger(__name__)

LOWER_IS_BETTER = {"log_loss", "rmse", "poisson_deviance", "objective"}


def evaluate(model: GLMixModel, table: pa.Table, *, group_by: list[str] | None = None,
             ks: tuple[int, ...] = (5, 10)) -> dict:
    """Metrics of ``model`` on ``table`` (which must hold the response column).

    Always: ``rows``, ``rmse``; logistic adds ``auc`` and ``log_loss``; poisson adds ``poisson_deviance``.
    For each ``group_by`` column (default: every random coordinate's entity column present in ``table``):
    ``per_<col>_auc`` (sharded AUC; logistic), ``precision@k/<col>`` and ``ndcg@k/<col>``.
    """
    spec = model.spec
    y = numeric_column(table, spec.response, "response")
    eta = model.score(table)
    mean = get_loss(spec.task).mean(eta)
    out: dict = {"rows": int(table.num_rows), "rmse": metrics.rmse(y, mean)}
    if spec.task == "logistic":
        out["auc"] = metrics.auc(y, eta)
        out["log_loss"] = metrics.log_loss(y, mean)
    elif spec.task == "poisson":
        out["poisson_deviance"] = metrics.poisson_deviance(y, mean)
    if group_by is None:
        group_by = [c.entity for c in spec.coordinates if c.type == "random" and c.entity in table.column_names]
    for col in group_by:
        groups = table.column(col).to_numpy(zero_copy_only=False)
        if spec.task == "logistic":
            out[f"per_{col}_auc"] = metrics.per_entity_auc(y, eta, groups)
        for k in ks:
            out[f"precision@{k}/{col}"] = metrics.precision_at_k(y, eta, groups, k)
            out[f"ndcg@{k}/{col}"] = metrics.ndcg_at_k(y, eta, groups, k)
    return out


def grid_search(spec: GLMixSpec, train: pa.Table, validation: pa.Table, grid: dict[str, list[float]], *,
                metric: str = "auc", warm_start: GLMixModel | None = None) -> tuple[GLMixModel, list[dict]]:
    """Fit every combination of per-coordinate ``l2`` values in ``grid`` and pick by ``metric`` on
    ``validation`` (higher is better except log_loss, rmse, poisson_deviance). Consecutive fits warm-start
    from the previous one. Returns the best model and one result row per combination."""
    from .fitting import fit

    for name in grid:
        spec.coordinate(name)
    names = list(grid)
    results, best, best_value = [], None, None
    previous = warm_start
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    for combo in itertools.product(*(grid[n] for n in names)):
        l2 = dict(zip(names, combo, strict=True))
        model = fit(spec.with_l2(l2), train, warm_start=previous)
        scores = evaluate(model, validation)
        if metric not in scores:
            raise ValueError(f"metric {metric!r} is not computed for task {spec.task}; choose from {sorted(scores)}")
        value = scores[metric]
        value = value["mean"] if isinstance(value, dict) else value
        results.append({"l2": l2, metric: value})
        log.info("grid search %s: %s = %.6f", l2, metric, value)
        if best is None or (np.isfinite(value) and sign * value > sign * best_value):
            best, best_value = model, value
        previous = model
    best.metadata.setdefault("metrics", {})["grid_search"] = {"metric": metric, "results": results}
    return best, results
