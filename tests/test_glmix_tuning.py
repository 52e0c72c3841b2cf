"""Hyper-parameter search (glmix_core.tuning): grid, random and Bayesian search, output modes, the CLI."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from glmix_core import GLMixSpec, SpecError, load_model
from glmix_core.cli import main
from glmix_core.simulate import full_spec_dict, make_truth, simulate
from glmix_core.tuning import (
    bayesian_search,
    direction,
    grid_search,
    parse_l2,
    propose,
    random_points,
    random_search,
    tune,
)

BOX = {"global": (0.01, 1000.0), "per_member": (0.01, 1000.0), "per_job": (0.01, 1000.0)}


@pytest.fixture(scope="module")
def data():
    truth = make_truth(60, 20, n_global=3, seed=3)
    train = simulate(truth, 3000, day=0, seed=3)[0]
    validation = simulate(truth, 1500, day=1, seed=3)[0]
    spec = GLMixSpec.from_dict(full_spec_dict("logistic", tolerance=1e-5, max_iterations=20))
    return spec, train, validation


def test_direction_follows_the_metric():
    for name in ("auc", "aupr", "auc:member_id", "precision@5:member_id", "per_member_id_auc", "ndcg@5/job_id"):
        assert direction(name) == "max", name
    for name in ("logistic_loss", "rmse", "log_loss", "poisson_loss", "poisson_deviance"):
        assert direction(name) == "min", name


@pytest.mark.parametrize("method", ["grid", "random", "bayesian"])
def test_fit_options_reach_glmix_fit_for_every_trial(data, method):
    spec, train, validation = data
    l2 = {"per_job": [0.1, 10.0]} if method == "grid" else {"per_job": (0.1, 10.0)}
    result = tune(spec, train, validation, method=method, l2=l2, trials=3,
                  fit_options={"engine": "local", "metadata": {"trial_tag": "t"}})
    assert result.best.metadata["trial_tag"] == "t"
    assert result.best_trial["value"] == max(t["value"] for t in result.trials)
    with pytest.raises(ValueError, match="engine must be one of"):
        tune(spec, train, validation, method=method, l2=l2, trials=1, fit_options={"engine": "gpu"})


def test_bayesian_search_runs_its_start_points_first_then_proposes(data):
    spec, train, validation = data
    box = {"per_member": (0.1, 100.0), "per_job": (0.1, 100.0)}
    starts = [{"per_member": v, "per_job": v} for v in (1.0, 10.0)]
    result = bayesian_search(spec, train, validation, box, trials=5, seed=2, start_points=starts)
    assert [t["l2"] for t in result.trials[:2]] == starts  # exactly, not through the log-scale round trip
    assert [t["proposal"] for t in result.trials] == ["start", "start", "initial", "expected_improvement",
                                                       "expected_improvement"]
    # the random initial point is random search's first point for the seed
    assert result.trials[2]["l2"] == pytest.approx(random_points(box, 1, seed=2)[0])
    with pytest.raises(ValueError, match="outside the L2 ranges"):
        bayesian_search(spec, train, validation, box, trials=2, start_points=[{"per_member": 1e4, "per_job": 1.0}])
    with pytest.raises(ValueError, match="exactly the searched coordinates"):
        bayesian_search(spec, train, validation, box, trials=2, start_points=[{"per_member": 1.0}])


def test_grid_covers_the_cross_product_and_picks_the_best(data):
    spec, train, validation = data
    grid = {"per_member": [0.01, 1.0, 100.0], "per_job": [0.1, 10.0]}
    result = grid_search(spec, train, validation, grid, metric="auc")
    seen = [(t["l2"]["per_member"], t["l2"]["per_job"]) for t in result.trials]
    assert seen == list(itertools.product(*grid.values()))
    values = [t["value"] for t in result.trials]
    assert result.best_trial["value"] == max(values)
    assert result.best.spec.coordinate("per_member").l2 == result.best_trial["l2"]["per_member"]
    assert result.best.spec.coordinate("per_job").l2 == result.best_trial["l2"]["per_job"]
    assert result.best_so_far() == list(np.maximum.accumulate(values))
    first = result.trials[0]
    assert {"auc", "aupr", "logistic_loss", "rmse"} <= set(first["metrics"])
    assert first["fit_seconds"] > 0 and np.isfinite(first["objective"]) and first["metric"] == "auc"

    # a loss is picked by its minimum; a grouped evaluator works as the metric too
    losses = grid_search(spec, train, validation, grid, metric="logistic_loss")
    assert losses.direction == "min"
    assert losses.best_trial["value"] == min(t["value"] for t in losses.trials)
    grouped = grid_search(spec, train, validation, {"per_member": [0.1, 10.0]}, metric="auc:member_id")
    assert grouped.direction == "max" and all(0 < t["value"] <= 1 for t in grouped.trials)


def test_random_search_is_reproducible_and_log_uniform_in_range(data):
    spec, train, validation = data
    ranges = {"per_member": (0.01, 1000.0), "per_job": (0.5, 2.0)}
    a = random_search(spec, train, validation, ranges, trials=4, seed=11)
    b = random_search(spec, train, validation, ranges, trials=4, seed=11)
    assert [t["l2"] for t in a.trials] == [t["l2"] for t in b.trials]
    assert [t["value"] for t in a.trials] == pytest.approx([t["value"] for t in b.trials], abs=1e-12)
    assert [t["l2"] for t in a.trials] == random_points(ranges, 4, seed=11)
    assert random_points(ranges, 4, seed=12) != random_points(ranges, 4, seed=11)
    assert random_points(ranges, 8, seed=11)[:4] == random_points(ranges, 4, seed=11)

    draws = random_points(ranges, 4000, seed=5)
    member = np.log10([d["per_member"] for d in draws])
    job = np.array([d["per_job"] for d in draws])
    assert member.min() >= -2 and member.max() <= 3 and job.min() >= 0.5 and job.max() <= 2.0
    # log-uniform: each decade of [0.01, 1000] gets ~1/5 of the draws (a uniform draw would put ~90% in the last)
    share = np.histogram(member, bins=5, range=(-2, 3))[0] / member.size
    assert np.all(np.abs(share - 0.2) < 0.03)


def test_propose_finds_the_maximum_of_a_smooth_function():
    rng = np.random.default_rng(0)

    def f(u):
        return -((u[:, 0] - 0.3) ** 2 + (u[:, 1] - 0.7) ** 2)

    U = rng.random((4, 2))
    for _ in range(12):
        point, ei = propose(U, f(U), rng, n_candidates=1024, seed=0)
        assert np.all((point >= 0) & (point <= 1)) and ei >= 0
        U = np.vstack([U, point])
    best = U[np.argmax(f(U))]
    assert np.linalg.norm(best - [0.3, 0.7]) < 0.08
    assert f(U).max() > f(U[:4]).max()


def test_bayesian_search_beats_its_initial_points_inside_the_box(data):
    spec, train, validation = data
    result = bayesian_search(spec, train, validation, BOX, trials=9, seed=0, n_initial=4, n_candidates=1024)
    initial = result.trials[:4]
    assert [t["proposal"] for t in result.trials] == ["initial"] * 4 + ["expected_improvement"] * 5
    assert [t["l2"] for t in initial] == random_points(BOX, 4, seed=0)
    assert result.best_trial["value"] >= max(t["value"] for t in initial)
    for t in result.trials:
        for name, (low, high) in BOX.items():
            assert low * (1 - 1e-9) <= t["l2"][name] <= high * (1 + 1e-9)
    proposals = {tuple(np.round(np.log10(list(t["l2"].values())), 6)) for t in result.trials}
    assert len(proposals) == len(result.trials)  # no point proposed twice
    again = bayesian_search(spec, train, validation, BOX, trials=6, seed=0, n_initial=4, n_candidates=1024)
    def points(trials):
        return np.log10([[t["l2"][name] for name in BOX] for t in trials])

    np.testing.assert_allclose(points(again.trials), points(result.trials[:6]), atol=1e-6)


def test_pinned_coordinates_and_errors(data):
    spec, train, validation = data
    result = bayesian_search(spec, train, validation, {"per_member": (0.1, 100.0), "per_job": (3.0, 3.0)},
                             trials=4, seed=1, n_initial=3, n_candidates=256, polish=False)
    assert all(t["l2"]["per_job"] == pytest.approx(3.0) for t in result.trials)
    with pytest.raises(SpecError, match="no coordinate named"):
        random_search(spec, train, validation, {"nope": (0.1, 1.0)}, trials=1)
    with pytest.raises(ValueError, match="0 < low <= high"):
        random_search(spec, train, validation, {"per_member": (0.0, 1.0)}, trials=1)
    with pytest.raises(ValueError, match="not computed"):
        grid_search(spec, train, validation, {"per_member": [1.0]}, metric="bogus")
    with pytest.raises(ValueError, match="method must be one of"):
        tune(spec, train, validation, method="anneal", l2={"per_member": (0.1, 1.0)})


def test_parse_l2_forms():
    assert parse_l2(["per_member=0.01:1000", "per_job=2"], "bayesian") == {
        "per_member": (0.01, 1000.0), "per_job": (2.0, 2.0)}
    assert parse_l2(["per_member=0.1,1,10"], "grid") == {"per_member": [0.1, 1.0, 10.0]}
    with pytest.raises(SpecError, match="grid search takes lists"):
        parse_l2(["per_member=0.1:10"], "grid")
    with pytest.raises(SpecError, match="takes a range"):
        parse_l2(["per_member=0.1,1"], "random")
    with pytest.raises(SpecError, match="must be numbers"):
        parse_l2(["per_member=a:b"], "random")


@pytest.mark.parametrize("mode", ["all", "best"])
def test_output_modes_write_the_models(data, tmp_path, mode):
    spec, train, validation = data
    out = tmp_path / mode
    result = random_search(spec, train, validation, {"per_member": (0.1, 100.0)}, trials=3, seed=2, out=out,
                           output_mode=mode)
    trial_dirs = sorted(p.name for p in out.glob("trial-*"))
    assert trial_dirs == (["trial-001", "trial-002", "trial-003"] if mode == "all" else [])
    best = load_model(out / "best")
    assert best.spec.coordinate("per_member").l2 == pytest.approx(result.best_trial["l2"]["per_member"])
    assert best.metadata["tuning"]["trial"] == result.best_trial["trial"]
    assert best.metadata["metrics"]["validation"]["auc"] == pytest.approx(result.best_trial["value"])
    saved = json.loads((out / "trials.json").read_text())
    assert saved["n_trials"] == 3 and saved["best_trial"] == result.best_trial["trial"]
    assert [t["l2"] for t in saved["trials"]] == [t["l2"] for t in result.trials]
    lines = (out / "trials.jsonl").read_text().splitlines()
    assert [json.loads(line)["trial"] for line in lines] == [1, 2, 3]
    if mode == "all":
        second = load_model(out / "trial-002")
        assert second.spec.coordinate("per_member").l2 == pytest.approx(result.trials[1]["l2"]["per_member"])


def test_cli_tune_end_to_end(data, tmp_path, capsys):
    spec, train, validation = data
    pq.write_table(train, tmp_path / "train.parquet")
    pq.write_table(validation, tmp_path / "valid.parquet")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec.to_dict()))
    common = ["tune", "--data", str(tmp_path / "train.parquet"), "--validation", str(tmp_path / "valid.parquet"),
              "--spec", str(tmp_path / "spec.yaml")]
    rc = main(common + ["--out", str(tmp_path / "bo"), "--method", "bayesian", "--trials", "5", "--initial", "3",
                        "--l2", "per_member=0.01:1000", "per_job=0.01:1000", "--metric", "auc",
                        "--output-mode", "all", "--seed", "0"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_trials"] == 5 and summary["metric"] == "auc" and summary["direction"] == "max"
    assert 0.5 < summary["best_value"] <= 1.0 and 1 <= summary["best_trial"] <= 5
    assert len(list((tmp_path / "bo").glob("trial-*"))) == 5
    best = load_model(tmp_path / "bo" / "best")
    assert best.spec.coordinate("per_job").l2 == pytest.approx(summary["best_l2"]["per_job"])
    trials = json.loads((tmp_path / "bo" / "trials.json").read_text())["trials"]
    assert len(trials) == 5 and all({"l2", "metrics", "fit_seconds", "objective", "value"} <= set(t) for t in trials)

    rc = main(common + ["--out", str(tmp_path / "grid"), "--method", "grid", "--l2", "per_member=0.1,10",
                        "--metric", "logistic_loss"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_trials"] == 2 and summary["direction"] == "min"
    assert not list((tmp_path / "grid").glob("trial-*")) and (tmp_path / "grid" / "best" / "model.json").is_file()

    rc = main(common + ["--out", str(tmp_path / "bad"), "--method", "random", "--l2", "per_member=0.1,10"])
    assert rc == 2
    assert "takes a range" in capsys.readouterr().err


def test_cli_tune_accepts_a_formula_spec(data, tmp_path, capsys):
    _, train, validation = data
    pq.write_table(train, tmp_path / "train.parquet")
    pq.write_table(validation, tmp_path / "valid.parquet")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({
        "formula": "label ~ global + (1 + job_features | member_id)", "task": "logistic", "l2": 1.0}))
    rc = main(["tune", "--data", str(tmp_path / "train.parquet"), "--validation", str(tmp_path / "valid.parquet"),
               "--spec", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "grid"), "--method", "grid",
               "--l2", "per_member_id=0.1,10"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_trials"] == 2 and set(summary["best_l2"]) == {"per_member_id"}
