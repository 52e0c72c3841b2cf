"""Re-scoring on hand-built features: the scores equal ``GLMixModel.score`` on the same (member, job) pairs
(for a hand-built model saved with glmix_core and for a model fitted by ``glmix_core.fit`` on the training
code path's feature bags), equal the GLMix formula computed directly, and the post-processing (expired,
applied, company cap, top N, fallback) holds."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from glmix_core import GLMixModel, GLMixSpec, fit, load_model
from glmix_core.model import FixedEffectModel, RandomEffectModel
from pipeline.features.pairs import GlobalSpace, feature_bags, profile_bag
from pipeline.features.vocab import FIELDS, VOCAB_SCHEMA, load_vocab
from pipeline.scoring import rescore
from pipeline.storage import read_partition, write_partition

DAY = "2026-01-05"
TS = pa.timestamp("us", tz="UTC")
PROFILE = pa.list_(pa.struct([("term", pa.string()), ("weight", pa.float64())]))


def profile(title=(), skills=(), industry=None, function=None, seniority=None, region=None) -> dict:
    """A member/job profile: per field {term: weight}, title/skills given as (term, weight) pairs."""
    out = {"title": dict(title), "skills": dict(skills)}
    for f, v in (("industry", industry), ("function", function), ("seniority", seniority), ("region", region)):
        out[f] = {v: 1.0} if v else {}
    return out


ENGINEER = profile([("data", 0.6), ("engineer", 0.8)], [("python", 1.0)], "software", "engineering", "senior", "us-west")
NURSE = profile([("nurse", 1.0)], [("care", 1.0)], "health", "medical", "entry", "us-east")
MEMBERS = {1: ENGINEER, 2: NURSE, 3: ENGINEER, 4: NURSE}  # 3 has no candidates, 4 no coefficients
JOBS = {
    # job_id: (profile, company_id, expires day)
    10: (ENGINEER, 100, "2026-02-01"),
    11: (profile([("engineer", 1.0)], [("python", 1.0)], "software", "engineering", "senior", "us-east"), 100, "2026-02-01"),
    12: (NURSE, 200, "2026-02-01"),
    13: (profile([("data", 1.0)], [("python", 0.6), ("care", 0.8)], "software", "data", None, "us-west"), 100, "2026-02-01"),
    14: (ENGINEER, 300, "2026-01-06"),  # expires at the end of DAY: not recommendable
    15: (ENGINEER, 300, "2026-02-01"),  # member 1 applied to it the day before
}
CANDIDATES = {1: [10, 11, 12, 13, 14, 15], 2: [12, 10, 13], 4: [12, 11, 10]}
FIXED = {
    "(intercept)": -1.0,
    "cos:title": 2.0,
    "cos:skills": 1.5,
    "cos:region": 0.25,
    "x:region=match": 0.7,
    "j:industry=software": 0.3,
    "m:seniority=senior": 0.2,
    "x:function=engineering|function=engineering": 0.4,
    "ctx:position": -0.5,
    "not:a-feature-today": 9.0,
}
PER_MEMBER = {"1": {"(intercept)": 0.1, "title=data": 0.5, "region=us-east": -0.3}, "2": {"skills=care": 0.9},
              "3": {"(intercept)": 0.2, "industry=software": 0.25}}
PER_JOB = {"10": {"(intercept)": 0.05, "title=engineer": 0.3}, "12": {"industry=health": 0.4},
           "13": {"(intercept)": -0.2}, "11": {"seniority=senior": -0.1}}


def direct_score(member: dict, job: dict, member_id: int, job_id: int) -> float:
    """x'b + s_j'α_m + q_m'β_j written out by hand from the feature definitions (position 1)."""
    x = {f"cos:{f}": sum(w * job[f].get(t, 0.0) for t, w in member[f].items()) for f in FIELDS}
    x["ctx:position"] = math.log(1)
    if member["region"] and member["region"] == job["region"]:
        x["x:region=match"] = 1.0
    for f in ("industry", "function", "seniority", "region"):
        for t in member[f]:
            x[f"m:{f}={t}"] = 1.0
        for t in job[f]:
            x[f"j:{f}={t}"] = 1.0
    for f in ("industry", "function", "seniority"):
        for a in member[f]:
            for b in job[f]:
                x[f"x:{f}={a}|{f}={b}"] = 1.0
    score = FIXED["(intercept)"] + sum(v * FIXED.get(k, 0.0) for k, v in x.items())
    alpha, beta = PER_MEMBER.get(str(member_id), {}), PER_JOB.get(str(job_id), {})
    score += alpha.get("(intercept)", 0.0) + beta.get("(intercept)", 0.0)
    score += sum(w * alpha.get(f"{f}={t}", 0.0) for f in FIELDS for t, w in job[f].items())
    score += sum(w * beta.get(f"{f}={t}", 0.0) for f in FIELDS for t, w in member[f].items())
    return score


