"""The run report: what one DAG run did for a day, as ``reports/ds=YYYY-MM-DD/run.json``.

Each task function returns a dict of counts and metrics (plus ``seconds``, its wall time, added by the DAG
wrapper). The report keeps every task's dict whole under ``tasks`` and also flattens them into
``counts`` (integers), ``metrics`` (other numbers) and ``timings_seconds``, so a reader can diff two days
without knowing each task's keys.
"""

from __future__ import annotations

import logging
import numbers

from pipeline.config import Settings
from pipeline.storage import check_ds, write_json

log = logging.getLogger(__name__)


def report_path(ds: str, settings: Settings, name: str = "run"):
    """``reports/ds=<ds>/<name>.json`` (``run`` for the daily DAG, ``full_retrain`` for the periodic one)."""
    return settings.layout.report(ds).with_name(f"{name}.json")


def write_run_report(ds: str, settings: Settings, results: dict, name: str = "run") -> dict:
    """Write the run report of ``ds`` atomically, replacing a previous report of the same run name.

    Args:
        ds: the run's logical date, YYYY-MM-DD.
        settings: pipeline settings (the report goes under ``settings.home``).
        results: task id → the dict that task returned (``None`` for a task that returned nothing).
        name: the report file's stem: ``run`` (daily) or ``full_retrain``.

    Returns:
        ``{"path", "tasks", "total_task_seconds"}``.
    """
    check_ds(ds)
    if not isinstance(results, dict):
        raise ValueError(f"results must be a dict of task id -> result dict; got {type(results).__name__}")
    tasks = {task_id: dict(result or {}) for task_id, result in results.items()}
    counts: dict[str, int] = {}
    metrics: dict[str, float] = {}
    timings: dict[str, float] = {}
    for task_id, result in tasks.items():
        for key, value in result.items():
            if key == "seconds" and isinstance(value, numbers.Real):
                timings[task_id] = float(value)
            elif isinstance(value, bool) or not isinstance(value, numbers.Real):
                continue
            elif isinstance(value, numbers.Integral):
                counts[f"{task_id}.{key}"] = int(value)
            else:
                metrics[f"{task_id}.{key}"] = float(value)
    total = round(sum(timings.values()), 3)
    report = {
        "ds": ds,
        "run": name,
        "home": str(settings.home),
        "tasks": tasks,
        "counts": counts,
        "metrics": metrics,
        "timings_seconds": timings,
        "total_task_seconds": total,
    }
    path = write_json(report_path(ds, settings, name), report)
    log.info("run report for %s: %d tasks, %.1fs of task time → %s", ds, len(tasks), total, path)
    return {"path": str(path), "tasks": len(tasks), "total_task_seconds": total}
