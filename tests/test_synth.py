"""The synthetic marketplace: contract-shaped raw tables, determinism, a learnable true model that drifts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipeline.cli import main as jobrec
from pipeline.config import Settings
from pipeline.raw_schema import RAW_SCHEMAS
from pipeline.storage import RAW_TABLES, Layout, read_partition, shift_ds
from pipeline.synth import generate_marketplace
from pipeline.synth.catalog import SENIORITY
from pipeline.validation import validate_day

START = "2026-01-01"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    home = tmp_path_factory.mktemp("tiny")
    return home, generate_marketplace(home, members=300, jobs=120, days=3, start=START, seed=5)


@pytest.fixture(scope="module")
def medium(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Big enough for stable AUCs (~15k impressions and ~600 applies a day), still about a second a day."""
    home = tmp_path_factory.mktemp("medium")
    return home, generate_marketplace(home, members=5000, jobs=1500, days=15, start=START, seed=2)


def _day(home: Path, table: str, ds: str) -> pa.Table:
    return read_partition(Layout(home).raw(table, ds))


def test_every_raw_partition_has_the_contract_schema_and_the_truth_matches_impressions(tiny):
    home, summary = tiny
    layout = Layout(home)
    for table in RAW_TABLES:
        assert layout.partitions(home / "raw" / table) == [START, shift_ds(START, 1), shift_ds(START, 2)]
    for day in summary["days"]:
        for table in RAW_TABLES:
            assert _day(home, table, day["ds"]).schema.equals(RAW_SCHEMAS[table]), (table, day["ds"])
        truth = read_partition(layout.truth(day["ds"]))
        impressions = _day(home, "impressions", day["ds"])
        assert truth.schema.names == ["impression_id", "p_apply", "p_global"]
        assert truth.column("impression_id").equals(impressions.column("impression_id"))
        p_apply = truth.column("p_apply").to_numpy()
        assert ((p_apply > 0) & (p_apply < 1)).all()
        assert impressions.num_rows == day["impressions"] > 0
    stored = json.loads((home / "truth" / "summary.json").read_text())
    assert [d["oracle_auc"] for d in stored["days"]] == [d["oracle_auc"] for d in summary["days"]]


def test_generated_days_pass_validation_with_nothing_quarantined(tiny, tmp_path):
    home, summary = tiny
    settings = Settings.from_env(home=home, max_bad_fraction=0.0)
    for day in summary["days"]:
        assert validate_day(day["ds"], settings)["quarantined"] == 0


def test_ids_are_unique_and_impressions_have_positions_timestamps_and_one_view_per_pair(tiny):
    home, summary = tiny
    seen_impression_ids: set[int] = set()
    for day in summary["days"]:
        impressions = _day(home, "impressions", day["ds"]).to_pandas()
        assert impressions.impression_id.is_unique
        assert not seen_impression_ids & set(impressions.impression_id)
        seen_impression_ids |= set(impressions.impression_id)
        assert (impressions.position >= 1).all() and impressions.position.max() <= 25
        assert (impressions.ts.dt.strftime("%Y-%m-%d") == day["ds"]).all()
        assert not impressions.duplicated(["member_id", "job_id"]).any()
        applies = _day(home, "applies", day["ds"]).to_pandas()
        assert len(applies) == day["applies"]
        matched = applies.merge(impressions, on=["member_id", "job_id"], suffixes=("_apply", ""))
        assert len(matched) == len(applies) and (matched.ts_apply >= matched.ts).all()
        members = _day(home, "members", day["ds"]).to_pandas()
        assert members.member_id.is_unique and len(members) == 300


def test_jobs_post_and_expire_so_the_active_set_changes_every_day(medium):
    home, summary = medium
    first = set(_day(home, "jobs", START).column("job_id").to_pylist())
    last_ds = summary["days"][-1]["ds"]
    last = set(_day(home, "jobs", last_ds).column("job_id").to_pylist())
    assert first - last and last - first  # some expired, some were posted
    jobs = _day(home, "jobs", last_ds).to_pandas()
    day_start = pd_timestamp(last_ds)
    assert ((jobs.posted_at < day_start + np.timedelta64(1, "D")) & (jobs.expires_at > day_start)).all()
    shown = set(_day(home, "impressions", last_ds).column("job_id").to_pylist())
    assert shown <= last


