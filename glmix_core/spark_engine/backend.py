"""The Spark backend of the PBCD driver: rows and per-entity solves on Spark, per-row vectors on the driver.

Layout (paper Figure 2):

- home partitions (the input's, in input order): labels, weights, base offset and the fixed effect's
  design blocks (``fixed.SparkFixedData``); every row has a global position (its place in the input order);
- one entity layout per random effect (``random.SparkRandomCoordinate``): rows shuffled by
  ``crc32(entity) % partitions`` once per fit, each partition holding the local engine's coordinate;
- the driver: the labels, weights, base offset, per-coordinate scores and coefficients (8 bytes per row
  per vector; a 100M-row fit needs a few GB of driver memory). The driver's PBCD loop (``glmix_core.pbcd``)
  sees NumPy arrays exactly as with the local backend, so the subspace step, objective and bookkeeping
  cost no Spark job.

Every feature vocabulary, normalization statistic and sampling key is computed over all rows before the
coordinates are built, so a partition's coordinate is the matching slice of the local one.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..building import normalized_fixed_design, random_coordinate, row_arrays
from ..coordinates import FixedCoordinate
from ..data import INTERCEPT, feature_matrix, numeric_column
from ..errors import DataError
from ..index_map import FeatureIndexMap
from ..losses import get_loss
from ..model import FixedEffectModel, GLMixModel, RandomEffectModel
from ..normalization import ColumnSums, make_normalization
from ..pbcd import FitOptions
from ..sampling import down_sample, row_keys
from ..spec import CoordinateSpec, GLMixSpec
from .blocks import (
    ROW_BITS,
    ROW_MASK,
    Resident,
    arrow_partitions,
    entity_partitions,
    input_dataframe,
    local_parquet_files,
    new_token,
    parquet_partitions,
    split_by,
    table_partitions,
)
from .fixed import SparkFixedData
from .random import SparkRandomCoordinate, partition_summary, split_model

log = logging.getLogger(__name__)


# Rows per partition when the caller does not say (``num_partitions``): partitions far larger than this made
# one partition's pickled state a single JVM object of gigabytes (a 1M-member day's 2.4M rows in the two
# partitions of local[2] took the driver's 4 GiB heap), and a Python worker's working set grows with it.
PARTITION_ROWS = 250_000


def _persist(rdd):
    """Cache ``rdd`` on disk only: a Python RDD's blocks are opaque pickled bytes, which Spark's memory store
    would keep on the JVM heap as one more copy of what the Python workers hold (blocks.Resident); on disk
    they sit in the OS page cache, which the kernel gives back when memory is short (a 1M-member daily
    retrain in local[2]: JVM 5.3 → 3.3 GiB, about the same time)."""
    from pyspark import StorageLevel

    return rdd.persist(StorageLevel.DISK_ONLY)


def _raise_errors(errors) -> None:
    errors = [e for e in errors if e]
    if errors:
        raise DataError(errors[0])


class SparkBackend:
    """Coordinates over ``data`` on Spark (see ``glmix_core.pbcd.Backend`` and the module doc)."""

    def __init__(self, spec: GLMixSpec, data, options: FitOptions, warm_start: GLMixModel | None, rtol: float, *,
                 spark=None, num_partitions: int | None = None):
        t0 = time.perf_counter()
        if spark is None:
            from pyspark.sql import SparkSession

            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            spark = SparkSession.builder.getOrCreate()
        self.sc = spark.sparkContext
        self.spec, self.loss = spec, get_loss(spec.task)
        self._cached: list = []
        self.token = new_token()  # tags this fit's partition values kept by the Python workers (blocks.Resident)
        columns = [spec.response] + [c for c in (spec.weight, spec.offset, spec.uid) if c]
        for c in spec.coordinates:
            columns += ([c.entity] if c.entity else []) + list(c.features) + list(c.feature_bags)
        columns = list(dict.fromkeys(columns))
        self.parts = num_partitions or default_partitions(self.sc.defaultParallelism, _known_rows(data))
        try:
            self._build(spark, data, columns, options, warm_start, rtol, t0)
        except BaseException:
            self.close()  # a long-lived session must not keep the partitions of a failed fit
            raise

    def _build(self, spark, data, columns: list[str], options: FitOptions, warm_start: GLMixModel | None,
               rtol: float, t0: float) -> None:
        spec = self.spec
        home = self._keep(self._home_partitions(spark, data, columns))
        self._home_arrays(home, options, warm_start)
        self.info = {"engine": "spark", "partitions": self.parts}
        log.info("spark backend: %d rows in %d home partitions, %d entity partitions (%.2fs)", self.y.size,
                 home.getNumPartitions(), self.parts, time.perf_counter() - t0)
        self.coordinates: dict = {}
        self.sampled = False
        for cspec in spec.coordinates:
            if cspec.name in options.lock:
                continue
            t0 = time.perf_counter()
            prev = warm_start.coordinates.get(cspec.name) if warm_start is not None else None
            if cspec.type == "fixed":
                coord = self._fixed(cspec, home, prev, rtol)
            else:
                coord = self._random(cspec, home, prev if isinstance(prev, RandomEffectModel) else None,
                                     cspec.name in options.incremental, options.forgetting, rtol)
                self.sampled |= coord.reweighted
            self.coordinates[cspec.name] = coord
            log.info("coordinate %s: built on Spark in %.2fs", cspec.name, time.perf_counter() - t0)
        home.unpersist()
        self._cached.remove(home)

    def _home_partitions(self, spark, data, columns: list[str]):
        """The rows as home partitions of Arrow tables, in input order: an Arrow table is shipped as IPC
        slices and a local Parquet path read by pyarrow in the tasks (no JVM data path); a Spark DataFrame or
        a remote path goes through Spark's reader."""
        if isinstance(data, pa.Table):
            missing = [c for c in columns if c not in data.column_names]
            if missing:
                raise DataError(f"column(s) {missing} not in the data; available columns: {data.column_names}")
            return table_partitions(self.sc, data.select(columns), self.parts)
        if isinstance(data, (str, Path)) or not hasattr(data, "rdd"):
            data = str(data)
            files = local_parquet_files(data)
            if files is not None:
                import pyarrow.parquet as pq

                available = pq.read_schema(files[0]).names
                missing = [c for c in columns if c not in available]
                if missing:
                    raise DataError(f"column(s) {missing} not in the data; available columns: {available}")
                return parquet_partitions(self.sc, files, columns, self.parts)
        df = input_dataframe(spark, data, columns)
        return arrow_partitions(df, min_partitions=self.parts)

    def _keep(self, rdd):
        self._cached.append(_persist(rdd))
        return rdd

    # -- rows -----------------------------------------------------------------------------------------------
    def _home_arrays(self, home, options: FitOptions, warm_start: GLMixModel | None) -> None:
        """Labels, weights and base offset (offset column + locked coordinates) of every row, on the driver."""
        spec, loss = self.spec, self.loss
        locked = {name: warm_start.coordinates[name] for name in options.lock}
        bc_locked = self.sc.broadcast(locked) if locked else None
        bags = list(dict.fromkeys(b for c in spec.coordinates if c.name not in options.lock for b in c.feature_bags))

        def bag_names(table) -> dict:
            """Distinct feature names of each bag column (Arrow, no Python string per name)."""
            out = {}
            for bag in bags:
                if bag not in table.column_names:
                    raise DataError(f"feature bag column {bag!r} not in the data; available columns: "
                                    f"{[c for c in table.column_names if c != '_row_id']}")
                flat = pc.list_flatten(table.column(bag).combine_chunks())
                out[bag] = pc.unique(pc.struct_field(flat, "name")).cast(pa.string())
            return out

        def arrays(index, tables):
            for table in tables:
                try:
                    y, w, base = row_arrays(spec, loss, table)
                    if bc_locked is not None and table.num_rows:
                        for model in bc_locked.value.values():
                            base = base + model.score(table)
                    names = bag_names(table)
                except (DataError, ValueError) as exc:
                    yield index, None, str(exc)
                    continue
                yield index, (y, w, base, names), None

        pieces = home.mapPartitionsWithIndex(arrays).collect()  # in partition order
        _raise_errors(e for _, _, e in pieces)
        self.bag_names = {bag: pc.unique(pa.concat_arrays([p[1][3][bag] for p in pieces])) for bag in bags}
        sizes = np.zeros(home.getNumPartitions(), np.int64)
        for index, (y, *_), _ in pieces:
            sizes[index] = y.size
        if sizes.sum() == 0:
            raise DataError("the training data has no rows")
        self.starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.y, self.weight, self.base_offset = (np.concatenate([p[1][k] for p in pieces]) for k in range(3))

    def _vocabulary(self, cspec: CoordinateSpec) -> FeatureIndexMap:
        """The coordinate's columns in the local backend's order: intercept, numeric features, then the
        distinct bag names sorted by code point (collected with the home arrays, no extra pass)."""
        fixed_names = pa.array(([INTERCEPT] if cspec.intercept else []) + list(cspec.features), pa.string())
        if not cspec.feature_bags:
            return FeatureIndexMap.from_names(fixed_names)
        distinct = pc.unique(pa.concat_arrays([self.bag_names[bag] for bag in cspec.feature_bags])).drop_null()
        extra = distinct.filter(pc.invert(pc.is_in(distinct, value_set=fixed_names)))
        return FeatureIndexMap.from_names(pa.concat_arrays([fixed_names, extra.take(pc.sort_indices(extra))]))

    def _normalization(self, cspec: CoordinateSpec, home, vocab: FeatureIndexMap):
        """The coordinate's normalization from column statistics merged over all rows (None for ``none``)."""
        if cspec.normalization == "none":
            return None

        def sums(table) -> ColumnSums:
            X, _ = feature_matrix(table, cspec.features, cspec.feature_bags, cspec.intercept, vocabulary=vocab)
            return ColumnSums.of(X)

        return make_normalization(cspec.normalization, home.map(sums).treeReduce(lambda a, b: a.merge(b)),
                                  cspec.intercept)

    # -- coordinates ----------------------------------------------------------------------------------------
    def _fixed(self, cspec: CoordinateSpec, home, prev, rtol: float) -> FixedCoordinate:
        vocab = self._vocabulary(cspec)
        normalization = self._normalization(cspec, home, vocab)
        bc = self.sc.broadcast((vocab, normalization, self.starts))
        spec = self.spec

        def block(index, tables):
            vocab, normalization, starts = bc.value
            for table in tables:
                X, _ = feature_matrix(table, cspec.features, cspec.feature_bags, cspec.intercept, vocabulary=vocab)
                X = normalized_fixed_design(X, normalization)
                y = numeric_column(table, spec.response, "response")
                w = numeric_column(table, spec.weight, "weight") if spec.weight else np.ones(table.num_rows)
                fit = None
                if cspec.down_sampling_rate < 1:
                    fit, w = down_sample(y, w, _sampling_keys(table, starts, spec.uid), cspec.down_sampling_rate,
                                         cspec.seed)
                    y = y[fit]
                yield {"start": int(starts[index]), "X": X, "fit": fit, "Xf": X if fit is None else X[fit],
                       "y": y, "w": w}

        blocks = self._keep(home.mapPartitionsWithIndex(block))
        self.sampled |= cspec.down_sampling_rate < 1
        source = SparkFixedData(self.loss, blocks, int(self.y.size), len(vocab))
        return FixedCoordinate(cspec.name, source, vocab, l2=cspec.l2, l1=cspec.l1, solver=cspec.solver,
                               intercept=cspec.intercept, rtol=rtol,
                               coef0=prev.lookup(vocab)[0] if isinstance(prev, FixedEffectModel) else None,
                               factor=None if normalization is None else normalization.factor)

    def _random(self, cspec: CoordinateSpec, home, prev: RandomEffectModel | None, incremental: bool,
                forgetting: float, rtol: float) -> SparkRandomCoordinate:
        spec, loss, parts = self.spec, self.loss, self.parts
        vocab = self._vocabulary(cspec)
        normalization = self._normalization(cspec, home, vocab)
        columns = list(dict.fromkeys(["_row_id", spec.response, cspec.entity, *cspec.features, *cspec.feature_bags,
                                      *[c for c in (spec.weight, spec.uid) if c]]))

        def route(table):
            table = table.select(columns)
            for d, sel in split_by(entity_partitions(table.column(cspec.entity), parts), parts):
                yield d, table.take(pa.array(sel))

        def gather(pieces):
            tables = [t for _, t in pieces]
            yield pa.concat_tables(tables, promote_options="default") if tables else None

        routed = home.flatMap(route).partitionBy(parts, lambda d: d).mapPartitions(gather, preservesPartitioning=True)
        # the warm-start pieces travel in the broadcast: zipping a second Python RDD would run two Python
        # workers per task, and the workers' pool would keep the extra ones for the rest of the fit
        subs = split_model(prev, parts) if prev is not None else [None] * parts
        bc = self.sc.broadcast((vocab, normalization, self.starts, subs))

        token, name = self.token, cspec.name

        def build(index, tables):
            vocab, normalization, starts, subs = bc.value
            for table in tables:
                yield Resident(token, name, build_state(table, subs[index], vocab, normalization, starts))

        def build_state(table, sub, vocab, normalization, starts):
            if table is None or table.num_rows == 0:
                return {"rows": np.zeros(0, np.int64), "coord": None}
            try:
                y = numeric_column(table, spec.response, "response")
                w = numeric_column(table, spec.weight, "weight") if spec.weight else np.ones(table.num_rows)
                keys = _sampling_keys(table, starts, spec.uid) if cspec.max_samples is not None else None
                coord = random_coordinate(cspec, loss, table, y, w, rtol=rtol, keys=keys, previous=sub,
                                          incremental=incremental, forgetting=forgetting, vocabulary=vocab,
                                          normalization=normalization)
            except (DataError, ValueError) as exc:
                return {"rows": np.zeros(0, np.int64), "coord": None, "error": f"coordinate {cspec.name!r}: {exc}"}
            for chunk in coord.design.chunks:  # cache the compact nonzeros, not the padded dense arrays
                chunk.dense = None
            return {"rows": _global_rows(table, starts), "coord": coord}

        states = self._keep(routed.mapPartitionsWithIndex(build, preservesPartitioning=True))
        summaries = states.mapPartitionsWithIndex(lambda i, it: [partition_summary(i, s.open(i)) for s in it]).collect()
        _raise_errors(s.get("error") for s in summaries)
        return SparkRandomCoordinate(cspec.name, states, summaries, vocab, int(self.y.size))

    def close(self) -> None:
        """Release the cached partitions."""
        for rdd in self._cached:
            rdd.unpersist()
        self._cached.clear()


