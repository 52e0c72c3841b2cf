"""Fitting by parallel block coordinate descent (paper Algorithm 1) with incremental score updates.

Each sweep updates the unlocked coordinates in spec order; coordinate k trains with offset
``total − s_k`` and the total score is updated by its new contribution. The sweep stops when the relative
change of the objective ``Σ w ℓ(y, η) + Σ penalties`` falls below ``spec.tolerance``.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pyarrow as pa

from .coordinates import FixedCoordinate, RandomCoordinate
from .data import DataError, encode_entities, feature_matrix, numeric_column
from .design import RandomDesign
from .losses import get_loss
from .model import FixedEffectModel, GLMixModel, RandomEffectModel
from .spec import CoordinateSpec, GLMixSpec

log = logging.getLogger(__name__)


def _row_inputs(spec: GLMixSpec, data: pa.Table):
    if data.num_rows == 0:
        raise DataError("the training data has no rows")
    loss = get_loss(spec.task)
    y = numeric_column(data, spec.response, "response")
    loss.check_response(y, spec.response)
    weight = numeric_column(data, spec.weight, "weight") if spec.weight else np.ones(data.num_rows)
    if (weight < 0).any():
        raise DataError(f"weight column {spec.weight!r} has negative values")
    offset = numeric_column(data, spec.offset, "offset") if spec.offset else np.zeros(data.num_rows)
    return loss, y, weight, offset


def active_rows(codes: np.ndarray, n_entities: int, cspec: CoordinateSpec) -> np.ndarray:
    """Rows that take part in fitting a random effect: entities with >= ``min_samples`` rows, and at most
    ``max_samples`` rows per entity chosen by a seeded random draw (reproducible for the same data)."""
    counts = np.bincount(codes, minlength=n_entities)
    keep = counts[codes] >= cspec.min_samples
    if cspec.max_samples is not None and (counts > cspec.max_samples).any():
        draw = np.random.default_rng(cspec.seed).random(codes.size)
        order = np.lexsort((draw, codes))
        start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.empty(codes.size, dtype=np.int64)
        rank[order] = np.arange(codes.size) - start[codes[order]]
        keep &= rank < cspec.max_samples
    return keep


def fit(spec: GLMixSpec, data: pa.Table, *, validation: pa.Table | None = None,
        warm_start: GLMixModel | None = None, lock: list[str] | tuple[str, ...] = (),
        incremental: dict | None = None, metadata: dict | None = None) -> GLMixModel:
    """Fit the GLMix posterior mode on ``data`` and return the model.

    - ``warm_start``: start every coordinate from this model, matched by entity ID and feature name (new
      entities/features start at 0, vanished ones are dropped).
    - ``lock``: coordinates kept exactly as in ``warm_start`` (their scores act as a fixed offset).
    - ``incremental``: ``{"forgetting": γ in (0, 1], "coordinates": [...]}`` (default: every unlocked random
      coordinate). Those coordinates use the warm-start coefficients as prior mean and their posterior
      variance divided by γ as prior variance, so ``data`` need only be the new rows; entities and features
      absent from ``data`` keep their previous coefficients.
    - ``validation``: evaluated after the fit; metrics land in ``model.metadata["metrics"]["validation"]``.
    - ``metadata``: extra keys stored in ``model.json`` (e.g. ``training_range``, ``parent``, ``version``).
    """
    started = time.perf_counter()
    loss, y, weight, base_offset = _row_inputs(spec, data)
    names = [c.name for c in spec.coordinates]
    lock = list(lock)
    for name in lock:
        if name not in names:
            raise DataError(f"cannot lock {name!r}: the spec has coordinates {names}")
        if warm_start is None or name not in warm_start.coordinates:
            raise DataError(f"locking {name!r} needs a warm-start model that has that coordinate")
    inc_coords: set[str] = set()
    forgetting = 1.0
    if incremental is not None:
        if warm_start is None:
            raise DataError("an incremental update needs the previous model as warm_start")
        forgetting = float(incremental.get("forgetting", 1.0))
        if not 0 < forgetting <= 1:
            raise DataError(f"forgetting must be in (0, 1]; got {forgetting}")
        default = [c.name for c in spec.coordinates if c.type == "random" and c.name not in lock]
        inc_coords = set(incremental.get("coordinates", default))
        for name in inc_coords:
            if spec.coordinate(name).type != "random" or name not in warm_start.coordinates:
                raise DataError(f"incremental coordinate {name!r} must be a random effect present in warm_start")
    rtol = spec.tolerance * 1e-3

    coords: dict = {}
    scores: dict[str, np.ndarray] = {}
    extras: dict[str, dict] = {}
    for cspec in spec.coordinates:
        t0 = time.perf_counter()
        prev = warm_start.coordinates.get(cspec.name) if warm_start is not None else None
        if cspec.name in lock:
            scores[cspec.name] = prev.score(data)
            log.info("coordinate %s: locked (scored from the warm-start model)", cspec.name)
            continue
        if cspec.type == "fixed":
            X, feats = feature_matrix(data, cspec.features, cspec.feature_bags, cspec.intercept)
            coef0 = prev.lookup(feats)[0] if isinstance(prev, FixedEffectModel) else None
            coord = FixedCoordinate(cspec.name, loss, X, feats, y, weight, l2=cspec.l2, l1=cspec.l1,
                                    solver=cspec.solver, intercept=cspec.intercept, rtol=rtol, coef0=coef0)
        else:
            codes, ids = encode_entities(data, cspec.entity)
            Z, feats = feature_matrix(data, cspec.features, cspec.feature_bags, cspec.intercept)
            design = RandomDesign(Z, codes, len(ids), active_rows(codes, len(ids), cspec), cspec.max_dense_features)
            entity_ids = pa.array(ids, pa.string())
            coef0 = prior_mean = prior_prec = None
            if isinstance(prev, RandomEffectModel):
                value, variance, found = prev.lookup(entity_ids, feats, design.pair_entity, design.pair_col)
                coef0 = value
                if cspec.name in inc_coords:
                    prior_mean = value
                    usable = found & np.isfinite(variance) & (variance > 0)
                    prior_prec = np.where(usable, forgetting / np.where(usable, variance, 1.0), cspec.l2)
            coord = RandomCoordinate(cspec.name, loss, design, y, weight, l2=cspec.l2, rtol=rtol, coef0=coef0,
                                     prior_mean=prior_mean, prior_prec=prior_prec)
            extras[cspec.name] = {"entity_ids": entity_ids, "features": feats}
        coords[cspec.name] = coord
        scores[cspec.name] = coord.score()
        log.info("coordinate %s: design built in %.2fs", cspec.name, time.perf_counter() - t0)

    total = base_offset + sum(scores.values())
    history = []

    def objective() -> float:
        return loss.total(y, total, weight) + sum(c.penalty() for c in coords.values())

    value = objective()
    log.info("start objective %.10g", value)
    converged = False
    sweep = 0
    for sweep in range(1, spec.max_iterations + 1):
        before = value
        start_params = {name: coord.params.copy() for name, coord in coords.items()}
        start_scores = dict(scores)
        start_total = total
        for name, coord in coords.items():
            t0 = time.perf_counter()
            partial = total - scores[name]
            coord.fit(partial)
            scores[name] = coord.score()
            total = partial + scores[name]
            value = objective()
            elapsed = time.perf_counter() - t0
            history.append({"sweep": sweep, "coordinate": name, "objective": value, "seconds": elapsed,
                            "inner_iterations": coord.last_iterations})
            log.info("sweep %d coordinate %s: objective %.12g (%.3fs, %d inner iterations)", sweep, name, value,
                     elapsed, coord.last_iterations)
        if len(coords) > 1:
            t0 = time.perf_counter()
            step = _extrapolate(loss, y, weight, coords, start_params, start_total, total)
            if step > 1.0:
                for name, coord in coords.items():
                    coord.params = start_params[name] + step * (coord.params - start_params[name])
                    scores[name] = start_scores[name] + step * (scores[name] - start_scores[name])
                total = start_total + step * (total - start_total)
                value = objective()
                log.info("sweep %d extrapolation step %.3f: objective %.12g (%.3fs)", sweep, step, value,
                         time.perf_counter() - t0)
                history.append({"sweep": sweep, "coordinate": "(extrapolation)", "objective": value,
                                "seconds": time.perf_counter() - t0, "step": step})
        change = abs(before - value) / max(abs(value), 1e-300)
        if len(coords) <= 1 or change <= spec.tolerance:
            converged = True
            break
    if coords and not converged:
        log.warning("PBCD stopped after %d sweeps without reaching tolerance %g", sweep, spec.tolerance)

    out: dict = {}
    for cspec in spec.coordinates:
        name = cspec.name
        if name in lock:
            out[name] = warm_start.coordinates[name]
            continue
        coord = coords[name]
        variance = coord.variances(total - scores[name])
        if isinstance(coord, FixedCoordinate):
            out[name] = FixedEffectModel(cspec, coord.features, coord.coef.copy(), variance)
            continue
        d = coord.design
        ent = extras[name]["entity_ids"].take(pa.array(d.pair_entity))
        feat = pa.array(extras[name]["features"], pa.string()).take(pa.array(d.pair_col))
        values, variances = coord.values, variance
        if name in inc_coords:
            # carry over previous coefficients not refit today (their prior is their posterior), inflated
            prev = warm_start.coordinates[name]
            refit = np.zeros(prev.value.size, bool)
            _, _, found = prev.lookup(extras[name]["entity_ids"], extras[name]["features"], d.pair_entity,
                                      d.pair_col)
            pe = pc_index(prev.entity_ids, ent.filter(pa.array(found)))
            pf = pc_index(pa.array(prev.features, pa.string()), feat.filter(pa.array(found)))
            pos = np.searchsorted(prev.keys, pe * max(len(prev.features), 1) + pf)
            refit[pos] = True
            keep = ~refit
            ent = pa.concat_arrays([ent, prev.entity_ids.take(pa.array(prev.pair_entity[keep]))])
            feat = pa.concat_arrays([feat, pa.array(prev.features, pa.string()).take(
                pa.array(prev.pair_feature[keep]))])
            values = np.concatenate([values, prev.value[keep]])
            variances = np.concatenate([variances, prev.variance[keep] / forgetting])
        out[name] = RandomEffectModel.from_pairs(cspec, ent, feat, values, variances)

    meta = dict(metadata or {})
    meta.update({
        "fit": {"objective": value, "sweeps": sweep, "converged": converged, "seconds": time.perf_counter() - started,
                "rows": data.num_rows, "locked": lock, "incremental": incremental, "history": history},
        "parent": meta.get("parent", warm_start.metadata.get("version") if warm_start is not None else None),
    })
    model = GLMixModel(spec, out, meta)
    if validation is not None:
        from .evaluation import evaluate

        model.metadata.setdefault("metrics", {})["validation"] = evaluate(model, validation)
    log.info("fit done: objective %.12g after %d sweeps in %.2fs", value, sweep, time.perf_counter() - started)
    return model


def pc_index(value_set: pa.Array, values: pa.Array) -> np.ndarray:
    """Positions of ``values`` in ``value_set`` (-1 when absent)."""
    import pyarrow.compute as pc

    return pc.index_in(values, value_set=value_set).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _extrapolate(loss, y, weight, coords, start_params, start_total, total, max_step: float = 50.0) -> float:
    """Step t >= 1 minimising the objective along the whole sweep's direction θ_start + t (θ_end − θ_start).

    Block coordinate descent crawls along directions where blocks are correlated (e.g. the global intercept
    against the entities' intercepts); the sweep's direction points along that valley, so a 1-D Newton
    search on it (O(rows + coefficients)) removes most of the crawl. Returns 1 when it does not help or a
    penalty is not quadratic.
    """
    priors = {}
    for name, coord in coords.items():
        prior = coord.prior()
        if prior is None:
            return 1.0
        priors[name] = prior
    direction = total - start_total
    if not np.any(direction):
        return 1.0
    # penalty(t) = 0.5 Σ P (r + t d)^2 with r = θ_start − μ, d = θ_end − θ_start
    pa_, pb = 0.0, 0.0
    for name, coord in coords.items():
        mean, prec = priors[name]
        d = coord.params - start_params[name]
        r = start_params[name] - mean
        pa_ += float(np.sum(prec * d * d))
        pb += float(np.sum(prec * r * d))

    def f(t):
        eta = start_total + t * direction
        return loss.total(y, eta, weight) + 0.5 * pa_ * t * t + pb * t

    t, ft = 1.0, f(1.0)
    for _ in range(30):
        eta = start_total + t * direction
        d1, d2 = loss.derivatives(y, eta)
        g = float(np.dot(weight * d1, direction)) + pa_ * t + pb
        h = float(np.dot(weight * d2, direction * direction)) + pa_
        if h <= 0:
            break
        new_t = min(max(t - g / h, 1.0), max_step)
        new_f = f(new_t)
        while new_f > ft and abs(new_t - t) > 1e-12:
            new_t = 0.5 * (new_t + t)
            new_f = f(new_t)
        if new_f > ft:
            break
        converged = abs(new_t - t) <= 1e-6 * max(1.0, t)
        t, ft = new_t, new_f
        if converged:
            break
    return t
