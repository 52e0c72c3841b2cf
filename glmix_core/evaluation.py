"""Model evaluation on a table: default metrics, named evaluators and per-group results."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from . import evaluators as ev
from . import metrics
from .data import numeric_column
from .losses import get_loss
from .model import GLMixModel

log = logging.getLogger(__name__)

BINARY_TASKS = ("logistic", "smoothed_hinge")


def evaluate(model: GLMixModel, table: pa.Table, *, group_by: list[str] | None = None,
             ks: tuple[int, ...] = (5, 10), evaluators: list[str] | tuple[str, ...] | None = None) -> dict:
    """Metrics of ``model`` on ``table`` (which must hold the response column).

    With ``evaluators`` (names as in ``glmix_core.evaluators``, e.g. ``["auc", "auc:member_id",
    "precision@5:member_id"]``): ``rows`` and one value per evaluator, keyed by its name.

    Otherwise the default set. Always: ``rows``, ``rmse`` (of the predicted mean; η for smoothed_hinge);
    logistic adds ``auc`` and ``log_loss``; smoothed_hinge adds ``auc`` (of the decision value η) and
    ``smoothed_hinge_loss``; poisson adds ``poisson_deviance``. For each ``group_by`` column (default: every
    random coordinate's entity column present in ``table``): ``per_<col>_auc`` (sharded AUC; binary tasks),
    ``precision@k/<col>`` and ``ndcg@k/<col>``.
    """
    spec = model.spec
    y = numeric_column(table, spec.response, "response")
    if evaluators is not None:
        parsed = ev.check(evaluators, table)
        return {"rows": int(table.num_rows), **ev.compute(parsed, y, model.score(table), table, task=spec.task)}
    eta = model.score(table)
    mean = get_loss(spec.task).mean(eta)
    out: dict = {"rows": int(table.num_rows), "rmse": metrics.rmse(y, mean)}
    if spec.task in BINARY_TASKS:
        out["auc"] = metrics.auc(y, eta)
    if spec.task == "logistic":
        out["log_loss"] = metrics.log_loss(y, mean)
    elif spec.task == "smoothed_hinge":
        out["smoothed_hinge_loss"] = float(np.mean(get_loss(spec.task).pointwise(y, eta))) if y.size else np.nan
    elif spec.task == "poisson":
        out["poisson_deviance"] = metrics.poisson_deviance(y, mean)
    if group_by is None:
        group_by = [c.entity for c in spec.coordinates if c.type == "random" and c.entity in table.column_names]
    for col in group_by:
        groups = table.column(col).to_numpy(zero_copy_only=False)
        if spec.task in BINARY_TASKS:
            out[f"per_{col}_auc"] = metrics.per_entity_auc(y, eta, groups)
        for k in ks:
            out[f"precision@{k}/{col}"] = metrics.precision_at_k(y, eta, groups, k)
            out[f"ndcg@{k}/{col}"] = metrics.ndcg_at_k(y, eta, groups, k)
    return out


def validation_metrics(model: GLMixModel, table: pa.Table) -> dict:
    """What ``fit`` stores under ``metadata["metrics"]["validation"]``: the default ``evaluate`` metrics, plus
    the values of ``model.spec.evaluators`` (keyed by name) when the spec names any."""
    out = evaluate(model, table)
    if model.spec.evaluators:
        out.update(evaluate(model, table, evaluators=model.spec.evaluators))
    return out


def default_group_evaluators(model: GLMixModel, table: pa.Table, ks: tuple[int, ...] = (5, 10)) -> list[str]:
    """``auc:<entity>`` and ``precision@k:<entity>`` for every random coordinate's entity column in ``table``."""
    cols = dict.fromkeys(c.entity for c in model.spec.coordinates
                         if c.type == "random" and c.entity in table.column_names)
    return [name for col in cols for name in [f"auc:{col}"] + [f"precision@{k}:{col}" for k in ks]]


def group_metrics(model: GLMixModel, table: pa.Table, evaluators: list[str] | tuple[str, ...] | None = None
                  ) -> pa.Table:
    """Per-group results of the grouped ``evaluators`` (default: the grouped ones of ``model.spec.evaluators``,
    else ``default_group_evaluators``): one row per group with ``group_column``, ``group_id``, ``rows``,
    ``positives``, ``auc`` and ``precision@<k>`` (see ``glmix_core.evaluators.group_table``)."""
    if evaluators is not None:
        names = [e.name for e in ev.check(evaluators, table) if e.column is not None]
    else:
        names = [e.name for e in ev.check(model.spec.evaluators, table) if e.column is not None]
    names = names or default_group_evaluators(model, table)
    if not names:
        raise ValueError("per-group results need an id column: give auc:<column> or precision@<k>:<column> "
                         "evaluators (the model has no random-effect entity column in this data)")
    y = numeric_column(table, model.spec.response, "response")
    return ev.group_table(names, y, model.score(table), table)
