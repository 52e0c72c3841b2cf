"""Member and job profiles: per-field TF-IDF term vectors, L2-normalised, computed with Spark.

Terms: title → word tokens (runs of [a-z0-9] after lower-casing); skills → each skill string; industry,
function, seniority, region → the one value. tf is the term's count in the field, idf is
:func:`pipeline.features.vocab.idf` over the day's members + jobs, weight = tf·idf / ‖tf·idf‖₂ per field.
Each profile column is ``list<struct<term, weight>>`` sorted by term (empty when the field is empty).

Every step works inside a document's row (a member or job is one row of its raw table), so no step
shuffles the documents: the term counts with Spark SQL array functions, the document frequencies by a
partial (map-side) count per term, and the weights in ``mapInArrow`` over Arrow batches: a hash lookup of
each term's idf (``pyarrow.compute.index_in``; a Spark map lookup scans the map, which is thousands of
terms) and per-row sums in the lists' term order, the same arithmetic in the same order as a Spark
``aggregate``, so a rerun gives the same bits.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DoubleType, StringType, StructField, StructType

from pipeline.features.pairs import PROFILE_TYPE
from pipeline.features.vocab import CATEGORICAL_FIELDS, FIELDS, TITLE_TOKEN_SPLIT

PROFILE_DDL = "array<struct<term:string,weight:double>>"
PROFILE_SPARK_TYPE = ArrayType(StructType([StructField("term", StringType()), StructField("weight", DoubleType())]))


def _field_terms(field: str) -> Column:
    """The terms of one field of a raw row, repeats kept (their count is the tf)."""
    if field == "title":
        return F.filter(F.split(F.lower(F.coalesce(F.col("title"), F.lit(""))), TITLE_TOKEN_SPLIT), lambda t: t != "")
    if field == "skills":
        return F.filter(F.coalesce(F.col("skills"), F.array().cast("array<string>")),
                        lambda s: s.isNotNull() & (s != ""))
    assert field in CATEGORICAL_FIELDS, field
    return F.filter(F.array(F.col(field).cast("string")), lambda x: x.isNotNull() & (x != ""))


# Spark reads a lambda's arity (a second parameter is the element's index), so lambdas that need an outer
# column are built by these small factories rather than with default arguments.
def _counter(terms: Column):
    return lambda t: F.struct(t.alias("term"), F.size(F.filter(terms, lambda x: x == t)).cast("long").alias("tf"))


def _tagger(field: str):
    return lambda x: F.struct(F.lit(field).alias("field"), x["term"].alias("term"))


def term_counts(docs: DataFrame, id_col: str, *extra: str) -> DataFrame:
    """``id_col``, the ``extra`` columns of ``docs`` and, per field, ``<field>`` = the field's distinct terms
    sorted, with their tf: ``array<struct<term, tf>>`` (one row per raw row, no shuffle)."""
    columns = [F.col(id_col), *[F.col(c) for c in extra]]
    for field in FIELDS:
        terms = _field_terms(field)
        distinct = F.array_sort(F.array_distinct(terms))
        columns.append(F.transform(distinct, _counter(terms)).alias(field))
    return docs.select(*columns)


def document_frequencies(*counted: DataFrame) -> DataFrame:
    """(field, term, df): documents carrying each term, over tables of :func:`term_counts`."""
    union = None
    for table in counted:
        pairs = F.concat(*[F.transform(F.col(f), _tagger(f)) for f in FIELDS])
        exploded = table.select(F.explode(pairs).alias("t")).select("t.field", "t.term")
        union = exploded if union is None else union.unionByName(exploded)
    return union.groupBy("field", "term").agg(F.count(F.lit(1)).cast("long").alias("df"))


def _weigh(counts: pa.Array, terms: pa.Array, idf: np.ndarray) -> pa.Array:
    """One field's ``list<struct<term, tf>>`` as ``list<struct<term, weight>>``: tf·idf over the row's L2
    norm, terms without an idf dropped (none are: the day's vocab holds every term seen today)."""
    if isinstance(counts, pa.ChunkedArray):
        counts = counts.combine_chunks()
    n = len(counts)
    flat = pc.list_flatten(counts)
    row = pc.list_parent_indices(counts).to_numpy().astype(np.int64)
    code = pc.index_in(pc.struct_field(flat, "term"), value_set=terms)
    known = pc.is_valid(code).to_numpy(zero_copy_only=False)
    row = row[known]
    weight = (pc.struct_field(flat, "tf").to_numpy(zero_copy_only=False)[known].astype(np.float64)
              * idf[code.to_numpy(zero_copy_only=False)[known].astype(np.int64)])
    # np.bincount adds each row's squares in list order from 0.0, as Spark's aggregate does.
    norm = np.sqrt(np.bincount(row, weights=weight * weight, minlength=n))
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(row, minlength=n), out=offsets[1:])
    items = pa.StructArray.from_arrays(
        [pc.struct_field(flat, "term").filter(pa.array(known)), pa.array(weight / norm[row], pa.float64())],
        names=["term", "weight"],
    )
    return pa.ListArray.from_arrays(pa.array(offsets), items).cast(PROFILE_TYPE)


def build_profiles(counted: DataFrame, idf: pa.Table, id_col: str, *extra: str) -> DataFrame:
    """``id_col``, the ``extra`` columns of ``counted`` (a :func:`term_counts` table) and one profile column
    per field, batch by batch (``mapInArrow``).

    ``idf``: (field, term, idf) of the day's terms.
    """
    lookups = {}
    for field in FIELDS:
        rows = idf.filter(pc.equal(idf["field"], field))
        lookups[field] = (rows["term"].combine_chunks(), rows["idf"].to_numpy().astype(np.float64))
    keep = [id_col, *extra]
    schema = StructType([counted.schema[c] for c in keep]
                        + [StructField(f, PROFILE_SPARK_TYPE, False) for f in FIELDS])

    def weigh(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            columns = [batch.column(c) for c in keep]
            columns += [_weigh(batch.column(f), *lookups[f]) for f in FIELDS]
            yield pa.RecordBatch.from_arrays(columns, names=[*keep, *FIELDS])

    return counted.mapInArrow(weigh, schema)
