"""The distributed GLMix engine (``--engine spark``): same spec, same model, same answers as ``glmix_core.fit``.

Usage::

    from glmix_core.spark_engine import fit_spark
    model = fit_spark(spec, "features/training/ds=2024-01-01/", spark=session)      # or a Spark DataFrame
    model = fit_spark(spec, today, spark=session, warm_start=yesterday, lock=["global"])  # daily retrain

Layout (paper Figure 2): the fixed effect is solved on the driver from gradients/Hessians aggregated over the
input partitions (``fixed.py``); each random effect keeps its rows and coefficients together in partitions
keyed by entity and runs the local batched Newton solver there (``random.py``); only per-row scores are
exchanged between coordinate updates, joined by row id (``scores.py``). PySpark is imported only inside this
subpackage, so ``glmix_core`` itself needs no JVM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..model import GLMixModel
    from ..spec import GLMixSpec

__all__ = ["fit_spark", "spark_session"]


def spark_session(master: str | None = "local[*]", app_name: str = "glmix"):
    """A SparkSession for the ``glmix`` CLI (``--master``); ``None`` leaves the master to ``spark-submit``.

    Workers run this interpreter unless ``PYSPARK_PYTHON`` says otherwise (they need numpy, scipy, pyarrow
    and glmix_core). The pipeline uses ``pipeline.spark.get_spark(settings)`` instead.
    """
    import os
    import sys

    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name).config("spark.ui.showConsoleProgress", "false")
    if master:
        builder = builder.master(master)
    return builder.getOrCreate()


def fit_spark(spec: GLMixSpec, data, *, spark=None, warm_start: GLMixModel | None = None,
              lock: list[str] | tuple[str, ...] = (), incremental: dict | None = None,
              num_partitions: int | None = None, metadata: dict | None = None) -> GLMixModel:
    """Fit on Spark; see ``glmix_core.spark_engine.engine.fit_spark`` for the arguments."""
    from .engine import fit_spark as _fit

    return _fit(spec, data, spark=spark, warm_start=warm_start, lock=lock, incremental=incremental,
                num_partitions=num_partitions, metadata=metadata)
