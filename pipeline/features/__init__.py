"""Feature generation (``jobrec features --ds``): vocab, member/job profiles and labelled training examples.

Outputs (see docs/architecture.md, "Features"): ``features/vocab``, ``features/member_profiles``,
``features/job_profiles`` and ``features/training``, one ``ds=`` partition each, each written atomically.
Training rows are written in ``member_id``-hash shards (all of a member's rows in one file), sorted by
(member_id, impression_id), so a rerun writes identical files.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import Settings
from pipeline.progress import progress
from pipeline.storage import RAW_TABLES, atomic_directory, check_ds, write_partition

log = logging.getLogger(__name__)

__all__ = ["build_features", "load_input", "write_spark_partition"]


def input_path(table: str, ds: str, settings: Settings, *, warn: bool = True) -> Path:
    """Where to read raw ``table`` for ``ds``.

    - The day was validated and its last validation passed: the validated (clean) partition.
    - The day was validated but its last validation did not pass (failed, interrupted, or validated data
      without a verdict): raises ``pipeline.validation.NotValidatedError`` (a ``FileNotFoundError``: exit code
      2 on the command line) saying to fix the raw data and run ``jobrec validate --ds``. Clean data that no
      longer matches raw is never read.
    - The day was never validated: the raw partition, with a warning (unless ``warn`` is false).

    Raises ``FileNotFoundError`` saying what to run when the partition to read does not exist.
    """
    from pipeline.validation import require_pass, was_validated

    clean = settings.layout.validated(table, ds)
    if was_validated(ds, settings):
        require_pass(ds, settings)
        if not clean.is_dir():
            raise FileNotFoundError(
                f"no validated {table} for ds={ds} at {clean} although its validation passed: "
                f"run `jobrec validate --ds {ds}` again"
            )
        return clean
    raw = settings.layout.raw(table, ds)
    if not raw.is_dir():
        raise FileNotFoundError(
            f"no {table} partition for ds={ds} (looked for {clean} and {raw}); land the "
            f"day's raw data (e.g. `jobrec synth`) and run `jobrec validate --ds {ds}`"
        )
    if warn:
        log.warning("%s for ds=%s: not validated, reading raw rows from %s", table, ds, raw)
    return raw


def load_input(table: str, ds: str, settings: Settings, spark):
    """Raw ``table`` for ``ds`` (validated rows when available) as a Spark DataFrame."""
    return spark.read.parquet(str(input_path(table, ds, settings)))


def load_arrow_input(table: str, ds: str, settings: Settings) -> pa.Table:
    """Raw ``table`` for ``ds`` (validated rows when available) as an Arrow table (re-scoring runs without
    Spark)."""
    from pipeline.storage import read_partition

    return read_partition(input_path(table, ds, settings))


def write_spark_partition(df, target: Path, *, shards: int, key: str, order: list[str]) -> int:
    """Write ``df`` atomically as ``target/part-NNNNN.parquet``: ``shards`` files by hash of ``key``,
    rows sorted by ``order`` inside each. Returns the row count written."""
    with atomic_directory(target) as tmp:
        out = tmp / "spark"
        (
            df.repartition(shards, key)
            .sortWithinPartitions(*order)
            .write.mode("overwrite")
            .option("compression", "zstd")
            .parquet(str(out))
        )
        files = sorted(p for p in out.glob("part-*.parquet"))
        rows = 0
        import pyarrow.parquet as pq

        for i, f in enumerate(files):
            rows += pq.ParquetFile(f).metadata.num_rows
            os.replace(f, tmp / f"part-{i:05d}.parquet")
        for leftover in out.iterdir():
            leftover.unlink()
        out.rmdir()
    return rows


# The Spark stages of build_features, in order: what its progress lines count ("features D: 2/5 steps …").
FEATURE_STEPS = ("term frequencies", "vocab", "profiles", "labels", "training rows")


def build_features(ds: str, settings: Settings, shards: int | None = None) -> dict:
    """Build the day's vocab, profiles and training examples from the raw (validated) tables.

    ``shards``: training files per day (rows hashed by member_id; default the Spark shuffle partitions).
    Returns counts for the run report: ds, members, jobs, terms, new_terms, training_rows, positives,
    seconds. Raises ``FileNotFoundError`` naming what to run when an input partition is missing or the day's
    last validation did not pass (``pipeline.validation.NotValidatedError``, see :func:`input_path`).
    """
    from pipeline.spark import get_spark

    check_ds(ds)
    for table in RAW_TABLES:  # refuse a day that is missing or failed validation before starting Spark
        input_path(table, ds, settings, warn=False)
    started = time.time()
    # Python workers must run this interpreter (it has pyarrow/numpy); pipeline.spark does not pin it yet.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = get_spark(settings)
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    shards = shards or settings.spark_shuffle_partitions
    with progress(len(FEATURE_STEPS), f"features {ds}", unit="steps", logger=log) as step:
        return _build(ds, settings, spark, shards, started, step.update)



def _one_row_per_id(docs, id_col: str, ds: str, settings: Settings, partitions: int):
    """``docs`` spread over ``partitions``; raw rows that were never validated keep one row per ID (validation
    quarantines repeated IDs, and profiles are computed row by row)."""
    from pipeline.validation import was_validated

    if not was_validated(ds, settings):
        docs = docs.dropDuplicates([id_col])
    return docs.repartition(max(partitions, 1))


def _build(
    ds: str, settings: Settings, spark, shards: int, started: float, step_done: Callable[[], None]
) -> dict:
    """The stages of :func:`build_features`; calls ``step_done()`` after each of :data:`FEATURE_STEPS`."""
    from pyspark.sql import functions as F

    from pipeline.features.profiles import build_profiles, document_frequencies, term_counts
    from pipeline.features.training import label_impressions, training_examples
    from pipeline.features.vocab import VOCAB_SCHEMA, Vocab, idf, merge_vocab, previous_vocab

    layout = settings.layout
    # A raw table is one file of few row groups: spread its rows over the cores before the per-row work.
    parallelism = spark.sparkContext.defaultParallelism
    members = _one_row_per_id(load_input("members", ds, settings, spark), "member_id", ds, settings, parallelism)
    jobs = _one_row_per_id(load_input("jobs", ds, settings, spark), "job_id", ds, settings, parallelism)
    member_terms = term_counts(members, "member_id").cache()
    job_terms = term_counts(jobs, "job_id", "company_id", "posted_at", "expires_at").cache()
    n_members, n_jobs = member_terms.count(), job_terms.count()
    n_docs = n_members + n_jobs
    step_done()

    counts = document_frequencies(member_terms, job_terms).toArrow()
    previous = previous_vocab(ds, settings)
    vocab_table = merge_vocab(previous, counts, ds)
    write_partition(layout.features("vocab", ds), vocab_table.cast(VOCAB_SCHEMA))
    vocab = Vocab(vocab_table)
    new_terms = int(np.sum(np.asarray(vocab_table["first_ds"].to_pylist()) == ds))
    log.info("features %s: vocab %d terms (%d new) over %d docs", ds, vocab_table.num_rows, new_terms, n_docs)
    step_done()

    seen = vocab_table.filter(pc.greater(vocab_table["df"], 0))
    idf_table = pa.table(
        {"field": seen["field"], "term": seen["term"], "idf": idf(seen["df"].to_numpy(), n_docs)}
    )
    member_profiles = build_profiles(member_terms, idf_table, "member_id")
    job_profiles = build_profiles(job_terms, idf_table, "job_id", "company_id", "posted_at", "expires_at")
    member_profiles = member_profiles.cache()
    job_profiles = job_profiles.cache()
    write_spark_partition(
        member_profiles, layout.features("member_profiles", ds), shards=1, key="member_id", order=["member_id"]
    )
    write_spark_partition(job_profiles, layout.features("job_profiles", ds), shards=1, key="job_id", order=["job_id"])
    log.info("features %s: profiles written (%d members, %d jobs)", ds, n_members, n_jobs)
    step_done()

    impressions = load_input("impressions", ds, settings, spark)
    applies = load_input("applies", ds, settings, spark)
    labelled = label_impressions(impressions, applies, settings.label_window_days).cache()
    positives = labelled.filter(F.col("label") > 0).count()
    step_done()
    examples = training_examples(labelled, member_profiles, job_profiles, vocab)
    n_rows = write_spark_partition(
        examples, layout.features("training", ds), shards=shards, key="member_id", order=["member_id", "impression_id"]
    )
    for cached in (member_terms, job_terms, member_profiles, job_profiles, labelled):
        cached.unpersist()
    step_done()
    seconds = round(time.time() - started, 3)
    log.info("features %s: %d training rows (%d positive) in %.1fs", ds, n_rows, positives, seconds)
    return {
        "ds": ds,
        "members": n_members,
        "jobs": n_jobs,
        "terms": vocab_table.num_rows,
        "new_terms": new_terms,
        "training_rows": n_rows,
        "positives": positives,
        "seconds": seconds,
    }

