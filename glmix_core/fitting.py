"""``fit``: the one public entry for fitting a GLMix model, on the local or the Spark backend.

Both backends run the same PBCD driver (``glmix_core.pbcd``) over coordinates built by the same recipe
(``glmix_core.building``), so the same spec and options give the same model: the engine decides only where
the rows and the per-entity solves live.
"""

from __future__ import annotations

import time

import pyarrow as pa

from . import pbcd
from .model import GLMixModel
from .spec import GLMixSpec

ENGINES = ("local", "spark")


def fit(spec: GLMixSpec, data, *, engine: str = "local", validation: pa.Table | None = None,
        warm_start: GLMixModel | None = None, lock: list[str] | tuple[str, ...] = (),
        incremental: dict | None = None, metadata: dict | None = None, spark=None,
        num_partitions: int | None = None) -> GLMixModel:
    """Fit the GLMix posterior mode on ``data`` and return the model.

    - ``engine``: ``"local"`` (in memory) or ``"spark"`` (rows and per-entity solves on Spark; ``spark`` is
      the session, default the active one, and ``num_partitions`` the partitions of its layouts).
    - ``data``: a ``pyarrow.Table``; the Spark engine also takes a Parquet file/folder path or a Spark
      DataFrame.
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

    Stops when every coordinate's KKT measure is at most ``spec.tolerance`` (``glmix_core.pbcd``); issues a
    ``glmix_core.ConvergenceWarning`` when ``max_iterations`` comes first. Raises ``DataError``/``SpecError``
    for unusable data or options, with what to change.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}; got engine={engine!r}")
    started = time.perf_counter()
    options = pbcd.FitOptions.check(spec, warm_start, lock, incremental, validation)
    rtol = spec.tolerance * 1e-3
    if engine == "spark":
        from .spark_engine.backend import SparkBackend

        backend = SparkBackend(spec, data, options, warm_start, rtol, spark=spark, num_partitions=num_partitions)
    else:
        from .local_backend import LocalBackend

        backend = LocalBackend(spec, data, options, warm_start, rtol)
    try:
        return pbcd.run(spec, backend, options, warm_start=warm_start, validation=validation, metadata=metadata,
                        started=started)
    finally:
        backend.close()  # idempotent; releases a failed fit's cached partitions too
