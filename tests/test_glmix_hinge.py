"""The smoothed-hinge linear SVM task: the loss itself, PBCD = joint MAP, and a direct scipy minimisation."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import scipy.optimize as opt

from glmix_core import GLMixSpec, evaluate, fit, metrics
from glmix_core import reference as ref
from glmix_core.losses import SmoothedHingeLoss, get_loss
from glmix_core.simulate import full_spec_dict, make_truth, simulate

SORT = [("coordinate", "ascending"), ("entity", "ascending"), ("feature", "ascending")]


def _values(model) -> tuple[list[str], np.ndarray]:
    table = model.coefficients().sort_by(SORT)
    keys = [f"{c}|{e}|{f}" for c, e, f in zip(table["coordinate"].to_pylist(), table["entity"].to_pylist(),
                                                table["feature"].to_pylist(), strict=True)]
    return keys, table["value"].to_numpy()


def test_smoothed_hinge_loss_values_and_derivatives():
    loss = get_loss("smoothed_hinge")
    assert isinstance(loss, SmoothedHingeLoss)
    y = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    eta = np.array([-1.0, 0.0, 0.5, 2.0, 1.0, -0.25, -3.0])
    # margins z = ±eta: -1, 0, 0.5, 2, -1, 0.25, 3
    np.testing.assert_allclose(loss.pointwise(y, eta), [1.5, 0.5, 0.125, 0.0, 1.5, 0.28125, 0.0])
    d1, d2 = loss.derivatives(y, eta)
    np.testing.assert_allclose(d1, [-1.0, -1.0, -0.5, 0.0, 1.0, 0.75, 0.0])
    np.testing.assert_array_equal(d2, [0, 0, 1, 0, 0, 1, 0])
    rng = np.random.default_rng(0)
    yy = rng.integers(0, 2, 200).astype(float)
    ee = rng.normal(scale=2.0, size=200)
    h = 1e-6
    numeric = (loss.pointwise(yy, ee + h) - loss.pointwise(yy, ee - h)) / (2 * h)
    np.testing.assert_allclose(loss.derivatives(yy, ee)[0], numeric, atol=1e-6)
    np.testing.assert_array_equal(loss.mean(ee), ee)  # the decision value
    with pytest.raises(ValueError, match="must be 0 or 1 for task smoothed_hinge"):
        loss.check_response(np.array([0.0, 2.0]), "label")


def test_pbcd_optimum_equals_joint_map_for_smoothed_hinge():
    truth = make_truth(35, 12, n_global=3, seed=3)
    table = simulate(truth, 700, task="logistic", seed=3)[0]
    spec = GLMixSpec.from_dict(full_spec_dict("smoothed_hinge", l2_fixed=0.5, l2_member=2.0, l2_job=1.5,
                                              tolerance=1e-13, max_iterations=500))
    model = fit(spec, table)
    problem = ref.stacked_problem(spec, table)
    coef, objective, _ = ref.solve_stacked(problem, method="trust-ncg", gtol=1e-10, max_iter=500)
    reference = ref.to_model(problem, coef)
    assert model.metadata["fit"]["objective"] == pytest.approx(objective, rel=1e-8)
    mine, theirs = _values(model), _values(reference)
    assert mine[0] == theirs[0]
    np.testing.assert_allclose(mine[1], theirs[1], atol=1e-4)
    np.testing.assert_allclose(model.score(table), reference.score(table), atol=1e-4)


@pytest.mark.parametrize(("users", "max_dense", "woodbury"), [
    (40, 256, False),  # dense batched Newton
    (40, 2, False),  # the sparse per-entity fallback
    (200, 256, True),  # entities with fewer rows than features: the Woodbury (dual) solve
])
def test_zero_curvature_rows_still_reach_the_joint_map(monkeypatch, users, max_dense, woodbury):
    # well separated classes: many rows end beyond the margin (z >= 1) or on the wrong side (z <= 0) where the
    # generalised second derivative is 0, so the Newton systems rest on the prior precision
    import glmix_core.solvers as solvers

    calls = []
    original = solvers._woodbury_solve
    monkeypatch.setattr(solvers, "_woodbury_solve", lambda *a: calls.append(1) or original(*a))
    rng = np.random.default_rng(4)
    n = 400
    user = rng.integers(0, users, n)
    y = (rng.random(n) < 0.5).astype(float)
    flip = np.where(rng.random(users) < 0.5, -1.0, 1.0)[user]
    x0 = (2 * y - 1) * (0.5 + rng.exponential(2.0, n)) * flip
    table = pa.table({"y": y, "user": user, "x0": x0, **{f"x{i}": rng.normal(size=n) for i in range(1, 5)}})
    spec = GLMixSpec.from_dict({"task": "smoothed_hinge", "response": "y", "tolerance": 1e-13, "max_iterations": 500,
                                "coordinates": [
                                    {"name": "g", "type": "fixed", "features": ["x4"], "l2": 1.0, "intercept": False},
                                    {"name": "u", "type": "random", "entity": "user", "l2": 1.0,
                                     "features": ["x0", "x1"], "max_dense_features": max_dense}]})
    model = fit(spec, table)
    eta = model.score(table)
    z = (2 * y - 1) * eta
    assert np.mean((z <= 0) | (z >= 1)) > 0.25
    assert bool(calls) == woodbury
    problem = ref.stacked_problem(spec, table)
    coef, objective, _ = ref.solve_stacked(problem, method="trust-ncg", gtol=1e-10, max_iter=500)
    assert model.metadata["fit"]["objective"] == pytest.approx(objective, rel=1e-8)
    np.testing.assert_allclose(eta, ref.to_model(problem, coef).score(table), atol=1e-4)


@pytest.mark.parametrize("solver", ["trust-ncg", "newton-cg", "lbfgs"])
def test_fixed_effect_only_matches_a_direct_scipy_minimisation(solver):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(500, 4))
    y = (X @ [1.0, -2.0, 0.5, 0.0] + 0.3 + rng.normal(scale=1.0, size=500) > 0).astype(float)
    table = pa.table({"label": y, **{f"x{i}": X[:, i] for i in range(4)}})
    l2 = 2.0
    spec = GLMixSpec.from_dict({"task": "smoothed_hinge", "response": "label", "tolerance": 1e-12,
                                "coordinates": [{"name": "global", "type": "fixed", "solver": solver, "l2": l2,
                                                 "features": [f"x{i}" for i in range(4)]}]})
    coef = fit(spec, table).coordinates["global"].coef
    design = np.column_stack([np.ones(500), X])
    s = 2 * y - 1

    def objective(b):  # written out independently of glmix_core.losses
        z = s * (design @ b)
        value = np.where(z <= 0, 0.5 - z, np.where(z < 1, 0.5 * (1 - z) ** 2, 0.0)).sum()
        dz = np.where(z <= 0, -1.0, np.where(z < 1, z - 1, 0.0))
        penalty = np.r_[0.0, np.full(4, l2)]
        return value + 0.5 * np.sum(penalty * b * b), design.T @ (s * dz) + penalty * b

    res = opt.minimize(objective, np.zeros(5), jac=True, method="L-BFGS-B",
                       options={"gtol": 1e-12, "ftol": 1e-16, "maxiter": 10_000})
    np.testing.assert_allclose(coef, res.x, atol=1e-5)


def test_evaluate_reports_auc_of_the_decision_value_and_the_hinge_loss():
    truth = make_truth(30, 10, n_global=3, seed=21)
    train, test = (simulate(truth, 500, task="logistic", day=d, seed=21)[0] for d in range(2))
    model = fit(GLMixSpec.from_dict(full_spec_dict("smoothed_hinge")), train)
    result = evaluate(model, test)
    y, eta = test["label"].to_numpy(), model.score(test)
    assert result["auc"] == pytest.approx(metrics.auc(y, eta))
    assert result["auc"] > 0.6
    assert result["smoothed_hinge_loss"] == pytest.approx(SmoothedHingeLoss().pointwise(y, eta).mean())
    assert "per_member_id_auc" in result
    np.testing.assert_array_equal(model.predict(test), eta)
