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
from .normalization import make_normalization
from .sampling import bounded_sample, down_sample, entity_reweighting, row_keys
from .sparsity import sparsify
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


def active_rows(codes: np.ndarray, n_entities: int, cspec: CoordinateSpec,
                keys: np.ndarray | None = None) -> np.ndarray:
    """Rows that take part in fitting a random effect: entities with >= ``min_samples`` rows, and at most
    ``max_samples`` rows per entity: those with the smallest hash of (row key, ``seed``)
    (``sampling.bounded_sample``; ``keys`` default to the row positions), so reruns take the same rows.
    Fitting reweights the kept rows of a bounded entity by n_e / max_samples (``sampling.entity_reweighting``)."""
    counts = np.bincount(codes, minlength=n_entities)
    keep = counts[codes] >= cspec.min_samples
    if cspec.max_samples is not None and (counts > cspec.max_samples).any():
        keys = np.arange(codes.size, dtype=np.uint64) if keys is None else keys
        keep &= bounded_sample(codes, n_entities, keys, cspec.max_samples, cspec.seed)
    return keep


ENGINES = ("local", "spark")


def fit(spec: GLMixSpec, data, *, engine: str = "local", validation: pa.Table | None = None,
        warm_start: GLMixModel | None = None, lock: list[str] | tuple[str, ...] = (),
        incremental: dict | None = None, metadata: dict | None = None, spark=None,
        num_partitions: int | None = None) -> GLMixModel:
    """Fit the GLMix posterior mode on ``data`` with ``engine`` ("local" or "spark") and return the model.

    ``data``: a ``pyarrow.Table``; the Spark engine also takes a Parquet file/folder path or a Spark
    DataFrame. ``spark``/``num_partitions``: the Spark engine's session and partitions (ignored locally).
    Both engines take the same spec and options and return the same ``GLMixModel``.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}; got engine={engine!r}")
    if engine == "spark":
        from .spark_engine.engine import fit_spark

        model = fit_spark(spec, data, spark=spark, warm_start=warm_start, lock=lock, incremental=incremental,
                          num_partitions=num_partitions, metadata=metadata)
        if validation is not None:
            from .evaluation import validation_metrics

            model.metadata.setdefault("metrics", {})["validation"] = validation_metrics(model, validation)
        return model
    return _fit_local(spec, data, validation=validation, warm_start=warm_start, lock=lock,
                      incremental=incremental, metadata=metadata)


def _fit_local(spec: GLMixSpec, data: pa.Table, *, validation: pa.Table | None = None,
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
      With ``spec.evaluators``, the evaluators are also computed on it after every coordinate update
      (``metadata["fit"]["validation_history"]``) and the model returned is the best one seen by the first
      evaluator (``metadata["fit"]["best"]``: sweep, coordinate, metric, value; ties go to the later model).
    - ``metadata``: extra keys stored in ``model.json`` (e.g. ``training_range``, ``parent``, ``version``).
    """
    started = time.perf_counter()
    if spec.evaluators:
        from .evaluators import check as check_evaluators

        check_evaluators(spec.evaluators, validation)
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
    keys = None  # row keys of deterministic sampling (uid column or row position), built when first needed
    sampled = False  # a coordinate fits a sample/reweighted rows, not the full objective
    for cspec in spec.coordinates:
        t0 = time.perf_counter()
        prev = warm_start.coordinates.get(cspec.name) if warm_start is not None else None
        if cspec.name in lock:
            scores[cspec.name] = prev.score(data)
            log.info("coordinate %s: locked (scored from the warm-start model)", cspec.name)
            continue
        if keys is None and (cspec.down_sampling_rate < 1 or cspec.max_samples is not None):
            keys = row_keys(data, spec.uid)
        if cspec.type == "fixed":
            X, feats = feature_matrix(data, cspec.features, cspec.feature_bags, cspec.intercept)
            coef0 = prev.lookup(feats)[0] if isinstance(prev, FixedEffectModel) else None
            fit_rows = fit_weight = None
            if cspec.down_sampling_rate < 1:
                fit_rows, fit_weight = down_sample(y, weight, keys, cspec.down_sampling_rate, cspec.seed)
                sampled = True
                log.info("coordinate %s: down-sampled to %d of %d rows", cspec.name, fit_rows.size, y.size)
            coord = FixedCoordinate(cspec.name, loss, X, feats, y, weight, l2=cspec.l2, l1=cspec.l1,
                                    solver=cspec.solver, intercept=cspec.intercept, rtol=rtol, coef0=coef0,
                                    normalization=make_normalization(cspec.normalization, X, cspec.intercept),
                                    fit_rows=fit_rows, fit_weight=fit_weight)
        else:
            codes, ids = encode_entities(data, cspec.entity)
            Z, feats = feature_matrix(data, cspec.features, cspec.feature_bags, cspec.intercept)
            fit_rows = active_rows(codes, len(ids), cspec, keys)
            factor = entity_reweighting(codes, len(ids), fit_rows)
            reweighted = bool((factor != 1).any())
            sampled |= reweighted
            design = RandomDesign(Z, codes, len(ids), fit_rows, cspec.max_dense_features, intercept=cspec.intercept,
                                  y=y, features_to_samples_ratio=cspec.features_to_samples_ratio,
                                  normalization=make_normalization(cspec.normalization, Z, cspec.intercept))
            entity_ids = pa.array(ids, pa.string())
            coef0 = prior_mean = prior_prec = None
            if isinstance(prev, RandomEffectModel):
                value, variance, found = prev.lookup(entity_ids, feats, design.pair_entity, design.pair_col)
                coef0 = value
                if cspec.name in inc_coords:
                    prior_mean = value
                    # prior precision of the normalized coefficients (factor² / variance; a standardized
                    # intercept keeps 1 / variance, ignoring its covariances); l2 where no variance is usable
                    # (e.g. a previous model saved with variance: none)
                    usable = found & np.isfinite(variance) & (variance > 0)
                    prior_prec = np.where(usable, forgetting * design.pair_factor**2 / np.where(usable, variance, 1.0),
                                          cspec.l2)
            coord = RandomCoordinate(cspec.name, loss, design, y, weight * factor if reweighted else weight,
                                     l2=cspec.l2, rtol=rtol, coef0=coef0, prior_mean=prior_mean, prior_prec=prior_prec)
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
    tracker = None
    if spec.evaluators and validation is not None and coords:
        from .tracking import ValidationTracker

        tracker = ValidationTracker(spec, validation, coords, extras, warm_start=warm_start, locked=lock,
                                    incremental=inc_coords)
    priors = {name: coord.prior() for name, coord in coords.items()}
    # the subspace step minimises the full-data objective: off when a coordinate fits a (reweighted) sample
    accelerator = None if sampled or any(p is None for p in priors.values()) else \
        SubspaceAccelerator(loss, y, weight, coords, priors)
    converged = False
    sweep = 0
    for sweep in range(1, spec.max_iterations + 1):
        before = value
        start_params = {name: coord.params.copy() for name, coord in coords.items()}
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
            if tracker is not None:
                tracker.record(sweep, name, coords, [name])
        if len(coords) > 1 and accelerator is not None:
            t0 = time.perf_counter()
            moved = accelerator.step(start_params, start_total, total)
            if moved is not None:
                new_params, coefficients = moved
                for name, coord in coords.items():
                    coord.params = new_params[name]
                    scores[name] = coord.score()
                total = base_offset + sum(scores.values())
                value = objective()
                log.info("sweep %d subspace step %s: objective %.12g (%.3fs)", sweep,
                         np.array2string(coefficients, precision=3), value, time.perf_counter() - t0)
                history.append({"sweep": sweep, "coordinate": "(acceleration)", "objective": value,
                                "seconds": time.perf_counter() - t0})
                if tracker is not None:
                    tracker.record(sweep, "(acceleration)", coords, list(coords))
        change = abs(before - value) / max(abs(value), 1e-300)
        if change <= spec.tolerance:
            converged = True
            break
    if coords and not converged:
        log.warning("PBCD stopped after %d sweeps without reaching tolerance %g", sweep, spec.tolerance)
    if tracker is not None and tracker.best_params is not None:
        # return the best model seen on validation: restore its parameters before variances and output
        for name, coord in coords.items():
            coord.params = tracker.best_params[name]
            scores[name] = coord.score()
        total = base_offset + sum(scores.values())
        value = objective()
        log.info("best on validation: %s", tracker.best)

    out: dict = {}
    for cspec in spec.coordinates:
        name = cspec.name
        if name in lock:
            out[name] = warm_start.coordinates[name]
            continue
        coord = coords[name]
        variance = coord.variances(total - scores[name], spec.variance)
        if isinstance(coord, FixedCoordinate):
            out[name] = FixedEffectModel(cspec, coord.features, coord.to_original(coord.coef), variance)
            continue
        d = coord.design
        if name not in inc_coords:
            # numeric fast path: the design's pairs are already sorted by (entity, feature) code
            first = np.r_[True, d.pair_entity[1:] != d.pair_entity[:-1]] if d.n_pairs else np.zeros(0, bool)
            used, pair_entity = d.pair_entity[first], np.cumsum(first) - 1
            out[name] = RandomEffectModel(cspec, extras[name]["entity_ids"].take(pa.array(used)),
                                          extras[name]["features"], pair_entity.astype(np.int64),
                                          d.pair_col.astype(np.int64), coord.to_original(coord.values), variance)
            continue
        ent = extras[name]["entity_ids"].take(pa.array(d.pair_entity))
        feat = extras[name]["features"].name_of(d.pair_col).cast(pa.string())
        values, variances = coord.to_original(coord.values), variance
        if name in inc_coords:
            # carry over previous coefficients not refit today (their prior is their posterior), inflated
            prev = warm_start.coordinates[name]
            refit = np.zeros(prev.value.size, bool)
            _, _, found = prev.lookup(extras[name]["entity_ids"], extras[name]["features"], d.pair_entity,
                                      d.pair_col)
            pe = pc_index(prev.entity_ids, ent.filter(pa.array(found)))
            pf = prev.features.index_of(feat.filter(pa.array(found)))
            pos = np.searchsorted(prev.keys, pe * max(len(prev.features), 1) + pf)
            refit[pos] = True
            keep = ~refit
            ent = pa.concat_arrays([ent, prev.entity_ids.take(pa.array(prev.pair_entity[keep]))])
            feat = pa.concat_arrays([feat, prev.features.name_of(prev.pair_feature[keep]).cast(pa.string())])
            values = np.concatenate([values, prev.value[keep]])
            variances = np.concatenate([variances, prev.variance[keep] / forgetting])
        out[name] = RandomEffectModel.from_pairs(cspec, ent, feat, values, variances)
    if spec.sparsity_threshold > 0:
        for name in out:
            if name not in lock:
                out[name] = sparsify(out[name], spec.sparsity_threshold)

    meta = dict(metadata or {})
    meta.update({
        "fit": {"objective": value, "sweeps": sweep, "converged": converged, "seconds": time.perf_counter() - started,
                "rows": data.num_rows, "locked": lock, "incremental": incremental, "history": history},
        "parent": meta.get("parent", warm_start.metadata.get("version") if warm_start is not None else None),
    })
    if tracker is not None:
        meta["fit"].update(validation_history=tracker.history, best=tracker.best)
    model = GLMixModel(spec, out, meta)
    if validation is not None:
        from .evaluation import validation_metrics

        model.metadata.setdefault("metrics", {})["validation"] = validation_metrics(model, validation)
    log.info("fit done: objective %.12g after %d sweeps in %.2fs", value, sweep, time.perf_counter() - started)
    return model


