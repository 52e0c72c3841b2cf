"""Member and job profiles: per-field TF-IDF term vectors, L2-normalised, computed with Spark.

Terms: title → word tokens (runs of [a-z0-9] after lower-casing); skills → each skill string; industry,
function, seniority, region → the one value. tf is the term's count in the field, idf is
:func:`pipeline.features.vocab.idf` over the day's members + jobs, weight = tf·idf / ‖tf·idf‖₂ per field.
Each profile column is ``list<struct<term, weight>>`` sorted by term (empty when the field is empty).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipeline.features.vocab import CATEGORICAL_FIELDS, FIELDS, TITLE_TOKEN_SPLIT

PROFILE_DDL = "array<struct<term:string,weight:double>>"


def _field_term(field: str, term: Column) -> Column:
    return F.struct(F.lit(field).alias("field"), term.alias("term"))


def term_frequencies(docs: DataFrame, id_col: str) -> DataFrame:
    """(doc_id, field, term, tf) for every term of every field of ``docs`` (raw members or jobs)."""
    title = F.transform(
        F.filter(F.split(F.lower(F.coalesce(F.col("title"), F.lit(""))), TITLE_TOKEN_SPLIT), lambda t: t != ""),
        lambda t: _field_term("title", t),
    )
    skills = F.transform(
        F.filter(F.coalesce(F.col("skills"), F.array().cast("array<string>")), lambda s: s.isNotNull() & (s != "")),
        lambda s: _field_term("skills", s),
    )
    categorical = F.filter(
        F.array(*[_field_term(f, F.col(f)) for f in CATEGORICAL_FIELDS]),
        lambda x: x["term"].isNotNull() & (x["term"] != ""),
    )
    return (
        docs.select(F.col(id_col).alias("doc_id"), F.explode(F.concat(title, skills, categorical)).alias("t"))
        .select("doc_id", "t.field", "t.term")
        .groupBy("doc_id", "field", "term")
        .agg(F.count(F.lit(1)).cast("long").alias("tf"))
    )


def document_frequencies(*term_tables: DataFrame) -> DataFrame:
    """(field, term, df): documents carrying each term, over all given term-frequency tables."""
    union = term_tables[0].select("field", "term")
    for other in term_tables[1:]:
        union = union.unionByName(other.select("field", "term"))
    return union.groupBy("field", "term").agg(F.count(F.lit(1)).cast("long").alias("df"))


def build_profiles(tf: DataFrame, idf: DataFrame, ids: DataFrame, id_col: str) -> DataFrame:
    """``id_col`` + one profile column per field for every row of ``ids``.

    The norm is summed over the term-sorted list, so the result is bit-identical on every run.
    """
    weighted = tf.join(F.broadcast(idf), ["field", "term"]).select(
        "doc_id", "field", F.struct(F.col("term"), (F.col("tf") * F.col("idf")).alias("weight")).alias("tw")
    )
    per_field = weighted.groupBy("doc_id", "field").agg(F.array_sort(F.collect_list("tw")).alias("terms"))
    norm = F.sqrt(F.aggregate("terms", F.lit(0.0), lambda acc, x: acc + x["weight"] * x["weight"]))
    per_field = per_field.select(
        "doc_id",
        "field",
        F.transform(
            "terms", lambda x: F.struct(x["term"].alias("term"), (x["weight"] / norm).alias("weight"))
        ).alias("profile"),
    )
    wide = per_field.groupBy("doc_id").pivot("field", list(FIELDS)).agg(F.first("profile"))
    empty = F.array().cast(PROFILE_DDL)
    return ids.join(wide.withColumnRenamed("doc_id", id_col), id_col, "left").select(
        F.col(id_col), *[F.coalesce(F.col(f).cast(PROFILE_DDL), empty).alias(f) for f in FIELDS]
    )
