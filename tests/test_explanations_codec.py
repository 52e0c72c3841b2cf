"""The packed list's optional parts block (issue 17, item 2): round trips with and without parts, and values
written by the format before parts (no PARTS flag) still decode."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from pipeline.rescoring.block import PART_COLUMNS
from serving_store import codec


def test_part_names_are_the_recommendations_part_columns():
    assert codec.PART_NAMES == PART_COLUMNS


@pytest.mark.parametrize("big_ids", [False, True])
def test_round_trip_with_and_without_parts(big_ids):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 2**40 if big_ids else 2**31, size=(3, 7))
    scores = rng.normal(size=(3, 7))
    parts = rng.normal(size=(3, 7, len(codec.PART_NAMES)))
    width = codec.id_width(ids)
    plain = codec.encode_matrix(ids, scores, width)
    rich = codec.encode_matrix(ids, scores, width, parts)
    assert plain.shape[1] == codec.value_size(7, width)
    assert rich.shape[1] == codec.value_size(7, width, len(codec.PART_NAMES)) == plain.shape[1] + 4 + 7 * 11 * 4
    for i in range(3):
        for row in (plain[i], rich[i]):
            got_ids, got_scores = codec.decode(row.tobytes())
            assert got_ids.tolist() == ids[i].tolist()
            np.testing.assert_array_equal(got_scores, scores[i].astype(np.float32))
            lists = codec.decode_lists(row.tobytes(), 4)
            assert lists == (ids[i, :4].tolist(), scores[i, :4].astype(np.float32).tolist())
        assert codec.decode_parts(plain[i].tobytes()) is None
        assert codec.decode_parts_lists(plain[i].tobytes()) is None
        np.testing.assert_array_equal(codec.decode_parts(rich[i].tobytes()), parts[i].astype(np.float32))
        named = codec.decode_parts_lists(rich[i].tobytes(), limit=2)
        assert len(named) == 2 and list(named[0]) == list(codec.PART_NAMES)
        assert named[1]["part_job"] == float(np.float32(parts[i, 1, 2]))


def test_a_value_of_the_format_before_parts_decodes_unchanged():
    # Bytes exactly as the pre-parts codec wrote them: header, uint32 IDs, float32 scores.
    value = struct.pack("<2sBBI", b"JR", 1, 1, 2) + struct.pack("<II", 5, 9) + struct.pack("<ff", 0.5, -1.0)
    assert codec.decode_lists(value) == ([5, 9], [0.5, -1.0])
    assert codec.decode_parts_lists(value) is None


def test_truncated_or_inconsistent_parts_are_codec_errors():
    rich = codec.encode([1, 2], [0.1, 0.2], parts=np.ones((2, 3)))
    for bad in (rich[:-1], rich[: codec.value_size(2, 4) + 2], rich + b"\\0"):
        with pytest.raises(codec.CodecError):
            codec.decode_lists(bad)
    with pytest.raises(ValueError):
        codec.encode_matrix(np.ones((1, 2), int), np.ones((1, 2)), 4, np.ones((1, 3, 2)))