SPEC = {"task": "logistic", "response": "label", "coordinates": [
    {"name": "global", "type": "fixed", "feature_bags": ["global"]},
    {"name": "per_member", "type": "random", "entity": "member_id", "feature_bags": ["job_features"]},
    {"name": "per_job", "type": "random", "entity": "job_id", "feature_bags": ["member_features"]}]}


def hand_model() -> GLMixModel:
    """FIXED/PER_MEMBER/PER_JOB as a glmix_core model (saved with ``GLMixModel.save``, as training does)."""
    spec = GLMixSpec.from_dict(SPEC)
    nan = float("nan")

    def random(name: str, coefficients: dict) -> RandomEffectModel:
        pairs = [(e, f, v) for e, c in coefficients.items() for f, v in c.items()]
        return RandomEffectModel.from_pairs(
            spec.coordinate(name), pa.array([p[0] for p in pairs]), pa.array([p[1] for p in pairs]),
            np.array([p[2] for p in pairs]), np.full(len(pairs), nan))

    return GLMixModel(spec, {
        "global": FixedEffectModel(spec.coordinate("global"), list(FIXED), np.array(list(FIXED.values()))),
        "per_member": random("per_member", PER_MEMBER),
        "per_job": random("per_job", PER_JOB),
    }, metadata={"version": "daily-test"})


def profile_columns(profiles: list[dict]) -> dict:
    return {f: pa.array([sorted(p[f].items()) for p in profiles], PROFILE) for f in FIELDS}


@pytest.fixture
def world(settings):
    """Features, candidates, applies and a model for DAY, written in the contract formats."""
    layout = settings.layout
    all_profiles = list(MEMBERS.values()) + [j[0] for j in JOBS.values()]
    terms = sorted({(f, t) for p in all_profiles for f in FIELDS for t in p[f]}, key=lambda ft: (FIELDS.index(ft[0]), ft[1]))
    df = {ft: sum(ft[1] in p[ft[0]] for p in all_profiles) for ft in terms}
    write_partition(layout.features("vocab", DAY), pa.table(
        {"field": [f for f, _ in terms], "term": [t for _, t in terms], "index": list(range(len(terms))),
         "df": [df[ft] for ft in terms], "first_ds": [DAY] * len(terms)}, schema=VOCAB_SCHEMA))
    write_partition(layout.features("member_profiles", DAY), pa.table(
        {"member_id": pa.array(list(MEMBERS), pa.int64()), **profile_columns(list(MEMBERS.values()))}))
    day = lambda d: dt.datetime.fromisoformat(d).replace(tzinfo=dt.UTC)  # noqa: E731
    write_partition(layout.features("job_profiles", DAY), pa.table(
        {"job_id": pa.array(list(JOBS), pa.int64()),
         "company_id": pa.array([j[1] for j in JOBS.values()], pa.int64()),
         "posted_at": pa.array([day("2026-01-01")] * len(JOBS), TS),
         "expires_at": pa.array([day(j[2]) for j in JOBS.values()], TS),
         **profile_columns([j[0] for j in JOBS.values()])}))
    pairs = [(m, j) for m, js in CANDIDATES.items() for j in js]
    write_partition(layout.candidates(DAY), pa.table(
        {"member_id": pa.array([m for m, _ in pairs], pa.int64()), "job_id": pa.array([j for _, j in pairs], pa.int64()),
         "score": pa.array([0.5] * len(pairs)), "rank": pa.array(list(range(1, len(pairs) + 1)), pa.int32())}))
    write_partition(layout.raw("applies", "2026-01-04"), pa.table(
        {"member_id": pa.array([1], pa.int64()), "job_id": pa.array([15], pa.int64()),
         "ts": pa.array([day("2026-01-04")], TS)}))
    hand_model().save(layout.model_daily(DAY))
    return settings


