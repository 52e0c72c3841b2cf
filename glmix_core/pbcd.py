"""The PBCD driver (paper Algorithm 1), written once over a backend's coordinates.

A backend (``LocalBackend``, ``glmix_core.spark_engine.SparkBackend``) builds the coordinates and holds the
per-row labels, weights and base offset (offset column + locked coordinates) as NumPy arrays on the driver;
everything else is here: option checks, sweeps with score offsets (coordinate k trains with offset
``total − s_k``), the subspace acceleration step, validation tracking and best-model restore, the stopping
rule, posterior variances, the incremental carry-over, model assembly and the fit metadata.

Stopping: every coordinate update first measures its KKT residual at the point it starts from
(``coordinates.scaled_gradient``: the curvature-scaled gradient of its fitted objective, in coefficient
units, so no extra pass over the data); the fit has converged after a sweep in which every coordinate
started within ``spec.tolerance``. The relative change of the objective is a secondary guard: a sweep that
changes it by less than ``OBJECTIVE_GUARD`` (floating-point noise) also stops the fit, since further sweeps
cannot move it. A fit that reaches ``max_iterations`` first issues a ``ConvergenceWarning``.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import errors
from .errors import DataError
from .losses import Loss
from .model import FixedEffectModel, GLMixModel, RandomEffectModel
from .sparsity import sparsify
from .spec import GLMixSpec

log = logging.getLogger(__name__)

OBJECTIVE_GUARD = 1e-15  # relative objective change of a sweep below which nothing more can be gained
SUBSPACE_MEMORY = 2  # past accepted steps kept by the subspace acceleration
# subspace coefficients above this mean a nearly singular subspace: the step is skipped (scores are combined
# linearly from the directions, which would lose digits)
MAX_SUBSPACE_COEFFICIENT = 1e3


@dataclass
class FitOptions:
    """The checked options of one fit: locked coordinates, incremental ones and the forgetting factor."""

    lock: list[str]
    incremental: set[str] = field(default_factory=set)
    forgetting: float = 1.0
    raw_incremental: dict | None = None

    @classmethod
    def check(cls, spec: GLMixSpec, warm_start: GLMixModel | None, lock, incremental: dict | None,
              validation: pa.Table | None = None) -> FitOptions:
        """Validate ``lock``/``incremental``/evaluators against the spec and the warm start (``DataError``)."""
        if spec.evaluators:
            from .evaluators import check as check_evaluators

            check_evaluators(spec.evaluators, validation)
        names = [c.name for c in spec.coordinates]
        lock = list(lock)
        for name in lock:
            if name not in names:
                raise DataError(f"cannot lock {name!r}: the spec has coordinates {names}")
            if warm_start is None or name not in warm_start.coordinates:
                raise DataError(f"locking {name!r} needs a warm-start model that has that coordinate")
        options = cls(lock, raw_incremental=incremental)
        if incremental is not None:
            if warm_start is None:
                raise DataError("an incremental update needs the previous model as warm_start")
            options.forgetting = float(incremental.get("forgetting", 1.0))
            if not 0 < options.forgetting <= 1:
                raise DataError(f"forgetting must be in (0, 1]; got {options.forgetting}")
            default = [c.name for c in spec.coordinates if c.type == "random" and c.name not in lock]
            options.incremental = set(incremental.get("coordinates", default))
            for name in options.incremental:
                if spec.coordinate(name).type != "random" or name not in warm_start.coordinates:
                    raise DataError(f"incremental coordinate {name!r} must be a random effect present in warm_start")
        return options


class Backend(Protocol):
    """What the driver needs from a backend, built for one fit.

    ``coordinates``: the unlocked coordinates in spec order (the interface of ``glmix_core.coordinates``);
    ``y``/``weight``/``base_offset``: per-row arrays on the driver; ``sampled``: some coordinate fits a
    (re)weighted sample, so the full-data subspace step is off; ``info``: extra ``fit`` metadata."""

    loss: Loss
    y: np.ndarray
    weight: np.ndarray
    base_offset: np.ndarray
    coordinates: dict
    sampled: bool
    info: dict

    def close(self) -> None: ...


def run(spec: GLMixSpec, backend: Backend, options: FitOptions, *, warm_start: GLMixModel | None = None,
        validation: pa.Table | None = None, metadata: dict | None = None,
        started: float | None = None) -> GLMixModel:
    """Fit by PBCD on ``backend``'s coordinates and return the model (see the module doc)."""
    started = time.perf_counter() if started is None else started
    loss, y, weight = backend.loss, backend.y, backend.weight
    coords = backend.coordinates
    scores = {name: coord.score() for name, coord in coords.items()}
    total = backend.base_offset + sum(scores.values())
    history: list[dict] = []

    def objective() -> float:
        return loss.total(y, total, weight) + sum(c.penalty() for c in coords.values())

    value = objective()
    log.info("start objective %.10g", value)
    tracker = None
    if spec.evaluators and validation is not None and coords:
        from .tracking import ValidationTracker

        tracker = ValidationTracker(spec, validation, coords, warm_start=warm_start, locked=options.lock,
                                    incremental=options.incremental)
    priors = {name: coord.prior() for name, coord in coords.items()}
    # the subspace step minimises the full-data objective: off when a coordinate fits a (reweighted) sample
    accelerator = None if backend.sampled or len(coords) < 2 or any(p is None for p in priors.values()) else \
        SubspaceAccelerator(loss, y, weight, backend.base_offset, coords, priors)
    converged = False
    sweep, measure = 0, float("inf")
    for sweep in range(1, spec.max_iterations + 1):
        before = value
        start_params = {name: coord.params.copy() for name, coord in coords.items()}
        start_scores = dict(scores)
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
        if accelerator is not None:
            t0 = time.perf_counter()
            moved = accelerator.step(start_params, start_scores, scores)
            if moved is not None:
                new_params, scores, coefficients = moved
                for name, coord in coords.items():
                    coord.params = new_params[name]
                total = backend.base_offset + sum(scores.values())
                value = objective()
                log.info("sweep %d subspace step %s: objective %.12g (%.3fs)", sweep,
                         np.array2string(coefficients, precision=3), value, time.perf_counter() - t0)
                history.append({"sweep": sweep, "coordinate": "(acceleration)", "objective": value,
                                "seconds": time.perf_counter() - t0})
                if tracker is not None:
                    tracker.record(sweep, "(acceleration)", coords, list(coords))
        measure = max((coord.last_kkt for coord in coords.values()), default=0.0)
        change = abs(before - value) / max(abs(value), 1e-300)
        if history:
            history[-1]["kkt"] = measure
        log.info("sweep %d: objective %.12g, KKT %.3g (tolerance %g), relative change %.3g", sweep, value,
                 measure, spec.tolerance, change)
        if measure <= spec.tolerance or change <= OBJECTIVE_GUARD:
            converged = True
            break
    if coords and not converged:
        message = (f"PBCD stopped after {sweep} sweeps (max_iterations) with KKT measure {measure:.3g} above the "
                   f"tolerance {spec.tolerance:g}; raise max_iterations or the tolerance")
        log.warning(message)
        warnings.warn(message, errors.ConvergenceWarning, stacklevel=3)
    if tracker is not None and tracker.best_params is not None:
        # return the best model seen on validation: restore its parameters before variances and output
        for name, coord in coords.items():
            coord.params = tracker.best_params[name]
            scores[name] = coord.score()
        total = backend.base_offset + sum(scores.values())
        value = objective()
        log.info("best on validation: %s", tracker.best)

    out = assemble(spec, coords, total, scores, options, warm_start)
    meta = dict(metadata or {})
    meta.update({
        "fit": {"objective": value, "sweeps": sweep, "converged": converged, "kkt": measure,
                "tolerance": spec.tolerance, "seconds": time.perf_counter() - started, "rows": int(y.size),
                "locked": options.lock, "incremental": options.raw_incremental, "history": history,
                **backend.info},
        "parent": meta.get("parent", warm_start.metadata.get("version") if warm_start is not None else None),
    })
    if tracker is not None:
        meta["fit"].update(validation_history=tracker.history, best=tracker.best)
    backend.close()
    model = GLMixModel(spec, out, meta)
    if validation is not None:
        from .evaluation import validation_metrics

        model.metadata.setdefault("metrics", {})["validation"] = validation_metrics(model, validation)
    log.info("fit done: objective %.12g after %d sweeps in %.2fs", value, sweep, time.perf_counter() - started)
    return model


