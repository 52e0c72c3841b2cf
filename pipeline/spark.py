"""Building the Spark session from :class:`pipeline.config.Settings`.

Embedded default: ``local[*]``; ``JOBREC_SPARK_MASTER=spark://host:7077`` (or running under
``spark-submit``, which sets the master itself) switches to a cluster with no code change.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys

from pipeline.config import Settings

log = logging.getLogger(__name__)

JAVA_HELP = (
    "Spark needs Java 17 (or 21) on PATH or JAVA_HOME. On Debian/Ubuntu: "
    "sudo apt-get install -y openjdk-17-jre-headless"
)


def check_java() -> None:
    """Raise ``RuntimeError`` with the install command when no Java runtime can be found."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.path.exists(os.path.join(java_home, "bin", "java")):
        return
    if shutil.which("java") is None:
        raise RuntimeError(JAVA_HELP)


class Py4jRetryFilter(logging.Filter):
    """Drops py4j's INFO record "Exception while sending command." logged before it retries on a fresh
    connection (the failure it reports is retried; a failed retry is still logged at ERROR)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno < logging.WARNING and record.msg == "Exception while sending command."
                    and "py4j" in record.pathname)


def get_spark(settings: Settings | None = None, app_name: str = "jobrec"):
    """Return the active SparkSession or build one from ``settings`` (reused across calls in a process)."""
    from pyspark.sql import SparkSession

    # py4j logs a full traceback at INFO each time it transparently replaces a pooled gateway connection
    # that the JVM closed while idle (it then retries and succeeds): keep that out of task logs. Its own
    # loggers cover most messages; the retry one goes through logging.info, i.e. the root logger.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    root = logging.getLogger()
    if not any(isinstance(f, Py4jRetryFilter) for f in root.filters):
        root.addFilter(Py4jRetryFilter())
    check_java()
    settings = settings or Settings.from_env()
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = (
        SparkSession.builder.appName(app_name)
        .config("spark.sql.shuffle.partitions", str(settings.spark_shuffle_partitions))
        .config("spark.executor.memory", settings.spark_executor_memory)
        .config("spark.driver.memory", settings.spark_driver_memory)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        # Python workers must run this interpreter (it has numpy/pyarrow), not whatever python3 is on PATH.
        .config("spark.pyspark.python", os.environ.get("PYSPARK_PYTHON") or sys.executable)
        .config("spark.pyspark.driver.python", sys.executable)
        .config("spark.ui.enabled", os.environ.get("JOBREC_SPARK_UI", "true"))
    )
    # spark-submit sets spark.master itself; only set ours when not launched that way.
    if "SPARK_SUBMIT_OPTS" not in os.environ and not os.environ.get("PYSPARK_SUBMIT_ARGS"):
        builder = builder.master(settings.spark_master)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    log.info("Spark session %s on %s", spark.sparkContext.applicationId, spark.sparkContext.master)
    return spark
