"""Re-scoring (``jobrec rescore --ds``): score each member's first-stage candidates with the full GLMix model.

score(m, j) = b₀ + x_mj'b + α_m0 + s_j'α_m + β_j0 + q_m'β_j, the linear predictor (log-odds for the logistic
model) of the features :func:`pipeline.features.pairs.pair_features` builds for the pair (the training code
path; position fixed at :data:`~pipeline.features.pairs.CANONICAL_POSITION`), s_j/q_m the job/member profiles,
α/β the per-member/per-job coefficients. The model is read with ``glmix_core.load_model`` and laid out with
``GLMixModel.coefficient_matrix`` (this module never reads model files) so that a block of members is scored
with one sparse product against the active jobs plus gathers (:mod:`pipeline.rescoring.layout`); the score
equals ``GLMixModel.score`` on the pairs' feature bags (tests/test_scoring_rescore.py,
tests/test_rescoring_equivalence.py).

Post-processing, in order: drop jobs that are not active after ``ds`` (expires_at ≤ the end of ``ds``, or
unknown), drop jobs the member applied to in the last ``applied_lookback_days`` days (days whose validation
did not pass are skipped), keep at most ``max_per_company`` jobs per company (highest scores first), keep the
top N. Ties break on job_id. Each kept pair also gets the score's parts ("why this job": global with its
per-field cosine terms, crosses and main effects; per member; per job), computed after the top N
(:func:`pipeline.rescoring.block.pair_parts`).

Members without coefficients score with α = 0. Members without (usable) candidates — in the day's member
snapshot but absent from ``candidates/`` — are scored against a fallback pool: the ``fallback_pool`` active
jobs with the highest member-independent part of the score (b₀ + job main effects + β_j0).

Engines: ``local`` streams candidates and member profiles by member blocks (:mod:`pipeline.rescoring.stream`),
scores the blocks in forked worker processes and writes the recommendations as they come, so memory grows
with the block, not with the number of members; ``spark`` scores the same blocks in Spark partitions
(:mod:`pipeline.rescoring.spark`). Both write the same rows in the same (member_id, rank) order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from glmix_core import GLMixModel, ModelError, load_model
from pipeline.config import Settings
from pipeline.features.pairs import GlobalSpace
from pipeline.features.vocab import load_vocab
from pipeline.progress import track
from pipeline.rescoring.block import (
    DEFAULT_MAX_PER_COMPANY,
    RECOMMENDATION_SCHEMA,
    BlockResult,
    MemberBlock,
    recommendation_writer,
    score_member_block,
    select_top,
    sorted_distinct,
)
from pipeline.rescoring.layout import Rescorer, build_rescorer, pairwise_pays
from pipeline.rescoring.stream import (
    in_key_order,
    member_blocks,
    ordered_map,
    partition_files,
    read_key_column,
)
from pipeline.storage import atomic_directory, check_ds, pinned_partition, read_partition, shift_ds

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

ENGINES = ("local", "spark")
# Cells of a block's dense members × active-jobs score array (2^22 float64 = 32 MiB per worker).
BLOCK_CELLS = 1 << 22

__all__ = [
    "DEFAULT_MAX_PER_COMPANY", "ENGINES", "RECOMMENDATION_SCHEMA", "block_members_for", "load_glmix_model",
    "rescore", "select_top",
]


def load_glmix_model(model_dir: Path) -> tuple[GLMixModel, str]:
    """(model, version) of the GLMix model at ``model_dir`` (``glmix_core.load_model``).

    Raises ``FileNotFoundError`` saying what to run when ``model_dir`` holds no readable model.
    """
    model_dir = Path(model_dir)
    try:
        model = load_model(model_dir)
    except ModelError as exc:
        raise FileNotFoundError(
            f"no GLMix model at {model_dir} ({exc}); train one first (`jobrec train`) or pass --model DIR"
        ) from exc
    return model, str(model.metadata.get("version") or model_dir.name)


def block_members_for(active_jobs: int) -> int:
    """Members per block: the dense block × active-jobs scores stay near :data:`BLOCK_CELLS` (16..1024)."""
    return int(min(1024, max(16, BLOCK_CELLS // max(active_jobs, 1))))


def default_processes() -> int:
    """Worker processes of the local engine: the cores, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


