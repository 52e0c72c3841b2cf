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