def assemble(spec: GLMixSpec, coords: dict, total: np.ndarray, scores: dict, options: FitOptions,
             warm_start: GLMixModel | None) -> dict:
    """The fitted coordinate models by name: variances at the solution, locked coordinates as warm-started,
    incremental carry-over, sparsity threshold."""
    out: dict = {}
    for cspec in spec.coordinates:
        name = cspec.name
        if name in options.lock:
            out[name] = warm_start.coordinates[name]
            continue
        coord = coords[name]
        variance = coord.variances(total - scores[name], spec.variance)
        values = coord.to_original(coord.params)
        if cspec.type == "fixed":
            out[name] = FixedEffectModel(cspec, coord.features, values, variance)
        else:
            previous = warm_start.coordinates[name] if name in options.incremental else None
            out[name] = random_effect_model(cspec, coord.pairs, values, variance, previous, options.forgetting)
        if spec.sparsity_threshold > 0:
            out[name] = sparsify(out[name], spec.sparsity_threshold)
    return out


def random_effect_model(cspec, pairs, values: np.ndarray, variance: np.ndarray,
                        previous: RandomEffectModel | None = None, forgetting: float = 1.0) -> RandomEffectModel:
    """The ``RandomEffectModel`` of fitted pair ``values`` (``pairs``: a ``PairIndex``). With ``previous``
    (an incremental update), its pairs not refit today are carried over, their variance divided by γ."""
    if previous is None:
        # numeric fast path: pairs are sorted by (entity, feature) code; keep the entities that have pairs
        first = np.r_[True, pairs.pair_entity[1:] != pairs.pair_entity[:-1]] if values.size else np.zeros(0, bool)
        used, pair_entity = pairs.pair_entity[first], np.cumsum(first) - 1
        return RandomEffectModel(cspec, pairs.entity_ids.take(pa.array(used, pa.int64())), pairs.features,
                                 pair_entity.astype(np.int64), pairs.pair_col.astype(np.int64), values, variance)
    ent = pairs.entity_ids.take(pa.array(pairs.pair_entity, pa.int64()))
    feat = pairs.features.name_of(pairs.pair_col).cast(pa.string())
    _, _, found = previous.lookup(pairs.entity_ids, pairs.features, pairs.pair_entity, pairs.pair_col)
    mask = pa.array(found)
    pe = _positions(previous.entity_ids, ent.filter(mask))
    pf = previous.features.index_of(feat.filter(mask))
    refit = np.zeros(previous.value.size, bool)
    refit[np.searchsorted(previous.keys, pe * max(len(previous.features), 1) + pf)] = True
    keep = ~refit
    ent = pa.concat_arrays([ent, previous.entity_ids.take(pa.array(previous.pair_entity[keep]))])
    feat = pa.concat_arrays([feat, previous.features.name_of(previous.pair_feature[keep]).cast(pa.string())])
    return RandomEffectModel.from_pairs(cspec, ent, feat, np.concatenate([values, previous.value[keep]]),
                                        np.concatenate([variance, previous.variance[keep] / forgetting]))


