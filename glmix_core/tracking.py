"""Validation during fitting: evaluators after every coordinate update, and the best model seen.

``ValidationTracker`` builds, once per coordinate, a map from the coordinate's parameters to its
contribution on the validation rows, so scoring after an update costs one sparse product (fixed effect:
``X_val @ coef`` over the training vocabulary) or one ``bincount`` (random effect: every validation nonzero
mapped to its (entity, feature) pair of the training design; pairs the training data lacks contribute 0).
Locked coordinates are scored once from the warm-start model. Scorers take original-scale coefficients
(``coord.to_original(params)``, which converts from a normalized space where the coordinate fits in one). The tracker keeps a copy of
every coordinate's parameters (as fitted) at the best value of the first evaluator seen so far (ties go to
the later model).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import evaluators as ev
from .data import entity_keys, feature_matrix, numeric_column
from .spec import CoordinateSpec, GLMixSpec

log = logging.getLogger(__name__)

Scorer = Callable[[np.ndarray], np.ndarray]


def fixed_scorer(table: pa.Table, cspec: CoordinateSpec, features) -> Scorer:
    """coefficients ↦ validation contribution of a fixed effect whose columns are ``features``."""
    X, _ = feature_matrix(table, cspec.features, cspec.feature_bags, cspec.intercept, vocabulary=features)
    X = X.tocsr()
    return lambda coef: X @ coef


def random_scorer(table: pa.Table, cspec: CoordinateSpec, pairs, previous=None) -> Scorer:
    """pair values ↦ validation contribution of a random effect whose coefficients are ``pairs`` (a
    ``coordinates.PairIndex``: sorted keys entity code × features + column over its entity IDs and features).

    ``previous`` (an incremental update's warm-start ``RandomEffectModel``): validation nonzeros on pairs the
    design lacks take the previous coefficient, as in the model ``fit`` returns."""
    n = table.num_rows
    entity_ids, features = pairs.entity_ids, pairs.features
    Z, _ = feature_matrix(table, cspec.features, cspec.feature_bags, cspec.intercept, vocabulary=features)
    ent = pc.index_in(entity_keys(table, cspec.entity), value_set=entity_ids.cast(pa.string()))
    ent = ent.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    Zc = Z.tocoo()
    rows, cols, vals = Zc.row.astype(np.int64), Zc.col.astype(np.int64), Zc.data
    e = ent[rows]
    keys = e * max(pairs.n_features, 1) + cols
    pair_keys = pairs.pair_keys
    if pair_keys.size:
        pos = np.minimum(np.searchsorted(pair_keys, keys), pair_keys.size - 1)
        hit = (e >= 0) & (pair_keys[pos] == keys)
    else:
        pos, hit = np.zeros(keys.size, np.int64), np.zeros(keys.size, bool)
    rows, vals, hit_pairs = rows[hit], vals[hit], pos[hit]
    constant: np.ndarray | float = 0.0
    if previous is not None:
        before, _, _ = previous.lookup(entity_ids, features, pairs.pair_entity, pairs.pair_col)
        constant = previous.score(table) - np.bincount(rows, weights=vals * before[hit_pairs], minlength=n)
    return lambda values: constant + np.bincount(rows, weights=vals * values[hit_pairs], minlength=n)


class ValidationTracker:
    """Evaluates ``spec.evaluators`` on ``table`` after coordinate updates and keeps the best parameters.

    ``coords``: the fit's coordinates by name (``params``, ``to_original``, and ``features`` for the fixed
    effect or ``pairs`` for random effects); ``locked``: coordinates scored once from ``warm_start``;
    ``incremental``: coordinates whose absent pairs keep the warm-start coefficients.
    """

    def __init__(self, spec: GLMixSpec, table: pa.Table, coords: dict, *, warm_start=None,
                 locked=(), incremental=()):
        self.evaluators = ev.check(spec.evaluators, table)
        self.first = self.evaluators[0]
        self.task = spec.task
        self.y = numeric_column(table, spec.response, "validation response")
        self.groups = ev.group_codes(self.evaluators, table)
        base = np.zeros(table.num_rows)
        if spec.offset and spec.offset in table.column_names:
            base += numeric_column(table, spec.offset, "offset")
        self.scorers: dict[str, Scorer] = {}
        self.parts: dict[str, np.ndarray] = {}
        for cspec in spec.coordinates:
            name = cspec.name
            if name in locked:
                base += warm_start.coordinates[name].score(table)
                continue
            coord = coords[name]
            if cspec.type == "fixed":
                self.scorers[name] = fixed_scorer(table, cspec, coord.features)
            else:
                previous = warm_start.coordinates[name] if name in incremental else None
                self.scorers[name] = random_scorer(table, cspec, coord.pairs, previous)
            self.parts[name] = self.scorers[name](coord.to_original(coord.params))
        self.base = base
        self.history: list[dict] = []
        self.best: dict | None = None
        self.best_params: dict[str, np.ndarray] | None = None

    def score(self) -> np.ndarray:
        """The current validation linear predictor (offset + every coordinate)."""
        return self.base + sum(self.parts.values())

    def record(self, sweep: int, label: str, coords: dict, changed) -> dict[str, float]:
        """Rescore the ``changed`` coordinates, evaluate, append to ``history`` and keep the parameters
        when the first evaluator is at least as good as the best so far. Returns the values."""
        for name in changed:
            self.parts[name] = self.scorers[name](coords[name].to_original(coords[name].params))
        values = ev.compute(self.evaluators, self.y, self.score(), task=self.task, groups=self.groups)
        self.history.append({"sweep": sweep, "coordinate": label, "metrics": values})
        log.info("sweep %d %s: validation %s", sweep, label,
                 ", ".join(f"{k} {v:.6g}" for k, v in values.items()))
        value = values[self.first.name]
        if self.best is None or not ev.is_better(self.first, self.best["value"], value):
            self.best = {"sweep": sweep, "coordinate": label, "metric": self.first.name, "value": value}
            self.best_params = {name: np.array(c.params, copy=True) for name, c in coords.items()}
        return values
