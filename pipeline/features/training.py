"""The day's labelled training examples: impressions ⨝ applies in the label window, with feature bags.

An impression is positive (label 1.0) when the same member applied to the same job at or after the
impression's ``ts`` and less than ``label_window_days`` days later. Only the day's applies partition is
read: the generator (and the contract) land an apply on its impression's day.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline.features.pairs import GlobalSpace, feature_bags
from pipeline.features.vocab import FIELDS, Vocab

BAG_DDL = "array<struct<name:string,value:double>>"
TRAINING_DDL = (
    "impression_id bigint, member_id bigint, job_id bigint, label double, position int, "
    f"global {BAG_DDL}, job_features {BAG_DDL}, member_features {BAG_DDL}"
)
KEY_COLUMNS = ("impression_id", "member_id", "job_id", "label", "position")


def label_impressions(impressions: DataFrame, applies: DataFrame, window_days: int) -> DataFrame:
    """impression_id, member_id, job_id, position, label (1.0 when applied inside the window, else 0.0)."""
    imp = impressions.select("impression_id", "member_id", "job_id", "ts", F.col("position").cast("int"))
    app = applies.select(
        F.col("member_id").alias("a_member"), F.col("job_id").alias("a_job"), F.col("ts").alias("a_ts")
    )
    hits = (
        imp.join(
            app,
            (imp.member_id == app.a_member)
            & (imp.job_id == app.a_job)
            & (app.a_ts >= imp.ts)
            & (app.a_ts < imp.ts + F.make_dt_interval(F.lit(window_days))),
        )
        .select("impression_id")
        .distinct()
        .withColumn("label", F.lit(1.0))
    )
    return imp.join(hits, "impression_id", "left").select(
        "impression_id", "member_id", "job_id", "position", F.coalesce("label", F.lit(0.0)).alias("label")
    )


def training_examples(labelled: DataFrame, member_profiles: DataFrame, job_profiles: DataFrame, vocab: Vocab) -> DataFrame:
    """The ``features/training`` rows: labelled impressions joined with both profiles, bags built per batch.

    Unknown members/jobs (validation quarantines them) would get empty profiles rather than being dropped.
    """
    members = member_profiles.select("member_id", *[F.col(f).alias(f"m_{f}") for f in FIELDS])
    jobs = job_profiles.select("job_id", *[F.col(f).alias(f"j_{f}") for f in FIELDS])
    joined = labelled.join(members, "member_id", "left").join(jobs, "job_id", "left")
    vocab_table = vocab.table  # shipped to the executors; the feature space is rebuilt once per partition

    def to_bags(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        space = GlobalSpace.from_vocab(Vocab(vocab_table))
        for batch in batches:
            if batch.num_rows == 0:
                continue
            table = pa.Table.from_batches([batch])
            bags = feature_bags(table, space)
            out = table.select(list(KEY_COLUMNS))
            for name in bags.column_names:
                out = out.append_column(name, bags[name])
            yield from out.to_batches()

    return joined.mapInArrow(to_bags, TRAINING_DDL)