def pd_timestamp(ds: str):
    import pandas as pd

    return pd.Timestamp(ds, tz="UTC")


def test_oracle_auc_is_learnable_neither_trivial_nor_noise_and_apply_rate_is_a_few_percent(medium):
    _, summary = medium
    for day in summary["days"]:
        assert 0.70 <= day["oracle_auc"] <= 0.90, day
        assert 0.02 <= day["apply_rate"] <= 0.07, day


def test_drift_makes_the_day_one_model_decay(medium):
    _, summary = medium
    days = summary["days"]
    assert days[0]["frozen_auc"] == days[0]["oracle_auc"]
    gap_late = np.mean([d["oracle_auc"] - d["frozen_auc"] for d in days[-3:]])
    gap_early = np.mean([d["oracle_auc"] - d["frozen_auc"] for d in days[1:4]])
    assert gap_late > 0.01 and gap_late > gap_early


def test_member_activity_is_heavy_tailed(medium):
    home, summary = medium
    shown_to = np.concatenate([
        _day(home, "impressions", d["ds"]).column("member_id").to_numpy() for d in summary["days"]
    ])
    member_ids = _day(home, "members", START).column("member_id").to_numpy()
    per_member = np.bincount(np.searchsorted(member_ids, shown_to), minlength=len(member_ids))
    # Most members see a few jobs over the period, a few see hundreds.
    assert np.median(per_member) <= 20 and np.quantile(per_member, 0.99) >= 100 and per_member.max() >= 200


def test_logging_policy_mostly_shows_similar_jobs(medium):
    home, _ = medium
    impressions = _day(home, "impressions", START).to_pandas()
    members = _day(home, "members", START).to_pandas().set_index("member_id")
    jobs = _day(home, "jobs", START).to_pandas().set_index("job_id")
    member_function = members.function.reindex(impressions.member_id).to_numpy()
    job_function = jobs.function.reindex(impressions.job_id).to_numpy()
    same_function = (member_function == job_function).mean()
    chance = (jobs.function.value_counts(normalize=True) ** 2).sum() * 4  # generous bound on random overlap
    assert same_function > 0.5 and same_function > chance
    # Positions follow the policy's similarity ranking: top slots match the member's function more often.
    top = (member_function == job_function)[impressions.position.to_numpy() <= 2].mean()
    low = (member_function == job_function)[impressions.position.to_numpy() >= 8].mean()
    assert top > low


def test_applies_follow_the_true_probabilities(medium):
    home, summary = medium
    ds = summary["days"][0]["ds"]
    truth = read_partition(Layout(home).truth(ds)).to_pandas()
    impressions = _day(home, "impressions", ds).to_pandas().merge(truth, on="impression_id")
    applied = impressions.merge(_day(home, "applies", ds).to_pandas(), on=["member_id", "job_id"], how="left",
                                suffixes=("", "_apply")).ts_apply.notna()
    assert abs(impressions.p_apply.mean() - applied.mean()) < 0.01  # calibrated
    assert impressions.p_apply[applied].mean() > 2 * impressions.p_apply[~applied].mean()


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path):
    def generate(name: str, seed: int) -> dict[str, bytes]:
        home = tmp_path / name
        generate_marketplace(home, members=200, jobs=60, days=2, start=START, seed=seed)
        return {str(p.relative_to(home)): p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file()}

    first, again, other = generate("a", 9), generate("b", 9), generate("c", 10)
    # per day: 4 raw tables (Parquet + landed marker) and the truth; plus the summary
    assert len(first) == 2 * (4 * 2 + 1) + 1 and first.keys() == again.keys()
    assert first == again
    assert first[f"raw/impressions/ds={START}/part-00000.parquet"] != other[
        f"raw/impressions/ds={START}/part-00000.parquet"
    ]


def test_rerunning_replaces_the_days_partitions(tmp_path):
    generate_marketplace(tmp_path, members=100, jobs=40, days=2, start=START, seed=1)
    generate_marketplace(tmp_path, members=100, jobs=40, days=2, start=START, seed=1)
    assert [p.name for p in (tmp_path / "raw" / "impressions").iterdir()] != []
    assert sorted(p.name for p in (tmp_path / "raw" / "impressions").iterdir()) == [
        f"ds={START}", f"ds={shift_ds(START, 1)}"
    ]


