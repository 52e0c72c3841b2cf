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

import zlib

import numpy as np
import pyarrow as pa

ROW_BITS = 32
ROW_MASK = (1 << ROW_BITS) - 1


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
    import pyarrow as pa

    for batch in batches:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        yield pa.RecordBatch.from_arrays([pa.array([sink.getvalue().to_pybytes()], pa.binary())],
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
