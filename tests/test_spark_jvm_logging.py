"""The Spark JVM's output reaches Python logging with its own level, never the process's raw stderr.

Under Airflow 3 everything a task process writes to stderr is logged at ERROR, so a JVM that inherits it
turns every harmless ``WARN`` into a red line. ``pipeline.spark.get_spark`` gives the JVM a pipe instead, and
a thread logs each line on ``jobrec.spark.jvm`` at the line's log4j level.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from pipeline.spark import JVM_LOGGER, JvmLineParser, forward_jvm_output

WARN = "26/12/02 06:01:40 WARN NativeCodeLoader: Unable to load native-hadoop library for your platform"


def _levels(lines: list[str]) -> list[tuple[str, str]]:
    parser = JvmLineParser()
    return [(logging.getLevelName(level), message) for level, message in map(parser.parse, lines)]


def test_log4j_levels_are_kept_and_stack_traces_inherit_them():
    assert _levels([
        WARN,
        "26/12/02 06:01:41 INFO SparkContext: Running Spark version 4.3.0",
        "26/12/02 06:01:42 ERROR Executor: Exception in task 0.0 in stage 1.0 (TID 1)",
        "org.apache.spark.api.python.PythonException: Traceback (most recent call last):",
        '  File "/x/worker.py", line 1, in <module>',
        "ValueError: boom",
        "\tat org.apache.spark.api.python.BasePythonRunner.read(PythonRunner.scala:1)",
        "Caused by: java.io.IOException: closed",
        "\t... 5 more",
        "Setting default log level to \"WARN\".",
        "java.lang.IllegalStateException: no previous record, so not a continuation",
    ]) == [
        ("WARNING", "NativeCodeLoader: Unable to load native-hadoop library for your platform"),
        ("INFO", "SparkContext: Running Spark version 4.3.0"),
        ("ERROR", "Executor: Exception in task 0.0 in stage 1.0 (TID 1)"),
        ("ERROR", "org.apache.spark.api.python.PythonException: Traceback (most recent call last):"),
        ("ERROR", '  File "/x/worker.py", line 1, in <module>'),
        ("ERROR", "ValueError: boom"),
        ("ERROR", "\tat org.apache.spark.api.python.BasePythonRunner.read(PythonRunner.scala:1)"),
        ("ERROR", "Caused by: java.io.IOException: closed"),
        ("ERROR", "\t... 5 more"),
        ("INFO", "Setting default log level to \"WARN\"."),
        ("INFO", "java.lang.IllegalStateException: no previous record, so not a continuation"),
    ]


def test_other_line_shapes():
    assert _levels([
        "2026-12-02 06:01:40,123 FATAL Main: out of memory",
        "DEBUG BlockManager: no date",
        '{"ts":"2026-12-02T06:01:40.1Z","level":"WARN","msg":"slow task","logger":"TaskSetManager"}',
        "WARNING: Using incubator modules: jdk.incubator.vector",
        "WARNING: A terminally deprecated method in sun.misc.Unsafe has been called",
        "/srv/udf.py:3: UserWarning: careful",
        "plain output of a Python worker",
    ]) == [
        ("CRITICAL", "Main: out of memory"),
        ("DEBUG", "BlockManager: no date"),
        ("WARNING", "TaskSetManager: slow task"),
        ("INFO", "WARNING: Using incubator modules: jdk.incubator.vector"),  # printed at every start
        ("WARNING", "WARNING: A terminally deprecated method in sun.misc.Unsafe has been called"),
        ("WARNING", "/srv/udf.py:3: UserWarning: careful"),
        ("INFO", "plain output of a Python worker"),
    ]


def test_forwarder_drains_a_pipe_larger_than_its_buffer(caplog: pytest.LogCaptureFixture):
    read_fd, write_fd = os.pipe()
    lines = 20_000  # ~1.5 MB: far more than a pipe buffer, so a reader that stopped would block the writer
    reader = threading.Thread(target=forward_jvm_output, args=(read_fd,), daemon=True)
    with caplog.at_level(logging.DEBUG, logger=JVM_LOGGER):
        reader.start()
        with os.fdopen(write_fd, "wb") as out:
            for i in range(lines):
                out.write(f"26/12/02 06:01:40 {'WARN' if i % 2 else 'INFO'} Probe: line {i:05d} {'x' * 40}\n".encode())
        reader.join(timeout=60)
    assert not reader.is_alive()
    # Only this pipe's lines: a Spark JVM that an earlier test left running in this process logs to the same
    # logger meanwhile.
    records = [r for r in caplog.records if r.name == JVM_LOGGER and r.getMessage().startswith("Probe: line ")]
    assert len(records) == lines
    assert records[1].levelno == logging.WARNING and records[1].getMessage().startswith("Probe: line 00001")
    assert records[-2].levelno == logging.INFO


PROBE = textwrap.dedent(
    """
    import json, logging, sys, time

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append({"name": record.name, "level": record.levelname, "msg": record.getMessage()})

    logging.basicConfig(level=logging.INFO, handlers=[Keep()])

    from pipeline.config import Settings
    from pipeline.spark import get_spark

    spark = get_spark(Settings.from_env(spark_master="local[1]", spark_shuffle_partitions=1,
                                        spark_driver_memory="1g"), app_name="jvm-logging-probe")
    logger = spark._jvm.org.apache.logging.log4j.LogManager.getLogger("jobrec.test")
    logger.warn("probe-warning")
    logger.error("probe-error", spark._jvm.java.lang.IllegalStateException("probe-cause"))

    def shout(_):
        print("probe-worker-stderr", file=sys.stderr, flush=True)

    spark.sparkContext.parallelize([1], 1).foreach(shout)  # a Python worker, started by the JVM
    deadline = time.time() + 30
    while time.time() < deadline and not any("probe-worker-stderr" in r["msg"] for r in records):
        time.sleep(0.2)
    spark.stop()
    print(json.dumps(records))
    """
)


def test_a_real_spark_jvm_logs_through_python_logging_with_its_levels(tmp_path):
    """One fresh process, one JVM (``local[1]``): its warnings and errors arrive as WARNING / ERROR
    records on ``jobrec.spark.jvm``, a Python worker's stderr arrives too, and nothing is written raw to
    the process's stderr."""
    env = {**os.environ, "JOBREC_HOME": str(tmp_path / "home")}
    env.pop("JOBREC_SPARK_UI", None)  # the default: no UI
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == ""
    records = json.loads(result.stdout.strip().splitlines()[-1])
    jvm = [(r["level"], r["msg"]) for r in records if r["name"] == JVM_LOGGER]
    assert ("WARNING", "test: probe-warning") in jvm
    assert ("ERROR", "test: probe-error") in jvm
    assert ("ERROR", "java.lang.IllegalStateException: probe-cause") in jvm
    assert any(level == "ERROR" and msg.startswith("\tat ") for level, msg in jvm)  # the stack trace
    assert any("probe-worker-stderr" in msg for _, msg in jvm)
    # The harmless startup warnings are gone: no native-hadoop notice, no loopback-hostname advice, no
    # Spark UI port (the UI is off by default).
    messages = "\n".join(msg for _, msg in jvm)
    for harmless in ("NativeCodeLoader", "resolves to a loopback address", "SparkUI"):
        assert harmless not in messages
    assert not [m for level, m in jvm if level in ("WARNING", "ERROR") and "probe" not in m and not m.startswith("\t")]


