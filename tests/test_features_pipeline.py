"""Feature generation on a tiny hand-built marketplace: hand-checked vectors, labels, vocab, rerun identity."""

from __future__ import annotations

import datetime as dt
import math
import os
import sys

import pyarrow as pa
import pytest

from pipeline.config import Settings
from pipeline.features import build_features
from pipeline.features.vocab import FIELDS, title_tokens
from pipeline.storage import read_partition, write_partition

pytestmark = pytest.mark.slow
# The session fixture starts Spark; its Python workers need this interpreter (pyarrow, numpy).
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

DAY = "2026-01-05"
UTC = dt.UTC
TS = pa.timestamp("us", tz="UTC")


def at(hour: int, minute: int = 0, day: str = DAY) -> dt.datetime:
    return dt.datetime.fromisoformat(day).replace(hour=hour, minute=minute, tzinfo=UTC)


MEMBERS = [
    # member_id, title, skills, industry, function, seniority, region
    (1, "Senior Data Engineer", ["python", "spark"], "software", "engineering", "senior", "us-west"),
    (2, "Nurse", ["care"], "health", "medical", "entry", "us-east"),
    (3, "Data Scientist", ["python", "statistics"], "software", "data", "mid", "us-west"),
]
JOBS = [
    # job_id, title, skills, industry, function, seniority, region, company_id
    (10, "Data Engineer", ["python", "spark", "sql"], "software", "engineering", "senior", "us-west", 100),
    (11, "Registered Nurse", ["care"], "health", "medical", "entry", "us-east", 200),
    (12, "Data Scientist", ["statistics"], "software", "data", "mid", "eu-central", 100),
]
IMPRESSIONS = [
    # impression_id, member_id, job_id, ts, position
    (1, 1, 10, at(10), 1),
    (2, 1, 11, at(10), 2),
    (3, 2, 11, at(12), 1),  # shown after the apply below: not a positive
    (4, 2, 11, at(10), 3),  # the apply at 11:00 follows this one: positive
    (5, 3, 12, at(9), 3),
    (6, 3, 10, at(9), 1),
]
APPLIES = [(1, 10, at(10, 5)), (2, 11, at(11)), (3, 10, at(9, 30)), (3, 10, at(9, 40))]
POSITIVE_IMPRESSIONS = {1, 4, 6}


def write_raw_day(settings, ds: str, members=MEMBERS, jobs=JOBS, impressions=IMPRESSIONS, applies=APPLIES) -> None:
    """Write the four raw tables of ``ds`` in the raw contract's types."""
    layout = settings.layout
    cols = list(zip(*members, strict=True))
    write_partition(
        layout.raw("members", ds),
        pa.table(
            {
                "member_id": pa.array(cols[0], pa.int64()),
                "title": pa.array(cols[1], pa.string()),
                "skills": pa.array(cols[2], pa.list_(pa.string())),
                **{f: pa.array(cols[i], pa.string()) for i, f in enumerate(FIELDS[2:], start=3)},
                "updated_at": pa.array([at(0, day=ds)] * len(members), TS),
            }
        ),
    )
    cols = list(zip(*jobs, strict=True))
    write_partition(
        layout.raw("jobs", ds),
        pa.table(
            {
                "job_id": pa.array(cols[0], pa.int64()),
                "title": pa.array(cols[1], pa.string()),
                "skills": pa.array(cols[2], pa.list_(pa.string())),
                **{f: pa.array(cols[i], pa.string()) for i, f in enumerate(FIELDS[2:], start=3)},
                "company_id": pa.array(cols[7], pa.int64()),
                "posted_at": pa.array([at(0, day="2026-01-01")] * len(jobs), TS),
                "expires_at": pa.array([at(0, day="2026-02-01")] * len(jobs), TS),
            }
        ),
    )
    cols = list(zip(*impressions, strict=True))
    write_partition(
        layout.raw("impressions", ds),
        pa.table(
            {
                "impression_id": pa.array(cols[0], pa.int64()),
                "member_id": pa.array(cols[1], pa.int64()),
                "job_id": pa.array(cols[2], pa.int64()),
                "ts": pa.array(cols[3], TS),
                "position": pa.array(cols[4], pa.int32()),
                "channel": pa.array(["email"] * len(impressions), pa.string()),
            }
        ),
    )
    cols = list(zip(*applies, strict=True))
    write_partition(
        layout.raw("applies", ds),
        pa.table(
            {
                "member_id": pa.array(cols[0], pa.int64()),
                "job_id": pa.array(cols[1], pa.int64()),
                "ts": pa.array(cols[2], TS),
            }
        ),
    )


def hand_tfidf(doc_terms: list[str], all_docs: list[list[str]]) -> dict[str, float]:
    """TF-IDF with smoothed idf ln((1+N)/(1+df))+1, L2-normalised: the contract computed by hand."""
    n = len(all_docs)
    raw = {}
    for term in doc_terms:
        df = sum(term in d for d in all_docs)
        raw[term] = raw.get(term, 0.0) + math.log((1 + n) / (1 + df)) + 1
    norm = math.sqrt(sum(w * w for w in raw.values()))
    return {t: w / norm for t, w in raw.items()}


def bag(row: dict, name: str) -> dict[str, float]:
    return {item["name"]: item["value"] for item in row[name]}


