"""Hyper-parameter search over the per-coordinate L2 (prior precision): grid, random and Bayesian.

Every method runs *trials*: a trial fits the spec with one L2 value per searched coordinate (warm-started
from the previous trial's model, so consecutive fits are cheap), scores the validation table and records
one result row. The best trial is picked by a validation metric in its right direction (higher is better
for AUC/AUPR/precision/NDCG, lower for losses and RMSE).

- ``grid_search``: the cross product of per-coordinate L2 lists.
- ``random_search``: ``trials`` points drawn log-uniformly in per-coordinate ``(low, high)`` ranges, seeded.
- ``bayesian_search``: a Gaussian process (Matern 5/2 + white noise, normalised targets) over log10 L2 in
  the same box, starting from optional given ``start_points`` and the first ``n_initial`` points of
  ``random_search`` with the same seed, then
  proposing each next point by maximising expected improvement over a few thousand random candidates (plus
  perturbations of the best points) and a short L-BFGS-B polish.

Results come back as a ``TuningResult`` (best model, best trial, all trials as plain dicts). With ``out``
given, ``trials.jsonl`` grows by one line per finished trial, ``trials.json`` holds the summary and every
trial at the end, and models are written under ``out/best/`` (``output_mode="best"``) and also under
``out/trial-NNN/`` for every trial (``output_mode="all"``).

    result = tune(spec, train, validation, method="bayesian", l2={"per_member": (0.01, 1000.0)},
                  trials=20, metric="auc", seed=0, out="tuning/")
    result.best.save("models/m1");  result.trials[0]["metrics"]
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .model import GLMixModel
from .spec import GLMixSpec, SpecError

log = logging.getLogger(__name__)

METHODS = ("grid", "random", "bayesian")
# fits one trial: fitter(spec, train, warm_start=..., lock=...) -> GLMixModel (glmix_core.fit with fit_options)
Fitter = Callable[..., GLMixModel]
OUTPUT_MODES = ("best", "all")
# names of ``glmix_core.evaluation.evaluate`` (the fallback for metrics that are not evaluator names) that
# are better when lower
LOWER_IS_BETTER = {"log_loss", "rmse", "poisson_deviance", "objective"}
# evaluators reported for every trial, per task, next to the chosen metric and the spec's evaluators
DEFAULT_EVALUATORS = {"logistic": ("auc", "aupr", "logistic_loss", "rmse"), "linear": ("rmse", "squared_loss"),
                      "poisson": ("rmse", "poisson_loss"), "smoothed_hinge": ("auc", "smoothed_hinge_loss")}


# --------------------------------------------------------------------------------------------- metrics

def _evaluator(metric: str):
    """The parsed evaluator (``glmix_core.evaluators``) of ``metric``, or None when it is not an evaluator
    name (then it is looked up among ``evaluation.evaluate``'s metrics)."""
    from . import evaluators

    try:
        return evaluators.parse(metric)
    except SpecError:
        return None


def direction(metric: str) -> str:
    """``"max"`` when a higher value of ``metric`` is better (auc, aupr, precision@k, per-entity AUC, NDCG),
    ``"min"`` for losses, deviances and RMSE. Evaluator names (``auc``, ``aupr``, ``rmse``, ``logistic_loss``,
    ``auc:<col>``, ``precision@k:<col>``, …) follow ``glmix_core.evaluators.direction``; other names are
    ``evaluation.evaluate``'s (``log_loss``, ``per_<col>_auc``, ``ndcg@k/<col>``, …)."""
    from . import evaluators

    parsed = _evaluator(metric)
    if parsed is not None:
        return evaluators.direction(parsed)
    base = metric.split("/", 1)[0].lower()
    if base in LOWER_IS_BETTER or base.endswith("loss") or base.endswith("deviance"):
        return "min"
    return "max"


def trial_metrics(model: GLMixModel, validation: pa.Table, metric: str) -> tuple[float, dict]:
    """(value of ``metric``, every metric computed) of ``model`` on ``validation``.

    When ``metric`` is an evaluator name (``glmix_core.evaluators``), computes it together with the task's
    default evaluators and the spec's ``evaluators`` (weighted by the spec's weight column when the table has
    it). Otherwise ``metric`` must be one of ``evaluation.evaluate``'s names (``log_loss``,
    ``per_<col>_auc`` counted by its mean, ``precision@k/<col>``, …) and that whole dict is reported.
    Raises ``ValueError`` naming the available metrics when ``metric`` is not computed."""
    from . import evaluators
    from .data import numeric_column

    spec = model.spec
    if _evaluator(metric) is not None:
        names = list(dict.fromkeys([metric, *DEFAULT_EVALUATORS.get(spec.task, ()), *spec.evaluators]))
        y = numeric_column(validation, spec.response, "response")
        weight = (numeric_column(validation, spec.weight, "weight")
                  if spec.weight and spec.weight in validation.column_names else None)
        scores = {"rows": int(validation.num_rows),
                  **evaluators.compute(names, y, model.score(validation), validation, task=spec.task,
                                       weight=weight)}
        return float(scores[metric]), scores
    from .evaluation import evaluate

    scores = evaluate(model, validation)
    if metric not in scores:
        raise ValueError(f"metric {metric!r} is not computed for task {spec.task}; use an evaluator name "
                         f"({', '.join(evaluators.ALLOWED)}) or one of {sorted(k for k in scores if k != 'rows')}")
    value = scores[metric]
    if isinstance(value, dict):
        value = value.get("mean", np.nan)
    return float(value), scores


def check_metric(metric: str, validation: pa.Table) -> None:
    """Fail fast (before any fit) when an evaluator ``metric``'s id column is missing from ``validation``."""
    from . import evaluators

    parsed = _evaluator(metric)
    if parsed is not None:
        evaluators.check([parsed], validation)


# --------------------------------------------------------------------------------------------- results

@dataclass
class TuningResult:
    """The outcome of a search: the ``best`` model, its trial row, every trial row (in run order), the
    ``metric`` and its ``direction`` (``"max"``/``"min"``), the ``method``, and the output folder if any."""

    best: GLMixModel
    best_trial: dict
    trials: list[dict]
    metric: str
    direction: str
    method: str
    out: Path | None = None

    def summary(self) -> dict:
        """A small JSON-ready summary: method, metric, direction, number of trials, best trial and value."""
        return _clean({
            "method": self.method, "metric": self.metric, "direction": self.direction,
            "n_trials": len(self.trials), "best_trial": self.best_trial["trial"],
            "best_value": self.best_trial["value"], "best_l2": self.best_trial["l2"],
            "best_model": str(self.out / "best") if self.out is not None else None,
            "trials_json": str(self.out / "trials.json") if self.out is not None else None,
        })

    def best_so_far(self) -> list[float]:
        """The best metric value after 1, 2, …, n trials (NaN until a finite value is seen)."""
        return [t["best_so_far"] for t in self.trials]


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NumPy scalars to Python, non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _default_fitter(fit_options: dict | None) -> Fitter:
    """``glmix_core.fit`` with ``fit_options`` (e.g. ``{"engine": "spark", "spark": session}``)."""
    from .fitting import fit

    def fitter(spec: GLMixSpec, train: pa.Table, *, warm_start: GLMixModel | None,
               lock: Sequence[str]) -> GLMixModel:
        return fit(spec, train, warm_start=warm_start, lock=lock, **(fit_options or {}))

    return fitter


class _Runner:
    """Runs trials one after another (each warm-started from the previous model), keeps the best model and
    writes trial rows / models when an output folder is given."""

    def __init__(self, spec: GLMixSpec, train: pa.Table, validation: pa.Table, *, method: str, metric: str,
                 searched: Sequence[str], warm_start: GLMixModel | None, lock: Sequence[str],
                 out: str | Path | None, output_mode: str, fit_options: dict | None = None):
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}; got {output_mode!r}")
        for name in searched:
            spec.coordinate(name)  # SpecError naming the coordinates when unknown
            if name in lock:
                raise ValueError(f"coordinate {name!r} is locked: its L2 cannot be tuned")
        check_metric(metric, validation)
        self.spec, self.train, self.validation = spec, train, validation
        self.method, self.metric, self.direction = method, metric, direction(metric)
        self.sign = 1.0 if self.direction == "max" else -1.0
        self.previous, self.lock = warm_start, list(lock)
        self.fitter = _default_fitter(fit_options)
        self.output_mode = output_mode
        self.out = Path(out) if out is not None else None
        self.trials: list[dict] = []
        self.best: GLMixModel | None = None
        self.best_index: int | None = None
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "trials.jsonl").write_text("")

    def signed_values(self) -> np.ndarray:
        """Observed metric values oriented so that higher is better (NaN for failed evaluations)."""
        return self.sign * np.array([t["value"] if t["value"] is not None else np.nan for t in self.trials])

    def run(self, l2: dict[str, float], proposal: str, **extra: Any) -> float:
        """Fit and evaluate one trial; returns its metric value."""
        number = len(self.trials) + 1
        l2 = {name: float(value) for name, value in l2.items()}
        spec = self.spec.with_l2(l2)
        t0 = time.perf_counter()
        model = self.fitter(spec, self.train, warm_start=self.previous, lock=self.lock)
        fit_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        value, scores = trial_metrics(model, self.validation, self.metric)
        eval_seconds = time.perf_counter() - t0
        model.metadata.setdefault("metrics", {})["validation"] = scores
        signed = self.sign * value
        incumbent = self.sign * self.trials[self.best_index]["value"] if self.best_index is not None else math.nan
        # strictly better, or the first finite value (ties keep the earlier trial)
        if self.best_index is None or (math.isfinite(signed) and not incumbent >= signed):
            self.best, self.best_index = model, number - 1
        fitted = model.metadata["fit"]
        row = {
            "trial": number, "method": self.method, "proposal": proposal, "l2": l2,
            "metric": self.metric, "value": value, "metrics": scores,
            "objective": fitted["objective"], "sweeps": fitted["sweeps"], "converged": fitted["converged"],
            "fit_seconds": round(fit_seconds, 4), "eval_seconds": round(eval_seconds, 4),
            "best_so_far": self.trials[self.best_index]["value"] if self.best_index < len(self.trials) else value,
            **extra,
        }
        model.metadata["tuning"] = {"method": self.method, "trial": number, "metric": self.metric,
                                    "value": value, "l2": l2}
        if self.out is not None:
            if self.output_mode == "all":
                row["model_dir"] = str(model.save(self.out / f"trial-{number:03d}"))
            with (self.out / "trials.jsonl").open("a") as fh:
                fh.write(json.dumps(_clean(row)) + "\n")
        self.trials.append(row)
        log.info("%s trial %d (%s): l2 %s → %s %.6f (objective %.6g, %d sweeps, fit %.2fs); best so far %.6f "
                 "(trial %d)", self.method, number, proposal,
                 {k: float(f"{v:.4g}") for k, v in l2.items()}, self.metric, value, fitted["objective"],
                 fitted["sweeps"], fit_seconds, row["best_so_far"], self.best_index + 1)
        self.previous = model
        return value

    def finish(self) -> TuningResult:
        if not self.trials:
            raise ValueError("the search ran no trials")
        best_trial = self.trials[self.best_index]
        self.best.metadata["tuning"] = {
            "method": self.method, "metric": self.metric, "direction": self.direction,
            "trial": best_trial["trial"], "value": best_trial["value"], "l2": best_trial["l2"],
            "n_trials": len(self.trials)}
        result = TuningResult(self.best, best_trial, self.trials, self.metric, self.direction, self.method,
                              self.out)
        if self.out is not None:
            self.best.save(self.out / "best")
            (self.out / "trials.json").write_text(
                json.dumps(_clean({**result.summary(), "trials": self.trials}), indent=2) + "\n")
        log.info("%s search done: best trial %d of %d, %s %.6f, l2 %s", self.method, best_trial["trial"],
                 len(self.trials), self.metric, best_trial["value"], best_trial["l2"])
        return result


