"""Member-block streaming: every row lands in its block, ordered input is read lazily (memory grows with the
block), unordered input is bucketed through bounded spill files, and the worker map keeps input order."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.rescoring import stream
from pipeline.rescoring.stream import in_key_order, member_ranges, ordered_map


def write(path, member_ids: np.ndarray, row_group_size: int, first: int = 0) -> None:
    """``member_ids`` with ``value`` = the row's position in the whole test input (from ``first``)."""
    values = np.arange(first, first + len(member_ids))
    table = pa.table({"member_id": pa.array(member_ids, pa.int64()), "value": pa.array(values)})
    pq.write_table(table, path, row_group_size=row_group_size)


def expected_blocks(member_ids: np.ndarray, bounds: np.ndarray) -> list[list[int]]:
    block = np.searchsorted(bounds, member_ids, side="right")
    order = np.argsort(member_ids, kind="stable")
    return [np.arange(len(member_ids))[order][block[order] == b].tolist() for b in range(len(bounds) + 1)]


def test_ordered_row_groups_stream_lazily_into_blocks(tmp_path, monkeypatch):
    members = np.repeat(np.arange(100, 300), 5)  # 1000 rows, members split across row groups
    write(tmp_path / "part-0.parquet", members[:600], 70)
    write(tmp_path / "part-1.parquet", members[600:], 70, 600)
    files = sorted(tmp_path.glob("*.parquet"))
    assert in_key_order(files)
    reads = []
    original = pq.ParquetFile.read_row_group
    monkeypatch.setattr(pq.ParquetFile, "read_row_group",
                        lambda self, i, **kw: reads.append(i) or original(self, i, **kw))
    bounds = np.array([120, 180, 181, 250], dtype=np.int64)
    blocks = member_ranges(files, ["value"], bounds)
    first = next(blocks)
    assert first["value"].to_pylist() == expected_blocks(members, bounds)[0]
    assert len(reads) <= 2, "the first block (100 rows) must not read the whole partition"
    rest = list(blocks)
    got = [first["value"].to_pylist(), *[t["value"].to_pylist() for t in rest]]
    assert got == expected_blocks(members, bounds)


def test_a_member_range_reads_only_its_row_groups_and_rows(tmp_path, monkeypatch):
    members = np.repeat(np.arange(100, 300), 5)
    write(tmp_path / "part-0.parquet", members[:600], 70)
    write(tmp_path / "part-1.parquet", members[600:], 70, 600)
    files = sorted(tmp_path.glob("*.parquet"))
    reads = []
    original = pq.ParquetFile.read_row_group
    monkeypatch.setattr(pq.ParquetFile, "read_row_group",
                        lambda self, i, **kw: reads.append(i) or original(self, i, **kw))
    inner = np.array([150, 151, 190], dtype=np.int64)
    got = [t["value"].to_pylist() for t in member_ranges(files, ["value"], inner, within=(140, 200))]
    whole = expected_blocks(members, np.array([140, *inner, 200], dtype=np.int64))
    assert got == whole[1:-1]  # the blocks between lo and hi, nothing below lo or at/after hi
    # rows 200..499 (members 140..199) lie in row groups 2..7 of part-0 (70 rows each); part-1 is not read
    assert reads == [2, 3, 4, 5, 6, 7]
    # open ends read from the first row group / to the last one
    assert [t["value"].to_pylist() for t in member_ranges(files, ["value"], inner, within=(None, 200))] == \
        [whole[0] + whole[1], *whole[2:-1]]
    assert [t["value"].to_pylist() for t in member_ranges(files, ["value"], np.array([250]), within=(240, None))] \
        == expected_blocks(members, np.array([240, 250]))[1:]


def test_a_member_range_of_files_out_of_order_is_refused(tmp_path):
    write(tmp_path / "part-0.parquet", np.array([5, 1, 3]), 2)
    with pytest.raises(ValueError, match="member order"):
        next(member_ranges([tmp_path / "part-0.parquet"], ["value"], np.array([2]), within=(0, 4)))


@pytest.mark.parametrize("rows_per_bucket", [1, 120, 10_000])
def test_unordered_files_are_bucketed_into_the_same_blocks(tmp_path, rows_per_bucket):
    rng = np.random.default_rng(3)
    members = rng.integers(0, 400, 900)
    write(tmp_path / "part-0.parquet", members[:500], 64)
    write(tmp_path / "part-1.parquet", members[500:], 64, 500)
    files = sorted(tmp_path.glob("*.parquet"))
    assert not in_key_order(files)
    bounds = np.array([10, 50, 51, 200, 390], dtype=np.int64)
    spill = tmp_path / "spill"
    spill.mkdir()
    got = [t["value"].to_pylist() for t in member_ranges(files, ["value"], bounds, spill_dir=spill,
                                                          rows_per_bucket=rows_per_bucket)]
    assert got == expected_blocks(members, bounds)  # stable: a member's rows keep their file order
    assert list(spill.iterdir()) == [], "spill files are removed"


def test_ordered_map_keeps_order_and_bounds_what_is_read_ahead():
    read = []

    def items():
        for i in range(20):
            read.append(i)
            yield i

    results = ordered_map(_square, items(), processes=2, in_flight=3)
    assert next(results) == 0
    assert len(read) <= 4
    assert list(results) == [i * i for i in range(1, 20)]


def _square(i: int) -> int:
    return i * i


def test_partition_without_parquet_files_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        stream.partition_files(tmp_path)
