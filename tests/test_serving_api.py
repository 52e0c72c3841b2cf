"""The HTTP lookup service through FastAPI's TestClient, against a real Redis server."""

from __future__ import annotations

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from serving_store.api import create_app
from serving_store.connection import connect, ensure_embedded, stop_embedded
from serving_store.keys import Keys
from serving_store.publisher import RecommendationLists, publish_lists


def publish_small(redis_url: str) -> RecommendationLists:
    rng = np.random.default_rng(0)
    n, k = 50, 10
    lists = RecommendationLists.from_columns(
        np.repeat(np.arange(n, dtype=np.int64) * 2, k),  # even member IDs only
        np.tile(np.arange(1, k + 1), n),
        rng.integers(0, 10_000, n * k),
        np.tile(np.linspace(1.0, 0.1, k), n),
    )
    publish_lists(connect(redis_url), lists, ds="2026-01-05", model_version="full-7")
    return lists


def served_id(redis_url: str) -> str:
    return connect(redis_url).get(Keys().current).decode()


@pytest.fixture
def api(redis_url):
    with TestClient(create_app(redis_url)) as client:
        yield client


def test_recommendations_endpoint_returns_ranked_jobs_with_version_and_ds(api, redis_url):
    lists = publish_small(redis_url)
    response = api.get("/v1/members/4/recommendations", params={"limit": 3})
    assert response.status_code == 200
    body = response.json()
    assert (body["member_id"], body["ds"], body["model_version"], body["source"]) == (
        4,
        "2026-01-05",
        "full-7",
        "member",
    )
    assert body["version"] == served_id(redis_url) and body["version"].startswith("20260105-")
    assert [r["rank"] for r in body["recommendations"]] == [1, 2, 3]
    assert [r["job_id"] for r in body["recommendations"]] == lists.items(2)[0][:3].tolist()
    assert body["recommendations"][0]["score"] == pytest.approx(1.0)


def test_unknown_member_gets_the_fallback_list(api, redis_url):
    publish_small(redis_url)
    body = api.get("/v1/members/7/recommendations").json()
    assert body["source"] == "fallback" and len(body["recommendations"]) > 0


@pytest.mark.parametrize("bad_id", ["abc", "-3", "1.5", str(2**63)])
def test_invalid_member_id_is_a_400_with_a_message(api, redis_url, bad_id):
    publish_small(redis_url)
    response = api.get(f"/v1/members/{bad_id}/recommendations")
    assert response.status_code == 400
    assert "member_id must" in response.json()["detail"]


@pytest.mark.parametrize("limit", ["0", "-1", "x", "100000"])
def test_invalid_limit_is_a_422(api, redis_url, limit):
    publish_small(redis_url)
    assert api.get("/v1/members/4/recommendations", params={"limit": limit}).status_code == 422


def test_nothing_published_is_a_503_saying_what_to_run(api):
    response = api.get("/v1/members/4/recommendations")
    assert response.status_code == 503 and "jobrec publish" in response.json()["detail"]


def test_healthz_names_the_served_version(api, redis_url):
    assert api.get("/healthz").json() == {"status": "ok", "served": None}
    publish_small(redis_url)
    served = api.get("/healthz").json()["served"]
    assert (served["version"], served["ds"], served["status"]) == (
        served_id(redis_url),
        "2026-01-05",
        "complete",
    )


def test_dropped_redis_connections_are_retried_not_500(api, redis_url):
    publish_small(redis_url)
    assert api.get("/v1/members/4/recommendations").status_code == 200
    redis.Redis.from_url(redis_url).client_kill_filter(_type="normal", skipme=True)
    assert api.get("/v1/members/4/recommendations").status_code == 200


def test_redis_going_away_is_a_503_not_a_500(tmp_path):
    url = ensure_embedded(tmp_path / "redis")
    publish_small(url)
    try:
        with TestClient(create_app(url, retries=0)) as client:
            assert client.get("/v1/members/4/recommendations").status_code == 200
            stop_embedded(tmp_path / "redis", save=False)
            for path in ("/v1/members/4/recommendations", "/healthz"):
                response = client.get(path)
                assert response.status_code == 503 and "unavailable" in response.json()["detail"]
    finally:
        stop_embedded(tmp_path / "redis", save=False)


def test_a_corrupt_stored_list_is_a_503_not_a_500(api, redis_url):
    publish_small(redis_url)
    redis.Redis.from_url(redis_url).set(Keys().member(served_id(redis_url), 4), b"garbage")
    response = api.get("/v1/members/4/recommendations")
    assert response.status_code == 503 and "unreadable" in response.json()["detail"]
