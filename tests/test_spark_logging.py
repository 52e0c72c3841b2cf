"""Spark sessions keep py4j's retried-connection tracebacks out of task logs, and nothing else."""

from __future__ import annotations

import logging

import py4j.java_gateway

from pipeline.spark import Py4jRetryFilter


def _record(level: int, msg: str, pathname: str) -> logging.LogRecord:
    return logging.LogRecord("root", level, pathname, 1056, msg, None, None)


def test_py4j_retry_notice_is_dropped_but_other_records_pass():
    keep = Py4jRetryFilter().filter
    retry = "Exception while sending command."
    assert not keep(_record(logging.INFO, retry, py4j.java_gateway.__file__))
    assert keep(_record(logging.ERROR, retry, py4j.java_gateway.__file__))  # a failed retry still shows
    assert keep(_record(logging.INFO, retry, "/srv/app/mine.py"))
    assert keep(_record(logging.INFO, "features 2024-01-02: 15169 training rows", py4j.java_gateway.__file__))


def test_spark_session_installs_the_filter_on_the_root_logger_once(spark):
    from pipeline.spark import get_spark

    get_spark()
    get_spark()
    assert sum(isinstance(f, Py4jRetryFilter) for f in logging.getLogger().filters) == 1
