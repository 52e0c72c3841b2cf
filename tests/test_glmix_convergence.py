"""Default fits stop on the gradient close to the exact joint mode, and say so when they cannot.

The reference is ``glmix_core.reference``: one scipy solve of the same MAP objective on the stacked design
(``[X | Z_member ⊗ e | Z_job ⊗ e]``), so the mode does not depend on PBCD. The models have crossed random
effects (every member sees many jobs and every job many members), the slow case for block coordinate
descent.
"""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pytest

from glmix_core import ConvergenceWarning, GLMixSpec, fit
from glmix_core import reference as ref
from glmix_core.simulate import full_spec_dict, make_truth, simulate

SORT = [("coordinate", "ascending"), ("entity", "ascending"), ("feature", "ascending")]


def _crossed(task: str, rows: int, seed: int) -> pa.Table:
    truth = make_truth(35, 12, n_global=3, seed=seed)
    return simulate(truth, rows, task=task, seed=seed)[0]


def _values(model) -> tuple[list, np.ndarray]:
    table = model.coefficients().sort_by(SORT)
    keys = list(zip(table["coordinate"].to_pylist(), table["entity"].to_pylist(), table["feature"].to_pylist(),
                    strict=True))
    return keys, table["value"].to_numpy()


@pytest.mark.parametrize("task", ["logistic", "linear", "poisson"])
@pytest.mark.parametrize(("rows", "seed"), [(700, 3), (1500, 7)])
def test_a_default_fit_lands_within_1e_4_of_the_reference_mode(task, rows, seed):
    table = _crossed(task, rows, seed)
    spec = GLMixSpec.from_dict(full_spec_dict(task))  # the spec defaults: tolerance, max_iterations, l2 = 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = fit(spec, table)
    problem = ref.stacked_problem(spec, table)
    coef, _, _ = ref.solve_stacked(problem, method="trust-ncg", gtol=1e-11, max_iter=1000)
    reference = ref.to_model(problem, coef)
    (mine_keys, mine), (ref_keys, theirs) = _values(model), _values(reference)
    assert mine_keys == ref_keys
    assert model.metadata["fit"]["converged"] and model.metadata["fit"]["kkt"] <= spec.tolerance
    assert np.max(np.abs(mine - theirs)) <= 1e-4


def test_a_fit_stopped_by_max_iterations_warns_with_a_convergence_warning():
    spec = GLMixSpec.from_dict(full_spec_dict("logistic", max_iterations=2))
    with pytest.warns(ConvergenceWarning, match="max_iterations"):
        model = fit(spec, _crossed("logistic", 700, 3))
    assert not model.metadata["fit"]["converged"]
    assert model.metadata["fit"]["kkt"] > spec.tolerance
    from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning

    assert issubclass(ConvergenceWarning, SklearnConvergenceWarning)  # filters written for sklearn/glum apply