def recommendations(settings) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for row in read_partition(settings.layout.recommendations(DAY)).to_pylist():
        out.setdefault(row["member_id"], []).append(row)
    return out


def pairs_table(settings, member_ids, job_ids, position=None, *, full_profiles: bool = False) -> pa.Table:
    """(member, job) pairs as ``GLMixModel.score`` expects them: the spec's entity columns ``member_id`` and
    ``job_id`` and its bags ``global``/``job_features``/``member_features``, built from the day's profiles by
    the training code path (:func:`feature_bags`; position 1, as re-scoring assumes, unless given).

    ``full_profiles``: the random effects' bags hold every profile field (what re-scoring multiplies by the
    coefficients) instead of the categorical fields the training bags keep.
    """
    layout = settings.layout
    space = GlobalSpace.from_vocab(load_vocab(DAY, settings))
    members = read_partition(layout.features("member_profiles", DAY))
    jobs = read_partition(layout.features("job_profiles", DAY))
    member_row = {m: i for i, m in enumerate(members["member_id"].to_pylist())}
    job_row = {j: i for i, j in enumerate(jobs["job_id"].to_pylist())}
    m_rows = pa.array([member_row[m] for m in member_ids])
    j_rows = pa.array([job_row[j] for j in job_ids])
    position = np.ones(len(m_rows)) if position is None else np.asarray(position)
    batch = pa.table({**{f"m_{f}": members[f].take(m_rows) for f in FIELDS},
                      **{f"j_{f}": jobs[f].take(j_rows) for f in FIELDS},
                      "position": pa.array(position, pa.int32())})
    bags = feature_bags(batch, space)
    if full_profiles:
        bags = bags.set_column(1, "job_features", profile_bag(batch, "j_", FIELDS))
        bags = bags.set_column(2, "member_features", profile_bag(batch, "m_", FIELDS))
    ids = {"member_id": pa.array(member_ids, pa.int64()), "job_id": pa.array(job_ids, pa.int64())}
    return pa.table({**ids, **{name: bags[name] for name in bags.column_names}})


def test_scores_equal_glmix_model_score_on_the_same_pairs(world):
    rescore(DAY, world, max_per_company=None)
    recs = read_partition(world.layout.recommendations(DAY))
    assert set(recs["member_id"].to_pylist()) == {1, 2, 3, 4}  # with coefficients, without, on fallback
    model = load_model(world.layout.model_daily(DAY))
    table = pairs_table(world, recs["member_id"].to_pylist(), recs["job_id"].to_pylist(), full_profiles=True)
    np.testing.assert_allclose(recs["score"].to_numpy(), model.score(table), rtol=0, atol=1e-12)