def _positions(value_set: pa.Array, values: pa.Array) -> np.ndarray:
    """Positions of ``values`` in ``value_set`` (-1 when absent)."""
    return pc.index_in(values, value_set=value_set).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def subspace_newton(evaluate, A: np.ndarray, b: np.ndarray, max_steps: int = 20) -> np.ndarray:
    """argmin_c L(c) + ½ c'Ac + b'c from c = e₁ by damped Newton with a monotone line search.

    ``evaluate(c)`` returns (L, ∇L, ∇²L) of the data term along the subspace."""
    m = A.shape[0]

    def f(c):
        value, grad, hess = evaluate(c)
        return value + 0.5 * c @ A @ c + b @ c, grad + A @ c + b, hess + A

    c = np.zeros(m)
    c[0] = 1.0
    fc, g, H = f(c)
    for _ in range(max_steps):
        try:
            delta = -np.linalg.solve(H + 1e-12 * np.trace(H) / m * np.eye(m), g)
        except np.linalg.LinAlgError:
            break
        t, improved = 1.0, False
        while t > 1e-6:
            trial = c + t * delta
            ft, gt, Ht = f(trial)
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


class SubspaceAccelerator:
    """Accelerates PBCD: after each sweep, minimise the objective over θ_start + D c, where D holds the
    sweep's direction and the previous ``memory`` accepted steps.

    Block coordinate descent crawls along valleys where blocks are correlated (the global intercept against
    the entities' intercepts, crossed random effects); the recent steps span those valleys, so a small Newton
    solve in their span (cost O(rows × m + coefficients × m)) removes most of the crawl, much like a
    conjugate-gradient step on top of the block solves. Starting from c = e_1 (the plain sweep) with a
    monotone line search, it never increases the objective.
    """

    def __init__(self, loss: Loss, y: np.ndarray, weight: np.ndarray, base: np.ndarray, coords: dict, priors: dict,
                 memory: int = SUBSPACE_MEMORY):
        self.loss, self.y, self.weight, self.base, self.coords, self.priors = loss, y, weight, base, coords, priors
        self.memory = memory
        self.past_params: list[dict] = []
        self.past_scores: list[np.ndarray] = []

    def step(self, start_params: dict, start_scores: dict, end_scores: dict):
        """(new parameters, their scores, the subspace coefficients) per coordinate, or None when nothing
        moved. Scores are linear in the parameters, so the new ones are combined from the directions' score
        changes instead of being recomputed (no pass over the data)."""
        dirs = [{n: c.params - start_params[n] for n, c in self.coords.items()}] + self.past_params
        score_dirs = [{n: end_scores[n] - start_scores[n] for n in self.coords}] + self.past_scores
        S = np.stack([sum(d.values()) for d in score_dirs], axis=1)
        norms = np.linalg.norm(S, axis=0)
        if norms[0] == 0:
            return None
        # past steps that are (numerically) parallel-free but tiny next to this sweep's make the solve
        # ill-conditioned; drop them
        keep = [0] + [i for i in range(1, len(dirs)) if norms[i] > 1e-8 * norms[0]]
        dirs, score_dirs, S = [dirs[i] for i in keep], [score_dirs[i] for i in keep], S[:, keep]
        m = len(dirs)
        A, b = np.zeros((m, m)), np.zeros(m)
        for name in self.coords:
            mean, prec = self.priors[name]
            D = np.stack([d[name] for d in dirs], axis=1)
            PD = D * prec[:, None]
            A += D.T @ PD
            b += PD.T @ (start_params[name] - mean)
        loss, y, w = self.loss, self.y, self.weight

        start_total = self.base + sum(start_scores.values())

        def evaluate(c):
            eta = start_total + S @ c
            d1, d2 = loss.derivatives(y, eta)
            return loss.total(y, eta, w), S.T @ (w * d1), S.T @ (S * (w * d2)[:, None])

        c = subspace_newton(evaluate, A, b)
        if not np.all(np.isfinite(c)) or np.max(np.abs(c)) > MAX_SUBSPACE_COEFFICIENT:
            # a nearly singular subspace: the scores combined from huge coefficients would lose digits
            self.past_params, self.past_scores = [], []
            return None
        steps = {n: sum(c[i] * dirs[i][n] for i in range(m)) for n in self.coords}
        score_steps = {n: sum(c[i] * score_dirs[i][n] for i in range(m)) for n in self.coords}
        self.past_params = ([steps] + self.past_params)[: self.memory]
        self.past_scores = ([score_steps] + self.past_scores)[: self.memory]
        return ({n: start_params[n] + steps[n] for n in self.coords},
                {n: start_scores[n] + score_steps[n] for n in self.coords}, c)
