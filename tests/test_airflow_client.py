"""The REST client's handling of Airflow's answers that a UI user would meet and retry by hand."""

from __future__ import annotations

import json

import httpx
import pytest

from pipeline.airflow_client import LOCKED_RETRY_SECONDS, AirflowAPIError, AirflowClient
from pipeline.airflow_env import SQLITE_CONNECT_ARGS

LOCKED = {"detail": "Database is locked. Backfill creation is not supported on SQLite under concurrent access. "
                    "Please use PostgreSQL or MySQL."}


def _client(answers: list[tuple[int, dict] | Exception], seen: list[httpx.Request]) -> AirflowClient:
    """A client whose API answers ``answers`` in order (an exception: raised as the transport's) and records
    each request in ``seen``."""
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, body = answer
        return httpx.Response(status, json=body)

    return AirflowClient("http://airflow.test", "token", transport=httpx.MockTransport(handle))


def test_backfill_creation_answered_database_locked_is_asked_again_until_it_is_created() -> None:
    seen: list[httpx.Request] = []
    created = {"id": 7, "dag_id": "jobrec_daily"}
    client = _client([(503, LOCKED), (503, LOCKED), (200, created)], seen)
    assert client.backfill("jobrec_daily", "2026-11-01", "2026-11-03", locked_retry_seconds=30) == created
    assert [r.url.path for r in seen] == ["/api/v2/backfills"] * 3
    assert len({r.content for r in seen}) == 1, "every attempt posts the same body"


def test_backfill_created_before_its_locked_answer_is_found_instead_of_failing_as_a_duplicate() -> None:
    seen: list[httpx.Request] = []
    existing = {"id": 3, "dag_id": "jobrec_daily", "from_date": "2026-11-01T00:00:00Z",
                "to_date": "2026-11-03T00:00:00Z", "completed_at": None}
    other = {**existing, "id": 2, "from_date": "2026-10-01T00:00:00Z"}
    client = _client([(503, LOCKED), (409, {"detail": "There is already a running backfill for dag jobrec_daily"}),
                      (200, {"backfills": [other, existing], "total_entries": 2})], seen)
    assert client.backfill("jobrec_daily", "2026-11-01", "2026-11-03", locked_retry_seconds=30) == existing
    assert seen[-1].method == "GET" and seen[-1].url.params["dag_id"] == "jobrec_daily"


def test_backfill_errors_other_than_a_lock_are_raised_at_once_with_status_and_detail() -> None:
    seen: list[httpx.Request] = []
    client = _client([(409, {"detail": "There is already a running backfill for dag jobrec_daily"})], seen)
    with pytest.raises(AirflowAPIError, match="HTTP 409: .*already a running backfill") as caught:
        client.backfill("jobrec_daily", "2026-11-01", "2026-11-03")
    assert caught.value.status_code == 409 and len(seen) == 1


def test_backfill_lock_that_outlasts_the_retry_window_is_raised() -> None:
    seen: list[httpx.Request] = []
    client = _client([(503, LOCKED)] * 50, seen)
    with pytest.raises(AirflowAPIError, match="HTTP 503: .*Database is locked"):
        client.backfill("jobrec_daily", "2026-11-01", "2026-11-03", locked_retry_seconds=0.6)
    assert 2 <= len(seen) <= 4
    assert json.loads(seen[0].content)["reprocess_behavior"] == "none"


def test_requests_wait_longer_than_the_sqlite_write_lock_and_an_unanswered_backfill_is_asked_again() -> None:
    client = AirflowClient("http://airflow.test", "token")
    assert client.http.timeout.read > 2 * SQLITE_CONNECT_ARGS["timeout"]
    assert LOCKED_RETRY_SECONDS > client.http.timeout.read, "a timed-out first attempt must leave time to ask again"


def test_backfill_whose_answer_timed_out_after_airflow_created_it_returns_the_created_one() -> None:
    seen: list[httpx.Request] = []
    existing = {"id": 4, "dag_id": "jobrec_daily", "from_date": "2026-11-01T00:00:00Z",
                "to_date": "2026-11-03T00:00:00Z", "completed_at": None}
    client = _client([httpx.ReadTimeout("timed out"),
                      (409, {"detail": "There is already a running backfill for dag jobrec_daily"}),
                      (200, {"backfills": [existing], "total_entries": 1})], seen)
    assert client.backfill("jobrec_daily", "2026-11-01", "2026-11-03", locked_retry_seconds=30) == existing
    assert [r.method for r in seen] == ["POST", "POST", "GET"]
