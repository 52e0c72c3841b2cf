"""Feature name ↔ column index maps that stay small and fast at tens of millions of names.

``FeatureIndexMap`` is immutable. It holds

- ``names``: an Arrow string array in index order (name ``i`` is column ``i``): ~1 byte per character plus
  4–8 bytes of offsets per name, instead of the ~60 bytes of a Python ``str`` object;
- a hashed lookup index, built on the first ``index_of``: ``hashes``, the sorted 64-bit hashes of the names
  (uint64), and ``order``, the index of the name behind each sorted hash (uint32 below 2³² names), so
  12 bytes per name. ``index_of`` hashes the queries, binary-searches the sorted hashes and verifies every
  hit by comparing the actual strings, so a 64-bit collision can never return a wrong index (colliding names
  are tried in turn).

Total for 20M names of ~25 characters: ~0.8 GB, against ~2.5–3 GB for a ``{name: index}`` dict (see
``bench/bench_index_map.py``). ``save`` writes an uncompressed Arrow IPC file holding the names and the
index; ``load`` memory-maps it, so a loaded map costs page cache, not heap, until it is used.

The hash (``hash_strings``) is computed by NumPy over the Arrow buffers, 8 bytes of each name per step:
a loop over word position (so bounded by the longest name, ~4 steps for pipeline names), never over names.
Names are processed in chunks, so hashing needs only a few small temporary arrays. The installed pyarrow
has no public hashing kernel; ``pc.index_in(queries, value_set=names)`` was measured as the alternative, but
it rebuilds a hash table of all names on every call (see the benchmark), which is what this index avoids.

Nothing here creates a Python object per name, except the explicit conveniences meant for small maps
(iteration, ``tolist``, ``==`` against a list, indexing by an int).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HASH_NAME = "glmix-words64-v1"
FILE_FORMAT = "glmix-index-map/1"
_CHUNK = 1 << 20  # names hashed per chunk (bounds the temporary memory of hashing)
_P1 = np.uint64(0x9E3779B185EBCA87)
_P2 = np.uint64(0xC2B2AE3D27D4EB4F)
_SEED = np.uint64(0x27D4EB2F165667C5)
_TAIL_MASKS = np.array([(1 << (8 * r)) - 1 for r in range(9)], dtype=np.uint64)  # keep the low r bytes


class IndexMapError(ValueError):
    """Names given to a FeatureIndexMap are not valid (nulls, duplicates) or a file is not an index map."""


def _as_string_array(names: pa.Array | pa.ChunkedArray | Iterable[str]) -> pa.Array:
    """``names`` as one contiguous Arrow string or large_string array (no Python objects when given Arrow)."""
    if isinstance(names, FeatureIndexMap):
        return names.names
    if isinstance(names, pa.ChunkedArray):
        names = names.combine_chunks() if names.num_chunks != 1 else names.chunk(0)
    elif not isinstance(names, pa.Array):
        names = pa.array(names if isinstance(names, list | tuple | np.ndarray) else list(names), pa.string())
    if pa.types.is_dictionary(names.type):
        names = names.dictionary.take(names.indices)
    if not (pa.types.is_string(names.type) or pa.types.is_large_string(names.type)):
        if len(names) == 0 or pa.types.is_null(names.type):
            return pa.array([], pa.string()) if len(names) == 0 else names.cast(pa.string())
        names = names.cast(pa.string())
    return names


def _buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets int64 of length n + 1, data uint8) of a string/large_string array, zero-copy where possible."""
    bufs = arr.buffers()
    off_type = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    width = np.dtype(off_type).itemsize
    offsets = np.frombuffer(bufs[1], dtype=off_type, count=len(arr) + 1, offset=arr.offset * width) \
        if bufs[1] is not None else np.zeros(len(arr) + 1, off_type)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None and bufs[2].size else np.zeros(0, np.uint8)
    return offsets, data


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (full avalanche), in place."""
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h


def hash_strings(names: pa.Array | pa.ChunkedArray | Iterable[str]) -> np.ndarray:
    """Stable 64-bit hash (uint64) of each string, computed with NumPy over the Arrow buffers.

    The UTF-8 bytes are read as little-endian 64-bit words (the last one zero-padded); each word is folded in
    with a multiply-rotate step (xxHash-style) seeded with the length, then the splitmix64 finaliser mixes
    the result. Identical on every platform and run. Nulls hash like the empty string (callers reject them).
    """
    arr = _as_string_array(names)
    n = len(arr)
    out = np.empty(n, dtype=np.uint64)
    if n == 0:
        return out
    offsets, data = _buffers(arr)
    for lo in range(0, n, _CHUNK):
        hi = min(lo + _CHUNK, n)
        base = int(offsets[lo])
        nbytes = int(offsets[hi]) - base
        buf = np.zeros(nbytes + 8, dtype=np.uint8)
        buf[:nbytes] = data[base:base + nbytes]
        # a uint64 view starting at every byte: words[i] = the 8 bytes buf[i:i+8] (unaligned reads)
        words = np.ndarray((nbytes + 1,), dtype="<u8", buffer=buf, strides=(1,))
        starts = (offsets[lo:hi] - base).astype(np.int64)
        lens = (offsets[lo + 1:hi + 1] - offsets[lo:hi]).astype(np.int64)
        nwords = (lens + 7) >> 3
        # names ordered by word count, longest first: at step k the names still hashing are a prefix, and the
        # ones whose last (maybe partial) word is word k are one contiguous slice
        by_len = np.argsort(-nwords.astype(np.int16 if nwords.max() < 2**15 else np.int64), kind="stable")
        starts, lens = starts[by_len], lens[by_len]
        still = np.bincount(nwords, minlength=int(nwords.max()) + 2)[::-1].cumsum()[::-1]  # #(nwords >= k)
        h = _SEED ^ (lens.astype(np.uint64) * _P1)
        for k in range(int(nwords.max())):
            active, last = int(still[k + 1]), int(still[k + 2])
            w = words[starts[:active] + 8 * k]
            w[last:] &= _TAIL_MASKS[lens[last:active] - 8 * k]  # zero the bytes past the end of the name
            acc = h[:active] + w * _P2
            acc = (acc << np.uint64(31)) | (acc >> np.uint64(33))
            h[:active] = acc * _P1
        out[lo + by_len] = _mix(h)
    return out


class FeatureIndexMap:
    """Immutable feature name ↔ index map (index ``i`` = position ``i`` of ``names``).

    Contract: names are distinct, non-null strings; ``index_of`` returns int64 positions with -1 for absent
    names (and nulls); ``name_of`` is the inverse; ``extend`` appends only names not present, so every
    existing name keeps its index (the stable-across-days contract of the pipeline's vocabulary).

    For compatibility with code written against ``list[str]`` it also supports ``len``, ``m[i]`` (a str),
    iteration (str), ``in``, ``==`` with a list/array of names, and ``pa.array(m)`` (zero-copy via
    ``__arrow_array__``); iteration and list comparison create Python objects and are meant for small maps.
    """

    __slots__ = ("_names", "_hashes", "_order")

    def __init__(self, names: pa.Array, hashes: np.ndarray | None = None, order: np.ndarray | None = None):
        """Low-level constructor: ``names`` a string/large_string array of distinct names; ``hashes``/``order``
        a prebuilt index (sorted hashes, index per sorted hash) or None to build it on first lookup. Use
        ``from_names`` to validate input."""
        self._names = names
        self._hashes = hashes
        self._order = order

    # -- construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_names(cls, names: pa.Array | pa.ChunkedArray | Iterable[str], *, unique: bool = False
                   ) -> FeatureIndexMap:
        """Map over ``names`` in the given order. Raises IndexMapError on nulls or duplicate names.

        ``unique=True``: the caller guarantees distinctness (e.g. a dictionary-encoded array's dictionary);
        the hash index is then built lazily on the first ``index_of`` (where a duplicate would still raise).
        """
        arr = _as_string_array(names)
        if arr.null_count:
            raise IndexMapError(f"feature names hold {arr.null_count} null value(s)")
        fmap = cls(arr)
        if not unique:
            fmap._index()
        return fmap

    @classmethod
    def coerce(cls, names: FeatureIndexMap | pa.Array | pa.ChunkedArray | Iterable[str]) -> FeatureIndexMap:
        """``names`` itself when already a FeatureIndexMap, else ``from_names(names)``."""
        return names if isinstance(names, FeatureIndexMap) else cls.from_names(names)

    def _index(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted hashes, name index per sorted hash), built on first use; raises on duplicate names."""
        if self._hashes is None:
            h = hash_strings(self._names)
            order = np.argsort(h)
            sorted_h = h[order]
            del h  # peak: names + 24 bytes per name; held: names + 12 bytes per name
            order = order.astype(np.uint32 if len(order) < 2**32 else np.int64)
            duplicate = self._duplicate(sorted_h, order)
            if duplicate is not None:
                raise IndexMapError(f"feature names are not distinct: {duplicate!r} appears more than once")
            self._hashes, self._order = sorted_h, order
        return self._hashes, self._order

    def _duplicate(self, sorted_h: np.ndarray, order: np.ndarray) -> str | None:
        """A name that occurs twice, or None. Only names sharing a hash are compared (as strings)."""
        tied = np.zeros(sorted_h.size, dtype=bool)
        same = sorted_h[1:] == sorted_h[:-1]
        if not same.any():
            return None
        tied[1:] |= same
        tied[:-1] |= same
        members = np.flatnonzero(tied)
        groups = pa.table({"hash": sorted_h[members],
                           "name": self._names.take(pa.array(order[members].astype(np.int64)))})
        counts = groups.group_by(["hash", "name"]).aggregate([([], "count_all")])
        repeated = counts.filter(pc.greater(counts.column("count_all"), 1))
        return repeated.column("name")[0].as_py() if repeated.num_rows else None

    # -- size and access ---------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._names)

    @property
    def names(self) -> pa.Array:
        """All names in index order (Arrow string or large_string array; zero-copy)."""
        return self._names

    @property
    def nbytes(self) -> int:
        """Bytes held by the names and (if built) the lookup index."""
        index = 0 if self._hashes is None else self._hashes.nbytes + self._order.nbytes
        return self._names.nbytes + index

    def name_of(self, indices: np.ndarray | Iterable[int]) -> pa.Array:
        """Names at ``indices`` (each in [0, len)); IndexError otherwise."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"feature index out of range [0, {len(self)})")
        return self._names.take(pa.array(idx.ravel()))

    def index_of(self, names: pa.Array | pa.ChunkedArray | Iterable[str]) -> np.ndarray:
        """int64 index of each of ``names`` (-1 when absent or null). Vectorised: hashes the queries,
        binary-searches the sorted hashes, confirms each candidate by string comparison."""
        queries = _as_string_array(names)
        m = len(queries)
        out = np.full(m, -1, dtype=np.int64)
        if m == 0 or len(self) == 0:
            return out
        sorted_h, order = self._index()
        qh = hash_strings(queries)
        q_order = np.argsort(qh)  # sorted needles make searchsorted walk the table forward (cache friendly)
        pos = np.empty(m, dtype=np.int64)
        pos[q_order] = np.searchsorted(sorted_h, qh[q_order])
        pending = np.flatnonzero(queries.is_valid().to_numpy(zero_copy_only=False)) if queries.null_count \
            else np.arange(m)
        n = len(sorted_h)
        while pending.size:
            p = pos[pending]
            inside = p < n
            pending, p = pending[inside], p[inside]
            hit = sorted_h[p] == qh[pending]
            pending, p = pending[hit], p[hit]
            if not pending.size:
                break
            cand = order[p].astype(np.int64)
            same = pc.equal(self._names.take(pa.array(cand)), queries.take(pa.array(pending)))
            same = np.asarray(same.to_numpy(zero_copy_only=False), dtype=bool)
            out[pending[same]] = cand[same]
            # hash collision with a different name: try the next name with the same hash
            pending = pending[~same]
            pos[pending] += 1
        return out

    def extend(self, new_names: pa.Array | pa.ChunkedArray | Iterable[str]) -> FeatureIndexMap:
        """A new map: these names plus the ones of ``new_names`` not present yet, appended in first-seen order
        (existing names keep their indices; repeats in ``new_names`` are added once)."""
        new = _as_string_array(new_names)
        if new.null_count:
            raise IndexMapError(f"new feature names hold {new.null_count} null value(s)")
        new = pc.unique(new)  # keeps first-seen order
        new = new.filter(pa.array(self.index_of(new) < 0)) if len(self) else new
        if len(new) == 0:
            return self
        if pa.types.is_large_string(self._names.type) or pa.types.is_large_string(new.type) or \
                self._names.nbytes + new.nbytes >= 2**31 - 1:
            names = pa.concat_arrays([self._names.cast(pa.large_string()), new.cast(pa.large_string())])
        else:
            names = pa.concat_arrays([self._names, new.cast(pa.string())])
        old_h, old_o = self._index()
        new_h = hash_strings(new)
        new_o = np.argsort(new_h, kind="stable")
        h = np.concatenate([old_h, new_h[new_o]])
        o = np.concatenate([old_o.astype(np.int64), len(self) + new_o.astype(np.int64)])
        merge = np.argsort(h, kind="stable")  # timsort finds the two sorted runs and merges them in linear time
        out = FeatureIndexMap(names, h[merge], o[merge].astype(np.uint32 if len(names) < 2**32 else np.int64))
        if np.any(out._hashes[1:] == out._hashes[:-1]):
            out._hashes = out._order = None
            out._index()  # a collision: re-check distinctness the thorough way
        return out

    # -- persistence -------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write an uncompressed Arrow IPC file (names + lookup index) atomically; ``load`` memory-maps it."""
        import pyarrow.ipc as ipc

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        sorted_h, order = self._index()
        schema = pa.schema([("name", self._names.type), ("hash", pa.uint64()), ("order", pa.from_numpy_dtype(
            order.dtype))], metadata={"format": FILE_FORMAT, "hash": HASH_NAME})
        batch = pa.record_batch([self._names, pa.array(sorted_h), pa.array(order)], schema=schema)
        tmp = path.with_name(f".{path.name}.tmp")
        with pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, schema) as writer:
            writer.write_batch(batch)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, *, memory_map: bool = True) -> FeatureIndexMap:
        """Read a file written by ``save``; with ``memory_map`` the arrays point into the mapped file."""
        import pyarrow.ipc as ipc

        source = pa.memory_map(str(path), "r") if memory_map else pa.OSFile(str(path), "rb")
        try:
            reader = ipc.open_file(source)
        except pa.ArrowInvalid as exc:
            raise IndexMapError(f"{path} is not a feature index map file: {exc}") from None
        meta = reader.schema.metadata or {}
        if meta.get(b"format") != FILE_FORMAT.encode():
            raise IndexMapError(f"{path}: not a {FILE_FORMAT} file")
        table = reader.read_all()
        names = table.column("name")
        names = names.chunk(0) if names.num_chunks == 1 else names.combine_chunks()
        if meta.get(b"hash") != HASH_NAME.encode():
            return cls(names)  # written with another hash: rebuild the index on first use
        hashes = table.column("hash")
        order = table.column("order")
        if hashes.num_chunks != 1:
            hashes, order = hashes.combine_chunks(), order.combine_chunks()
        else:
            hashes, order = hashes.chunk(0), order.chunk(0)
        return cls(names, hashes.to_numpy(), order.to_numpy())

    # -- list-like conveniences (small maps) ------------------------------------------------------------------
    def __getitem__(self, i):
        if isinstance(i, slice):
            return FeatureIndexMap(self._names[i])
        i = operator.index(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"feature index {i} out of range [0, {len(self)})")
        return self._names[i].as_py()

    def __iter__(self) -> Iterator[str]:
        for lo in range(0, len(self), 65536):
            yield from self._names.slice(lo, 65536).to_pylist()

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self.index_of([name])[0] >= 0)

    def tolist(self) -> list[str]:
        """All names as a Python list (small maps only)."""
        return self._names.to_pylist()

    def __arrow_array__(self, type=None):  # noqa: A002 (pyarrow protocol signature)
        return self._names if type is None else self._names.cast(type)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FeatureIndexMap):
            other_names = other.names
        elif isinstance(other, pa.Array | pa.ChunkedArray | list | tuple):
            try:
                other_names = _as_string_array(other)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                return False
        else:
            return NotImplemented
        if len(other_names) != len(self):
            return False
        if len(self) == 0:
            return True
        return bool(pc.all(pc.equal(self._names.cast(pa.large_string()),
                                    other_names.cast(pa.large_string()))).as_py())

    __hash__ = None  # mutable-looking equality semantics (compares to lists); not usable as a dict key

    def __getstate__(self):
        return {"names": self._names, "hashes": self._hashes, "order": self._order}

    def __setstate__(self, state) -> None:
        self._names, self._hashes, self._order = state["names"], state["hashes"], state["order"]

    def __repr__(self) -> str:
        head = self._names.slice(0, 3).to_pylist()
        more = ", …" if len(self) > 3 else ""
        return f"FeatureIndexMap({len(self)} names: {', '.join(map(repr, head))}{more})"


def as_index_map(names: FeatureIndexMap | pa.Array | pa.ChunkedArray | Iterable[str]) -> FeatureIndexMap:
    """``FeatureIndexMap.coerce``: pass maps through, build one from anything else."""
    return FeatureIndexMap.coerce(names)