# --------------------------------------------------------------------------------------------- searches

def grid_search(spec: GLMixSpec, train: pa.Table, validation: pa.Table, grid: dict[str, Sequence[float]], *,
                metric: str = "auc", warm_start: GLMixModel | None = None, lock: Sequence[str] = (),
                out: str | Path | None = None, output_mode: str = "best",
                fit_options: dict | None = None) -> TuningResult:
    """Fit every combination of the per-coordinate L2 lists in ``grid`` (cross product, in
    ``itertools.product`` order of ``grid``'s keys) and pick the best by ``metric`` on ``validation``.
    The first trial warm-starts from ``warm_start`` (if given), every later one from the previous trial."""
    if not grid:
        raise ValueError("grid needs at least one coordinate with a list of L2 values")
    names = list(grid)
    lists = []
    for name in names:
        values = [float(v) for v in (grid[name] if isinstance(grid[name], (list, tuple, np.ndarray))
                                     else [grid[name]])]
        if not values:
            raise ValueError(f"grid for coordinate {name!r} is empty")
        lists.append(values)
    runner = _Runner(spec, train, validation, method="grid", metric=metric, searched=names,
                     warm_start=warm_start, lock=lock, out=out, output_mode=output_mode, fit_options=fit_options)
    for combo in itertools.product(*lists):
        runner.run(dict(zip(names, combo, strict=True)), "grid")
    return runner.finish()


