"""The packed value of one member's list: one Redis string read with a single GET.

Layout (little-endian)::

    header  8 bytes   magic b"JR", format 1, flags, count uint32
    job_ids count × uint32 (flag ID32 set: every job ID of the publish fits) or count × int64
    scores  count × float32
    parts   only with flag PARTS: k uint32, then count × k float32 (rank-major: rank 1's k parts first),
            part i named PART_NAMES[i] (the score's "why this job" parts; values written without the flag
            decode as before, with no parts)

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
FLAG_PARTS = 2
HEADER = struct.Struct("<2sBBI")
HEADER_SIZE = HEADER.size  # 8
PARTS_HEADER = struct.Struct("<I")
# The published parts of a score, in stored order (the first columns of the recommendations' parts,
# pipeline.rescoring.block.PART_COLUMNS): score = part_global + part_member + part_job.
PART_NAMES = (
    "part_global", "part_member", "part_job", "part_main", "part_cross",
    "cos_title", "cos_skills", "cos_industry", "cos_function", "cos_seniority", "cos_region",
)


class CodecError(ValueError):
    """A stored value is not a packed list of this format."""


def id_width(job_ids: np.ndarray) -> int:
    """4 when every job ID fits in uint32 (the compact form), else 8."""
    import numpy as np

    if job_ids.size == 0 or (int(job_ids.min()) >= 0 and int(job_ids.max()) <= np.iinfo(np.uint32).max):
        return 4
    return 8


def value_size(count: int, width: int, parts: int = 0) -> int:
    """Bytes of a packed list of ``count`` jobs with ``width``-byte IDs and ``parts`` parts per job (0: no
    parts block)."""
    size = HEADER_SIZE + count * (width + 4)
    return size + PARTS_HEADER.size + count * parts * 4 if parts else size


def encode_matrix(
    job_ids: np.ndarray, scores: np.ndarray, width: int, parts: np.ndarray | None = None
) -> np.ndarray:
    """Encode ``b`` lists of equal length ``c`` at once.

    Args:
        job_ids: (b, c) integer array, rank order.
        scores: (b, c) float array, same order.
        width: 4 or 8 (see :func:`id_width`), the same for the whole publish.
        parts: optional (b, c, k) float array, the k ≥ 1 parts (:data:`PART_NAMES` order) of each score;
            given, the values carry flag PARTS and the parts block.

    Returns:
        (b, value_size(c, width, k)) uint8 matrix; row i is member i's packed value.
    """
    import numpy as np

    job_ids = np.asarray(job_ids)
    b, c = job_ids.shape
    k = 0 if parts is None else int(np.shape(parts)[2])
    if parts is not None and (k < 1 or np.shape(parts)[:2] != (b, c)):
        raise ValueError(f"parts must be (lists, jobs, k >= 1) = ({b}, {c}, k); got {np.shape(parts)}")
    out = np.empty((b, value_size(c, width, k)), dtype=np.uint8)
    flags = (FLAG_ID32 if width == 4 else 0) | (FLAG_PARTS if k else 0)
    out[:, :HEADER_SIZE] = np.frombuffer(HEADER.pack(MAGIC, FORMAT, flags, c), dtype=np.uint8)
    id_dtype = "<u4" if width == 4 else "<i8"
    end = HEADER_SIZE + c * width
    out[:, HEADER_SIZE:end] = np.ascontiguousarray(job_ids, dtype=id_dtype).view(np.uint8)
    out[:, end : end + 4 * c] = np.ascontiguousarray(scores, dtype="<f4").view(np.uint8)
    if k:
        end += 4 * c
        out[:, end : end + PARTS_HEADER.size] = np.frombuffer(PARTS_HEADER.pack(k), dtype=np.uint8)
        out[:, end + PARTS_HEADER.size :] = (
            np.ascontiguousarray(parts, dtype="<f4").reshape(b, c * k).view(np.uint8)
        )
    return out


def encode(
    job_ids: np.ndarray, scores: np.ndarray, width: int | None = None, parts: np.ndarray | None = None
) -> bytes:
    """Encode one list (rank order) to bytes; ``parts``: optional (count, k) parts per job."""
    import numpy as np

    job_ids = np.asarray(job_ids, dtype=np.int64).reshape(1, -1)
    width = id_width(job_ids) if width is None else width
    if parts is not None:
        parts = np.asarray(parts).reshape(1, job_ids.shape[1], -1)
    return encode_matrix(job_ids, np.asarray(scores).reshape(1, -1), width, parts).tobytes()


def _layout(value: bytes) -> tuple[int, int, int]:
    """(count, id width, parts per job) of a packed list, checked against its length; else
    :class:`CodecError`."""
    if len(value) < HEADER_SIZE:
        raise CodecError(f"packed list too short: {len(value)} bytes")
    magic, fmt, flags, count = HEADER.unpack_from(value)
    if magic != MAGIC or fmt != FORMAT:
        raise CodecError(f"not a packed list of format {FORMAT}: magic={magic!r} format={fmt}")
    width = 4 if flags & FLAG_ID32 else 8
    k = 0
    if flags & FLAG_PARTS:
        at = value_size(count, width)
        if len(value) < at + PARTS_HEADER.size:
            raise CodecError(f"packed list of {count} jobs with parts is too short: {len(value)} bytes")
        (k,) = PARTS_HEADER.unpack_from(value, at)
        if k < 1:
            raise CodecError("packed list has the PARTS flag but 0 parts")
    if len(value) != value_size(count, width, k):
        raise CodecError(
            f"packed list of {count} jobs should be {value_size(count, width, k)} bytes; got {len(value)}"
        )
    return count, width, k


def decode(value: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Decode a packed list into (job_ids int64, scores float32), rank order (any parts are ignored: see
    :func:`decode_parts`). Raises :class:`CodecError`."""
    import numpy as np

    count, width, _ = _layout(value)
    ids = np.frombuffer(value, dtype="<u4" if width == 4 else "<i8", count=count, offset=HEADER_SIZE)
    scores = np.frombuffer(value, dtype="<f4", count=count, offset=HEADER_SIZE + count * width)
    return ids.astype(np.int64), scores


