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


def _write_version(target: Path, parts: list[list[int]]) -> None:
    import pyarrow.parquet as pq

    with atomic_directory(target) as tmp:
        for number, values in enumerate(parts):
            pq.write_table(pa.table({"a": values}), tmp / f"part-{number:05d}.parquet")


@pytest.mark.parametrize("new_parts", [[[10], [20]], [[10]]], ids=["same-file-names", "fewer-files"])
def test_a_partition_replaced_while_it_is_read_is_read_whole_from_one_version(tmp_path, monkeypatch, new_parts):
    # The weekly retrain reads a window of days while a rerun of one day's features may swap that day's folder;
    # the reader must get the old version's rows or the new one's, never the first file of one and the rest of
    # the other (nor fail because the old version's files went away).
    import pyarrow.parquet as pq

    import pipeline.storage as storage

    target = tmp_path / "features" / "training" / "ds=2026-01-01"
    _write_version(target, [[1], [2]])
    reads, read_table = [], pq.read_table

    def read_then_swap_once(path, **kwargs):
        table = read_table(path, **kwargs)
        reads.append(Path(path).name)
        if len(reads) == 1:  # a writer replaces the folder right after the reader's first file
            _write_version(target, new_parts)
        return table

    monkeypatch.setattr(storage.pq, "read_table", read_then_swap_once)
    assert read_partition(target).column("a").to_pylist() == [v for part in new_parts for v in part]
    assert len(reads) > len(new_parts)  # the first version's read was thrown away