def default_partitions(parallelism: int, rows: int | None) -> int:
    """Partitions of every layout when the caller gives none: the cluster's parallelism, and more when the
    data has more than :data:`PARTITION_ROWS` rows per partition (``rows`` None: unknown, parallelism)."""
    return max(parallelism, -(-rows // PARTITION_ROWS) if rows else 1, 1)


def _known_rows(data) -> int | None:
    """Rows of ``data`` when known without a Spark job: an Arrow table's, or a local Parquet path's footers."""
    if isinstance(data, pa.Table):
        return data.num_rows
    if isinstance(data, (str, Path)):
        files = local_parquet_files(str(data))
        if files:
            import pyarrow.parquet as pq

            return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    return None


def _sampling_keys(table: pa.Table, starts: np.ndarray, uid: str | None) -> np.ndarray:
    """Sampling keys of ``table``'s rows: the uid column's hash, else the global row position (the local
    backend's key when the input order is the same)."""
    return row_keys(table, uid) if uid else _global_rows(table, starts).astype(np.uint64)


def _global_rows(table: pa.Table, starts: np.ndarray) -> np.ndarray:
    """Global input position of each row from its ``_row_id`` (home partition << 32 | position)."""
    ids = table.column("_row_id").to_numpy()
    return starts[ids >> ROW_BITS] + (ids & ROW_MASK)
