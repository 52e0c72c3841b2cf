"""Validation evaluators (Photon-ML's validation evaluators): parse their names, compute them, compare them.

Names (the metric part is case-insensitive; results are keyed by the name as given):

- on all rows: ``auc``, ``aupr`` (average precision), ``rmse`` (of the predicted mean: probability for
  logistic, rate for poisson, η otherwise), and the weighted mean pointwise losses of the linear predictor η:
  ``logistic_loss``, ``poisson_loss`` (exp(η) − yη), ``squared_loss`` (½(η − y)²), ``smoothed_hinge_loss``;
- grouped by an ID column: ``auc:<column>`` (mean AUC over the groups that have both classes) and
  ``precision@<k>:<column>`` (mean over groups of the share of positives among the group's top k rows).

Higher is better for auc, aupr and precision; lower for the losses and rmse (``direction``/``is_better``).
Every computation is vectorised (no loop over rows or groups).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from . import metrics
from .data import encode_entities
from .errors import DataError, SpecError
from .losses import get_loss

GLOBAL = ("auc", "aupr", "rmse", "logistic_loss", "poisson_loss", "squared_loss", "smoothed_hinge_loss")
GROUPED = ("auc:<id column>", "precision@<k>:<id column>")
ALLOWED = GLOBAL + GROUPED
HIGHER_IS_BETTER = {"auc", "aupr", "precision"}
_LOSS_TASK = {"logistic_loss": "logistic", "poisson_loss": "poisson", "squared_loss": "linear",
              "smoothed_hinge_loss": "smoothed_hinge"}
_PRECISION = re.compile(r"^precision@(\d+)$")


@dataclass(frozen=True)
class Evaluator:
    """One parsed evaluator: ``name`` as given, ``metric`` (``auc``, ``aupr``, ``rmse``, a ``*_loss`` or
    ``precision``), the group ``column`` (grouped evaluators only) and ``k`` (precision@k)."""

    name: str
    metric: str
    column: str | None = None
    k: int | None = None

    @property
    def higher_is_better(self) -> bool:
        return self.metric in HIGHER_IS_BETTER


def parse(name: str) -> Evaluator:
    """Parse one evaluator name; a ``SpecError`` names the allowed evaluators when it is not one of them."""
    if not isinstance(name, str) or not name.strip():
        raise SpecError(f"evaluator names must be non-empty strings; got {name!r}; allowed: {', '.join(ALLOWED)}")
    text = name.strip()
    head, sep, column = text.partition(":")
    head = head.strip().lower()
    column = column.strip()
    if sep and not column:
        raise SpecError(f"evaluator {name!r}: the id column after ':' is empty")
    match = _PRECISION.match(head)
    if match:
        k = int(match.group(1))
        if k < 1:
            raise SpecError(f"evaluator {name!r}: k of precision@k must be >= 1")
        if not sep:
            raise SpecError(f"evaluator {name!r}: precision@k is grouped; write precision@{k}:<id column>")
        return Evaluator(text, "precision", column, k)
    if head not in GLOBAL:
        raise SpecError(f"unknown evaluator {name!r}; allowed: {', '.join(ALLOWED)}")
    if sep and head != "auc":
        raise SpecError(f"evaluator {name!r}: only auc and precision@k take an id column; allowed: "
                        f"{', '.join(ALLOWED)}")
    return Evaluator(text, head, column or None)


def parse_all(names: Iterable[str]) -> list[Evaluator]:
    """Parse every name (see ``parse``)."""
    return [parse(n) for n in names]


def _as_evaluator(name: str | Evaluator) -> Evaluator:
    return name if isinstance(name, Evaluator) else parse(name)


def direction(name: str | Evaluator) -> str:
    """``"max"`` when a higher value of evaluator ``name`` is better (auc, aupr, precision@k), else ``"min"``."""
    return "max" if _as_evaluator(name).higher_is_better else "min"


def is_better(name: str | Evaluator, a: float | None, b: float | None) -> bool:
    """True when value ``a`` of evaluator ``name`` is strictly better than ``b``. NaN/None is never better;
    any finite value is better than NaN/None."""
    if a is None or not np.isfinite(a):
        return False
    if b is None or not np.isfinite(b):
        return True
    return a > b if _as_evaluator(name).higher_is_better else a < b


def group_columns(names: Iterable[str | Evaluator]) -> list[str]:
    """The distinct id columns of the grouped evaluators, in first-use order."""
    out: list[str] = []
    for e in map(_as_evaluator, names):
        if e.column is not None and e.column not in out:
            out.append(e.column)
    return out


def check(names: Iterable[str | Evaluator], table: pa.Table | None = None) -> list[Evaluator]:
    """Parse ``names`` and, when ``table`` is given, check that it holds every id column (``DataError``
    naming the missing column otherwise)."""
    parsed = [_as_evaluator(n) for n in names]
    if table is not None:
        for e in parsed:
            if e.column is not None and e.column not in table.column_names:
                raise DataError(f"evaluator {e.name!r}: id column {e.column!r} is not in the validation data; "
                                f"available columns: {table.column_names}")
    return parsed


def _groups_of(table: pa.Table, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Dense codes 0..G−1 per row and the G group IDs (strings) of id column ``column``."""
    codes, ids = encode_entities(table, column)
    present = np.bincount(codes, minlength=ids.size) > 0
    if present.all():
        return codes, ids
    # a dictionary column may carry unused values: renumber the groups that occur
    return (np.cumsum(present) - 1)[codes], ids[present]


