"""Metrics, evaluation, grid search, input checks and the ``glmix`` CLI."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
import yaml

from glmix_core import DataError, GLMixSpec, SpecError, evaluate, fit, grid_search, load_model, metrics
from glmix_core.cli import main
from glmix_core.simulate import full_spec_dict, make_truth, simulate


@pytest.fixture(scope="module")
def days():
    truth = make_truth(30, 10, n_global=3, seed=21)
    return [simulate(truth, 500, task="logistic", day=d, seed=21)[0] for d in range(2)]


def test_auc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300).astype(float)
    score = np.round(rng.normal(size=300) + y, 1)  # rounding makes ties
    assert metrics.auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    w = rng.random(300)
    assert metrics.auc(y, score, weight=w) == pytest.approx(roc_auc_score(y, score, sample_weight=w), abs=1e-12)


def test_grouped_metrics_match_a_per_group_loop():
    from sklearn.metrics import ndcg_score, roc_auc_score

    rng = np.random.default_rng(1)
    groups = rng.integers(0, 25, 600)
    y = rng.integers(0, 2, 600).astype(float)
    score = np.round(rng.normal(size=600) + 0.8 * y, 1)
    aucs, precisions, ndcgs, sizes = [], [], [], []
    for g in np.unique(groups):
        m = groups == g
        order = np.argsort(-score[m], kind="stable")
        precisions.append(y[m][order][:5].sum() / min(5, m.sum()))
        if 0 < y[m].sum() < m.sum():
            aucs.append(roc_auc_score(y[m], score[m]))
            sizes.append(m.sum())
    per = metrics.per_entity_auc(y, score, groups)
    assert per["mean"] == pytest.approx(np.mean(aucs), abs=1e-12)
    assert per["weighted_mean"] == pytest.approx(np.average(aucs, weights=sizes), abs=1e-12)
    # precision@k and NDCG@k with tied scores depend on tie handling: compare on untied scores
    untied = score + rng.normal(scale=1e-9, size=600)
    expected = []
    for g in np.unique(groups):
        m = groups == g
        expected.append(y[m][np.argsort(-untied[m])][:5].sum() / min(5, m.sum()))
        if y[m].sum() > 0:
            ndcgs.append(ndcg_score([y[m]], [untied[m]], k=5))
    assert metrics.ndcg_at_k(y, untied, groups, 5) == pytest.approx(np.mean(ndcgs), abs=1e-9)
    assert metrics.precision_at_k(y, untied, groups, 5) == pytest.approx(np.mean(expected), abs=1e-12)


def test_log_loss_and_rmse_match_sklearn():
    from sklearn.metrics import log_loss, mean_squared_error

    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 200).astype(float)
    p = rng.random(200)
    assert metrics.log_loss(y, p) == pytest.approx(log_loss(y, p), rel=1e-12)
    assert metrics.rmse(y, p) == pytest.approx(np.sqrt(mean_squared_error(y, p)), rel=1e-12)


def test_evaluate_reports_global_and_per_entity_metrics(days):
    spec = GLMixSpec.from_dict(full_spec_dict("logistic"))
    model = fit(spec, days[0])
    result = evaluate(model, days[1])
    assert {"auc", "log_loss", "rmse", "per_member_id_auc", "precision@5/member_id", "ndcg@10/job_id"} <= set(result)
    assert result["auc"] == pytest.approx(metrics.auc(days[1]["label"].to_numpy(), model.score(days[1])))
    assert 0.5 < result["auc"] <= 1.0


def test_grid_search_picks_the_best_validation_metric(days):
    spec = GLMixSpec.from_dict(full_spec_dict("logistic", tolerance=1e-5))
    result = grid_search(spec, days[0], days[1], {"per_member": [0.01, 1.0, 1000.0]}, metric="log_loss")
    assert len(result.trials) == 3
    losses = [t["value"] for t in result.trials]
    chosen = result.best.spec.coordinate("per_member").l2
    assert chosen == result.trials[int(np.argmin(losses))]["l2"]["per_member"]


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.set_column(0, "label", pa.array(np.full(t.num_rows, 2.0))), "must be 0 or 1"),
    (lambda t: t.set_column(0, "label", pa.array(np.r_[np.nan, np.zeros(t.num_rows - 1)])), "NaN/inf"),
    (lambda t: t.set_column(1, "member_id", pa.array([None] + [1] * (t.num_rows - 1), pa.int64())), "null"),
    (lambda t: t.set_column(1, "member_id", pa.array([""] + ["a"] * (t.num_rows - 1))), "empty-string"),
    (lambda t: t.drop_columns(["job_features"]), "not in the data"),
    (lambda t: t.set_column(3, "global", pa.array(["x"] * t.num_rows)), "list<struct"),
])
def test_bad_data_stops_with_a_message_naming_the_problem(days, change, message):
    spec = GLMixSpec.from_dict(full_spec_dict("logistic"))
    with pytest.raises(DataError if "0 or 1" not in message else ValueError, match=message):
        fit(spec, change(days[0]))


def test_poisson_rejects_negative_counts_and_numeric_features_must_be_numeric():
    table = pa.table({"y": [1.0, -1.0, 2.0], "x": ["a", "b", "c"]})
    spec = GLMixSpec.from_dict({"task": "poisson", "response": "y", "coordinates": [
        {"name": "g", "type": "fixed", "intercept": True}]})
    with pytest.raises(ValueError, match="non-negative count"):
        fit(spec, table)
    spec = GLMixSpec.from_dict({"task": "poisson", "response": "y", "coordinates": [
        {"name": "g", "type": "fixed", "features": ["x"]}]})
    with pytest.raises(DataError, match="'x' must be numeric"):
        fit(spec, table.set_column(0, "y", pa.array([1.0, 0.0, 2.0])))


@pytest.mark.parametrize(("raw", "message"), [
    ({"task": "probit", "response": "y", "coordinates": [{"name": "g", "type": "fixed"}]}, "task must be one of"),
    ({"task": "logistic", "response": "y", "coordinates": [{"name": "r", "type": "random"}]}, "needs 'entity'"),
    ({"task": "logistic", "response": "y", "coordinates": [{"name": "g", "type": "fixed", "l2": -1}]},
     "l2 must be >= 0; got l2=-1"),
    ({"task": "logistic", "response": "y", "coordinates": [{"name": "g", "type": "fixed", "colour": 1}]},
     "unknown fields"),
])
def test_bad_specs_stop_with_a_message_naming_the_field(raw, message):
    with pytest.raises(SpecError, match=message):
        GLMixSpec.from_dict(raw)


def test_cli_fit_score_evaluate_on_a_parquet_folder(tmp_path, days, capsys):
    data = tmp_path / "train"
    data.mkdir()
    pq.write_table(days[0].slice(0, 250), data / "part-0.parquet")
    pq.write_table(days[0].slice(250), data / "part-1.parquet")
    pq.write_table(days[1], tmp_path / "test.parquet")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(full_spec_dict("logistic")))
    assert main(["fit", "--data", str(data), "--spec", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "m"),
                 "--validation", str(tmp_path / "test.parquet")]) == 0
    assert "validation" in json.loads(capsys.readouterr().out)
    assert main(["fit", "--data", str(tmp_path / "test.parquet"), "--spec", str(tmp_path / "spec.yaml"),
                 "--out", str(tmp_path / "m2"), "--warm-start", str(tmp_path / "m"), "--lock", "global"]) == 0
    np.testing.assert_array_equal(load_model(tmp_path / "m2").coordinates["global"].coef,
                                  load_model(tmp_path / "m").coordinates["global"].coef)
    assert main(["score", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "test.parquet"),
                 "--out", str(tmp_path / "s.parquet"), "--keep", "member_id", "job_id"]) == 0
    scored = pq.read_table(tmp_path / "s.parquet")
    assert scored.column_names == ["member_id", "job_id", "score"]
    np.testing.assert_allclose(scored["score"].to_numpy(), load_model(tmp_path / "m").score(days[1]))
    assert scored["member_id"].to_pylist() == days[1]["member_id"].to_pylist()
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "test.parquet")]) == 0
    assert json.loads(capsys.readouterr().out)["auc"] > 0.5


def test_cli_fits_csv_and_reports_input_errors(tmp_path, capsys):
    rng = np.random.default_rng(3)
    x = rng.normal(size=200)
    table = pa.table({"y": (rng.random(200) < 1 / (1 + np.exp(-x))).astype(float), "x": x,
                      "user": rng.integers(0, 10, 200)})
    pcsv.write_csv(table, tmp_path / "d.csv")
    spec = {"task": "logistic", "response": "y", "coordinates": [
        {"name": "g", "type": "fixed", "features": ["x"], "l2": 0.0},
        {"name": "u", "type": "random", "entity": "user", "features": ["x"], "l2": 1.0}]}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["fit", "--data", str(tmp_path / "d.csv"), "--spec", str(tmp_path / "spec.yaml"),
                 "--out", str(tmp_path / "m")]) == 0
    capsys.readouterr()
    bad = dict(spec, coordinates=[{"name": "g", "type": "fixed", "features": ["nope"]}])
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    assert main(["fit", "--data", str(tmp_path / "d.csv"), "--spec", str(tmp_path / "bad.yaml"),
                 "--out", str(tmp_path / "m3")]) == 2
    assert "['nope'] not in the data" in capsys.readouterr().err
    assert main(["score", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "missing.parquet"),
                 "--out", str(tmp_path / "s.parquet")]) == 2
    assert "data path not found" in capsys.readouterr().err