@pytest.mark.parametrize("field, value", [("members", 0), ("days", 0), ("jobs", -1)])
def test_non_positive_sizes_are_rejected_with_a_clear_message(tmp_path, field, value):
    sizes = {"members": 10, "jobs": 5, "days": 1, field: value}
    with pytest.raises(ValueError, match=f"{field} must be at least 1"):
        generate_marketplace(tmp_path, start=START, seed=0, **sizes)


def test_synth_cli_prints_what_it_wrote_and_the_oracle_auc_per_day(tmp_path, capsys):
    code = jobrec(["synth", "--members", "150", "--jobs", "50", "--days", "2", "--start", START,
                   "--seed", "3", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "oracle AUC" in out and START in out and shift_ds(START, 1) in out and str(tmp_path) in out
    assert (tmp_path / "truth" / "summary.json").is_file()
    assert jobrec(["synth", "--start", "2026-13-01", "--out", str(tmp_path)]) == 2
    assert "YYYY-MM-DD" in capsys.readouterr().err


def _binary_cosine(left: pd.Series, right: pd.Series) -> np.ndarray:
    return np.array([
        len(a & b) / np.sqrt(len(a) * len(b)) if a and b else 0.0
        for a, b in zip(left, right, strict=True)
    ])


def test_global_part_of_the_true_model_is_recoverable_from_the_raw_tables(medium):
    """A logistic regression on features computed from the raw strings finds the true global effects."""
    from sklearn.linear_model import LogisticRegression

    from pipeline.synth.truth_model import TruthParameters

    home, summary = medium
    frames = []
    for day in summary["days"][:2]:
        ds = day["ds"]
        impressions = _day(home, "impressions", ds).to_pandas()
        applies = _day(home, "applies", ds).to_pandas().assign(label=1.0)[["member_id", "job_id", "label"]]
        members = _day(home, "members", ds).to_pandas().add_prefix("m_")
        jobs = _day(home, "jobs", ds).to_pandas().add_prefix("j_")
        frames.append(
            impressions.merge(applies, on=["member_id", "job_id"], how="left")
            .merge(members, left_on="member_id", right_on="m_member_id")
            .merge(jobs, left_on="job_id", right_on="j_job_id")
        )
    data = pd.concat(frames, ignore_index=True)
    seniority = {level: rank for rank, level in enumerate(SENIORITY)}
    gap = data.j_seniority.map(seniority) - data.m_seniority.map(seniority)
    features = np.column_stack([
        _binary_cosine(data.m_title.str.split().map(set), data.j_title.str.split().map(set)),
        _binary_cosine(data.m_skills.map(set), data.j_skills.map(set)),
        data.m_function == data.j_function,
        data.m_region == data.j_region,
        gap.abs(),
        data.position - 1,
    ]).astype(float)
    model = LogisticRegression(C=1e4, max_iter=500).fit(features, data.label.fillna(0.0))
    truth = TruthParameters()
    true = np.array([truth.title, truth.skills, truth.function_match, truth.region_match, truth.seniority_gap,
                     truth.position])
    # The random effects act as unobserved noise (attenuating the fit a little): signs and rough sizes hold.
    assert np.all(np.sign(model.coef_[0]) == np.sign(true)), model.coef_
    assert np.all(np.abs(model.coef_[0] - true) < 0.3 * np.abs(true) + 0.05), model.coef_


def test_a_day_without_impressions_is_written_empty_with_undefined_auc_and_validates(tmp_path):
    summary = generate_marketplace(tmp_path, members=5, jobs=3, days=1, start=START, seed=0, impressions_per_day=0)
    assert summary["days"][0]["impressions"] == 0 and summary["days"][0]["oracle_auc"] is None
    json.loads((tmp_path / "truth" / "summary.json").read_text(),  # strict JSON: no NaN
               parse_constant=lambda constant: pytest.fail(f"summary.json holds {constant}"))
    assert _day(tmp_path, "impressions", START).schema.equals(RAW_SCHEMAS["impressions"])
    # An empty day is the unexpected case for validation: it passes only when said to be expected.
    report = validate_day(START, Settings.from_env(home=tmp_path, allow_empty_day=True))
    assert report["tables"]["impressions"]["rows"] == 0 and report["ok"]
