"""What the jobrec DAGs share: schedules, the retry policy, default task arguments, the params that mirror
settings, and the task → pipeline call.

Schedules follow finished-day semantics: a run's logical date is the day it processes, and a scheduled run is
created only after that day has ended (the data of a day lands after the day ends).

Bad input (a missing raw partition, a failed validation, bad params) and a failed quality gate fail a task at
once with the pipeline's own message; other errors (Redis or Spark hiccups) are retried with exponential
backoff. Kept free of heavy imports: DAG files import it at parse time.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

# Trigger-form params of the raw-data sensor: (poke interval, timeout), in seconds.
WAIT_PARAMS = ("raw_poke_interval_seconds", "raw_wait_timeout_seconds")
MIN_POKE_INTERVAL_SECONDS = 15


def daily_schedule():
    """Every day at 00:00 UTC, for the day that just ended: ``CronDataIntervalTimetable``, whose logical date
    is the start of its data interval. The run created at 2026-12-02 00:00 processes ds=2026-12-01, and a
    backfill "from 2024-01-02 to 2024-01-04" creates exactly the runs of those three days."""
    from airflow.sdk import CronDataIntervalTimetable

    return CronDataIntervalTimetable("0 0 * * *", timezone="UTC")


def weekly_schedule(cron: str | None = None):
    """The full retrain's schedule: by default Sundays at 00:00 UTC (``Settings.full_retrain_cron``, i.e.
    ``JOBREC_FULL_RETRAIN_CRON``, read when the DAG file is parsed, picks another time), for the day that just
    ended: a cron trigger whose one-day data interval makes the day before the trigger the logical date (the
    run of 2026-11-29 00:00 has ds=2026-11-28), so the training window always ends on the last finished day."""
    from airflow.sdk import CronTriggerTimetable

    cron = cron or settings_defaults().full_retrain_cron
    return CronTriggerTimetable(cron, timezone="UTC", interval=dt.timedelta(days=1))


def settings_defaults():
    """The environment's :class:`~pipeline.config.Settings`: trigger-form params that mirror a setting
    (``top_n`` ← ``JOBREC_TOP_N``, …) default to it, read when the DAG file is parsed."""
    from pipeline.config import Settings

    return Settings.from_env()


def wait_params(settings) -> dict:
    """The sensor's trigger-form params, defaulting to ``settings`` (see :data:`WAIT_PARAMS`)."""
    from airflow.sdk import Param

    poke, timeout = WAIT_PARAMS
    return {
        # At least 15 s: with a shorter interval Airflow 3.3 can queue the next poke before the previous poke's
        # process has exited, takes its "success" exit for an external state change and fails the try.
        poke: Param(max(settings.raw_poke_interval_seconds, MIN_POKE_INTERVAL_SECONDS), type="number",
                    minimum=MIN_POKE_INTERVAL_SECONDS,
                    description="seconds between looks for the day's landed raw data (JOBREC_RAW_POKE_INTERVAL_SECONDS)"),
        timeout: Param(settings.raw_wait_timeout_seconds, type="number", minimum=0,
                       description="seconds to wait for late raw data before the run fails naming what is "
                       "missing (JOBREC_RAW_WAIT_TIMEOUT_SECONDS)"),
    }


# Exceptions a retry cannot fix (dotted names, matched by Airflow's ExceptionRetryPolicy).
BAD_INPUT_ERRORS = ["builtins.FileNotFoundError", "builtins.ValueError", "builtins.KeyError", "builtins.ImportError"]
GATE_ERROR = "pipeline.training.GateFailedError"


def default_args(*, retry_delay: dt.timedelta, max_retry_delay: dt.timedelta, gate_outcome: str) -> dict[str, Any]:
    """``default_args`` for a jobrec DAG: two retries with exponential backoff, except for bad input and a
    failed gate (``gate_outcome`` completes the failure reason, e.g. "the model is not published")."""
    from airflow.sdk.definitions.retry_policy import ExceptionRetryPolicy, RetryAction, RetryRule

    no_retry = ExceptionRetryPolicy(rules=[
        RetryRule(exception=BAD_INPUT_ERRORS, action=RetryAction.FAIL,
                  reason="bad or missing input: fix the data or the params, then clear the task"),
        RetryRule(exception=GATE_ERROR, action=RetryAction.FAIL, reason=f"quality gate failed: {gate_outcome}"),
    ])
    return {
        "owner": "jobrec",
        "retries": 2,
        "retry_delay": retry_delay,
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": max_retry_delay,
        "retry_policy": no_retry,
    }


def run_step(target: str, ds: str | None, params: dict, **kwargs: Any) -> dict:
    """Call ``pipeline.<module>:<function>(ds, settings, **kwargs)`` from a task; log and return its result.

    The pipeline is imported inside the task, never at DAG parse time.
    """
    from pipeline.airflow_env import call_pipeline

    return call_pipeline(target, ds, params, **kwargs)
