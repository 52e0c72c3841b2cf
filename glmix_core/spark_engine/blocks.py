"""Turning the training data into cached per-partition Arrow blocks with stable row ids.

The input (a Spark DataFrame or a Parquet path read by Spark) is shipped to Python once through
``mapInArrow`` as Arrow IPC payloads (one Python object per record batch, never one per row). Each partition
becomes one ``pyarrow.Table`` and every row gets ``row_id = partition << 32 | position``, so the row's home
partition is ``row_id >> 32`` and its place there ``row_id & 0xFFFFFFFF``: scores can be routed home and
aligned without a lookup table.

Rows are sent to a random-effect partition by ``crc32(str(entity)) % partitions``: stable across processes
(Python's ``hash`` of a string is not) and computed once per distinct entity, not per row.
"""

from __future__ import annotations

import os
import pickle
import uuid
import zlib
from collections import OrderedDict

import numpy as np
import pyarrow as pa

ROW_BITS = 32
ROW_MASK = (1 << ROW_BITS) - 1
# Per-sweep payloads up to this size travel inside the task closure instead of a broadcast: a broadcast costs
# a file write and JVM round trips on every job (~25 ms), and the backend runs a few jobs per sweep.
INLINE_MAX_BYTES = 4 << 20


class InlineValue:
    """A stand-in for ``Broadcast`` whose value is pickled with the task closure (``.value``, ``unpersist``)."""

    def __init__(self, value):
        self.value = value

    def unpersist(self) -> None:
        self.value = None


# What this Python worker process keeps of the current fit's cached partitions: {(fit token, name, partition):
# (value, blob bytes)}, least recently opened first. Spark streams a cached partition's bytes to a Python
# worker and unpickles them for every task; a worker that has seen the partition before skips that (and keeps
# what the value builds lazily, such as the dense blocks of a random effect's design). Tasks land on whichever
# worker is idle, so in time every worker sees every partition: unbounded, each worker would hold the whole
# data set (at a 1M-member day, 3.5 GiB more across the two workers of local[2]). The budget bounds that.
_RESIDENT: OrderedDict[tuple[str, str, int], tuple[object, int]] = OrderedDict()
CACHE_ENV = "GLMIX_SPARK_WORKER_CACHE_MB"
DEFAULT_CACHE_MB = 512


def cache_budget_bytes() -> int:
    """The byte budget of a Python worker's kept partitions: ``$GLMIX_SPARK_WORKER_CACHE_MB`` (default 512;
    0 keeps nothing). Measured as pickled bytes; what a value builds lazily comes on top. On a cluster, set it
    for the executors with ``spark.executorEnv.GLMIX_SPARK_WORKER_CACHE_MB``."""
    raw = os.environ.get(CACHE_ENV, "")
    try:
        return max(int(float(raw) * (1 << 20)), 0) if raw.strip() else DEFAULT_CACHE_MB << 20
    except ValueError:
        return DEFAULT_CACHE_MB << 20


class Resident:
    """What a cached partition holds: ``value`` pickled once (Spark copies the bytes as they are), tagged with
    the fit's token and a name; ``open`` returns the value, unpickled at most once per worker process while it
    fits the worker's budget (:func:`cache_budget_bytes`)."""

    def __init__(self, token: str, name: str, value):
        self.token, self.name = token, name
        self.blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def open(self, index: int):
        """The value, from this worker's memory when it served partition ``index`` of this fit before and kept
        it; the previous fit's values are dropped when another fit's partition arrives, and the least recently
        opened ones when the budget is exceeded."""
        key = (self.token, self.name, index)
        kept = _RESIDENT.get(key)
        if kept is not None:
            _RESIDENT.move_to_end(key)
            return kept[0]
        if any(k[0] != self.token for k in _RESIDENT):
            _RESIDENT.clear()
        value = pickle.loads(self.blob)
        budget, size = cache_budget_bytes(), len(self.blob)
        if size <= budget:
            while _RESIDENT and sum(n for _, n in _RESIDENT.values()) + size > budget:
                _RESIDENT.popitem(last=False)
            _RESIDENT[key] = (value, size)
        return value


def new_token() -> str:
    """A fit-unique tag for ``Resident`` values."""
    return uuid.uuid4().hex


def share(sc, value, nbytes: int):
    """``value`` for the next jobs' tasks: inline up to ``INLINE_MAX_BYTES`` (``nbytes``), else a broadcast."""
    return InlineValue(value) if nbytes <= INLINE_MAX_BYTES else sc.broadcast(value)


def input_dataframe(spark, data, columns: list[str]):
    """The training rows as a DataFrame of ``columns``: ``data`` is a DataFrame or a Parquet file/folder path."""
    from pyspark.sql import DataFrame

    from ..data import DataError

    if isinstance(data, DataFrame):
        df = data
    else:
        from pathlib import Path

        path = str(data)
        if "://" not in path and not Path(path).exists():
            raise DataError(f"data path not found: {path} (give a Parquet file or a folder of Parquet files)")
        df = spark.read.option("recursiveFileLookup", "true").parquet(path)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"column(s) {missing} not in the data; available columns: {df.columns}")
    return df.select(*columns)


def _to_ipc(batches):
    """mapInArrow body: each record batch → one row holding its Arrow IPC stream bytes."""
    for batch in batches:
        yield pa.RecordBatch.from_arrays([pa.array([_ipc_bytes(pa.Table.from_batches([batch]))], pa.binary())],
                                         names=["payload"])