def _box(ranges: dict[str, tuple[float, float]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(names, log10 low, log10 high) of per-coordinate L2 ranges, validated."""
    if not ranges:
        raise ValueError("give at least one coordinate with an L2 range (low, high)")
    names, lo, hi = [], [], []
    for name, bounds in ranges.items():
        try:
            low, high = (float(b) for b in bounds)
        except (TypeError, ValueError):
            raise ValueError(f"L2 range of {name!r} must be (low, high); got {bounds!r}") from None
        if not (0 < low <= high) or not math.isfinite(high):
            raise ValueError(f"L2 range of {name!r} must satisfy 0 < low <= high (log-uniform); got {low}:{high}")
        names.append(name)
        lo.append(math.log10(low))
        hi.append(math.log10(high))
    return names, np.array(lo), np.array(hi)


def _to_l2(names: list[str], lo: np.ndarray, hi: np.ndarray, u: np.ndarray) -> dict[str, float]:
    """Unit-cube point → L2 per coordinate (log-uniform map)."""
    return {n: float(10.0 ** v) for n, v in zip(names, lo + u * (hi - lo), strict=True)}


def random_search(spec: GLMixSpec, train: pa.Table, validation: pa.Table, ranges: dict[str, tuple[float, float]],
                  *, trials: int = 20, seed: int = 0, metric: str = "auc", warm_start: GLMixModel | None = None,
                  lock: Sequence[str] = (), out: str | Path | None = None,
                  output_mode: str = "best", fit_options: dict | None = None) -> TuningResult:
    """``trials`` fits at L2 values drawn log-uniformly and independently per coordinate in
    ``ranges[name] = (low, high)`` (``low == high`` pins a coordinate). Reproducible: the points depend on
    ``seed`` only, and the first k points are the same for any ``trials >= k``."""
    if trials < 1:
        raise ValueError(f"trials must be >= 1; got {trials}")
    names, lo, hi = _box(ranges)
    runner = _Runner(spec, train, validation, method="random", metric=metric, searched=names,
                     warm_start=warm_start, lock=lock, out=out, output_mode=output_mode, fit_options=fit_options)
    for l2 in random_points(ranges, trials, seed):
        runner.run(l2, "random")
    return runner.finish()


def _to_unit(names: list[str], lo: np.ndarray, hi: np.ndarray, l2: dict[str, float]) -> np.ndarray:
    """L2 per coordinate → unit-cube point (inverse of ``_to_l2``); every value must lie in its range."""
    if set(l2) != set(names):
        raise ValueError(f"a start point needs an L2 for exactly the searched coordinates {names}; got {sorted(l2)}")
    logs = np.array([math.log10(float(l2[n])) if float(l2[n]) > 0 else -np.inf for n in names])
    if np.any(logs < lo - 1e-12) or np.any(logs > hi + 1e-12):
        raise ValueError(f"start point {l2} lies outside the L2 ranges")
    span = np.where(hi > lo, hi - lo, 1.0)
    return np.clip((logs - lo) / span, 0.0, 1.0)


def _initial_points(seed: int, n: int, d: int) -> np.ndarray:
    """The seeded unit-cube points shared by random search and Bayesian search's initial design."""
    return np.random.default_rng(seed).random((n, d))


def random_points(ranges: dict[str, tuple[float, float]], n: int, seed: int = 0) -> list[dict[str, float]]:
    """The ``n`` L2 settings ``random_search`` runs for ``ranges`` and ``seed``: independent log-uniform
    draws per coordinate in ``[low, high]`` (the first ``n_initial`` are Bayesian search's initial points)."""
    names, lo, hi = _box(ranges)
    return [_to_l2(names, lo, hi, u) for u in _initial_points(seed, n, len(names))]


def expected_improvement(mean: np.ndarray, std: np.ndarray, best: float, xi: float = 0.0) -> np.ndarray:
    """Expected improvement over ``best`` (maximisation) of Gaussian predictions ``mean`` ± ``std``:
    ``(μ − best − ξ) Φ(z) + σ φ(z)`` with ``z = (μ − best − ξ) / σ``; 0 where σ = 0 and μ <= best + ξ."""
    from scipy.stats import norm

    std = np.maximum(std, 1e-12)
    gain = mean - best - xi
    z = gain / std
    return np.maximum(gain * norm.cdf(z) + std * norm.pdf(z), 0.0)


def _gaussian_process(d: int, seed: int):
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    kernel = (ConstantKernel(1.0, (1e-3, 1e3)) * Matern(length_scale=np.full(d, 0.3), length_scale_bounds=(1e-2, 1e1),
                                                       nu=2.5)
              + WhiteKernel(noise_level=1e-4, noise_level_bounds=(1e-8, 1e-1)))
    return GaussianProcessRegressor(kernel=kernel, normalize_y=True, n_restarts_optimizer=3, random_state=seed)


def propose(U: np.ndarray, values: np.ndarray, rng: np.random.Generator, *, n_candidates: int = 4096,
            xi: float = 0.01, polish: bool = True, seed: int = 0) -> tuple[np.ndarray, float]:
    """The next point in the unit cube [0, 1]^d maximising expected improvement under a GP fitted to the
    observed points ``U`` (n × d) and their ``values`` (higher is better; non-finite ones count as the worst
    finite value). ``xi`` is the exploration margin in units of the observed values' standard deviation.
    Candidates: ``n_candidates`` uniform points plus Gaussian perturbations of the 3 best observed points;
    the top 3 candidates are then polished by L-BFGS-B on −EI inside the box. A proposal closer than 1e-3 to
    an observed point is replaced by the best distinct candidate. Returns (point, its EI)."""
    from threadpoolctl import threadpool_limits

    n, d = U.shape
    y = np.asarray(values, float).copy()
    finite = np.isfinite(y)
    if not finite.any():
        return rng.random(d), float("nan")
    # one BLAS thread: the problem is tiny, and threaded OpenBLAS makes scipy's L-BFGS-B (used by the GP's
    # hyper-parameter fit and the polish) ~10x slower on a shared machine (see bench/bench_glmix.py)
    with threadpool_limits(1):
        return _propose(U, y, rng, n_candidates=n_candidates, xi=xi, polish=polish, seed=seed)


def _propose(U: np.ndarray, y: np.ndarray, rng: np.random.Generator, *, n_candidates: int, xi: float,
             polish: bool, seed: int) -> tuple[np.ndarray, float]:
    n, d = U.shape
    finite = np.isfinite(y)
    y[~finite] = y[finite].min()
    gp = _gaussian_process(d, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kernel hyper-parameters at their bounds on tiny samples
        gp.fit(U, y)
    best = y.max()
    margin = xi * (y.std() if y.std() > 0 else 1.0)

    def ei(X: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mean, std = gp.predict(np.atleast_2d(X), return_std=True)
        return expected_improvement(mean, std, best, margin)

    top = U[np.argsort(-y)[: min(3, n)]]
    local = np.clip(np.repeat(top, max(n_candidates // 8 // len(top), 1), axis=0)
                    + rng.normal(0.0, 0.05, (max(n_candidates // 8 // len(top), 1) * len(top), d)), 0.0, 1.0)
    candidates = np.vstack([rng.random((n_candidates, d)), local])
    scores = ei(candidates)
    order = np.argsort(-scores)
    chosen, chosen_ei = candidates[order[0]], float(scores[order[0]])
    if polish:
        from scipy.optimize import minimize

        for start in candidates[order[:3]]:
            res = minimize(lambda x: -ei(x)[0], start, method="L-BFGS-B", bounds=[(0.0, 1.0)] * d,
                           options={"maxiter": 50})
            x = np.clip(res.x, 0.0, 1.0)
            value = float(ei(x)[0])
            if value > chosen_ei:
                chosen, chosen_ei = x, value
    if np.min(np.linalg.norm(U - chosen, axis=1)) < 1e-3:
        distance = np.min(np.linalg.norm(candidates[:, None, :] - U[None, :, :], axis=2), axis=1)
        distinct = order[distance[order] >= 1e-3]
        if distinct.size:
            chosen, chosen_ei = candidates[distinct[0]], float(scores[distinct[0]])
        else:
            chosen, chosen_ei = rng.random(d), float("nan")
    return np.clip(chosen, 0.0, 1.0), chosen_ei


def bayesian_search(spec: GLMixSpec, train: pa.Table, validation: pa.Table,
                    ranges: dict[str, tuple[float, float]], *, trials: int = 20, seed: int = 0,
                    metric: str = "auc", n_initial: int | None = None, n_candidates: int = 4096,
                    xi: float = 0.01, polish: bool = True, warm_start: GLMixModel | None = None,
                    lock: Sequence[str] = (), out: str | Path | None = None,
                    output_mode: str = "best", fit_options: dict | None = None,
                    start_points: Sequence[dict[str, float]] = ()) -> TuningResult:
    """Bayesian optimisation of the validation ``metric`` over log10 L2 in ``ranges`` (see ``propose``).

    ``start_points`` (L2 per searched coordinate, inside the box) run first, e.g. values known to work; then
    ``n_initial`` trials (default ``min(trials, max(3, d + 1))`` for d searched coordinates, less the start
    points) that are exactly ``random_search``'s first points for the same ``seed``; each later trial fits a
    Gaussian process to every trial so far and runs the point of maximal expected improvement. Coordinates
    with ``low == high`` are pinned and left out of the GP. Every proposal lies inside the box."""
    if trials < 1:
        raise ValueError(f"trials must be >= 1; got {trials}")
    names, lo, hi = _box(ranges)
    free = hi > lo
    d = len(names)
    starts = [_to_unit(names, lo, hi, point) for point in start_points][:trials]  # validates every point
    start_l2 = [{n: float(point[n]) for n in names} for point in list(start_points)[:trials]]
    n_initial = min(trials, max(3, int(free.sum()) + 1)) if n_initial is None else min(max(int(n_initial), 1), trials)
    n_initial = max(min(n_initial, trials) - len(starts), 0)
    runner = _Runner(spec, train, validation, method="bayesian", metric=metric, searched=names,
                     warm_start=warm_start, lock=lock, out=out, output_mode=output_mode, fit_options=fit_options)
    U = starts + list(_initial_points(seed, n_initial, d))
    for i, u in enumerate(U):
        # start points run with their exact values (the unit-cube round trip would perturb the last digits)
        if i < len(starts):
            runner.run(start_l2[i], "start")
        else:
            runner.run(_to_l2(names, lo, hi, u), "initial")
    rng = np.random.default_rng([seed, 1])
    for _ in range(trials - len(U)):
        points = np.array(U)
        if free.any():
            u_free, ei = propose(points[:, free], runner.signed_values(), rng, n_candidates=n_candidates, xi=xi,
                                 polish=polish, seed=seed)
        else:
            u_free, ei = np.zeros(0), float("nan")
        u = np.zeros(d)
        u[free] = u_free
        U.append(u)
        runner.run(_to_l2(names, lo, hi, u), "expected_improvement", expected_improvement=ei)
    return runner.finish()


def tune(spec: GLMixSpec, train: pa.Table, validation: pa.Table, *, method: str = "bayesian",
         l2: dict[str, Any], trials: int = 20, metric: str = "auc", seed: int = 0,
         warm_start: GLMixModel | None = None, lock: Sequence[str] = (), out: str | Path | None = None,
         output_mode: str = "best", fit_options: dict | None = None, **options: Any) -> TuningResult:
    """One entry point for the three searches. ``l2`` maps coordinate → list of values (``grid``) or
    ``(low, high)`` range (``random``/``bayesian``). ``options`` go to ``bayesian_search`` (``n_initial``,
    ``n_candidates``, ``xi``, ``polish``, ``start_points``). ``trials`` is ignored by ``grid`` (every
    combination is fitted).
    ``fit_options`` go to ``glmix_core.fit`` for every trial (e.g. ``{"engine": "spark", "spark": session}``);
    each trial warm-starts from the previous trial's model."""
    common = {"metric": metric, "warm_start": warm_start, "lock": lock, "out": out, "output_mode": output_mode,
              "fit_options": fit_options}
    if method == "grid":
        return grid_search(spec, train, validation, l2, **common)
    if method == "random":
        return random_search(spec, train, validation, l2, trials=trials, seed=seed, **common)
    if method == "bayesian":
        return bayesian_search(spec, train, validation, l2, trials=trials, seed=seed, **common, **options)
    raise ValueError(f"method must be one of {METHODS}; got {method!r}")


def parse_l2(items: Sequence[str], method: str) -> dict[str, Any]:
    """Parse CLI ``COORD=LO:HI`` (random/bayesian ranges; ``COORD=V`` pins a value) or ``COORD=V1,V2,...``
    (grid lists) into the ``l2`` argument of ``tune``. Errors say what form each method expects."""
    if not items:
        raise SpecError("give --l2 COORD=LO:HI (random/bayesian) or COORD=V1,V2,... (grid) at least once")
    out: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name or not text.strip():
            raise SpecError(f"--l2 {item!r}: expected COORD=LO:HI or COORD=V1,V2,...")
        if name in out:
            raise SpecError(f"--l2: coordinate {name!r} given twice")
        try:
            if ":" in text:
                if method == "grid":
                    raise SpecError(f"--l2 {item!r}: grid search takes lists COORD=V1,V2,..., not a range")
                low, high = (float(v) for v in text.split(":"))
                out[name] = (low, high)
            else:
                values = [float(v) for v in text.split(",") if v.strip()]
                if method == "grid":
                    out[name] = values
                elif len(values) == 1:
                    out[name] = (values[0], values[0])
                else:
                    raise SpecError(f"--l2 {item!r}: {method} search takes a range COORD=LO:HI (or COORD=V to pin "
                                    "a value), not a list")
        except ValueError as exc:
            if isinstance(exc, SpecError):
                raise
            raise SpecError(f"--l2 {item!r}: values must be numbers, as in COORD=0.01:1000 or "
                            "COORD=0.1,1,10") from None
    return out
