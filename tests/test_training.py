"""The training tasks (daily warm-start chain, full retrain, gates, promotion) and the run report.

Training partitions are written directly in the documented ``features/training`` schema from a small known
GLMix model (a few thousand rows a day), so these tests exercise training without Spark; the end-to-end
DAG tests cover the same functions on features built by the real feature pipeline.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline import training
from pipeline.report import write_run_report
from pipeline.storage import write_partition

DAYS = ("2024-03-01", "2024-03-02", "2024-03-03")
N_MEMBERS, N_JOBS, ROWS_PER_DAY, N_INDUSTRIES = 150, 50, 3000, 5
BAG = pa.list_(pa.struct([("name", pa.string()), ("value", pa.float64())]))


def _bag(names: list[list[str]], values: list[list[float]]) -> pa.Array:
    return pa.array(
        [[{"name": n, "value": v} for n, v in zip(ns, vs, strict=True)] for ns, vs in zip(names, values, strict=True)],
        type=BAG,
    )


def training_day(day_index: int, *, members: int = N_MEMBERS, seed: int = 0) -> pa.Table:
    """One day of training examples from a known GLMix model: industry match + member/job biases."""
    world = np.random.default_rng(seed)
    member_industry = world.integers(0, N_INDUSTRIES, N_MEMBERS)
    job_industry = world.integers(0, N_INDUSTRIES, N_JOBS)
    member_bias = world.normal(0, 1.0, N_MEMBERS)
    job_bias = world.normal(0, 0.7, N_JOBS)
    rng = np.random.default_rng(seed * 1000 + day_index + 1)
    m = rng.integers(0, members, ROWS_PER_DAY)
    j = rng.integers(0, N_JOBS, ROWS_PER_DAY)
    position = rng.integers(1, 11, ROWS_PER_DAY)
    match = (member_industry[m] == job_industry[j]).astype(float)
    eta = -2.5 + 2.5 * match + member_bias[m] + job_bias[j] - 0.1 * position
    label = (rng.random(ROWS_PER_DAY) < 1 / (1 + np.exp(-eta))).astype(float)
    return pa.table(
        {
            "impression_id": pa.array((day_index + 1) * 10_000_000 + np.arange(ROWS_PER_DAY), pa.int64()),
            "member_id": pa.array(1_000 + m, pa.int64()),
            "job_id": pa.array(5_000 + j, pa.int64()),
            "label": pa.array(label),
            "position": pa.array(position, pa.int32()),
            "global": _bag(
                [["cos:industry", "ctx:position"]] * ROWS_PER_DAY,
                [[float(a), float(p) / 10] for a, p in zip(match, position, strict=True)],
            ),
            "job_features": _bag([[f"industry=i{k}"] for k in job_industry[j]], [[1.0]] * ROWS_PER_DAY),
            "member_features": _bag([[f"industry=i{k}"] for k in member_industry[m]], [[1.0]] * ROWS_PER_DAY),
        }
    )


@pytest.fixture
def trained_home(settings):
    """Three days of training features, the full model of day 1 promoted."""
    for index, ds in enumerate(DAYS):
        # Day 3 sees only the first 100 members: the rest must keep their effects in incremental mode.
        members = 100 if index == 2 else N_MEMBERS
        write_partition(settings.layout.features("training", ds), training_day(index, members=members))
    training.train_full(DAYS[0], settings, window_days=1, l2_search="grid", l2_grid=[1.0, 10.0])
    training.promote(DAYS[0], settings)
    return settings


def _coefficients(model_dir) -> pa.Table:
    table = pq.read_table(model_dir / "coefficients.parquet")
    return table.sort_by([("coordinate", "ascending"), ("entity", "ascending"), ("feature", "ascending")])


def test_holdout_split_is_deterministic_and_about_a_fifth() -> None:
    ids = np.arange(1, 200_001, dtype=np.int64) * 7919
    mask = training.holdout_mask(ids)
    assert np.array_equal(mask, training.holdout_mask(ids.copy()))
    assert abs(mask.mean() - training.HOLDOUT_FRACTION) < 0.01
    table = training_day(0)
    train, holdout = training.split_holdout(table)
    assert train.num_rows + holdout.num_rows == table.num_rows
    assert not set(train.column("impression_id").to_pylist()) & set(holdout.column("impression_id").to_pylist())


def test_training_split_read_file_by_file_equals_the_split_of_the_whole_day(settings) -> None:
    table = training_day(0)
    folder = settings.layout.features("training", DAYS[0])
    folder.mkdir(parents=True)
    for k, start in enumerate(range(0, table.num_rows, 1100)):  # three files, the last one shorter
        pq.write_table(table.slice(start, 1100), folder / f"part-{k:05d}.parquet")
    train, holdout = training.load_training_split(DAYS[0], settings)
    expected_train, expected_holdout = training.split_holdout(training.load_training_day(DAYS[0], settings))
    assert train.equals(expected_train) and holdout.equals(expected_holdout)
    assert holdout.num_rows > 0 and train.num_rows + holdout.num_rows == table.num_rows
    assert training.load_holdout(DAYS[0], settings).equals(expected_holdout)


def test_spark_gets_the_days_training_rows_streamed_to_a_scratch_file_in_the_same_order(settings) -> None:
    table = training_day(0)
    folder = settings.layout.features("training", DAYS[0])
    folder.mkdir(parents=True)
    for k, start in enumerate(range(0, table.num_rows, 1100)):
        pq.write_table(table.slice(start, 1100), folder / f"part-{k:05d}.parquet")
    expected_train, expected_holdout = training.split_holdout(table)
    with training.daily_training_data(DAYS[0], settings, engine="spark") as (data, rows, holdout):
        assert isinstance(data, str) and data.startswith(str(settings.layout.scratch_dir()))
        assert pq.read_table(data).equals(expected_train) and rows == expected_train.num_rows
        assert pq.read_metadata(data).row_group(0).num_rows <= training.TRAIN_ROW_GROUP_ROWS
        assert holdout.equals(expected_holdout)
    assert list(settings.layout.scratch_dir().iterdir()) == []
    with training.daily_training_data(DAYS[0], settings) as (data, rows, holdout):
        assert data.equals(expected_train) and rows == expected_train.num_rows and holdout.equals(expected_holdout)


def test_daily_chain_locks_the_fixed_effect_and_warm_starts_from_full_then_the_day_before(trained_home) -> None:
    settings = trained_home
    first = training.train_daily(DAYS[1], settings)
    second = training.train_daily(DAYS[2], settings)
    assert first["parent"] == "full-2024-03-01"
    assert second["parent"] == "daily-2024-03-02"
    lineage = training.read_lineage(settings.layout.model_daily(DAYS[2]))
    assert lineage["parent"] == {"kind": "daily", "version": "daily-2024-03-02"}
    assert lineage["base_full"] == "full-2024-03-01"
    assert lineage["metrics"]["rows"] == second["rows"]
    fixed = [
        _coefficients(path).filter(pc.equal(pc.field("coordinate"), "global"))
        for path in (
            settings.layout.model_full("full-2024-03-01"),
            settings.layout.model_daily(DAYS[1]),
            settings.layout.model_daily(DAYS[2]),
        )
    ]
    assert fixed[0].num_rows > 0
    assert fixed[0].column("value").equals(fixed[1].column("value"))
    assert fixed[1].column("value").equals(fixed[2].column("value"))
    # The random effects were refit: the learned member effects are not the full model's.
    members = [
        _coefficients(p).filter(pc.equal(pc.field("coordinate"), "per_member")).num_rows
        for p in (settings.layout.model_daily(DAYS[1]),)
    ]
    assert members[0] > 0
    assert first["holdout_auc"] > 0.6, "the known model has signal: the retrained model must find it"


def test_a_newer_promoted_full_model_takes_over_the_chain(trained_home) -> None:
    settings = trained_home
    training.train_daily(DAYS[1], settings)
    training.train_full(DAYS[1], settings, window_days=2, l2_search="grid", l2_grid=[1.0])
    training.promote(DAYS[1], settings)
    result = training.train_daily(DAYS[2], settings)
    assert result["parent"] == "full-2024-03-02"


def test_rerunning_a_day_replaces_it_with_identical_coefficients(trained_home) -> None:
    settings = trained_home
    training.train_daily(DAYS[1], settings)
    before = _coefficients(settings.layout.model_daily(DAYS[1]))
    training.train_daily(DAYS[1], settings)
    after = _coefficients(settings.layout.model_daily(DAYS[1]))
    assert before.equals(after)
    assert not any(p.name.startswith((".tmp", ".trash")) for p in settings.layout.model_daily(DAYS[1]).parent.iterdir())


def test_incremental_mode_keeps_effects_of_members_absent_from_the_day(trained_home) -> None:
    settings = trained_home
    training.train_daily(DAYS[1], settings)
    result = training.train_daily(DAYS[2], settings, mode="incremental")
    assert result["mode"] == "incremental"

    def member_effects(ds: str) -> dict:
        table = _coefficients(settings.layout.model_daily(ds)).filter(pc.equal(pc.field("coordinate"), "per_member"))
        return {(e, f): v for e, f, v in zip(*(table.column(c).to_pylist() for c in ("entity", "feature", "value")), strict=True)}

    before, after = member_effects(DAYS[1]), member_effects(DAYS[2])
    absent = [key for key in before if int(key[0]) >= 1_000 + 100]
    assert absent, "members 100.. have no rows on day 3"
    assert all(after[key] == pytest.approx(before[key]) for key in absent)


def test_gate_passes_a_good_model_and_stops_a_worse_one(trained_home) -> None:
    settings = trained_home
    training.train_daily(DAYS[1], settings)
    passed = training.gate(DAYS[1], settings, margin=0.05)
    assert passed["holdout_auc"] >= passed["parent_holdout_auc"] - 0.05
    assert passed["coverage"] > 0.9
    # Inject a worse model: every coefficient negated (reverses the ranking on the same holdout).
    path = settings.layout.model_daily(DAYS[1]) / "coefficients.parquet"
    table = pq.read_table(path)
    pq.write_table(table.set_column(table.schema.get_field_index("value"), "value", pc.negate(table.column("value"))), path)
    with pytest.raises(training.GateFailedError, match="below the previous model full-2024-03-01"):
        training.gate(DAYS[1], settings, margin=0.05)
    # The next day does not build on the stopped model: it continues from the model the gate kept.
    assert training.train_daily(DAYS[2], settings)["parent"] == "full-2024-03-01"


def test_gate_stops_a_model_without_member_effects(trained_home) -> None:
    settings = trained_home
    training.train_daily(DAYS[1], settings)
    path = settings.layout.model_daily(DAYS[1]) / "coefficients.parquet"
    table = pq.read_table(path)
    pq.write_table(table.filter(pc.not_equal(pc.field("coordinate"), "per_member")), path)
    with pytest.raises(training.GateFailedError, match="per-member effect"):
        training.gate(DAYS[1], settings, margin=1.0, min_coverage=0.5)


def test_daily_retrain_without_a_parent_model_says_to_run_the_full_retrain(settings) -> None:
    write_partition(settings.layout.features("training", DAYS[1]), training_day(1))
    with pytest.raises(FileNotFoundError, match="full retrain"):
        training.train_daily(DAYS[1], settings)


def _fake_model(settings, kind: str, ds: str, parent: str | None = None, base_full: str | None = None,
                promoted: bool = False, gate_passed: bool | None = None) -> None:
    """A model folder with only its lineage: enough for the parent rule, which reads nothing else."""
    version = f"{kind}-{ds}"
    path = settings.layout.model_full(version) if kind == "full" else settings.layout.model_daily(ds)
    path.mkdir(parents=True)
    parent_ref = None if parent is None else {"kind": parent.split("-", 1)[0], "version": parent}
    (path / training.LINEAGE_FILE).write_text(json.dumps({"kind": kind, "ds": ds, "version": version,
                                                          "parent": parent_ref, "base_full": base_full or version}))
    if promoted:
        (path / training.PROMOTED_FILE).write_text(json.dumps({"version": version, "ds": ds}))
    if gate_passed is not None:
        (path / training.GATE_FILE).write_text(json.dumps({"passed": gate_passed}))


def test_a_backfilled_day_starts_from_the_newest_model_before_it_never_a_later_one(settings) -> None:
    _fake_model(settings, "full", "2024-03-01", promoted=True)
    _fake_model(settings, "daily", "2024-03-02", parent="full-2024-03-01", base_full="full-2024-03-01")
    _fake_model(settings, "daily", "2024-03-03", parent="daily-2024-03-02", base_full="full-2024-03-01")
    _fake_model(settings, "full", "2024-03-03", promoted=True)  # a newer full retrain, promoted since
    assert training.resolve_parent("2024-03-02", settings)["version"] == "full-2024-03-01"
    assert training.resolve_parent("2024-03-03", settings)["version"] == "daily-2024-03-02"
    # The day after the new full model's window: the full model takes over the chain.
    assert training.resolve_parent("2024-03-04", settings)["version"] == "full-2024-03-03"


def test_a_model_the_gate_stopped_is_skipped_for_the_one_it_started_from(settings) -> None:
    _fake_model(settings, "full", "2024-03-01", promoted=True)
    _fake_model(settings, "daily", "2024-03-02", parent="full-2024-03-01", base_full="full-2024-03-01",
                gate_passed=True)
    _fake_model(settings, "daily", "2024-03-03", parent="daily-2024-03-02", base_full="full-2024-03-01",
                gate_passed=False)
    assert training.resolve_parent("2024-03-04", settings)["version"] == "daily-2024-03-02"


def test_a_day_whose_day_before_has_no_model_fails_naming_the_day_to_run_first(settings) -> None:
    _fake_model(settings, "full", "2024-03-01", promoted=True)
    _fake_model(settings, "daily", "2024-03-02", parent="full-2024-03-01", base_full="full-2024-03-01")
    with pytest.raises(training.MissingParentError, match="Run jobrec_daily for 2024-03-03 first"):
        training.resolve_parent("2024-03-05", settings)
    # A full model that was trained but never promoted (its gate failed) is no parent either.
    _fake_model(settings, "full", "2024-03-04")
    with pytest.raises(training.MissingParentError, match="ds=2024-03-04, the day before ds=2024-03-05"):
        training.resolve_parent("2024-03-05", settings)


def test_missing_training_features_name_the_task_to_run(settings) -> None:
    with pytest.raises(FileNotFoundError, match="run the features task"):
        training.train_daily("2024-03-05", settings)
    with pytest.raises(ValueError, match="mode must be one of"):
        training.train_daily("2024-03-05", settings, mode="fast")


def test_full_retrain_grid_search_gate_and_forward_only_promotion(trained_home) -> None:
    settings = trained_home
    result = training.train_full(DAYS[2], settings, window_days=3, l2_search="grid", l2_grid=[0.1, 1.0, 100.0])
    assert result["version"] == "full-2024-03-03" and result["days"] == 3
    # a grid value is shared by every coordinate
    assert [set(row["l2"].values()) for row in result["trials"]] == [{0.1}, {1.0}, {100.0}]
    assert result["holdout_auc"] == max(row["holdout_auc"] for row in result["trials"])
    # the trials ran through glmix_core.tuning.grid_search: the kept model says which one it is
    saved = training.load_model(settings.layout.model_full(result["version"]))
    best = 1 + [row["holdout_auc"] for row in result["trials"]].index(result["holdout_auc"])
    assert saved.metadata["tuning"]["method"] == "grid"
    assert (saved.metadata["tuning"]["trial"], saved.metadata["tuning"]["n_trials"]) == (best, 3)
    assert {c.name: c.l2 for c in saved.spec.coordinates} == result["l2"]
    gated = training.gate_full(DAYS[2], settings, margin=0.05)
    assert gated["current"] == "full-2024-03-01"
    assert training.promote(DAYS[2], settings)["promoted"] is True
    # Promoting an older retrain (a backfill of the periodic DAG) leaves the newer model promoted.
    assert training.promote(DAYS[0], settings)["promoted"] is False
    assert training.current_full(settings)["version"] == "full-2024-03-03"


def test_full_retrain_bayesian_search_keeps_the_best_per_coordinate_l2_by_holdout_auc(trained_home) -> None:
    settings = trained_home
    result = training.train_full(DAYS[2], settings, window_days=3, l2_search="bayesian", l2_grid=[1.0],
                                 tuning_trials=5, l2_range=(0.1, 100.0), seed=3)
    assert result["l2_search"] == "bayesian" and len(result["trials"]) == 5
    coordinates = {c.name for c in training.load_spec().coordinates}
    for row in result["trials"]:
        assert set(row["l2"]) == coordinates and all(0.1 <= v <= 100.0 for v in row["l2"].values())
    # the grid value starts the search, then each coordinate gets its own value; the best trial is kept
    assert set(result["trials"][0]["l2"].values()) == {1.0}
    assert len(set(result["trials"][1]["l2"].values())) == len(coordinates)
    best = max(result["trials"], key=lambda row: row["holdout_auc"])
    assert result["l2"] == best["l2"] and result["holdout_auc"] == best["holdout_auc"]
    written = write_run_report(DAYS[2], settings, {"train_full": result}, name="full_retrain")
    metrics = json.loads(open(written["path"]).read())["metrics"]
    assert {f"train_full.l2.{name}" for name in coordinates} <= set(metrics)
    saved = training.load_model(settings.layout.model_full(result["version"]))
    assert {c.name: c.l2 for c in saved.spec.coordinates} == pytest.approx(best["l2"])
    _, holdout = training.split_holdout(training._window_table(DAYS[2], settings, 3)[0])
    assert training.holdout_auc(saved, holdout) == pytest.approx(result["holdout_auc"], abs=1e-12)
    lineage = training.read_lineage(settings.layout.model_full(result["version"]))
    assert lineage["l2_search"] == "bayesian" and lineage["trials"] == result["trials"]
    # the same seed proposes the same trials
    again = training.train_full(DAYS[2], settings, window_days=3, l2_search="bayesian", l2_grid=[1.0],
                                tuning_trials=5, l2_range=(0.1, 100.0), seed=3)
    assert [row["l2"] for row in again["trials"]] == [row["l2"] for row in result["trials"]]
    with pytest.raises(ValueError, match="l2_search must be one of"):
        training.train_full(DAYS[2], settings, window_days=3, l2_search="anneal")
    with pytest.raises(ValueError, match="l2_range must be"):
        training.train_full(DAYS[2], settings, window_days=3, l2_search="bayesian", l2_range=(10.0, 1.0))


def test_lineage_is_written_with_the_model_and_read_without_loading_it(trained_home) -> None:
    settings = trained_home
    training.train_daily(DAYS[1], settings)
    model_dir = settings.layout.model_daily(DAYS[1])
    lineage = json.loads((model_dir / training.LINEAGE_FILE).read_text())
    assert lineage["parent"] == {"kind": "full", "version": "full-2024-03-01"} and lineage["kind"] == "daily"
    assert training.read_lineage(model_dir) == lineage
    # the model describes itself too (glmix_core metadata), and the write left no temporary folders behind
    model = training.load_model(model_dir)
    assert {k: model.metadata[k] for k in ("ds", "kind", "version", "parent", "base_full")} == \
        {k: lineage[k] for k in ("ds", "kind", "version", "parent", "base_full")}
    assert not any(p.name.startswith((".tmp", ".trash")) for p in model_dir.parent.iterdir())
    # a model saved before jobrec wrote lineage.json: its lineage comes from the model's metadata
    (model_dir / training.LINEAGE_FILE).unlink()
    assert training.read_lineage(model_dir)["parent"] == lineage["parent"]
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        training.read_lineage(settings.layout.model_daily(DAYS[2]).parent / "nothing-here")


def test_member_coverage_counts_holdout_rows_whose_member_has_an_effect(trained_home) -> None:
    settings = trained_home
    model = training.load_model(settings.layout.model_full("full-2024-03-01"))
    known = set(model.coefficient_matrix("per_member", []).entity_ids.to_pylist())
    holdout = training_day(1)
    expected = np.isin(holdout.column("member_id").to_numpy().astype(str), sorted(known)).mean()
    assert training.member_coverage(model, holdout) == pytest.approx(expected)
    assert training.member_coverage(model, holdout.slice(0, 0)) == 0.0
    assert training.member_coverage(model, holdout, coordinate="per_nothing") == 0.0


def test_fits_go_through_glmix_core_fit_which_checks_the_engine(settings) -> None:
    train = training_day(0)
    with pytest.raises(ValueError, match="engine must be one of"):
        training._fit(training.load_spec(), train, settings=settings, engine="gpu")
    assert training.fit_options(settings) == {"engine": "local"}


def test_run_report_keeps_task_results_and_flattens_counts_metrics_and_timings(settings) -> None:
    out = write_run_report(
        "2024-03-02",
        settings,
        {"retrain": {"rows": 10, "holdout_auc": 0.7, "seconds": 1.5, "mode": "warm_start"}, "publish": None},
    )
    report = json.loads(settings.layout.report("2024-03-02").read_text())
    assert out["path"].endswith("reports/ds=2024-03-02/run.json")
    assert report["counts"] == {"retrain.rows": 10}
    assert report["metrics"] == {"retrain.holdout_auc": 0.7}
    assert report["timings_seconds"] == {"retrain": 1.5}
    assert report["tasks"]["retrain"]["mode"] == "warm_start"
    assert report["tasks"]["publish"] == {}


def test_daily_retrain_on_spark_reads_the_rows_from_a_scratch_file_and_equals_the_local_fit(
    trained_home, spark, monkeypatch
) -> None:
    import glmix_core

    settings = trained_home
    local = training.train_daily(DAYS[1], settings)
    local_coefficients = _coefficients(settings.layout.model_daily(DAYS[1]))
    seen = []
    real_fit = glmix_core.fit

    def recording_fit(spec, data, **kwargs):
        seen.append((kwargs.get("engine"), data if isinstance(data, str) else type(data).__name__,
                     isinstance(data, str) and pq.read_metadata(data).num_rows))
        return real_fit(spec, data, **kwargs)

    monkeypatch.setattr(glmix_core, "fit", recording_fit)
    on_spark = training.train_daily(DAYS[1], settings, engine="spark")
    assert [(engine, rows) for engine, _, rows in seen] == [("spark", on_spark["rows"])]
    assert seen[0][1].startswith(str(settings.layout.scratch_dir())) and seen[0][1].endswith("train.parquet")
    assert list(settings.layout.scratch_dir().iterdir()) == [], "the scratch file is removed after the fit"
    spark_coefficients = _coefficients(settings.layout.model_daily(DAYS[1]))
    for column in ("coordinate", "entity", "feature"):
        assert spark_coefficients.column(column).equals(local_coefficients.column(column))
    np.testing.assert_allclose(spark_coefficients.column("value").to_numpy(),
                               local_coefficients.column("value").to_numpy(), rtol=1e-6, atol=1e-8)
    assert on_spark["holdout_auc"] == pytest.approx(local["holdout_auc"], abs=1e-9)