@pytest.fixture(scope="module")
def built(tmp_path_factory, spark):
    """One day built once for the module (each Spark build costs seconds)."""
    settings = Settings.from_env(
        home=tmp_path_factory.mktemp("features") / "jobrec_home", spark_master="local[2]", spark_shuffle_partitions=2
    )
    write_raw_day(settings, DAY)
    report = build_features(DAY, settings)
    return settings, report


def test_training_rows_have_hand_checked_cosines_and_labels(built):
    settings, report = built
    training = read_partition(settings.layout.features("training", DAY)).to_pylist()
    rows = {r["impression_id"]: r for r in training}
    assert sorted(rows) == [1, 2, 3, 4, 5, 6]
    assert {i for i, r in rows.items() if r["label"] == 1.0} == POSITIVE_IMPRESSIONS
    assert report["positives"] == len(POSITIVE_IMPRESSIONS) and report["training_rows"] == 6

    titles = [title_tokens(m[1]) for m in MEMBERS] + [title_tokens(j[1]) for j in JOBS]
    skills = [m[2] for m in MEMBERS] + [j[2] for j in JOBS]
    m1_title, j10_title = hand_tfidf(titles[0], titles), hand_tfidf(titles[3], titles)
    m1_skills, j10_skills = hand_tfidf(skills[0], skills), hand_tfidf(skills[3], skills)
    g = bag(rows[1], "global")
    assert g["cos:title"] == pytest.approx(sum(w * j10_title.get(t, 0) for t, w in m1_title.items()), abs=1e-12)
    assert g["cos:skills"] == pytest.approx(sum(w * j10_skills.get(t, 0) for t, w in m1_skills.items()), abs=1e-12)
    for f in ("industry", "function", "seniority", "region"):
        assert g[f"cos:{f}"] == 1.0
    assert g["ctx:position"] == 0.0  # top slot
    assert g["x:region=match"] == 1.0
    assert g["m:function=engineering"] == 1.0 and g["j:function=engineering"] == 1.0
    assert g["x:function=engineering|function=engineering"] == 1.0

    g5 = bag(rows[5], "global")  # member 3 (us-west) × job 12 (eu-central), shown third
    assert g5["cos:region"] == 0.0 and "x:region=match" not in g5
    assert g5["ctx:position"] == 2.0  # third slot
    assert g5["cos:title"] == pytest.approx(1.0)  # identical titles

    for r in training:
        cosines = [v for k, v in bag(r, "global").items() if k.startswith("cos:")]
        assert len(cosines) == len(FIELDS) and all(0.0 <= c <= 1.0 for c in cosines)

    # Random-effect bags are the categorical part of the profiles: <field>=<term> -> weight.
    z_job = bag(rows[1], "job_features")
    assert z_job["region=us-west"] == 1.0 and z_job["function=engineering"] == 1.0
    assert not any(k.startswith(("title=", "skills=")) for k in z_job)
    z_member = bag(rows[1], "member_features")
    assert z_member["function=engineering"] == 1.0
    assert not any(k.startswith(("title=", "skills=")) for k in z_member)


def test_profiles_are_unit_norm_per_field_and_sorted(built):
    settings, _ = built
    layout = settings.layout
    members = read_partition(layout.features("member_profiles", DAY)).to_pylist()
    jobs = read_partition(layout.features("job_profiles", DAY)).to_pylist()
    assert [m["member_id"] for m in members] == [1, 2, 3]
    assert [j["job_id"] for j in jobs] == [10, 11, 12]
    assert [j["company_id"] for j in jobs] == [100, 200, 100]
    for profile in members + jobs:
        for f in FIELDS:
            terms = [e["term"] for e in profile[f]]
            assert terms == sorted(terms)
            assert math.sqrt(sum(e["weight"] ** 2 for e in profile[f])) == pytest.approx(1.0, abs=1e-12)
    schema = read_partition(layout.features("job_profiles", DAY)).schema
    assert schema.field("posted_at").type == TS and schema.field("job_id").type == pa.int64()


def test_rerun_gives_identical_partitions(built):
    settings, _ = built
    layout = settings.layout
    kinds = ("vocab", "member_profiles", "job_profiles", "training")
    first = {k: read_partition(layout.features(k, DAY)) for k in kinds}
    build_features(DAY, settings)
    for k in kinds:
        assert read_partition(layout.features(k, DAY)).equals(first[k]), k


def test_vocab_is_append_only_across_days(built):
    settings, _ = built
    layout = settings.layout
    day1 = read_partition(layout.features("vocab", DAY)).to_pylist()
    next_day = "2026-01-06"
    members = [*MEMBERS[:2], (3, "Chef", ["cooking"], "food", "kitchen", "mid", "us-west")]
    write_raw_day(settings, next_day, members=members, impressions=IMPRESSIONS[:1], applies=APPLIES[:1])
    build_features(next_day, settings)
    day2 = {(r["field"], r["term"]): r for r in read_partition(layout.features("vocab", next_day)).to_pylist()}
    for old in day1:
        kept = day2[(old["field"], old["term"])]
        assert kept["index"] == old["index"] and kept["first_ds"] == DAY
    assert day2[("title", "scientist")]["df"] == 1  # member 3 left data science; job 12 remains
    new = sorted((r for r in day2.values() if r["first_ds"] == next_day), key=lambda r: r["index"])
    assert {(r["field"], r["term"]) for r in new} >= {("title", "chef"), ("skills", "cooking")}
    assert [r["index"] for r in new] == list(range(len(day1), len(day1) + len(new)))
