"""A random day for re-scoring tests, written in the contract formats without Spark.

Vocab, member and job profiles (unit-norm TF-IDF-like weights; some categorical fields empty or with two
terms), candidates (with unknown jobs, repeats, a member without a profile, members without candidates),
applies, and a GLMix model whose fixed effect covers every kind of global feature (cosines, position,
region match, one-hot main effects, crosses) and whose random effects cover terms of every field (plus
entity IDs that no int64 ID equals).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from glmix_core import GLMixModel, GLMixSpec
from glmix_core.model import FixedEffectModel, RandomEffectModel
from pipeline.features.pairs import CROSS_TOP_TERMS, GlobalSpace, feature_bags, profile_bag
from pipeline.features.vocab import CATEGORICAL_FIELDS, FIELDS, VOCAB_SCHEMA, Vocab
from pipeline.storage import write_partition

DAY = "2026-03-10"
TS = pa.timestamp("us", tz="UTC")
PROFILE = pa.list_(pa.struct([("term", pa.string()), ("weight", pa.float64())]))
TERMS = {"title": 30, "skills": 40, "industry": 12, "function": 24, "seniority": 12, "region": 6}
SPEC = {"task": "logistic", "response": "label", "coordinates": [
    {"name": "global", "type": "fixed", "feature_bags": ["global"]},
    {"name": "per_member", "type": "random", "entity": "member_id", "feature_bags": ["job_features"]},
    {"name": "per_job", "type": "random", "entity": "job_id", "feature_bags": ["member_features"]}]}


def _day(ds: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ds).replace(tzinfo=dt.UTC)


@dataclass
class World:
    """What :func:`make_world` wrote (the tables as written)."""

    vocab: pa.Table
    members: pa.Table
    jobs: pa.Table
    candidates: pa.Table
    applies: pa.Table
    model: GLMixModel


def _profiles(rng: np.random.Generator, n: int, *, empty: float, double: float, norm: float = 1.0) -> dict:
    """Per field a list<struct<term, weight>> column of ``n`` random profiles (weights unit-norm × ``norm``)."""
    columns = {}
    for f in FIELDS:
        if f in CATEGORICAL_FIELDS:
            sizes = np.where(rng.random(n) < empty, 0, np.where(rng.random(n) < double, 2, 1))
        else:
            sizes = rng.integers(1, 6, n)
        rows = []
        for size in sizes.tolist():  # test data: a few hundred rows
            terms = rng.choice(TERMS[f], size, replace=False)
            weights = rng.random(size) + 0.1
            weights = weights / np.linalg.norm(weights) * norm if size else weights
            rows.append([(f"{f[:2]}{t}", float(w)) for t, w in zip(terms.tolist(), weights.tolist(), strict=True)])
        columns[f] = pa.array(rows, PROFILE)
    return columns


def make_world(settings, seed: int = 0, *, members: int = 60, jobs: int = 90, title_norm: float = 1.0) -> World:
    """Write a random day ``DAY`` under ``settings`` and return what was written.

    ``title_norm``: scale of the members' title weights (≠ 1: profiles that are not unit-norm, so cosines
    can leave [0, 1] and the clip matters).
    """
    rng = np.random.default_rng(seed)
    layout = settings.layout
    vocab_rows = [(f, f"{f[:2]}{t}") for f in FIELDS for t in range(TERMS[f])]
    df = rng.integers(0, 50, len(vocab_rows))
    vocab = pa.table({"field": [f for f, _ in vocab_rows], "term": [t for _, t in vocab_rows],
                      "index": np.arange(len(vocab_rows)), "df": df, "first_ds": [DAY] * len(vocab_rows)},
                     schema=VOCAB_SCHEMA)
    write_partition(layout.features("vocab", DAY), vocab)

    member_ids = np.sort(rng.choice(np.arange(10_000_000, 10_000_000 + 50 * members), members, replace=False))
    member_table = pa.table({"member_id": pa.array(member_ids, pa.int64()),
                             **_profiles(rng, members, empty=0.1, double=0.08)})
    if title_norm != 1.0:
        member_table = member_table.set_column(
            member_table.schema.get_field_index("title"), "title",
            _profiles(rng, members, empty=0.0, double=0.0, norm=title_norm)["title"])
    write_partition(layout.features("member_profiles", DAY), member_table)

    job_ids = np.sort(rng.choice(np.arange(1, 40 * jobs), jobs, replace=False)).astype(np.int64)
    expires = [_day("2026-03-11") if e else _day("2026-04-30") for e in (rng.random(jobs) < 0.15).tolist()]
    job_table = pa.table({
        "job_id": pa.array(job_ids, pa.int64()),
        "company_id": pa.array(rng.integers(0, 8, jobs), pa.int64()),
        "posted_at": pa.array([_day("2026-03-01")] * jobs, TS),
        "expires_at": pa.array(expires, TS),
        **_profiles(rng, jobs, empty=0.05, double=0.05),
    })
    write_partition(layout.features("job_profiles", DAY), job_table.take(pa.array(rng.permutation(jobs))))

    # Candidates: ~40 jobs per member, a few unknown jobs and repeats; the last 5 members have none; one
    # member without a profile has some.
    with_candidates = member_ids[:-5]
    cand_m = np.repeat(with_candidates, 40)
    cand_j = rng.choice(job_ids, len(cand_m))
    cand_j[rng.random(len(cand_j)) < 0.03] = 999_999_999  # unknown job
    extra_member = member_ids.max() + 7
    cand_m = np.concatenate([cand_m, np.full(12, extra_member), cand_m[:30]])
    cand_j = np.concatenate([cand_j, rng.choice(job_ids, 12), cand_j[:30]])
    order = np.lexsort((rng.random(len(cand_m)), cand_m))  # grouped by member, any order inside
    candidates = pa.table({"member_id": pa.array(cand_m[order], pa.int64()),
                           "job_id": pa.array(cand_j[order], pa.int64()),
                           "score": pa.array(rng.random(len(cand_m))),
                           "rank": pa.array(np.ones(len(cand_m), np.int32))})
    write_partition(layout.candidates(DAY), candidates)

    picks = rng.choice(len(cand_m), 60, replace=False)
    applied_m = np.concatenate([cand_m[picks], member_ids[-2:]])
    applied_j = np.concatenate([cand_j[picks], job_ids[:2]])
    applies = pa.table({"member_id": pa.array(applied_m, pa.int64()), "job_id": pa.array(applied_j, pa.int64()),
                        "ts": pa.array([_day(DAY)] * len(applied_m), TS)})
    write_partition(layout.raw("applies", DAY), applies)

    model = random_model(rng, Vocab(vocab), member_ids, job_ids)
    model.save(layout.model_daily(DAY))
    return World(vocab, member_table, job_table, candidates, applies, model)


def random_model(rng: np.random.Generator, vocab: Vocab, member_ids: np.ndarray, job_ids: np.ndarray) -> GLMixModel:
    """Coefficients on every kind of feature of the day (and a few names that are not features today)."""
    spec = GLMixSpec.from_dict(SPEC)
    space = GlobalSpace.from_vocab(vocab, CROSS_TOP_TERMS)
    names = space.names.to_pylist()
    chosen = [n for n in names if n.startswith(("cos:", "ctx:", "x:region")) or rng.random() < 0.6]
    fixed_names = ["(intercept)", *chosen, "not:a-feature-today"]
    fixed = FixedEffectModel(spec.coordinate("global"), fixed_names, rng.normal(0, 0.7, len(fixed_names)))
    profile_names = [f"{f}={t}" for f, t in zip(vocab.table["field"].to_pylist(), vocab.table["term"].to_pylist(),
                                                 strict=True)]

    def random_effect(name: str, ids: np.ndarray, share: float) -> RandomEffectModel:
        entities = [str(i) for i in ids[rng.random(len(ids)) < share].tolist()]
        entities += ["0" + str(ids[0]), f" {ids[1]}", "not-an-id"]  # never equal to an int64 ID as a string
        pairs = [(e, f) for e in entities for f in ["(intercept)", *rng.choice(profile_names, 8, replace=False)]]
        return RandomEffectModel.from_pairs(
            spec.coordinate(name), pa.array([p[0] for p in pairs]), pa.array([p[1] for p in pairs]),
            rng.normal(0, 0.5, len(pairs)), np.full(len(pairs), np.nan))

    return GLMixModel(spec, {"global": fixed, "per_member": random_effect("per_member", member_ids, 0.7),
                             "per_job": random_effect("per_job", job_ids, 0.8)}, metadata={"version": "world"})


def pairs_table(world: World, space: GlobalSpace, member_ids: np.ndarray, job_ids: np.ndarray) -> pa.Table:
    """The pairs as ``GLMixModel.score`` reads them: entity columns and the three bags from the training code
    path (:func:`feature_bags`, position 1), the random effects' bags over every profile field (what
    re-scoring multiplies by the coefficients). Members without a profile get an empty one."""
    members = world.members
    known = members["member_id"].to_numpy()
    missing = np.setdiff1d(np.unique(member_ids), known)
    if len(missing):
        empty = pa.table({"member_id": pa.array(missing, pa.int64()),
                          **{f: pa.array([[]] * len(missing), PROFILE) for f in FIELDS}})
        members = pa.concat_tables([members.select(empty.column_names), empty])
    m_pos = {m: i for i, m in enumerate(members["member_id"].to_pylist())}
    j_pos = {j: i for i, j in enumerate(world.jobs["job_id"].to_pylist())}
    m_rows = pa.array([m_pos[m] for m in np.asarray(member_ids).tolist()])
    j_rows = pa.array([j_pos[j] for j in np.asarray(job_ids).tolist()])
    batch = pa.table({**{f"m_{f}": members[f].take(m_rows) for f in FIELDS},
                      **{f"j_{f}": world.jobs[f].take(j_rows) for f in FIELDS},
                      "position": pa.array(np.ones(len(m_rows), np.int32))})
    bags = feature_bags(batch, space)
    return pa.table({"member_id": pa.array(member_ids, pa.int64()), "job_id": pa.array(job_ids, pa.int64()),
                     "global": bags["global"], "job_features": profile_bag(batch, "j_", FIELDS),
                     "member_features": profile_bag(batch, "m_", FIELDS)})
