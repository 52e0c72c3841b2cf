"""Spark work reports its progress in tasks per stage (``pipeline.spark_progress``), from a real session."""

from __future__ import annotations

import logging
import re
import time

from pipeline.spark_progress import spark_progress


def test_a_spark_stage_logs_tasks_done_over_total_with_rate_eta_and_an_end_line(spark, caplog):
    logger = logging.getLogger("test.spark_progress")

    def slow_square(x: int) -> int:  # a closure: Spark's workers cannot import this test module
        time.sleep(0.15)
        return x * x

    with caplog.at_level(logging.INFO, logger=logger.name):
        with spark_progress(spark, "squares", logger=logger, terminal=False, poll_seconds=0.05,
                            log_seconds=0.2) as reporter:
            total = spark.sparkContext.parallelize(range(16), 8).map(slow_square).sum()
    assert total == sum(x * x for x in range(16))
    lines = [r.getMessage() for r in caplog.records if r.name == logger.name]
    assert reporter.finished and not reporter.stages  # every stage seen was closed
    stage = reporter.finished[-1]
    assert f"squares (Spark stage {stage}): 0/8 tasks" in lines
    assert any(re.fullmatch(rf"squares \(Spark stage {stage}\): [1-7]/8 tasks \(\d+\.\d%\), .* tasks/s, ETA .*", line)
               for line in lines), lines
    assert any(line.startswith(f"squares (Spark stage {stage}): done 8/8 tasks in ") for line in lines), lines


def test_no_spark_work_means_no_progress_lines(spark, caplog):
    logger = logging.getLogger("test.spark_progress.idle")
    with caplog.at_level(logging.INFO, logger=logger.name):
        with spark_progress(spark, "idle", logger=logger, terminal=False, poll_seconds=0.02) as reporter:
            time.sleep(0.1)
    assert reporter.finished == [] and not [r for r in caplog.records if r.name == logger.name]


def test_a_failing_status_query_does_not_replace_the_steps_own_error(spark) -> None:
    class BrokenTracker:
        def getActiveStageIds(self):
            raise ConnectionError("the JVM is gone")

    try:
        with spark_progress(spark, "broken", terminal=False, poll_seconds=0.01) as reporter:
            reporter.tracker = BrokenTracker()
            time.sleep(0.05)
            raise RuntimeError("the step's own failure")
    except RuntimeError as exc:
        assert str(exc) == "the step's own failure"
    else:
        raise AssertionError("the step's error was swallowed")