def pc_index(value_set: pa.Array, values: pa.Array) -> np.ndarray:
    """Positions of ``values`` in ``value_set`` (-1 when absent)."""
    import pyarrow.compute as pc

    return pc.index_in(values, value_set=value_set).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)



class SubspaceAccelerator:
    """Accelerates PBCD: after each sweep, minimise the objective over θ_start + D c, where D holds the
    sweep's direction and the previous ``memory`` accepted steps.

    Block coordinate descent crawls along valleys where blocks are correlated (the global intercept against
    the entities' intercepts, crossed random effects); the recent steps span those valleys, so a small Newton
    solve in their span (cost O(rows × m + coefficients × m)) removes most of the crawl, much like a
    conjugate-gradient step on top of the block solves. Starting from c = e_1 (the plain sweep) with a
    monotone line search, it never increases the objective.
    """

    def __init__(self, loss, y, weight, coords, priors, memory: int = 2):
        self.loss, self.y, self.weight, self.coords, self.priors = loss, y, weight, coords, priors
        self.memory = memory
        self.past_params: list[dict] = []
        self.past_scores: list[np.ndarray] = []

    def step(self, start_params: dict, start_total: np.ndarray, end_total: np.ndarray):
        """New parameters (per coordinate) and the subspace coefficients, or None when nothing moved."""
        dirs = [{n: c.params - start_params[n] for n, c in self.coords.items()}] + self.past_params
        svecs = [end_total - start_total] + self.past_scores
        m = len(dirs)
        S = np.stack(svecs, axis=1)
        if not np.any(S[:, 0]):
            return None
        A = np.zeros((m, m))
        b = np.zeros(m)
        for name in self.coords:
            mean, prec = self.priors[name]
            r = start_params[name] - mean
            Dn = np.stack([d[name] for d in dirs], axis=1)
            PD = Dn * prec[:, None]
            A += Dn.T @ PD
            b += PD.T @ r
        loss, y, w = self.loss, self.y, self.weight

        def f(c):
            eta = start_total + S @ c
            return loss.total(y, eta, w) + 0.5 * c @ A @ c + b @ c

        c = np.zeros(m)
        c[0] = 1.0
        fc = f(c)
        for _ in range(20):
            eta = start_total + S @ c
            d1, d2 = loss.derivatives(y, eta)
            g = S.T @ (w * d1) + A @ c + b
            H = S.T @ (S * (w * d2)[:, None]) + A
            try:
                delta = -np.linalg.solve(H + 1e-12 * np.trace(H) / m * np.eye(m), g)
            except np.linalg.LinAlgError:
                break
            t, improved = 1.0, False
            while t > 1e-6:
                trial = c + t * delta
                ft = f(trial)
                if ft <= fc + 1e-4 * t * (g @ delta):
                    improved = True
                    break
                t *= 0.5
            if not improved:
                break
            small = abs(fc - ft) <= 1e-15 * max(abs(ft), 1.0)
            c, fc = trial, ft
            if small:
                break
        new_params = {n: start_params[n] + sum(c[i] * dirs[i][n] for i in range(m)) for n in self.coords}
        step_params = {n: new_params[n] - start_params[n] for n in self.coords}
        self.past_params = ([step_params] + self.past_params)[: self.memory]
        self.past_scores = ([S @ c] + self.past_scores)[: self.memory]
        return new_params, c
