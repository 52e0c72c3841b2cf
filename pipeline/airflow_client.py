"""A small client of Airflow 3's REST API for the calls jobrec's users make from the UI: unpause a DAG,
trigger a run for a day, create a backfill exactly as the UI's Backfill dialog does, and follow runs.

Used by the scheduler tests and ``bench/bench_airflow_backfill.py``; works against any Airflow 3 api-server
(``AirflowStack`` locally, or docker-compose) given a bearer token from ``POST /auth/token``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pipeline.airflow_env import SQLITE_LOCK_WAIT_SECONDS

FINISHED = ("success", "failed")
# A write request can wait for SQLite's write lock (up to SQLITE_LOCK_WAIT_SECONDS per statement) before Airflow
# answers, 503 "Database is locked" when the wait runs out. A client that gave up at the same moment never saw
# that answer (CI's scheduler story failed on an httpx ReadTimeout after 60 s): wait for a few lock waits.
REQUEST_TIMEOUT_SECONDS = 3.0 * SQLITE_LOCK_WAIT_SECONDS
# Airflow answers 503 "Database is locked" when backfill creation meets another writer on SQLite (the embedded
# default): SQLite refuses a read transaction's upgrade to a write at once instead of waiting, so no busy
# timeout helps. The creation was rolled back; asking again, as a UI user would press the button again, works.
# Asking again goes on for this long after the first attempt: beyond one whole request timeout, so an attempt
# that got no answer is asked again too.
LOCKED_RETRY_SECONDS = REQUEST_TIMEOUT_SECONDS + 120.0


class AirflowAPIError(RuntimeError):
    """An error answer of the REST API: ``status_code`` and the body's text."""

    def __init__(self, method: str, path: str, status_code: int, text: str) -> None:
        super().__init__(f"{method} /api/v2{path}: HTTP {status_code}: {text[:2000]}")
        self.status_code = status_code
        self.text = text


def ui_backfill_body(dag_id: str, start: str, end: str, conf: dict | None = None) -> dict:
    """The body the UI's Backfill dialog posts to ``/api/v2/backfills`` when only the dates are filled in:
    "Missing Runs" (``reprocess_behavior: none``), max active runs 1, forwards, on the latest DAG version."""
    return {
        "dag_id": dag_id,
        "from_date": f"{start}T00:00:00.000Z",
        "to_date": f"{end}T00:00:00.000Z",
        "dag_run_conf": conf or {},
        "max_active_runs": 1,
        "reprocess_behavior": "none",
        "run_backwards": False,
        "run_on_latest_version": True,
    }


class AirflowClient:
    """REST calls against ``base_url`` (e.g. ``http://127.0.0.1:8080``) with a bearer ``token``.

    Every call raises ``AirflowAPIError`` (a ``RuntimeError``) with the status and body when the API answers an
    error. ``transport`` is httpx's, for a client that talks to something other than a socket.
    """

    def __init__(self, base_url: str, token: str, *, timeout: float = REQUEST_TIMEOUT_SECONDS,
                 transport: Any = None) -> None:
        import httpx

        self.http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport,
                                 headers={"Authorization": f"Bearer {token}"})

    def call(self, method: str, path: str, **kwargs: Any) -> dict:
        """``method`` ``/api/v2<path>``; the decoded JSON answer."""
        response = self.http.request(method, f"/api/v2{path}", **kwargs)
        if response.status_code >= 300:
            raise AirflowAPIError(method, path, response.status_code, response.text)
        return response.json() if response.content else {}

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.call("PATCH", f"/dags/{dag_id}", json={"is_paused": paused})

    def trigger(self, dag_id: str, ds: str, conf: dict | None = None) -> str:
        """Trigger a manual run whose logical date is the day ``ds``; returns its run id."""
        run = self.call("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": f"{ds}T00:00:00Z", "conf": conf or {}})
        return run["dag_run_id"]

    def backfill(self, dag_id: str, start: str, end: str, conf: dict | None = None, *, dry_run: bool = False,
                 locked_retry_seconds: float = LOCKED_RETRY_SECONDS) -> dict:
        """Create (or with ``dry_run`` only list) a backfill with the Backfill dialog's default settings.

        A 503 "Database is locked" answer (SQLite under concurrent writers) or no answer within the client's
        timeout is asked again, with backoff, for up to ``locked_retry_seconds``; should Airflow have committed an
        attempt whose answer was lost, the 409 "already a running backfill" that follows returns the backfill
        that exists for these dates.
        """
        import httpx

        body = ui_backfill_body(dag_id, start, end, conf)
        deadline, pause, asked_before = time.monotonic() + locked_retry_seconds, 0.5, False
        while True:
            try:
                return self.call("POST", "/backfills/dry_run" if dry_run else "/backfills", json=body)
            except httpx.TimeoutException:
                if time.monotonic() > deadline:
                    raise
            except AirflowAPIError as error:
                if asked_before and error.status_code == 409 and (existing := self._running_backfill(body)):
                    return existing
                if error.status_code != 503 or "locked" not in error.text.lower() or time.monotonic() > deadline:
                    raise
            asked_before = True
            time.sleep(pause)
            pause = min(pause * 2, 8.0)

    def _running_backfill(self, body: dict) -> dict | None:
        """The unfinished backfill of ``body``'s DAG and dates, if there is one."""
        found = self.call("GET", "/backfills", params={"dag_id": body["dag_id"]})["backfills"]
        return next((b for b in found if b.get("completed_at") is None
                     and b["from_date"][:10] == body["from_date"][:10] and b["to_date"][:10] == body["to_date"][:10]),
                    None)

    def runs(self, dag_id: str) -> list[dict]:
        """Every run of ``dag_id``, oldest logical date first (each with ``ds`` added)."""
        found = self.call("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "logical_date", "limit": 1000})
        return [{**run, "ds": (run.get("logical_date") or "")[:10]} for run in found["dag_runs"]]

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        return {ti["task_id"]: ti["state"] for ti in self.task_instances(dag_id, run_id)}

    def close(self) -> None:
        self.http.close()


def wait_for(what: str, check: Callable[[], Any], *, timeout: float = 900, every: float = 3.0) -> Any:
    """Poll ``check()`` until it returns something truthy and return it; ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def finished_runs(client: AirflowClient, dag_id: str, days: list[str], run_type: str | None = None) -> list[dict] | None:
    """The runs of ``days`` (in that order) once each has finished, else ``None``."""
    runs = {r["ds"]: r for r in client.runs(dag_id) if r["ds"] in days and run_type in (None, r["run_type"])}
    if len(runs) == len(days) and all(r["state"] in FINISHED for r in runs.values()):
        return [runs[d] for d in days]
    return None