def _applied_pairs(ds: str, settings: Settings, lookback_days: int) -> tuple[np.ndarray, np.ndarray]:
    """(member_id, job_id) of the applies of the last ``lookback_days`` days up to ``ds``, sorted by member.

    Days without an applies partition, and days whose last validation did not pass
    (``pipeline.validation.NotValidatedError``, a ``FileNotFoundError``), are skipped.
    """
    from pipeline.features import input_path

    members, jobs = [], []
    for back in range(lookback_days):
        day = shift_ds(ds, -back)
        try:
            table = read_partition(input_path("applies", day, settings), columns=["member_id", "job_id"])
        except FileNotFoundError:
            continue
        members.append(table["member_id"].to_numpy(zero_copy_only=False))
        jobs.append(table["job_id"].to_numpy(zero_copy_only=False))
    if not members:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    m, j = np.concatenate(members).astype(np.int64), np.concatenate(jobs).astype(np.int64)
    order = np.argsort(m, kind="stable")
    return m[order], j[order]


def _active_jobs(job_table: pa.Table, ds: str) -> np.ndarray:
    """Per job row: still open after the end of ``ds`` (unknown expiry: not active)."""
    end_of_day = dt.datetime.fromisoformat(shift_ds(ds, 1)).replace(tzinfo=dt.UTC)
    expires = pc.cast(job_table["expires_at"], pa.timestamp("us", tz="UTC"))
    active = pc.fill_null(pc.greater(expires, pa.scalar(end_of_day, pa.timestamp("us", tz="UTC"))), False)
    return active.to_numpy(zero_copy_only=False)


# State shared with forked worker processes (set before the pool starts, read-only in workers).
_SHARED: dict = {}


def _score_task(block: MemberBlock) -> BlockResult:
    s = _SHARED
    return score_member_block(s["rescorer"], block, s["top_n"], s["max_per_company"])


def _write_local(
    target: Path, rescorer: Rescorer, blocks: Iterable[MemberBlock], top_n: int, max_per_company: int | None,
    processes: int, members_total: int | None = None,
) -> dict:
    """Score ``blocks`` on ``processes`` workers and write their recommendations to the file ``target`` as they
    come (in block order), reporting progress over ``members_total``; returns the summed counts."""
    counts = {"members": 0, "members_on_fallback": 0, "members_with_coefficients": 0, "pairs_scored": 0,
              "recommendations": 0}
    _SHARED.update(rescorer=rescorer, top_n=top_n, max_per_company=max_per_company)
    try:
        with recommendation_writer(target) as writer:
            results = track(ordered_map(_score_task, blocks, processes), "rescore", total=members_total,
                            unit="members", weight=lambda r: r.members, logger=log)
            for result in results:
                if result.recommendations.num_rows:
                    writer.write_batch(result.recommendations)
                counts["members"] += result.members
                counts["members_on_fallback"] += result.members_on_fallback
                counts["members_with_coefficients"] += result.members_with_coefficients
                counts["pairs_scored"] += result.pairs_scored
                counts["recommendations"] += result.recommendations.num_rows
    finally:
        _SHARED.clear()
    return counts


def _write_spark(target_dir: Path, frame: DataFrame) -> dict:
    """Run the Spark re-scoring ``frame``, whose tasks write their part files into ``target_dir`` (name order
    = member order); returns the summed counts."""
    from pipeline.rescoring.spark import collect_written

    counts = collect_written(frame, target_dir)
    if not any(target_dir.glob("part-*.parquet")):  # no member at all: one empty file, as the local engine
        pq.write_table(RECOMMENDATION_SCHEMA.empty_table(), target_dir / "part-00000.parquet")
    return counts


