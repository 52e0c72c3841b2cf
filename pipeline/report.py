"""The run report: what one DAG run did for a day, as ``reports/ds=YYYY-MM-DD/run.json``, and its pages.

Each task function returns a dict of counts and metrics (plus ``seconds``, its wall time, added by the DAG
wrapper). The report keeps every task's dict whole under ``tasks`` (and their order under ``task_order``)
and also flattens them into ``counts`` (integers), ``metrics`` (other numbers), ``timings_seconds`` and
``peak_memory_mib`` (per task: its process and worker processes, :mod:`pipeline.memory`), so a reader can
diff two days without knowing each task's keys. The daily run's report also summarises the day's
recommendations Parquet under ``recommendations`` (score histogram, the jobs recommended most often), as no
task returns those.

After the JSON, the day's page ``reports/ds=<ds>/index.html`` and the page across days
``reports/index.html`` are rendered from the reports (:mod:`pipeline.report_page`).
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from pipeline.config import Settings
from pipeline.storage import check_ds, partition_files, record_batches, write_json

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

    The pages (``reports/ds=<ds>/index.html``, ``reports/index.html``) and the recommendations summary are
    best effort: a failure there is logged with its traceback and named in the result (``page_error``), and
    never fails a run whose work is done; the JSON report is always written.

    Returns:
        ``{"path", "tasks", "total_task_seconds", "day_page", "index_page"}`` (pages None when not written).
    """
    check_ds(ds)
    if not isinstance(results, dict):
        raise ValueError(f"results must be a dict of task id -> result dict; got {type(results).__name__}")
    tasks = {task_id: dict(result or {}) for task_id, result in results.items()}
    counts: dict[str, int] = {}
    metrics: dict[str, float] = {}
    timings: dict[str, float] = {}
    memory: dict[str, float] = {}
    for task_id, result in tasks.items():
        for key, value in result.items():
            if key == "seconds" and isinstance(value, numbers.Real):
                timings[task_id] = float(value)
            elif key == "peak_memory_mib" and isinstance(value, numbers.Real):
                memory[task_id] = float(value)
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
        "task_order": list(tasks),
        "counts": counts,
        "metrics": metrics,
        "timings_seconds": timings,
        "total_task_seconds": total,
        "peak_memory_mib": memory,
    }
    errors: list[str] = []
    if name == "run":
        report["recommendations"] = _best_effort(errors, "recommendations summary", summarize_recommendations,
                                                 ds, settings)
    path = write_json(report_path(ds, settings, name), report)
    log.info("run report for %s: %d tasks, %.1fs of task time → %s", ds, len(tasks), total, path)
    from pipeline.report_page import write_pages

    pages = _best_effort(errors, "report pages", write_pages, ds, settings) or {}
    result = {"path": str(path), "tasks": len(tasks), "total_task_seconds": total,
              "day_page": pages.get("day_page"), "index_page": pages.get("index_page")}
    if errors:
        result["page_error"] = "; ".join(errors)
    return result


def _best_effort(errors: list[str], what: str, func: Callable[..., Any], *args: Any) -> Any:
    """``func(*args)``, or None after logging the failure (with traceback) and appending it to ``errors``."""
    try:
        return func(*args)
    except Exception as exc:  # the report's extras never fail a finished run
        log.exception("run report: %s failed; the JSON report is written without it", what)
        errors.append(f"{what}: {type(exc).__name__}: {exc}")
        return None


def summarize_recommendations(ds: str, settings: Settings, *, bins: int = 40, top: int = 20) -> dict | None:
    """What the day's ``recommendations/ds=`` Parquet holds, for the report page; None when there is none.

    Streams the ``member_id``, ``rank``, ``job_id`` and ``score`` columns batch by batch (two passes: range,
    then histogram), so memory stays at one batch plus one count per distinct job. Returns ``{"rows",
    "members" (members with a list), "jobs_recommended" (distinct jobs), "score_mean", "score_histogram":
    {"edges", "counts"} (``bins`` equal bins), "top_jobs": [{"job_id", "recommended", "title"}]}`` (the
    ``top`` jobs in most lists, ties by job_id; titles from the day's validated, else raw, jobs).
    """
    import pyarrow.compute as pc

    path = settings.layout.recommendations(check_ds(ds))
    try:
        partition_files(path)
    except FileNotFoundError:
        return None

    rows = members = 0
    low, high, total = np.inf, -np.inf, 0.0
    job_parts, count_parts = [], []
    for batch in record_batches(path, ["rank", "job_id", "score"]):
        scores = batch.column("score").to_numpy(zero_copy_only=False)
        rows += len(scores)
        members += int(pc.sum(pc.equal(batch.column("rank"), 1)).as_py() or 0)
        if len(scores):
            low, high, total = min(low, scores.min()), max(high, scores.max()), total + float(scores.sum())
        ids, counts = np.unique(batch.column("job_id").to_numpy(zero_copy_only=False), return_counts=True)
        job_parts.append(ids)
        count_parts.append(counts)
    if rows == 0:
        return {"rows": 0, "members": 0, "jobs_recommended": 0, "score_mean": None,
                "score_histogram": {"edges": [], "counts": []}, "top_jobs": []}
    edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
    hist = np.zeros(bins, dtype=np.int64)
    for batch in record_batches(path, ["score"]):
        hist += np.histogram(batch.column("score").to_numpy(zero_copy_only=False), bins=edges)[0]
    ids, inverse = np.unique(np.concatenate(job_parts), return_inverse=True)
    per_job = np.bincount(inverse, weights=np.concatenate(count_parts)).astype(np.int64)
    best = np.lexsort((ids, -per_job))[:top]
    titles = _job_titles(ds, settings, ids[best])
    return {
        "rows": rows,
        "members": members,
        "jobs_recommended": len(ids),
        "score_mean": total / rows,
        "score_histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in hist]},
        "top_jobs": [{"job_id": int(ids[i]), "recommended": int(per_job[i]), "title": titles.get(int(ids[i]))}
                     for i in best],
    }


def _job_titles(ds: str, settings: Settings, job_ids: np.ndarray) -> dict[int, str]:
    """Titles of ``job_ids`` from the day's validated jobs (else raw); empty when neither is readable."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from pipeline.storage import read_partition

    layout = settings.layout
    for path in (layout.validated("jobs", ds), layout.raw("jobs", ds)):
        try:
            jobs = read_partition(path, columns=["job_id", "title"])
        except (FileNotFoundError, KeyError, ValueError, pa.ArrowInvalid):
            continue
        jobs = jobs.filter(pc.is_in(jobs["job_id"], pa.array(job_ids, pa.int64())))
        return {int(j): str(t) for j, t in zip(jobs["job_id"].to_pylist(), jobs["title"].to_pylist(), strict=True)
                if t is not None}
    return {}
