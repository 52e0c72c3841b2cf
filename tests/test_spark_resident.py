"""What Spark's Python workers keep between jobs of one fit (``glmix_core.spark_engine.blocks.Resident``)."""

from __future__ import annotations

import numpy as np

from glmix_core.spark_engine import blocks
from glmix_core.spark_engine.blocks import Resident, new_token


def test_a_resident_value_is_unpickled_once_per_worker_and_partition_within_a_fit() -> None:
    token = new_token()
    cached = Resident(token, "per_member", {"values": np.arange(3.0)})
    first = cached.open(0)
    first["values"][0] = 7.0  # state a task left behind (e.g. dense blocks built lazily) is kept
    assert cached.open(0) is first
    assert cached.open(1) is not first  # another partition is its own value
    assert Resident(token, "per_job", {"values": np.zeros(1)}).open(0) is not first


def test_another_fits_partition_drops_the_previous_fits_values() -> None:
    old = Resident(new_token(), "per_member", {"x": 1})
    old.open(0)
    Resident(new_token(), "per_member", {"x": 2}).open(0)
    assert all(key[0] != old.token for key in blocks._RESIDENT)
    assert old.open(0) == {"x": 1}  # still readable: unpickled again from the cached bytes


def test_a_worker_keeps_values_within_its_byte_budget_dropping_the_least_recently_opened(monkeypatch) -> None:
    token = new_token()
    parts = [Resident(token, "per_member", {"values": np.zeros(20_000)}) for _ in range(3)]  # ~160 kB each
    size = len(parts[0].blob)
    monkeypatch.setenv(blocks.CACHE_ENV, str(2.5 * size / (1 << 20)))  # room for two
    first = parts[0].open(0)
    parts[1].open(1)
    assert parts[0].open(0) is first  # 0 is now the most recently opened
    parts[2].open(2)  # over budget: 1, the least recently opened, goes
    assert [key[2] for key in blocks._RESIDENT] == [0, 2]
    assert parts[0].open(0) is first
    monkeypatch.setenv(blocks.CACHE_ENV, "0")
    Resident(new_token(), "per_member", {"x": 1}).open(0)
    assert not blocks._RESIDENT  # a zero budget keeps nothing; the value is still served
    assert blocks.cache_budget_bytes() == 0


def test_the_worker_cache_budget_defaults_when_unset_or_unreadable(monkeypatch) -> None:
    monkeypatch.delenv(blocks.CACHE_ENV, raising=False)
    assert blocks.cache_budget_bytes() == blocks.DEFAULT_CACHE_MB << 20
    monkeypatch.setenv(blocks.CACHE_ENV, "lots")
    assert blocks.cache_budget_bytes() == blocks.DEFAULT_CACHE_MB << 20
