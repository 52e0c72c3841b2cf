"""PBCD reaches the GLMix posterior mode: the same point as one solver on the stacked design."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from glmix_core import GLMixSpec, fit
from glmix_core import reference as ref
from glmix_core.simulate import full_spec_dict, make_truth, simulate

SORT = [("coordinate", "ascending"), ("entity", "ascending"), ("feature", "ascending")]


def _small(task: str, rows: int = 700, seed: int = 3) -> pa.Table:
    truth = make_truth(35, 12, n_global=3, seed=seed)
    return simulate(truth, rows, task=task, seed=seed)[0]


def _joint_map(spec: GLMixSpec, table: pa.Table):
    problem = ref.stacked_problem(spec, table)
    coef, objective, _ = ref.solve_stacked(problem, method="trust-ncg", gtol=1e-10, max_iter=500)
    return ref.to_model(problem, coef), objective


def _coefficients(model) -> dict[str, np.ndarray]:
    table = model.coefficients().sort_by(SORT)
    return {"keys": np.array([f"{c}|{e}|{f}" for c, e, f in zip(
        table["coordinate"].to_pylist(), table["entity"].to_pylist(), table["feature"].to_pylist(), strict=True)]),
        "value": table["value"].to_numpy()}


@pytest.mark.parametrize("task", ["logistic", "linear", "poisson"])
def test_pbcd_optimum_equals_joint_map_on_stacked_design(task):
    table = _small(task)
    spec = GLMixSpec.from_dict(full_spec_dict(task, l2_fixed=0.5, l2_member=2.0, l2_job=1.5, tolerance=1e-13,
                                              max_iterations=500))
    model = fit(spec, table)
    reference, objective = _joint_map(spec, table)
    assert model.metadata["fit"]["objective"] == pytest.approx(objective, rel=1e-6)
    mine, theirs = _coefficients(model), _coefficients(reference)
    np.testing.assert_array_equal(mine["keys"], theirs["keys"])
    np.testing.assert_allclose(mine["value"], theirs["value"], atol=1e-4)
    np.testing.assert_allclose(model.score(table), reference.score(table), atol=1e-4)


def test_fixed_effect_only_matches_sklearn_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 4))
    y = (rng.random(500) < 1 / (1 + np.exp(-(X @ [1.0, -2.0, 0.5, 0.0] + 0.3)))).astype(float)
    table = pa.table({"label": y, **{f"x{i}": X[:, i] for i in range(4)}})
    C = 0.3
    spec = GLMixSpec.from_dict({"task": "logistic", "response": "label", "coordinates": [
        {"name": "global", "type": "fixed", "features": [f"x{i}" for i in range(4)], "l2": 1 / C}]})
    model = fit(spec, table)
    sk = LogisticRegression(C=C, tol=1e-12, max_iter=10_000).fit(X, y)
    coef = model.coordinates["global"].coef
    assert model.coordinates["global"].features == ["(intercept)", "x0", "x1", "x2", "x3"]
    np.testing.assert_allclose(coef[0], sk.intercept_[0], atol=1e-5)
    np.testing.assert_allclose(coef[1:], sk.coef_[0], atol=1e-5)


@pytest.mark.parametrize("solver", ["trust-ncg", "newton-cg", "lbfgs"])
def test_every_fixed_effect_solver_reaches_the_same_optimum(solver):
    table = _small("logistic")
    raw = full_spec_dict("logistic", tolerance=1e-13, max_iterations=500)
    raw["coordinates"][0]["solver"] = solver
    spec = GLMixSpec.from_dict(raw)
    _, objective = _joint_map(spec, table)
    assert fit(spec, table).metadata["fit"]["objective"] == pytest.approx(objective, rel=1e-8)


def test_many_feature_entities_fall_back_and_agree_with_the_batch_path():
    table = _small("logistic")
    raw = full_spec_dict("logistic", tolerance=1e-13, max_iterations=500)
    batch = fit(GLMixSpec.from_dict(raw), table)
    for coord in raw["coordinates"][1:]:
        coord["max_dense_features"] = 4  # nearly every entity goes to the sparse per-entity fallback
    fallback = fit(GLMixSpec.from_dict(raw), table)
    np.testing.assert_allclose(_coefficients(fallback)["value"], _coefficients(batch)["value"], atol=1e-5)


def test_weight_two_equals_duplicated_rows():
    table = _small("logistic", rows=300)
    spec_raw = full_spec_dict("logistic", tolerance=1e-13, max_iterations=500)
    doubled = fit(GLMixSpec.from_dict(spec_raw), pa.concat_tables([table, table]))
    weighted = fit(GLMixSpec.from_dict({**spec_raw, "weight": "w"}),
                   table.append_column("w", pa.array(np.full(table.num_rows, 2.0))))
    np.testing.assert_allclose(_coefficients(weighted)["value"], _coefficients(doubled)["value"], atol=1e-5)


def test_offset_column_shifts_the_linear_predictor():
    table = _small("linear", rows=300)
    spec_raw = full_spec_dict("linear", tolerance=1e-13, max_iterations=500)
    base = fit(GLMixSpec.from_dict(spec_raw), table)
    shifted = table.set_column(0, "label", pa.array(table["label"].to_numpy() + 5.0)).append_column(
        "off", pa.array(np.full(table.num_rows, 5.0)))
    with_offset = fit(GLMixSpec.from_dict({**spec_raw, "offset": "off"}), shifted)
    np.testing.assert_allclose(_coefficients(with_offset)["value"], _coefficients(base)["value"], atol=1e-5)


def test_l1_fixed_effect_satisfies_the_lasso_optimality_conditions():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 6))
    y = (rng.random(400) < 1 / (1 + np.exp(-(X[:, 0] * 2 - X[:, 1])))).astype(float)
    table = pa.table({"label": y, **{f"x{i}": X[:, i] for i in range(6)}})
    l1 = 15.0
    spec = GLMixSpec.from_dict({"task": "logistic", "response": "label", "coordinates": [
        {"name": "global", "type": "fixed", "features": [f"x{i}" for i in range(6)], "l2": 0.1, "l1": l1,
         "solver": "lbfgs"}], "tolerance": 1e-12})
    coef = fit(spec, table).coordinates["global"].coef
    design = np.column_stack([np.ones(400), X])
    p = 1 / (1 + np.exp(-design @ coef))
    grad = design.T @ (p - y) + 0.1 * np.r_[0, coef[1:]]
    zero = np.abs(coef[1:]) < 1e-6
    assert zero.any() and (~zero).any()
    assert np.all(np.abs(grad[1:][zero]) <= l1 + 1e-3)
    np.testing.assert_allclose(grad[1:][~zero], -l1 * np.sign(coef[1:][~zero]), atol=1e-3)
    assert abs(grad[0]) < 1e-3


def test_active_data_bounds_drop_small_entities_and_sample_reproducibly():
    table = _small("logistic", rows=700)
    raw = full_spec_dict("logistic", tolerance=1e-10, max_iterations=200)
    raw["coordinates"][1].update(min_samples=20)
    raw["coordinates"][2].update(max_samples=30, seed=5)
    spec = GLMixSpec.from_dict(raw)
    first, second = fit(spec, table), fit(spec, table)
    counts = pa.TableGroupBy(table, "member_id").aggregate([("label", "count")])
    big = {str(m) for m, c in zip(counts["member_id"].to_pylist(), counts["label_count"].to_pylist(), strict=True)
           if c >= 20}
    stored = set(first.coordinates["per_member"].entity_ids.to_pylist())
    assert stored == big and len(big) < counts.num_rows
    np.testing.assert_array_equal(first.coordinates["per_job"].value, second.coordinates["per_job"].value)
    unbounded = fit(GLMixSpec.from_dict(full_spec_dict("logistic", tolerance=1e-10, max_iterations=200)), table)
    sampled, full = first.coordinates["per_job"].value, unbounded.coordinates["per_job"].value
    assert sampled.size != full.size or not np.allclose(sampled, full)


def test_fit_history_logs_a_non_increasing_objective_per_coordinate_and_sweep():
    table = _small("poisson")
    model = fit(GLMixSpec.from_dict(full_spec_dict("poisson")), table)
    history = model.metadata["fit"]["history"]
    assert {h["coordinate"] for h in history} >= {"global", "per_member", "per_job"}
    assert all(h["seconds"] >= 0 for h in history)
    objectives = np.array([h["objective"] for h in history])
    assert np.all(np.diff(objectives) <= 1e-9 * np.abs(objectives[1:]))
    assert model.metadata["fit"]["converged"]
