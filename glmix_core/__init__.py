"""glmix_core: generalized linear mixed models (GLMix) fit by parallel block coordinate descent.

The model (Zhang et al., KDD 2016): g(E[y]) = offset + x'b + Σ_k z_k' γ_{k, entity_k(n)}, with Gaussian
priors (per-coordinate L2) on b and on every entity's coefficients. ``fit`` returns the posterior mode, the
same point as one big GLM on the stacked design (``glmix_core.reference``), only faster: the fixed effect is
a sparse GLM solved by trust-region Newton-CG / L-BFGS, and each random effect is solved for all entities at
once by batched Newton on stacked small Hessians.

Public API (what the pipeline calls)::

    spec = GLMixSpec.from_yaml("spec.yaml")            # or GLMixSpec.from_dict({...})
    table = load_table("data/")                        # Parquet file/folder or CSV → pyarrow.Table
    model = fit(spec, table, validation=None, warm_start=None, lock=(), incremental=None)
    model = fit(spec, "data/", engine="spark", spark=session)   # same driver, rows on Spark
    model.save("models/m1");  model = load_model("models/m1")
    model.score(table)          # total linear predictor per row (np.ndarray)
    model.contributions(table)  # {coordinate: per-row contribution}
    model.predict(table)        # inverse link (probability for logistic)
    evaluate(model, table)      # {"auc", "log_loss", "rmse", "per_<entity>_auc", "precision@k/<entity>", ...}
    metrics.auc(y, score)
    grid_search(spec, train, validation, {"per_member": [0.1, 1, 10]}, metric="auc")   # a TuningResult
    tune(spec, train, validation, method="bayesian", l2={"per_member": (0.01, 1000)}, trials=20, out="tuning/")

Notebooks: ``GLMix("y ~ x + (1 + genre_* | user)", task="logistic").fit(df)`` (``glmix_core.api``; formulas
in ``glmix_core.formula``, or ``spec_from_formula(formula, table)`` for the GLMixSpec).

Daily retrain: ``fit(spec, today, warm_start=yesterday, lock=["global"])``. Incremental update (new rows only):
``fit(spec, today, warm_start=yesterday, lock=["global"], incremental={"forgetting": 0.9})``.
"""

from __future__ import annotations

import importlib

# Names are imported on first use (PEP 562): Spark's Python workers and short commands import submodules such
# as ``glmix_core.coordinates``, and an eager package import would load the whole library (and scikit-learn).
_EXPORTS = {
    "ConvergenceWarning": "errors", "CoordinateSpec": "spec", "DataError": "errors", "GLMix": "api",
    "GLMixModel": "model", "GLMixSpec": "spec", "ModelError": "errors", "SpecError": "errors",
    "evaluate": "evaluation", "fit": "fitting", "grid_search": "tuning", "load_model": "model",
    "load_table": "data", "spec_from_formula": "formula", "tune": "tuning",
}

__all__ = sorted([*_EXPORTS, "metrics"])


def __getattr__(name: str):
    if name == "metrics":
        return importlib.import_module(".metrics", __name__)
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
