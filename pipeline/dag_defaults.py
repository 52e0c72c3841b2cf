"""What the jobrec DAGs share: the retry policy, the default task arguments and the task → pipeline call.

Bad input (a missing raw partition, a failed validation, bad params) and a failed quality gate fail a task at
once with the pipeline's own message; other errors (Redis or Spark hiccups) are retried with exponential
backoff. Kept free of heavy imports: DAG files import it at parse time.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

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