OOM_PROBE = textwrap.dedent(
    """
    import json, logging, os, time

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append({"name": record.name, "level": record.levelname, "msg": record.getMessage()})

    logging.getLogger().addHandler(Keep())
    logging.getLogger().setLevel(logging.INFO)
    from pipeline.spark import get_spark

    spark = get_spark()
    jvm_pid = int(spark._jvm.ProcessHandle.current().pid())
    outcome = "no error"
    try:  # 1.6 GB of longs in a 512 MiB heap
        spark._jvm.java.lang.reflect.Array.newInstance(spark._jvm.java.lang.Long.TYPE, 200_000_000)
    except Exception as exc:
        outcome = type(exc).__name__
    alive, deadline = True, time.time() + 30
    while alive and time.time() < deadline:
        try:  # the JVM is this process's child: an exited one is a zombie until reaped here
            alive = os.waitpid(jvm_pid, os.WNOHANG)[0] == 0
        except ChildProcessError:  # already reaped
            alive = False
        time.sleep(0.2)
    time.sleep(1)  # the forwarder logs the JVM's last lines
    print(json.dumps({"outcome": outcome, "jvm_alive": alive, "records": records}))
    os._exit(0)
    """
)


def test_a_spark_driver_out_of_heap_exits_and_logs_what_to_do(tmp_path):
    """A driver JVM that runs out of heap exits (no half-dead session that a task waits on forever), the
    Python call fails, and the log says to raise JOBREC_SPARK_DRIVER_MEMORY."""
    env = {**os.environ, "JOBREC_HOME": str(tmp_path / "home"), "JOBREC_SPARK_DRIVER_MEMORY": "512m",
           "JOBREC_SPARK_MASTER": "local[1]"}
    result = subprocess.run(
        [sys.executable, "-c", OOM_PROBE], env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert probe["outcome"] != "no error"
    assert probe["jvm_alive"] is False
    errors = [r["msg"] for r in probe["records"] if r["name"] == JVM_LOGGER and r["level"] == "ERROR"]
    assert any(m.startswith("Terminating due to java.lang.OutOfMemoryError")
               and "raise JOBREC_SPARK_DRIVER_MEMORY" in m for m in errors), errors
