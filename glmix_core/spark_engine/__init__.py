"""The Spark backend of ``glmix_core.fit`` (``fit(spec, data, engine="spark", spark=session)``).

Same spec, same PBCD driver, same model as the local backend; only where rows and per-entity solves live
differs (``backend.py``). PySpark is imported only inside this subpackage, so ``glmix_core`` itself needs
no JVM.
"""

from __future__ import annotations

__all__ = ["spark_session"]


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
