"""Published explanations (issue 17, item 2): with ``JOBREC_PUBLISH_EXPLANATIONS`` (or ``explanations=True``)
the served lists carry each score's parts; the API (``explain=true``) and ``jobrec recs --explain`` show them;
without, explain=true answers the lists and says explanations were not published. Also measures the bytes
per member stored both ways (printed with ``-s``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient
from rescoring_world import DAY, make_world

from pipeline.publishing import publish
from pipeline.rescoring.block import PART_COLUMNS
from pipeline.scoring import rescore
from pipeline.storage import read_partition
from serving_store.api import create_app
from serving_store.codec import PART_NAMES
from serving_store.connection import connect
from serving_store.keys import Keys
from serving_store.lookup import Lookup


def stored_bytes(url: str, version: str, member_ids) -> float:
    """Mean ``MEMORY USAGE`` (value, key and Redis overhead) of the members' keys of ``version``."""
    client = redis.Redis.from_url(url)
    keys = Keys()
    sizes = [client.memory_usage(keys.member(version, int(m)), samples=0) for m in member_ids]
    return float(np.mean(sizes))


@pytest.fixture
def world_day(settings, redis_url):
    make_world(settings, seed=9)
    rescore(DAY, settings, top_n=10, max_per_company=None, processes=1)
    return dataclasses.replace(settings, redis_url=redis_url)


def test_published_parts_are_served_and_sum_to_the_scores(world_day, redis_url, capsys):
    settings = world_day
    recs = read_partition(settings.layout.recommendations(DAY))
    members = np.unique(recs["member_id"].to_numpy())
    plain = publish(DAY, settings)
    assert plain["explanations"] is False
    plain_version = plain["version"]
    rich = publish(DAY, dataclasses.replace(settings, publish_explanations=True), force=True)
    assert rich["explanations"] is True
    lookup = Lookup(connect(redis_url))
    member = int(members[0])
    got = lookup.get(member, explain=True)
    want = recs.filter(recs["member_id"].to_numpy() == member)
    assert got.job_ids == want["job_id"].to_pylist()
    for name in PART_NAMES:
        np.testing.assert_allclose([p[name] for p in got.parts], want[name].to_numpy(), rtol=1e-6, atol=1e-6)
    totals = [p["part_global"] + p["part_member"] + p["part_job"] for p in got.parts]
    np.testing.assert_allclose(totals, got.scores, rtol=0, atol=1e-5)  # float32 parts
    assert lookup.get(member).parts is None  # only asked for
    old = lookup.get(member, version=plain_version, explain=True)
    assert old.parts is None and old.as_dict()["explanations"]["published"] is False

    sample = members[:20]
    without = stored_bytes(redis_url, plain_version, sample)
    with_parts = stored_bytes(redis_url, rich["version"], sample)
    per_job = 4 + 4 * len(PART_NAMES)
    print(f"\nbytes per member in Redis (MEMORY USAGE, top 10): without explanations {without:.0f}, "
          f"with {with_parts:.0f}; bytes_written without {plain['bytes_written'] / len(members):.0f}, "
          f"with {rich['bytes_written'] / len(members):.0f} per member; value: +{per_job} bytes per job")
    assert with_parts > without


def test_api_and_cli_show_the_parts_or_say_they_were_not_published(world_day, redis_url, monkeypatch, capsys):
    from pipeline.cli import main

    settings = world_day
    recs = read_partition(settings.layout.recommendations(DAY))
    member = int(recs["member_id"][0].as_py())
    publish(DAY, settings, explanations=False)
    with TestClient(create_app(redis_url)) as api:
        body = api.get(f"/v1/members/{member}/recommendations", params={"explain": "true", "limit": 3}).json()
        assert body["explanations"]["published"] is False and "not published" in body["explanations"]["note"]
        assert len(body["recommendations"]) == 3 and "parts" not in body["recommendations"][0]
        plain = api.get(f"/v1/members/{member}/recommendations", params={"limit": 3}).json()
        assert "explanations" not in plain  # the answer without explain is unchanged
        publish(DAY, settings, explanations=True, force=True)
        body = api.get(f"/v1/members/{member}/recommendations", params={"explain": "true", "limit": 3}).json()
        assert body["explanations"]["published"] is True
        first = body["recommendations"][0]
        assert set(first["parts"]) == set(PART_COLUMNS)
        assert first["parts"]["part_global"] + first["parts"]["part_member"] + first["parts"]["part_job"] == (
            pytest.approx(first["score"], abs=1e-5))
        fallback = api.get("/v1/members/999999999/recommendations", params={"explain": "true"}).json()
        assert fallback["source"] == "fallback" and fallback["explanations"]["published"] is False

    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("JOBREC_HOME", str(settings.home))
    capsys.readouterr()
    assert main(["recs", str(member), "--limit", "2", "--explain"]) == 0
    out = capsys.readouterr().out
    assert "global" in out and "member" in out and "cosines:" in out and "part_global" in out
