"""Stream a synthetic job marketplace day by day into the raw layout, with its ground truth.

Per day ``ds`` it writes (docs/architecture.md, "Raw inputs")::

    raw/members/ds=D/      full member snapshot
    raw/jobs/ds=D/         jobs active at some time during D
    raw/impressions/ds=D/  impressions of D from the logging policy
    raw/applies/ds=D/      applies of D, drawn from the true GLMix model (landing on the impression's day)
    truth/impressions/ds=D/  impression_id, p_apply (true apply probability)

and at the end ``truth/summary.json`` (parameters, counts and the oracle AUC of each day). Only one day's
impressions are in memory at a time; the entities and random effects are O(members + jobs).

Determinism: every random stream is a ``SeedSequence`` of (seed, purpose, day), the Parquet writer settings
are fixed by ``pipeline.storage.write_partition`` and no wall-clock time is written, so one seed gives
byte-identical files.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.progress import track
from pipeline.storage import Layout, check_ds, shift_ds, write_json, write_partition
from pipeline.synth.catalog import Catalog, build_catalog
from pipeline.synth.entities import (
    TIMESTAMP,
    US_PER_DAY,
    JobPostings,
    Profiles,
    TitleVocabulary,
    build_title_vocabulary,
    generate_jobs,
    generate_members,
    jobs_table,
    members_table,
)
from pipeline.synth.policy import PolicyParameters, activity_cdf, assign_positions, sample_slots
from pipeline.synth.truth_model import (
    TruthModel,
    TruthParameters,
    binary_cosine,
    one_hot_columns,
    roc_auc,
    sigmoid,
)

log = logging.getLogger(__name__)

IMPRESSIONS_PER_MEMBER_DAY = 3  # default impressions/day = 3 × members (300k/day at 100k members)
CHANNELS = ("jymbii-web", "jymbii-mobile", "jymbii-email")
# Streams of the seed, one per purpose, so adding a draw to one purpose does not shift the others.
_ENTITIES, _TRUTH, _DRIFT, _DAY = 1, 2, 3, 4


def _fmt(auc: float | None) -> str:
    return "n/a" if auc is None else f"{auc:.4f}"


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


def _day_start_us(ds: str) -> int:
    day = dt.datetime.combine(dt.date.fromisoformat(ds), dt.time(), tzinfo=dt.UTC)
    return int(day.timestamp()) * 1_000_000


def generate_marketplace(
    home: Path,
    *,
    members: int,
    jobs: int,
    days: int,
    start: str,
    seed: int,
    impressions_per_day: int | None = None,
    truth_params: TruthParameters | None = None,
    policy_params: PolicyParameters | None = None,
) -> dict:
    """Generate ``days`` days of a marketplace of ``members`` members and ``jobs`` jobs under ``home``.

    ``jobs`` is the number of postings over the whole period (some opened before ``start``); each day
    holds the subset active that day. ``impressions_per_day`` defaults to 3 × members. Re-running replaces
    the same partitions (atomic writes), so it is idempotent for a seed.

    Returns the summary also written to ``truth/summary.json``: ``parameters`` and, per day, ``ds``,
    ``members``, ``active_jobs``, ``impressions``, ``applies``, ``apply_rate``, ``oracle_auc`` (true
    probability vs. drawn applies) and ``frozen_auc`` (the true model with its day-one random effects,
    showing how the drift makes an untrained model decay).

    Raises ``ValueError`` on non-positive sizes or a malformed ``start``.
    """
    check_ds(start)
    for name, value in (("members", members), ("jobs", jobs), ("days", days)):
        if int(value) < 1:
            raise ValueError(f"{name} must be at least 1; got {value}")
    if impressions_per_day is None:
        impressions_per_day = IMPRESSIONS_PER_MEMBER_DAY * members
    if impressions_per_day < 0 or impressions_per_day >= 10**8:
        raise ValueError(f"impressions_per_day must be in [0, 1e8); got {impressions_per_day}")
    truth_params = truth_params or TruthParameters()
    policy_params = policy_params or PolicyParameters()
    layout = Layout(Path(home))
    started = time.perf_counter()

    catalog = build_catalog(seed)
    titles = build_title_vocabulary(catalog)
    rng = _rng(seed, _ENTITIES)
    start_us = _day_start_us(start)
    member_profiles = generate_members(rng, catalog, titles, members)
    postings = generate_jobs(rng, catalog, titles, jobs, start_us=start_us, days=days)
    updated_at = start_us - rng.integers(1, 700 * 86_400, members) * 1_000_000
    max_share = policy_params.max_member_impressions / max(impressions_per_day, 1)
    world = _World(
        catalog=catalog,
        titles=titles,
        members=member_profiles,
        postings=postings,
        member_cdf=activity_cdf(rng, members, policy_params.activity_sigma, max_share),
        # Members are static profiles: one snapshot table, rewritten for every day.
        members_snapshot=members_table(member_profiles, updated_at, catalog, titles),
        policy=policy_params,
        impressions_per_day=impressions_per_day,
    )
    truth = TruthModel(_rng(seed, _TRUTH), catalog, member_profiles, postings.profiles, truth_params)
    day_one_effects = (truth.alpha.copy(), truth.beta.copy())
    log.info("synth: %d members, %d jobs, %d days from %s (seed %d), %d impressions/day",
             members, jobs, days, start, seed, impressions_per_day)

    day_summaries = []
    for day in track(range(days), "synth", unit="days", logger=log):
        ds = shift_ds(start, day)
        if day > 0:
            truth.drift(_rng(seed, _DRIFT, day))
        summary = _generate_day(ds, layout, _rng(seed, _DAY, day), world, truth, day_one_effects)
        day_summaries.append(summary)
        log.info("synth %s: %d active jobs, %d impressions, %d applies (rate %.4f), oracle AUC %s, "
                 "day-one-model AUC %s", ds, summary["active_jobs"], summary["impressions"],
                 summary["applies"], summary["apply_rate"], _fmt(summary["oracle_auc"]), _fmt(summary["frozen_auc"]))

    result = {
        "parameters": {
            "members": members,
            "jobs": jobs,
            "days": days,
            "start": start,
            "seed": seed,
            "impressions_per_day": impressions_per_day,
            "truth": dataclasses.asdict(truth_params),
            "intercept": truth.intercept,
            "policy": dataclasses.asdict(policy_params),
            "n_skills": len(catalog.skills),
            "n_functions": len(catalog.functions),
            "n_industries": len(catalog.industries),
            "n_regions": len(catalog.regions),
        },
        "days": day_summaries,
    }
    write_json(layout.truth_summary(), result)
    log.info("synth: wrote %d days under %s in %.1f s", days, layout.home, time.perf_counter() - started)
    return result


@dataclass(frozen=True)
class _World:
    """What stays fixed across days: vocabularies, entities, member activity, the logging policy."""

    catalog: Catalog
    titles: TitleVocabulary
    members: Profiles
    postings: JobPostings
    member_cdf: np.ndarray
    members_snapshot: pa.Table
    policy: PolicyParameters
    impressions_per_day: int


def _generate_day(ds: str, layout: Layout, rng: np.random.Generator, world: _World, truth: TruthModel,
                  day_one_effects: tuple[np.ndarray, np.ndarray]) -> dict:
    """Log one day's impressions, draw applies from the true model, write the day's partitions."""
    day_start = _day_start_us(ds)
    members, jobs, postings = world.members, world.postings.profiles, world.postings
    active = postings.active_during(day_start)
    slots = sample_slots(rng, members, jobs, active, world.member_cdf, world.impressions_per_day, world.policy)
    m, j = slots.member, slots.job

    cos_title = binary_cosine(members.title_tokens[m], jobs.title_tokens[j])
    cos_skills = binary_cosine(members.skills[m], jobs.skills[j])
    similarity = cos_title + 2.0 * cos_skills + 0.5 * (members.function[m] == jobs.function[j])
    position = assign_positions(rng, slots.session, similarity, world.policy.rank_noise)

    fixed = truth.global_score(members, jobs, m, j, position, cos_title=cos_title, cos_skills=cos_skills)
    member_cols = one_hot_columns(members, world.catalog, m)
    job_cols = one_hot_columns(jobs, world.catalog, j)
    random_part = truth.random_score(member_cols, job_cols, m, j)
    if truth.intercept is None and len(fixed):  # calibrated once, on the first day with impressions
        truth.calibrate_intercept(fixed + random_part)
    p_apply = sigmoid((truth.intercept or 0.0) + fixed + random_part)
    applied = rng.random(len(p_apply)) < p_apply
    p_frozen = sigmoid((truth.intercept or 0.0) + fixed + truth.random_score(member_cols, job_cols, m, j, *day_one_effects))

    # Timestamps: session start + ~20 s per position, clipped into the day; applies minutes later, same day.
    last_us = day_start + US_PER_DAY - 1
    ts = day_start + slots.session_start_s[slots.session] * 1_000_000 + (position - 1) * 20_000_000
    ts = np.minimum(ts + rng.integers(0, 20_000_000, len(ts)), last_us)
    apply_delay = (rng.exponential(1800.0, len(ts)) * 1_000_000).astype(np.int64)
    apply_ts = np.minimum(ts + 1_000_000 + apply_delay, last_us)
    channel = rng.integers(0, len(CHANNELS), int(slots.session.max(initial=-1)) + 1)[slots.session]

    order = np.argsort(ts, kind="stable")
    ds_number = int(ds.replace("-", ""))
    impression_id = ds_number * 10**8 + np.arange(len(order), dtype=np.int64)
    impressions = pa.table({
        "impression_id": pa.array(impression_id, pa.int64()),
        "member_id": pa.array(members.ids[m[order]], pa.int64()),
        "job_id": pa.array(jobs.ids[j[order]], pa.int64()),
        "ts": pa.array(ts[order], TIMESTAMP),
        "position": pa.array(position[order], pa.int32()),
        "channel": pa.array(CHANNELS).take(pa.array(channel[order].astype(np.int64))),
    })
    applied_rows = order[applied[order]]
    apply_order = applied_rows[np.argsort(apply_ts[applied_rows], kind="stable")]
    applies = pa.table({
        "member_id": pa.array(members.ids[m[apply_order]], pa.int64()),
        "job_id": pa.array(jobs.ids[j[apply_order]], pa.int64()),
        "ts": pa.array(apply_ts[apply_order], TIMESTAMP),
    })
    truth_table = pa.table({
        "impression_id": pa.array(impression_id, pa.int64()),
        "p_apply": pa.array(p_apply[order], pa.float64()),
        # the fixed-effect part alone: the best a model without per-entity effects can do
        "p_global": pa.array(sigmoid((truth.intercept or 0.0) + fixed[order]), pa.float64()),
    })

    write_partition(layout.raw("members", ds), world.members_snapshot, landed_marker=True)
    write_partition(layout.raw("jobs", ds), jobs_table(postings, active, world.catalog, world.titles), landed_marker=True)
    write_partition(layout.raw("impressions", ds), impressions, landed_marker=True)
    write_partition(layout.raw("applies", ds), applies, landed_marker=True)
    write_partition(layout.truth(ds), truth_table)
    n = len(p_apply)
    return {
        "ds": ds,
        "members": len(members),
        "active_jobs": int(len(active)),
        "impressions": int(n),
        "members_with_impressions": int(len(np.unique(m))),
        "applies": int(applied.sum()),
        "apply_rate": float(applied.mean()) if n else 0.0,
        "mean_p_apply": float(p_apply.mean()) if n else 0.0,
        "oracle_auc": _finite_or_none(roc_auc(p_apply, applied)),
        "frozen_auc": _finite_or_none(roc_auc(p_frozen, applied)),
    }


def _finite_or_none(value: float) -> float | None:
    """AUC is undefined (NaN) for a day without applies or without non-applies; JSON gets null instead."""
    return value if np.isfinite(value) else None
