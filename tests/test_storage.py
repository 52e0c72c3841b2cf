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


def _write_version(target: Path, parts: list[list[int]], column: str = "a") -> None:
    import pyarrow.parquet as pq

    with atomic_directory(target) as tmp:
        for number, values in enumerate(parts):
            pq.write_table(pa.table({column: values}), tmp / f"part-{number:05d}.parquet")


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


def _stream_record_batches(target: Path, settings_home: Path):
    from pipeline.storage import record_batches

    for batch in record_batches(target, ["a"], batch_rows=1):
        yield batch.column(0).to_pylist()


def _stream_training_split(target: Path, settings_home: Path):
    from pipeline.config import Settings
    from pipeline.training import _split_files

    for train, holdout in _split_files("2026-01-01", Settings(home=settings_home), 0.0):
        yield train.column("impression_id").to_pylist() + holdout.column("impression_id").to_pylist()


@pytest.mark.parametrize("new_parts", [[[10], [20]], [[10]]], ids=["same-file-names", "fewer-files"])
@pytest.mark.parametrize("stream", [_stream_record_batches, _stream_training_split], ids=["record_batches", "training_split"])
def test_a_partition_streamed_file_by_file_gives_the_version_it_started_with_when_replaced_meanwhile(
    tmp_path, new_parts, stream
):
    # Re-scoring, publishing and the daily retrain stream a day file by file; a rerun of the step that wrote
    # the day may swap its folder meanwhile. The stream must go on with the version it started with, not
    # take the next file from the new version (nor fail because the old files were removed).
    target = Layout(tmp_path).features("training", "2026-01-01")
    _write_version(target, [[1], [2]], column="impression_id" if stream is _stream_training_split else "a")
    rows = stream(target, tmp_path)
    first = next(rows)
    _write_version(target, new_parts, column="impression_id" if stream is _stream_training_split else "a")
    assert first + [v for batch in rows for v in batch] == [1, 2]


def _swap_after_the_first_listing(monkeypatch, target: Path, new_parts: list[list[int]]) -> list:
    """Make ``storage.partition_files`` replace ``target`` with ``new_parts`` right after its first listing
    (before the caller uses the files); returns the listings made."""
    import pipeline.storage as storage

    listed, list_files = [], storage.partition_files

    def list_then_swap_once(path):
        files = list_files(path)
        listed.append(files)
        if len(listed) == 1:
            _write_version(target, new_parts)
        return files

    monkeypatch.setattr(storage, "partition_files", list_then_swap_once)
    return listed


def test_opening_a_partition_swapped_between_listing_and_opening_opens_the_new_version(tmp_path, monkeypatch):
    import pipeline.storage as storage

    target = tmp_path / "candidates" / "ds=2026-01-01"
    _write_version(target, [[1], [2]])
    listed = _swap_after_the_first_listing(monkeypatch, target, [[10]])  # part-00001 is gone before it is opened
    with storage.closing_all(storage.open_partition(target)) as files:
        assert [f.read().column("a").to_pylist() for f in files] == [[10]]
    assert len(listed) == 2


def test_a_pinned_partition_keeps_the_version_it_pinned_while_a_rerun_replaces_the_folder(tmp_path):
    # Re-scoring hands file paths to forked workers and Spark tasks; it pins the day's candidates and
    # profiles first, so a rerun of retrieval or of the features replacing them cannot mix two versions.
    from pipeline.storage import pinned_partition

    target, scratch = tmp_path / "candidates" / "ds=2026-01-01", tmp_path / ".scratch"
    _write_version(target, [[1], [2]])
    with pinned_partition(target, scratch) as pinned:
        _write_version(target, [[10]])
        assert read_partition(pinned).column("a").to_pylist() == [1, 2]
        assert "=" not in pinned.name  # Spark would read a "k=v" folder name as a partition column
    assert read_partition(target).column("a").to_pylist() == [10]
    assert list(scratch.iterdir()) == []  # the snapshot is gone, and the old version's files with it


def test_pinning_a_partition_swapped_while_it_is_linked_pins_the_new_version(tmp_path, monkeypatch):
    import pipeline.storage as storage

    target, scratch = tmp_path / "candidates" / "ds=2026-01-01", tmp_path / ".scratch"
    _write_version(target, [[1], [2]])
    _swap_after_the_first_listing(monkeypatch, target, [[10], [20], [30]])
    with storage.pinned_partition(target, scratch) as pinned:
        assert read_partition(pinned).column("a").to_pylist() == [10, 20, 30]


def test_pinning_a_missing_partition_names_the_path(tmp_path):
    from pipeline.storage import pinned_partition

    with pytest.raises(FileNotFoundError, match="ds=2026-01-01"):
        with pinned_partition(tmp_path / "candidates" / "ds=2026-01-01", tmp_path / ".scratch"):
            pass
    assert list((tmp_path / ".scratch").iterdir()) == []


def test_where_hard_links_are_impossible_a_partition_is_read_in_place_with_a_warning(tmp_path, monkeypatch, caplog):
    import errno
    import os

    import pipeline.storage as storage

    target, scratch = tmp_path / "candidates" / "ds=2026-01-01", tmp_path / ".scratch"
    _write_version(target, [[1]])

    def no_links(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    with storage.pinned_partition(target, scratch) as pinned:
        assert pinned == target
    assert "not pinned to one version" in caplog.text
    assert list(scratch.iterdir()) == []