def decode_parts(value: bytes) -> np.ndarray | None:
    """The (count, k) float32 parts of a packed list (column i named ``PART_NAMES[i]``), or None when the
    value was written without parts. Raises :class:`CodecError`."""
    import numpy as np

    count, width, k = _layout(value)
    if not k:
        return None
    at = value_size(count, width) + PARTS_HEADER.size
    return np.frombuffer(value, dtype="<f4", count=count * k, offset=at).reshape(count, k)


_ID_TYPECODE = {4: "I", 8: "q"}  # uint32 / int64 in the standard library's array
_LITTLE = sys.byteorder == "little"
assert array("I").itemsize == 4 and array("q").itemsize == 8 and array("f").itemsize == 4


def decode_lists(value: bytes, limit: int | None = None) -> tuple[list[int], list[float]]:
    """:func:`decode` without NumPy: (job IDs, scores) as Python lists, rank order, at most ``limit`` entries.

    The scores are the stored float32 values widened to float (the same floats as ``decode``'s, converted
    with ``float()``). Raises :class:`CodecError`.
    """
    count, width, _ = _layout(value)
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


def decode_parts_lists(value: bytes, limit: int | None = None) -> list[dict[str, float]] | None:
    """:func:`decode_parts` without NumPy: per job (rank order, at most ``limit``), its parts by name; None
    when the value was written without parts. Raises :class:`CodecError`."""
    count, width, k = _layout(value)
    if not k:
        return None
    n = count if limit is None else max(0, min(limit, count))
    start = value_size(count, width) + PARTS_HEADER.size
    flat = array("f")
    flat.frombytes(memoryview(value)[start : start + n * k * 4])
    if not _LITTLE:
        flat.byteswap()
    values = flat.tolist()
    names = [PART_NAMES[i] if i < len(PART_NAMES) else f"part_{i}" for i in range(k)]
    return [dict(zip(names, values[i * k : (i + 1) * k], strict=True)) for i in range(n)]