def test_a_fitted_models_scores_equal_its_score_on_the_training_bags(world):
    """A model fitted by glmix_core on the training code path's bags (random effects on the categorical
    fields only): re-scoring gives exactly ``GLMixModel.score`` of the pairs' training-path bags."""
    rng = np.random.default_rng(7)
    member_ids = [m for m in MEMBERS for _ in JOBS] * 3
    job_ids = [j for _ in MEMBERS for j in JOBS] * 3
    train = pairs_table(world, member_ids, job_ids, rng.integers(1, 6, len(member_ids)))
    label = (rng.random(train.num_rows) < 0.4).astype(float)
    model = fit(GLMixSpec.from_dict(SPEC), train.append_column("label", pa.array(label)))
    per_member = model.coefficients().filter(pc.equal(pc.field("coordinate"), "per_member"))
    assert per_member.num_rows > len(MEMBERS), "the per-member effects have feature coefficients, not only intercepts"
    model.metadata["version"] = "fitted"
    model.save(world.layout.model_daily(DAY))

    report = rescore(DAY, world, max_per_company=None)
    recs = read_partition(world.layout.recommendations(DAY))
    assert report["model_version"] == "fitted" and report["members_with_coefficients"] == len(MEMBERS)
    table = pairs_table(world, recs["member_id"].to_pylist(), recs["job_id"].to_pylist())
    np.testing.assert_allclose(recs["score"].to_numpy(), model.score(table), rtol=0, atol=1e-12)


def test_scores_equal_the_glmix_formula_computed_directly(world):
    report = rescore(DAY, world, max_per_company=None)
    recs = recommendations(world)
    assert report["members"] == 4 and report["members_on_fallback"] == 1
    for member_id in (1, 2, 4):
        rows = recs[member_id]
        assert rows, member_id
        for row in rows:
            expected = direct_score(MEMBERS[member_id], JOBS[row["job_id"]][0], member_id, row["job_id"])
            assert row["score"] == pytest.approx(expected, abs=1e-12), (member_id, row["job_id"])
            assert row["model_version"] == "daily-test"
    assert {r["job_id"] for r in recs[2]} == {12, 10, 13}  # every candidate kept when nothing is filtered


def test_expired_and_already_applied_jobs_are_dropped(world):
    rescore(DAY, world, max_per_company=None)
    jobs_of_member_1 = {r["job_id"] for r in recommendations(world)[1]}
    assert jobs_of_member_1 == {10, 11, 12, 13}


def test_ranks_follow_scores_and_top_n_cuts(world):
    rescore(DAY, world, top_n=2, max_per_company=None)
    recs = recommendations(world)
    for member_id, rows in recs.items():
        assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
        assert len(rows) <= 2
        assert all(a["score"] >= b["score"] for a, b in zip(rows, rows[1:], strict=False)), member_id
    full = {j: direct_score(ENGINEER, JOBS[j][0], 1, j) for j in (10, 11, 12, 13)}
    assert [r["job_id"] for r in recs[1]] == sorted(full, key=lambda j: -full[j])[:2]


def test_company_cap_keeps_each_companys_best_jobs(world):
    rescore(DAY, world, max_per_company=1)
    rows = recommendations(world)[1]
    companies = [JOBS[r["job_id"]][1] for r in rows]
    assert len(companies) == len(set(companies)) == 2  # companies 100 and 200 (300's jobs were filtered)
    best_of_100 = max((10, 11, 13), key=lambda j: direct_score(ENGINEER, JOBS[j][0], 1, j))
    assert best_of_100 in {r["job_id"] for r in rows}


def test_member_without_candidates_is_ranked_over_active_jobs_by_the_model(world):
    rescore(DAY, world, max_per_company=None)
    rows = recommendations(world)[3]
    recommendable = (10, 11, 12, 13, 15)  # active jobs; member 3 applied to none
    expected = {j: direct_score(ENGINEER, JOBS[j][0], 3, j) for j in recommendable}
    assert [r["job_id"] for r in rows] == sorted(expected, key=lambda j: (-expected[j], j))
    for r in rows:
        assert r["score"] == pytest.approx(expected[r["job_id"]], abs=1e-12)


def test_rerun_writes_the_same_recommendations(world):
    rescore(DAY, world)
    first = read_partition(world.layout.recommendations(DAY))
    rescore(DAY, world)
    assert read_partition(world.layout.recommendations(DAY)).equals(first)


def test_missing_model_or_candidates_say_what_to_run(world, tmp_path):
    with pytest.raises(FileNotFoundError, match="no GLMix model"):
        rescore(DAY, world, model_dir=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="jobrec retrieve"):
        rescore("2026-01-09", world)