def group_codes(names: Iterable[str | Evaluator], table: pa.Table) -> dict[str, np.ndarray]:
    """Dense group codes per id column of the grouped evaluators (computed once, reused by ``compute``)."""
    parsed = check(names, table)
    return {col: _groups_of(table, col)[0] for col in group_columns(parsed)}


def compute(evaluators: Sequence[str | Evaluator], y: np.ndarray, score: np.ndarray, table: pa.Table | None = None,
            *, task: str | None = None, weight: np.ndarray | None = None,
            groups: Mapping[str, np.ndarray] | None = None) -> dict[str, float]:
    """Values of ``evaluators`` for labels ``y`` and linear predictor ``score`` (η, offset included).

    ``table`` supplies the id columns of grouped evaluators (or pass precomputed ``groups`` from
    ``group_codes``); ``task`` sets the inverse link that ``rmse`` applies (none: η itself); ``weight``
    (optional row weights) applies to auc, aupr, rmse and the losses, not to grouped evaluators. Returns
    ``{name as given: value}`` (NaN when undefined, e.g. AUC without both classes)."""
    parsed = [_as_evaluator(e) for e in evaluators]
    y = np.asarray(y, float)
    score = np.asarray(score, float)
    if groups is None:
        needed = [e for e in parsed if e.column is not None]
        if needed and table is None:
            raise ValueError(f"grouped evaluators {[e.name for e in needed]} need the table with their id columns")
        groups = group_codes(needed, table) if needed else {}
    w = None if weight is None else np.asarray(weight, float)
    out: dict[str, float] = {}
    for e in parsed:
        if e.column is not None:
            codes = groups[e.column]
            if e.metric == "auc":
                aucs, _, _ = metrics.group_auc(y, score, codes)
                ok = np.isfinite(aucs)
                out[e.name] = float(aucs[ok].mean()) if ok.any() else float("nan")
            else:
                per = metrics.group_precision_at_k(y, score, codes, e.k)
                out[e.name] = float(per.mean()) if per.size else float("nan")
        elif e.metric == "auc":
            out[e.name] = metrics.auc(y, score, w)
        elif e.metric == "aupr":
            out[e.name] = metrics.aupr(y, score, w)
        elif e.metric == "rmse":
            prediction = get_loss(task).mean(score) if task else score
            out[e.name] = metrics.rmse(y, prediction, w) if y.size else float("nan")
        else:
            pointwise = get_loss(_LOSS_TASK[e.metric]).pointwise(y, score)
            out[e.name] = float(np.average(pointwise, weights=w)) if y.size else float("nan")
    return out


def group_table(evaluators: Sequence[str | Evaluator], y: np.ndarray, score: np.ndarray,
                table: pa.Table) -> pa.Table:
    """One row per group of every grouped evaluator's id column: ``group_column``, ``group_id`` (string),
    ``rows``, ``positives`` (label > 0.5), then ``auc`` and ``precision@<k>`` columns for the grouped
    evaluators asked for (null where that column did not ask for it, or where AUC is undefined because the
    group lacks a class). Groups follow their first appearance in ``table``."""
    parsed = [e for e in map(_as_evaluator, evaluators) if e.column is not None]
    if not parsed:
        raise ValueError("per-group output needs grouped evaluators (auc:<id column> or precision@<k>:<id column>)")
    check(parsed, table)
    y = np.asarray(y, float)
    score = np.asarray(score, float)
    metric_names = list(dict.fromkeys("auc" if e.metric == "auc" else f"precision@{e.k}" for e in parsed))
    parts = []
    for col in group_columns(parsed):
        codes, ids = _groups_of(table, col)
        asked = {("auc" if e.metric == "auc" else f"precision@{e.k}"): e for e in parsed if e.column == col}
        aucs, rows, positives = metrics.group_auc(y, score, codes)
        n = ids.size
        columns: dict[str, pa.Array] = {
            "group_column": pa.array([col] * n, pa.string()), "group_id": pa.array(ids.tolist(), pa.string()),
            "rows": pa.array(rows.astype(np.int64)), "positives": pa.array(positives.astype(np.int64))}
        for m in metric_names:
            if m not in asked:
                values = np.full(n, np.nan)
            elif m == "auc":
                values = aucs
            else:
                values = metrics.group_precision_at_k(y, score, codes, asked[m].k)
            columns[m] = pa.array(values, pa.float64(), from_pandas=True)
        parts.append(pa.table(columns))
    return pa.concat_tables(parts)
