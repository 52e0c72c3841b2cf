"""Validation evaluators: parsing, values against direct computation, best-model tracking during PBCD,
per-group output and the CLI flags."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from glmix_core import GLMixSpec, SpecError, evaluate, fit, grid_search, load_model, metrics
from glmix_core import evaluators as ev
from glmix_core.cli import main
from glmix_core.evaluation import group_metrics
from glmix_core.losses import get_loss
from glmix_core.simulate import full_spec_dict, make_truth, simulate


@pytest.fixture(scope="module")
def days():
    truth = make_truth(30, 10, n_global=3, seed=21)
    return [simulate(truth, 500, task="logistic", day=d, seed=21)[0] for d in range(3)]


@pytest.fixture(scope="module")
def overfit():
    """A weak-prior, nearly null random effect that overfits: validation AUC peaks after the first update."""
    truth = make_truth(40, 12, n_global=3, seed=5, member_sd=0.1, job_sd=0.1)
    train, val = (simulate(truth, 600, task="logistic", seed=5, day=d)[0] for d in range(2))
    raw = full_spec_dict("logistic", l2_fixed=1.0, l2_member=0.01, l2_job=0.01, tolerance=1e-8, max_iterations=6)
    return train, val, raw


def test_parse_names_directions_and_errors():
    assert ev.parse("AUC") == ev.Evaluator("AUC", "auc")
    assert ev.parse("auc:member_id") == ev.Evaluator("auc:member_id", "auc", "member_id")
    assert ev.parse("Precision@10:job_id") == ev.Evaluator("Precision@10:job_id", "precision", "job_id", 10)
    assert [ev.direction(n) for n in ("auc", "aupr", "precision@3:m", "rmse", "logistic_loss",
                                      "poisson_loss", "squared_loss", "smoothed_hinge_loss")] == \
        ["max", "max", "max", "min", "min", "min", "min", "min"]
    assert ev.is_better("auc", 0.7, 0.6) and not ev.is_better("auc", 0.6, 0.7)
    assert ev.is_better("rmse", 0.1, 0.2) and not ev.is_better("rmse", 0.2, 0.2)
    assert ev.is_better("auc", 0.5, float("nan")) and not ev.is_better("auc", float("nan"), 0.5)
    for bad, message in [("accuracy", "unknown evaluator 'accuracy'; allowed: auc, aupr"),
                         ("precision@5", "write precision@5:<id column>"), ("rmse:member_id", "only auc and"),
                         ("precision@0:m", "k of precision@k must be >= 1"), ("auc:", "id column after ':'")]:
        with pytest.raises(SpecError, match=message):
            ev.parse(bad)


def test_evaluator_values_equal_direct_metric_computation(days):
    from sklearn.metrics import average_precision_score, roc_auc_score

    table = days[0]
    rng = np.random.default_rng(0)
    y = table["label"].to_numpy()
    eta = rng.normal(size=y.size) + y
    w = rng.random(y.size)
    names = ["auc", "aupr", "rmse", "logistic_loss", "poisson_loss", "squared_loss", "smoothed_hinge_loss",
             "auc:member_id", "precision@3:member_id", "precision@5:job_id"]
    got = ev.compute(names, y, eta, table, task="logistic")
    members, jobs = table["member_id"].to_numpy(), table["job_id"].to_numpy()
    p = 1 / (1 + np.exp(-eta))
    assert got["auc"] == pytest.approx(roc_auc_score(y, eta), abs=1e-12)
    assert got["aupr"] == pytest.approx(average_precision_score(y, eta), abs=1e-12)
    assert got["rmse"] == pytest.approx(np.sqrt(np.mean((y - p) ** 2)), rel=1e-12)
    assert got["logistic_loss"] == pytest.approx(metrics.log_loss(y, p), rel=1e-9)
    assert got["poisson_loss"] == pytest.approx(np.mean(np.exp(eta) - y * eta), rel=1e-12)
    assert got["squared_loss"] == pytest.approx(np.mean(0.5 * (eta - y) ** 2), rel=1e-12)
    assert got["smoothed_hinge_loss"] == pytest.approx(get_loss("smoothed_hinge").pointwise(y, eta).mean(), rel=1e-12)
    assert got["auc:member_id"] == pytest.approx(metrics.per_entity_auc(y, eta, members)["mean"], abs=1e-12)
    aucs = [roc_auc_score(y[members == m], eta[members == m]) for m in np.unique(members)
            if 0 < y[members == m].sum() < (members == m).sum()]
    assert got["auc:member_id"] == pytest.approx(np.mean(aucs), abs=1e-12)
    assert got["precision@3:member_id"] == pytest.approx(metrics.precision_at_k(y, eta, members, 3), abs=1e-12)
    assert got["precision@5:job_id"] == pytest.approx(metrics.precision_at_k(y, eta, jobs, 5), abs=1e-12)
    assert ev.compute(["rmse"], y, eta)["rmse"] == pytest.approx(np.sqrt(np.mean((y - eta) ** 2)))  # no task: η
    weighted = ev.compute(["auc", "aupr", "squared_loss"], y, eta, weight=w)
    assert weighted["auc"] == pytest.approx(roc_auc_score(y, eta, sample_weight=w), abs=1e-12)
    assert weighted["aupr"] == pytest.approx(average_precision_score(y, eta, sample_weight=w), abs=1e-12)
    assert weighted["squared_loss"] == pytest.approx(np.average(0.5 * (eta - y) ** 2, weights=w), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aupr_matches_sklearn_average_precision_with_ties(seed):
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(seed)
    y = (rng.random(400) < 0.2).astype(float)
    score = np.round(rng.normal(size=400) + y, 1)  # rounding makes ties
    assert metrics.aupr(y, score) == pytest.approx(average_precision_score(y, score), abs=1e-12)
    w = rng.random(400)
    assert metrics.aupr(y, score, w) == pytest.approx(average_precision_score(y, score, sample_weight=w), abs=1e-12)
    assert np.isnan(metrics.aupr(np.zeros(5), np.arange(5.0)))


def test_fit_tracks_validation_after_every_update_and_returns_the_best_model(overfit):
    train, val, raw = overfit
    spec = GLMixSpec.from_dict({**raw, "evaluators": ["auc", "logistic_loss", "auc:member_id"]})
    model = fit(spec, train, validation=val)
    info = model.metadata["fit"]
    history = info["validation_history"]
    updates = info["history"]
    assert [(h["sweep"], h["coordinate"]) for h in history] == [(h["sweep"], h["coordinate"]) for h in updates]
    aucs = np.array([h["metrics"]["auc"] for h in history])
    best = info["best"]
    assert best["metric"] == "auc" and best["value"] == aucs.max()
    # ties go to the later model
    last_max = int(np.flatnonzero(aucs == aucs.max())[-1])
    assert (best["sweep"], best["coordinate"]) == (history[last_max]["sweep"], history[last_max]["coordinate"])
    assert aucs[-1] < aucs.max() - 0.05  # the fit overfits: the best model is not the last iterate
    final = evaluate(model, val, evaluators=spec.evaluators)
    assert final["auc"] == pytest.approx(best["value"], abs=1e-12)
    assert final["logistic_loss"] == pytest.approx(history[last_max]["metrics"]["logistic_loss"], rel=1e-9)
    assert model.metadata["metrics"]["validation"]["auc:member_id"] == pytest.approx(
        history[last_max]["metrics"]["auc:member_id"], abs=1e-12)
    plain = fit(GLMixSpec.from_dict(raw), train, validation=val)
    assert "validation_history" not in plain.metadata["fit"] and "best" not in plain.metadata["fit"]
    assert plain.metadata["metrics"]["validation"]["auc"] == pytest.approx(aucs[-1], abs=1e-9)
    assert model.metadata["fit"]["objective"] > plain.metadata["fit"]["objective"]


def test_tracking_scores_locked_and_incremental_coordinates_like_the_returned_model(days):
    raw = {**full_spec_dict("logistic", tolerance=1e-8, max_iterations=5), "evaluators": ["logistic_loss", "aupr"]}
    spec = GLMixSpec.from_dict(raw)
    first = fit(spec, days[0], validation=days[1])
    daily = fit(spec, days[1], validation=days[2], warm_start=first, lock=["global"],
                incremental={"forgetting": 0.9})
    best = daily.metadata["fit"]["best"]
    losses = [h["metrics"]["logistic_loss"] for h in daily.metadata["fit"]["validation_history"]]
    assert best["value"] == min(losses)
    got = evaluate(daily, days[2], evaluators=["logistic_loss", "aupr"])
    assert got["logistic_loss"] == pytest.approx(best["value"], rel=1e-10)


def test_evaluators_are_checked_before_fitting(days):
    spec = GLMixSpec.from_dict({**full_spec_dict("logistic"), "evaluators": ["auc:nope"]})
    with pytest.raises(ValueError, match="id column 'nope' is not in the validation data"):
        fit(spec, days[0], validation=days[1])
    with pytest.raises(SpecError, match="allowed: auc, aupr, rmse"):
        fit(GLMixSpec.from_dict({**full_spec_dict("logistic"), "evaluators": ["f1"]}), days[0])


def test_group_metrics_one_row_per_group(days):
    from sklearn.metrics import roc_auc_score

    model = fit(GLMixSpec.from_dict(full_spec_dict("logistic")), days[0])
    test = days[1]
    out = group_metrics(model, test, ["auc", "auc:member_id", "precision@3:member_id", "precision@2:job_id"])
    assert out.column_names == ["group_column", "group_id", "rows", "positives", "auc", "precision@3",
                                "precision@2"]
    y, eta = test["label"].to_numpy(), model.score(test)
    members, jobs = test["member_id"].to_numpy(), test["job_id"].to_numpy()
    rows = out.to_pylist()
    assert [r["group_column"] for r in rows] == ["member_id"] * len(np.unique(members)) + \
        ["job_id"] * len(np.unique(jobs))
    for r in rows:
        keys = members if r["group_column"] == "member_id" else jobs
        m = keys == int(r["group_id"])
        assert r["rows"] == m.sum() and r["positives"] == y[m].sum()
        top = y[m][np.argsort(-eta[m], kind="stable")]
        if r["group_column"] == "member_id":
            expected_auc = roc_auc_score(y[m], eta[m]) if 0 < y[m].sum() < m.sum() else None
            assert r["auc"] == pytest.approx(expected_auc) if expected_auc is not None else r["auc"] is None
            assert r["precision@3"] == pytest.approx(top[:3].sum() / min(3, m.sum()))
            assert r["precision@2"] is None
        else:
            assert r["auc"] is None and r["precision@3"] is None
            assert r["precision@2"] == pytest.approx(top[:2].sum() / min(2, m.sum()))
    default = group_metrics(model, test)  # no grouped evaluators: auc and precision@5/10 per entity column
    assert default.column_names[4:] == ["auc", "precision@5", "precision@10"]
    assert set(default["group_column"].to_pylist()) == {"member_id", "job_id"}


def test_grid_search_accepts_an_evaluator_metric(days):
    spec = GLMixSpec.from_dict(full_spec_dict("logistic", tolerance=1e-5, max_iterations=20))
    result = grid_search(spec, days[0], days[1], {"per_member": [0.01, 100.0]}, metric="aupr")
    values = [t["value"] for t in result.trials]
    assert result.best.spec.coordinate("per_member").l2 == result.trials[int(np.argmax(values))]["l2"]["per_member"]


def test_cli_evaluators_and_group_output(tmp_path, days, capsys):
    pq.write_table(days[0], tmp_path / "train.parquet")
    pq.write_table(days[1], tmp_path / "val.parquet")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({**full_spec_dict("logistic", max_iterations=4),
                                                         "evaluators": ["rmse"]}))
    base = ["fit", "--data", str(tmp_path / "train.parquet"), "--spec", str(tmp_path / "spec.yaml"),
            "--validation", str(tmp_path / "val.parquet")]
    assert main(base + ["--out", str(tmp_path / "m"), "--evaluators", "auc:member_id", "aupr"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["best"]["metric"] == "auc:member_id"
    model = load_model(tmp_path / "m")
    assert model.spec.evaluators == ("auc:member_id", "aupr")
    assert set(model.metadata["fit"]["validation_history"][0]["metrics"]) == {"auc:member_id", "aupr"}
    assert {"auc:member_id", "aupr", "auc", "log_loss"} <= set(model.metadata["metrics"]["validation"])

    assert main(["evaluate", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "val.parquet"),
                 "--evaluators", "auc", "precision@3:member_id", "--group-output", str(tmp_path / "g.parquet")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"rows", "auc", "precision@3:member_id", "group_output"}
    assert printed["auc"] == pytest.approx(metrics.auc(days[1]["label"].to_numpy(), model.score(days[1])))
    groups = pq.read_table(tmp_path / "g.parquet")
    assert groups.column_names == ["group_column", "group_id", "rows", "positives", "precision@3"]
    assert groups.num_rows == printed["group_output"]["rows"] == len(set(days[1]["member_id"].to_pylist()))
    assert np.mean(groups["precision@3"].to_numpy()) == pytest.approx(printed["precision@3:member_id"])

    assert main(["evaluate", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "val.parquet")]) == 0
    assert "per_member_id_auc" in json.loads(capsys.readouterr().out)  # default: today's metric set

    assert main(base + ["--out", str(tmp_path / "x"), "--evaluators", "accuracy"]) == 2
    assert "unknown evaluator 'accuracy'; allowed: auc, aupr" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "x"), "--evaluators", "auc:user"]) == 2
    assert "id column 'user' is not in the validation data" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "val.parquet"),
                 "--evaluators", "precision@x:member_id"]) == 2
    assert "allowed:" in capsys.readouterr().err


@pytest.mark.parametrize("normalization", ["standardization", "scale_with_max_magnitude"])
def test_tracking_scores_normalized_coordinates_in_the_original_scale(days, normalization):
    raw = {**full_spec_dict("logistic", tolerance=1e-8, max_iterations=4), "evaluators": ["squared_loss"]}
    for coord in raw["coordinates"]:
        coord["normalization"] = normalization
    model = fit(GLMixSpec.from_dict(raw), days[0], validation=days[1])
    best = model.metadata["fit"]["best"]
    assert best["value"] == min(h["metrics"]["squared_loss"] for h in model.metadata["fit"]["validation_history"])
    assert evaluate(model, days[1], evaluators=["squared_loss"])["squared_loss"] == pytest.approx(best["value"],
                                                                                                  rel=1e-10)