def arrow_partitions(df, min_partitions: int = 1):
    """RDD with exactly one ``pyarrow.Table`` per partition (with an int64 ``_row_id`` column), rows in the
    input's order: with fewer input partitions than ``min_partitions`` the rows are range-partitioned on
    their original position (one shuffle that keeps the order), else the input's partitions are used."""
    if df.rdd.getNumPartitions() < min_partitions:
        from pyspark.sql import functions as F

        df = (df.withColumn("_order", F.monotonically_increasing_id())
              .repartitionByRange(min_partitions, "_order").sortWithinPartitions("_order").drop("_order"))
    schema_holder = df.limit(0).toArrow().schema if hasattr(df, "toArrow") else None
    payloads = df.mapInArrow(_to_ipc, "payload binary").rdd.map(lambda row: row[0])

    def assemble(index, rows):
        tables = [pa.ipc.open_stream(pa.py_buffer(p)).read_all() for p in rows]
        if tables:
            table = pa.concat_tables(tables, promote_options="default")
        else:
            table = schema_holder.empty_table() if schema_holder is not None else pa.table({})
        ids = (np.int64(index) << ROW_BITS) + np.arange(table.num_rows, dtype=np.int64)
        yield table.append_column("_row_id", pa.array(ids, pa.int64()))

    return payloads.mapPartitionsWithIndex(assemble, preservesPartitioning=True)


def _with_row_ids(index: int, table: pa.Table) -> pa.Table:
    ids = (np.int64(index) << ROW_BITS) + np.arange(table.num_rows, dtype=np.int64)
    return table.append_column("_row_id", pa.array(ids, pa.int64()))


def _ranges(n_rows: int, parts: int) -> list[tuple[int, int]]:
    bounds = np.linspace(0, n_rows, parts + 1).astype(np.int64)
    return [(int(bounds[k]), int(bounds[k + 1])) for k in range(parts)]


def _ipc_bytes(table: pa.Table) -> bytes:
    """Arrow IPC stream bytes of ``table`` (a slice ships only its own rows, unlike pickling a slice)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def table_partitions(sc, table: pa.Table, parts: int):
    """An in-memory table as ``parts`` home partitions of consecutive rows (shipped once as Arrow IPC, no JVM
    data path), each a ``pyarrow.Table`` with ``_row_id``."""
    payloads = [_ipc_bytes(table.slice(lo, hi - lo)) for lo, hi in _ranges(table.num_rows, max(parts, 1))]

    def read(index, items):
        for payload in items:
            yield _with_row_ids(index, pa.ipc.open_stream(pa.py_buffer(payload)).read_all())

    return sc.parallelize(payloads, len(payloads)).mapPartitionsWithIndex(read, preservesPartitioning=True)


def local_parquet_files(path: str) -> list[str] | None:
    """The Parquet files of a local path in ``glmix_core.load_table``'s order, or None when the path is not a
    local file or folder (then Spark reads it)."""
    from pathlib import Path

    if "://" in path:
        return None
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*.parquet") if not f.name.startswith((".", "_")))
        return [str(f) for f in files] or None
    return [str(p)] if p.is_file() and p.suffix.lower() in (".parquet", ".pq") else None


def parquet_partitions(sc, files: list[str], columns: list[str], parts: int):
    """Local Parquet files as ``parts`` home partitions of consecutive rows, read by pyarrow in the tasks
    (only the row groups each task needs; the files must be readable where the tasks run, e.g. a shared
    file system). Rows keep ``load_table``'s order, so row-position keys match the local backend."""
    import pyarrow.parquet as pq

    groups = []  # (file, row group, first global row, rows)
    start = 0
    for f in files:
        meta = pq.ParquetFile(f).metadata
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            groups.append((f, g, start, n))
            start += n
    tasks = []
    for lo, hi in _ranges(start, max(parts, 1)):
        tasks.append((lo, hi, [grp for grp in groups if grp[2] < hi and grp[2] + grp[3] > lo]))

    def read(index, items):
        for lo, hi, needed in items:
            pieces = []
            for f, g, first, n in needed:
                table = pq.ParquetFile(f).read_row_group(g, columns=columns)
                a, b = max(lo - first, 0), min(hi - first, n)
                pieces.append(table.slice(a, b - a))
            table = pa.concat_tables(pieces, promote_options="default") if pieces else \
                pq.read_schema(files[0]).empty_table().select(columns)
            yield _with_row_ids(index, table)

    return sc.parallelize(tasks, len(tasks)).mapPartitionsWithIndex(read, preservesPartitioning=True)


def entity_partitions(column: pa.Array | pa.ChunkedArray, num_partitions: int) -> np.ndarray:
    """Random-effect partition of each row, from its entity ID's string form (as the model stores IDs)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    if len(column) == 0:
        return np.zeros(0, dtype=np.int64)
    encoded = column.cast(pa.string()).dictionary_encode()
    buckets = np.array([zlib.crc32(s.encode()) % num_partitions for s in encoded.dictionary.to_pylist()],
                       dtype=np.int64)
    return buckets[encoded.indices.to_numpy(zero_copy_only=False)]


def split_by(dest: np.ndarray, num_parts: int) -> list[tuple[int, np.ndarray]]:
    """(target partition, row positions) for every non-empty target, in one sort."""
    order = np.argsort(dest, kind="stable")
    bounds = np.searchsorted(dest[order], np.arange(num_parts + 1))
    return [(d, order[bounds[d]:bounds[d + 1]]) for d in range(num_parts) if bounds[d + 1] > bounds[d]]
