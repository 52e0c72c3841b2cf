"""Atomic, idempotent partition writes and the storage layout."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.storage import Layout, atomic_directory, read_partition, shift_ds, write_partition


def test_write_partition_replaces_previous_contents(tmp_path):
    target = Layout(tmp_path).raw("members", "2026-01-01")
    write_partition(target, pa.table({"a": [1, 2]}))
    write_partition(target, pa.table({"a": [3]}))
    assert read_partition(target).column("a").to_pylist() == [3]
    assert [p.name for p in target.parent.iterdir()] == ["ds=2026-01-01"]


def test_failed_write_leaves_previous_partition_intact(tmp_path):
    target = tmp_path / "t" / "ds=2026-01-01"
    write_partition(target, pa.table({"a": [1]}))
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "half.parquet").write_text("partial")
            raise RuntimeError("writer died")
    assert read_partition(target).column("a").to_pylist() == [1]
    assert sorted(p.name for p in target.parent.iterdir()) == ["ds=2026-01-01"]


def test_bad_ds_is_rejected_with_the_expected_format():
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        Layout(Path("/x")).raw("members", "2026/01/01")


def test_shift_ds_crosses_month_boundaries():
    assert shift_ds("2026-02-28", 1) == "2026-03-01"
    assert shift_ds("2026-03-01", -1) == "2026-02-28"


def test_missing_partition_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="ds=2026-01-01"):
        read_partition(Layout(tmp_path).raw("jobs", "2026-01-01"))