def rescore(
    ds: str,
    settings: Settings,
    top_n: int | None = None,
    model_dir: str | Path | None = None,
    max_per_company: int | None = DEFAULT_MAX_PER_COMPANY,
    *,
    engine: str = "local",
    processes: int | None = None,
    block_members: int | None = None,
    fallback_pool: int | None = None,
    applied_lookback_days: int = 60,
) -> dict:
    """Write ``recommendations/ds=`` (member_id, rank, job_id, score, model_version, then the score's parts
    :data:`~pipeline.rescoring.block.PART_COLUMNS`: part_global + part_member + part_job = score) for every member.

    Reads ``candidates/ds=``, the day's features (vocab, member and job profiles) and the GLMix model at
    ``model_dir`` (default ``settings.layout.model_daily(ds)``). ``engine``: ``local`` (``processes`` forked
    workers, default :func:`default_processes`) or ``spark`` (the session of ``settings``); both write the
    same rows in (member_id, rank) order. ``block_members``: members scored together (default
    :func:`block_members_for` the active jobs). Returns counts and timings; raises ``FileNotFoundError`` naming
    the command to run when an input is missing.
    """
    check_ds(ds)
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}; got {engine!r}")
    started = time.time()
    layout = settings.layout
    top_n = settings.top_n if top_n is None else int(top_n)
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1; got {top_n}")
    if max_per_company is not None and max_per_company < 1:
        raise ValueError(f"max_per_company must be >= 1 (or None for no cap); got {max_per_company}")
    fallback_pool = fallback_pool or 5 * top_n
    model_dir = Path(model_dir) if model_dir is not None else layout.model_daily(ds)
    cand_path = layout.candidates(ds)
    if not cand_path.exists():
        raise FileNotFoundError(f"no candidates for ds={ds} at {cand_path}; run `jobrec retrieve --ds {ds}` first")
    for kind in ("member_profiles", "job_profiles"):
        if not layout.features(kind, ds).exists():
            raise FileNotFoundError(f"no {kind} for ds={ds}; run `jobrec features --ds {ds}` first")

    space = GlobalSpace.from_vocab(load_vocab(ds, settings))
    job_table = read_partition(layout.features("job_profiles", ds)).sort_by("job_id")
    model, version = load_glmix_model(model_dir)
    rescorer = build_rescorer(model, space, job_table, _active_jobs(job_table, ds), version, fallback_pool)
    del model, job_table
    applied_members, applied_jobs = _applied_pairs(ds, settings, applied_lookback_days)

    # Member profiles and candidates are read by path (forked workers, Spark tasks): pin each to one version,
    # so a rerun of retrieval or of the features replacing them meanwhile cannot mix two versions.
    with contextlib.ExitStack() as pins:
        members_dir = pins.enter_context(pinned_partition(layout.features("member_profiles", ds), layout.scratch_dir()))
        candidates_dir = pins.enter_context(pinned_partition(cand_path, layout.scratch_dir()))
        profile_files = partition_files(members_dir)
        candidate_files = partition_files(candidates_dir)
        profile_ids = sorted_distinct(read_key_column(profile_files))
        candidate_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in candidate_files)
        pairwise = pairwise_pays(candidate_rows / max(len(profile_ids), 1), rescorer.jobs.n_active)
        rescorer = dataclasses.replace(rescorer, pairwise=pairwise)
        block_members = int(block_members or block_members_for(rescorer.jobs.n_active))
        bounds = profile_ids[block_members::block_members]
        log.info("rescore %s (%s engine): model %s, %d profiled members in %d blocks of %d, %d jobs (%d active), "
                 "%d candidate pairs scored %s", ds, engine, version, len(profile_ids), len(bounds) + 1, block_members,
                 len(rescorer.jobs.job_ids), rescorer.jobs.n_active, candidate_rows,
                 "pair by pair" if pairwise else "by block products")
        target = layout.recommendations(ds)
        setup_seconds = time.time() - started
        with atomic_directory(target) as tmp:
            if engine == "spark":
                from pipeline.rescoring.spark import rescore_frame, rescore_ranges
                from pipeline.spark import get_spark
                from pipeline.spark_progress import spark_progress

                spark = get_spark(settings)
                if in_key_order(profile_files) and in_key_order(candidate_files):
                    way = "member ranges read by the tasks"
                    frame = rescore_ranges(
                        spark, rescorer, [str(f) for f in profile_files], [str(f) for f in candidate_files],
                        applied_members, applied_jobs, bounds, top_n, max_per_company, members=len(profile_ids),
                        target_dir=str(tmp),
                    )
                else:
                    way = "candidates grouped by member (input not in member order)"
                    frame = rescore_frame(
                        spark, rescorer, str(members_dir), str(candidates_dir),
                        pa.table({"member_id": applied_members, "job_id": applied_jobs}), bounds, top_n,
                        max_per_company, target_dir=str(tmp),
                    )
                log.info("rescore %s on Spark: %s", ds, way)
                with spark_progress(spark, "rescore", logger=log):
                    counts = _write_spark(tmp, frame)
            else:
                blocks = member_blocks(profile_files, candidate_files, bounds, applied_members, applied_jobs,
                                       spill_dir=tmp)
                counts = _write_local(tmp / "part-00000.parquet", rescorer, blocks, top_n, max_per_company,
                                      processes or default_processes(), members_total=len(profile_ids))
    seconds = time.time() - started
    members = counts["members"]
    report = {
        "ds": ds,
        "model_version": version,
        "engine": engine,
        "members": members,
        "members_with_candidates": members - counts["members_on_fallback"],
        "members_on_fallback": counts["members_on_fallback"],
        "members_with_coefficients": counts["members_with_coefficients"],
        "pairs_scored": counts["pairs_scored"],
        "recommendations": counts["recommendations"],
        "blocks": int(len(bounds) + 1),
        "block_members": block_members,
        "product": "pairs" if pairwise else "block",
        "setup_seconds": round(setup_seconds, 3),
        "seconds": round(seconds, 3),
        "members_per_second": round(members / seconds, 1) if seconds > 0 else None,
    }
    log.info("rescore %s: %s", ds, report)
    return report
