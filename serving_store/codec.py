"""The packed value of one member's list: one Redis string read with a single GET.

Layout (little-endian)::

    header  8 bytes   magic b"JR", format 1, flags, count uint32
    job_ids count × uint32 (flag ID32 set: every job ID of the publish fits) or count × int64
    scores  count × float32

Columnar (IDs then scores) so a whole batch of members with the same count is one NumPy byte matrix: the
publisher encodes a batch with :func:`encode_matrix` without a Python loop over members. 100 jobs take
808 bytes with 32-bit IDs (1208 with 64-bit); a sorted set of the same list measured in the benchmark is
several times larger. zlib is not used: ranked job IDs and float scores are close to incompressible.

Lookups decode with :func:`decode_lists` (the standard library's ``array``, no NumPy import: ``jobrec recs``
and the HTTP service do not pay NumPy's import time nor per-element conversions); the publisher encodes with
NumPy.
"""

from __future__ import annotations

import struct
import sys
from array import array
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported by the functions that use it: lookups decode without it
    import numpy as np

MAGIC = b"JR"
FORMAT = 1
FLAG_ID32 = 1
HEADER = struct.Struct("<2sBBI")
HEADER_SIZE = HEADER.size  # 8


class CodecError(ValueError):
    """A stored value is not a packed list of this format."""


def id_width(job_ids: np.ndarray) -> int:
    """4 when every job ID fits in uint32 (the compact form), else 8."""
    import numpy as np

    if job_ids.size == 0 or (int(job_ids.min()) >= 0 and int(job_ids.max()) <= np.iinfo(np.uint32).max):
        return 4
    return 8


def value_size(count: int, width: int) -> int:
    """Bytes of a packed list of ``count`` jobs with ``width``-byte IDs."""
    return HEADER_SIZE + count * (width + 4)


def encode_matrix(job_ids: np.ndarray, scores: np.ndarray, width: int) -> np.ndarray:
    """Encode ``b`` lists of equal length ``c`` at once.

    Args:
        job_ids: (b, c) integer array, rank order.
        scores: (b, c) float array, same order.
        width: 4 or 8 (see :func:`id_width`), the same for the whole publish.

    Returns:
        (b, value_size(c, width)) uint8 matrix; row i is member i's packed value.
    """
    import numpy as np

    job_ids = np.asarray(job_ids)
    b, c = job_ids.shape
    out = np.empty((b, value_size(c, width)), dtype=np.uint8)
    header = np.frombuffer(HEADER.pack(MAGIC, FORMAT, FLAG_ID32 if width == 4 else 0, c), dtype=np.uint8)
    out[:, :HEADER_SIZE] = header
    id_dtype = "<u4" if width == 4 else "<i8"
    out[:, HEADER_SIZE : HEADER_SIZE + c * width] = np.ascontiguousarray(job_ids, dtype=id_dtype).view(
        np.uint8
    )
    out[:, HEADER_SIZE + c * width :] = np.ascontiguousarray(scores, dtype="<f4").view(np.uint8)
    return out


def encode(job_ids: np.ndarray, scores: np.ndarray, width: int | None = None) -> bytes:
    """Encode one list (rank order) to bytes."""
    import numpy as np

    job_ids = np.asarray(job_ids, dtype=np.int64).reshape(1, -1)
    width = id_width(job_ids) if width is None else width
    return encode_matrix(job_ids, np.asarray(scores).reshape(1, -1), width).tobytes()


def _layout(value: bytes) -> tuple[int, int]:
    """(count, id width) of a packed list, checked against its length; else :class:`CodecError`."""
    if len(value) < HEADER_SIZE:
        raise CodecError(f"packed list too short: {len(value)} bytes")
    magic, fmt, flags, count = HEADER.unpack_from(value)
    if magic != MAGIC or fmt != FORMAT:
        raise CodecError(f"not a packed list of format {FORMAT}: magic={magic!r} format={fmt}")
    width = 4 if flags & FLAG_ID32 else 8
    if len(value) != value_size(count, width):
        raise CodecError(
            f"packed list of {count} jobs should be {value_size(count, width)} bytes; got {len(value)}"
        )
    return count, width


def decode(value: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Decode a packed list into (job_ids int64, scores float32), rank order. Raises :class:`CodecError`."""
    import numpy as np

    count, width = _layout(value)
    ids = np.frombuffer(value, dtype="<u4" if width == 4 else "<i8", count=count, offset=HEADER_SIZE)
    scores = np.frombuffer(value, dtype="<f4", count=count, offset=HEADER_SIZE + count * width)
    return ids.astype(np.int64), scores


_ID_TYPECODE = {4: "I", 8: "q"}  # uint32 / int64 in the standard library's array
_LITTLE = sys.byteorder == "little"
assert array("I").itemsize == 4 and array("q").itemsize == 8 and array("f").itemsize == 4


def decode_lists(value: bytes, limit: int | None = None) -> tuple[list[int], list[float]]:
    """:func:`decode` without NumPy: (job IDs, scores) as Python lists, rank order, at most ``limit`` entries.

    The scores are the stored float32 values widened to float (the same floats as ``decode``'s, converted
    with ``float()``). Raises :class:`CodecError`.
    """
    count, width = _layout(value)
    n = count if limit is None else max(0, min(limit, count))
    ids = array(_ID_TYPECODE[width])
    ids.frombytes(memoryview(value)[HEADER_SIZE : HEADER_SIZE + n * width])
    scores = array("f")
    start = HEADER_SIZE + count * width
    scores.frombytes(memoryview(value)[start : start + n * 4])
    if not _LITTLE:
        ids.byteswap()
        scores.byteswap()
    return ids.tolist(), scores.tolist()
