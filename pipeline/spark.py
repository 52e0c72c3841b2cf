"""Building the Spark session from :class:`pipeline.config.Settings`.

Embedded default: ``local[*]``; ``JOBREC_SPARK_MASTER=spark://host:7077`` (or running under
``spark-submit``, which sets the master itself) switches to a cluster with no code change.

A JVM launched here writes its stdout/stderr into Python logging (logger ``jobrec.spark.jvm``, each line at
its log4j level), never into the process's stderr, which Airflow 3's task supervisor logs at ERROR. The Spark
web UI is off unless ``JOBREC_SPARK_UI=true`` (``Settings.spark_ui``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import threading

from glmix_core.spark_engine import PYTHON_WORKER_CONF
from pipeline.config import Settings

log = logging.getLogger(__name__)

JVM_LOGGER = "jobrec.spark.jvm"

# Harmless warnings Spark's JVM prints at every start, silenced by their log4j logger's level (set before the
# SparkContext starts). Only these exact loggers: every other warning keeps showing.
QUIET_JVM_LOGGERS = {
    # "Unable to load native-hadoop library for your platform... using builtin-java classes where applicable"
    "org.apache.hadoop.util.NativeCodeLoader": "ERROR",
}
# JVM launcher notices printed at every start: logged at INFO, not as warnings.
HARMLESS_JVM_NOTICES = ("WARNING: Using incubator modules",)

_LEVELS = {
    "TRACE": logging.DEBUG, "DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING,
    "WARNING": logging.WARNING, "ERROR": logging.ERROR, "FATAL": logging.CRITICAL,
}
# "25/12/02 06:01:40 WARN NativeCodeLoader: …" (Spark's default pattern), "2025-12-02 06:01:40,123 WARN …",
# or no date at all.
_LOG4J_LINE = re.compile(
    r"^(?:\d{2,4}[/-]\d\d[/-]\d\d[ T][\d:.,]+\s+)?(TRACE|DEBUG|INFO|WARN|ERROR|FATAL)\s+(.*)$"
)
_CONTINUATION = re.compile(
    r"^(?:\s|Caused by:|Suppressed:|Traceback \(|\.\.\. \d+ more"
    r"|[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)+(?::|$)"  # java.lang.RuntimeException: boom
    r"|[A-Z]\w*(?:Error|Exception|Exit|Interrupt)(?::|$))"  # ValueError: bad value
)
_PYTHON_WARNING = re.compile(r"^\S+:\d+: [A-Z]\w*Warning: ")  # warnings.warn from a Python worker

# What the JVM prints when -XX:+ExitOnOutOfMemoryError stops it; logged as an error with what to do.
_JVM_OOM_EXIT = "Terminating due to java.lang.OutOfMemoryError"
JVM_OOM_HELP = (
    "the Spark driver JVM ran out of heap and exited: raise JOBREC_SPARK_DRIVER_MEMORY (spark.driver.memory, "
    "default 4g), or run the step with the local engine"
)

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
    """Return the active SparkSession or build one from ``settings`` (reused across calls in a process).

    When this process launches the Spark JVM, the JVM's stdout and stderr (and those of the Python workers it
    starts) go to Python logging on the ``jobrec.spark.jvm`` logger with their log4j level, instead of the
    process's stderr (which Airflow's task supervisor logs at ERROR). See :func:`launch_spark_gateway`.
    """
    from pyspark.core.context import SparkContext
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
    ui = settings.spark_ui  # JOBREC_SPARK_UI
    options = {
        "spark.app.name": app_name,
        "spark.sql.shuffle.partitions": str(settings.spark_shuffle_partitions),
        "spark.executor.memory": settings.spark_executor_memory,
        "spark.driver.memory": settings.spark_driver_memory,
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        # Python workers must run this interpreter (it has numpy/pyarrow), not whatever python3 is on PATH.
        "spark.pyspark.python": os.environ.get("PYSPARK_PYTHON") or sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        "spark.ui.enabled": "true" if ui else "false",
        # A driver out of heap otherwise lives on half-dead: an OutOfMemoryError in the scheduler's endpoint
        # thread left a 1M-member Spark retrain waiting forever on a job that could no longer finish. Exiting
        # fails the task at once, with the JVM's reason in its log (see JvmLineParser).
        "spark.driver.extraJavaOptions": "-XX:+ExitOnOutOfMemoryError",
        **PYTHON_WORKER_CONF,
    }
    if ui:
        options["spark.ui.port"] = "0"  # a free port, no "could not bind on port 4040" warnings
    # spark-submit sets spark.master itself; only set ours when not launched that way.
    if "SPARK_SUBMIT_OPTS" not in os.environ and not os.environ.get("PYSPARK_SUBMIT_ARGS"):
        options["spark.master"] = settings.spark_master
    launches_jvm = SparkContext._gateway is None and not any(
        name in os.environ for name in ("PYSPARK_GATEWAY_PORT", "SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED")
    )
    if launches_jvm:
        local = options.get("spark.master", "local").startswith("local")
        SparkContext._ensure_initialized(gateway=launch_spark_gateway(options, local=local))
    spark = SparkSession.builder.config(map=options).getOrCreate()
    # pyspark takes the workers' interpreter from PYSPARK_PYTHON, not from spark.pyspark.python
    spark.sparkContext.pythonExec = options["spark.pyspark.python"]
    spark.sparkContext.setLogLevel("WARN")
    log.info("Spark session %s on %s", spark.sparkContext.applicationId, spark.sparkContext.master)
    if ui:
        log.info("Spark UI on %s", spark.sparkContext.uiWebUrl)
    return spark


def launch_spark_gateway(options: dict[str, str], *, local: bool = True):
    """Launch the py4j gateway JVM for a session with ``options``, its output forwarded to Python logging.

    The JVM's stdout and stderr are one ``os.pipe`` (the Python workers it spawns inherit it) that a daemon
    thread, started before the launch, drains for the JVM's whole life and logs line by line on the
    ``jobrec.spark.jvm`` logger at the level of each log4j line (see :class:`JvmLineParser`). The process's
    own fd 1/2 are never touched, so the logging handlers writing there cannot feed back into the pipe.

    ``local`` (a ``local[...]`` master) binds the driver and the web UI to 127.0.0.1 through
    ``SPARK_LOCAL_IP`` unless it is set (which also avoids the "hostname resolves to a loopback address"
    warning). Loggers of :data:`QUIET_JVM_LOGGERS` are set to their level before the SparkContext starts.
    Returns the gateway, for ``SparkContext._ensure_initialized(gateway=...)``.
    """
    from pyspark import SparkConf
    from pyspark.java_gateway import launch_gateway

    conf = SparkConf()
    for key, value in options.items():
        conf.set(key, value)
    read_fd, write_fd = os.pipe()
    threading.Thread(target=forward_jvm_output, args=(read_fd,), name="jobrec-spark-jvm-output", daemon=True).start()
    added_local_ip = local and "SPARK_LOCAL_IP" not in os.environ
    try:
        if added_local_ip:
            os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"  # read by launch_gateway into the JVM's environment
        gateway = launch_gateway(conf, popen_kwargs={"stdout": write_fd, "stderr": write_fd})
    finally:
        os.close(write_fd)  # the JVM holds its own copy; the reader sees EOF when the JVM exits
        if added_local_ip:
            os.environ.pop("SPARK_LOCAL_IP", None)
    _quiet_jvm_loggers(gateway.jvm)
    return gateway


def _quiet_jvm_loggers(jvm) -> None:
    from py4j.protocol import Py4JError

    try:
        level = jvm.org.apache.logging.log4j.Level
        configurator = jvm.org.apache.logging.log4j.core.config.Configurator
        for name, level_name in QUIET_JVM_LOGGERS.items():
            configurator.setLevel(name, level.toLevel(level_name))
    except Py4JError as exc:  # e.g. a different logging backend on the classpath: keep the warnings
        log.debug("could not set JVM logger levels: %s", exc)


class JvmLineParser:
    """The Python logging level and message of each line the Spark JVM writes to stdout/stderr.

    A log4j line (Spark's default pattern ``yy/MM/dd HH:mm:ss LEVEL Logger: message``, with or without the
    date, or a Spark structured-logging JSON line) has its own level; the lines that continue it (a stack
    trace: indented, ``Caused by:``, ``... 5 more``, an exception class name, a Python traceback) inherit the
    previous line's level; a JVM ``WARNING:`` line is a warning (harmless startup notices excepted); anything
    else is INFO.
    """

    def __init__(self) -> None:
        self.previous: int | None = None  # level a continuation line inherits; None after a plain line

    def parse(self, line: str) -> tuple[int, str]:
        """Return ``(level, message)`` for one line (without its newline)."""
        if line.startswith(_JVM_OOM_EXIT):
            self.previous = None
            return logging.ERROR, f"{line}: {JVM_OOM_HELP}"
        match = _LOG4J_LINE.match(line)
        if match:
            self.previous = _LEVELS[match.group(1)]
            return self.previous, match.group(2)
        if line.startswith('{"ts"'):
            parsed = _json_line(line)
            if parsed is not None:
                self.previous = parsed[0]
                return parsed
        if self.previous is not None and _CONTINUATION.match(line):
            return self.previous, line
        self.previous = None
        if line.startswith("WARNING:"):
            harmless = any(line.startswith(notice) for notice in HARMLESS_JVM_NOTICES)
            return (logging.INFO if harmless else logging.WARNING), line
        if _PYTHON_WARNING.search(line):
            return logging.WARNING, line
        return logging.INFO, line


def forward_jvm_output(fd: int, logger_name: str = JVM_LOGGER) -> None:
    """Read lines from ``fd`` until EOF and log each on ``logger_name`` at its level (:class:`JvmLineParser`).

    Never stops reading before EOF (a logging error drops that line, not the rest), so the writer never
    blocks on a full pipe.
    """
    logger = logging.getLogger(logger_name)
    parser = JvmLineParser()
    with os.fdopen(fd, "rb") as stream:
        for raw in stream:
            try:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line.strip():
                    level, message = parser.parse(line)
                    logger.log(level, "%s", message)
            except Exception:  # noqa: BLE001 - keep draining whatever happens to one line
                pass


def _json_line(line: str) -> tuple[int, str] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    level = _LEVELS.get(str(record.get("level", "")).upper())
    if level is None:
        return None
    message = f"{record.get('logger', '')}: {record.get('msg', '')}"
    exception = record.get("exception")
    if isinstance(exception, dict):
        message += f"\n{exception.get('class', '')}: {exception.get('msg', '')}"
    return level, message
