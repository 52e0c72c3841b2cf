"""The Spark backend of ``glmix_core.fit`` (``fit(spec, data, engine="spark", spark=session)``).

Same spec, same PBCD driver, same model as the local backend; only where rows and per-entity solves live
differs (``backend.py``). PySpark is imported only inside this subpackage, so ``glmix_core`` itself needs
no JVM.
"""

from __future__ import annotations

__all__ = ["PYTHON_WORKER_CONF", "spark_session"]

# Settings every session that runs this backend should have. Python workers talk to the JVM over Unix domain
# sockets: over loopback TCP each small write of the task protocol can wait out a 40 ms delayed ACK, which
# made every PySpark job cost ~0.1 s instead of ~0.06 s (the backend runs a few jobs per sweep).
PYTHON_WORKER_CONF = {"spark.python.unix.domain.socket.enabled": "true"}


def spark_session(master: str | None = "local[*]", app_name: str = "glmix"):
    """A SparkSession for the ``glmix`` CLI (``--master``); ``None`` leaves the master to ``spark-submit``.

    Workers run this interpreter unless ``PYSPARK_PYTHON`` says otherwise (they need numpy, scipy, pyarrow
    and glmix_core). The pipeline uses ``pipeline.spark.get_spark(settings)`` instead.
    """
    import os
    import sys

    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (SparkSession.builder.appName(app_name).config("spark.ui.showConsoleProgress", "false")
               .config(map=PYTHON_WORKER_CONF))
    if master:
        builder = builder.master(master)
    return builder.getOrCreate()
