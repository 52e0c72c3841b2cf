"""Model directory format, warm start by entity ID and feature name, locking, incremental updates."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from glmix_core import DataError, GLMixSpec, ModelError, fit, load_model
from glmix_core.simulate import full_spec_dict, make_truth, simulate


@pytest.fixture(scope="module")
def days():
    truth = make_truth(40, 12, n_global=3, seed=11)
    return [simulate(truth, 600, task="logistic", day=d, seed=11)[0] for d in range(2)]


@pytest.fixture(scope="module")
def spec():
    return GLMixSpec.from_dict(full_spec_dict("logistic", max_iterations=300))  # the default (KKT) tolerance


def test_saved_model_has_the_long_form_contract_and_round_trips(tmp_path, days, spec):
    model = fit(spec, days[0], metadata={"training_range": ["2026-01-01", "2026-01-01"], "version": "v1"})
    model.save(tmp_path / "m")
    coefficients = pq.read_table(tmp_path / "m" / "coefficients.parquet")
    assert coefficients.schema.names == ["coordinate", "entity", "feature", "value", "variance"]
    assert [str(t) for t in coefficients.schema.types] == ["string", "string", "string", "double", "double"]
    fixed = coefficients.filter(pc.equal(coefficients["coordinate"], "global"))
    assert fixed["entity"].null_count == fixed.num_rows
    assert "(intercept)" in fixed["feature"].to_pylist()
    member = coefficients.filter(pc.equal(coefficients["coordinate"], "per_member"))
    assert member["entity"].null_count == 0 and all(e.isdigit() for e in member["entity"].to_pylist())
    assert member["variance"].null_count == 0
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["spec"]["task"] == "logistic" and meta["training_range"] == ["2026-01-01", "2026-01-01"]
    assert meta["fit"]["converged"] and meta["coordinates"]["per_job"]["type"] == "random"
    loaded = load_model(tmp_path / "m")
    np.testing.assert_allclose(loaded.score(days[1]), model.score(days[1]), rtol=1e-12, atol=1e-12)
    parts = loaded.contributions(days[1])
    np.testing.assert_allclose(sum(parts.values()), model.score(days[1]), atol=1e-12)


def test_loading_a_folder_that_is_not_a_model_names_the_problem(tmp_path):
    with pytest.raises(ModelError, match="not a GLMix model directory"):
        load_model(tmp_path)


def test_scoring_unknown_entities_uses_only_the_fixed_effect(days, spec):
    model = fit(spec, days[0])
    unseen = days[1].set_column(1, "member_id", pa.array(np.full(days[1].num_rows, 999_999_999, dtype=np.int64)))
    parts = model.contributions(unseen)
    assert np.all(parts["per_member"] == 0)
    assert np.any(parts["per_job"] != 0)


def test_warm_start_from_the_optimum_converges_immediately(days):
    spec = GLMixSpec.from_dict(full_spec_dict("logistic"))  # the default (KKT) tolerance
    cold = fit(spec, days[0])
    assert cold.metadata["fit"]["converged"]
    warm = fit(spec, days[0], warm_start=cold)
    assert warm.metadata["fit"]["sweeps"] == 1 and warm.metadata["fit"]["converged"]
    assert warm.metadata["fit"]["objective"] == pytest.approx(cold.metadata["fit"]["objective"], rel=1e-9)


def test_warm_start_matches_by_entity_id_new_entities_start_at_zero_vanished_are_dropped(days, spec):
    day0 = days[0]
    first = fit(spec, day0)
    members = day0["member_id"].to_numpy()
    keep = members != members[0]
    renamed = day0.filter(pa.array(keep))
    # one member vanishes; rows of another get a brand new ID
    ids = renamed["member_id"].to_numpy().copy()
    ids[ids == ids[0]] = 42
    renamed = renamed.set_column(1, "member_id", pa.array(ids))
    raw = full_spec_dict("logistic", tolerance=1e-10, max_iterations=1)
    one_sweep = fit(GLMixSpec.from_dict(raw), renamed, warm_start=first, lock=["global", "per_job"])
    stored = set(one_sweep.coordinates["per_member"].entity_ids.to_pylist())
    assert str(members[0]) not in stored and "42" in stored
    # reordered rows + warm start: same optimum as the cold fit on the same data
    shuffled = day0.take(pa.array(np.random.default_rng(0).permutation(day0.num_rows)))
    again = fit(spec, shuffled, warm_start=first)
    assert again.metadata["fit"]["sweeps"] <= 2


def test_locked_coordinate_keeps_its_coefficients_exactly(days, spec):
    first = fit(spec, days[0])
    second = fit(spec, days[1], warm_start=first, lock=["global"])
    np.testing.assert_array_equal(second.coordinates["global"].coef, first.coordinates["global"].coef)
    assert not np.array_equal(second.coordinates["per_job"].value, first.coordinates["per_job"].value)
    assert second.metadata["fit"]["locked"] == ["global"]


def test_locking_without_a_warm_start_is_a_clear_error(days, spec):
    with pytest.raises(DataError, match="needs a warm-start model"):
        fit(spec, days[0], lock=["global"])


def test_posterior_variances_are_the_inverse_hessian_diagonal():
    truth = make_truth(10, 4, n_global=2, seed=2)
    table = simulate(truth, 200, task="linear", seed=2)[0]
    spec = GLMixSpec.from_dict({"task": "linear", "response": "label", "tolerance": 1e-12, "coordinates": [
        {"name": "per_member", "type": "random", "entity": "member_id", "feature_bags": ["job_features"],
         "l2": 2.0}]})
    model = fit(spec, table)
    coord = model.coordinates["per_member"]
    entity = coord.entity_ids[0].as_py()
    rows = table.filter(pc.equal(table["member_id"].cast(pa.string()), entity))
    from glmix_core.data import feature_matrix

    Z, names = feature_matrix(rows, (), ("job_features",), True)
    used = np.flatnonzero(np.asarray(Z.getnnz(axis=0)) > 0)
    H = (Z[:, used].T @ Z[:, used]).toarray() + 2.0 * np.eye(used.size)
    expected = dict(zip([names[i] for i in used], np.diag(np.linalg.inv(H)), strict=True))
    mine = coord.table().filter(pc.equal(coord.table()["entity"], entity))
    got = dict(zip(mine["feature"].to_pylist(), mine["variance"].to_pylist(), strict=True))
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-9)


def test_incremental_update_keeps_absent_entities_and_follows_the_prior(days, spec):
    first = fit(spec, days[0])
    today = days[1]
    members = today["member_id"].to_numpy()
    absent = members[0]
    today = today.filter(pa.array(members != absent))
    update = fit(spec, today, warm_start=first, lock=["global"], incremental={"forgetting": 1.0})
    prev, new = first.coordinates["per_member"], update.coordinates["per_member"]
    old_rows = prev.table().filter(pc.equal(prev.table()["entity"], str(absent)))
    new_rows = new.table().filter(pc.equal(new.table()["entity"], str(absent)))
    assert old_rows.num_rows > 0
    assert old_rows.sort_by("feature")["value"].to_pylist() == new_rows.sort_by("feature")["value"].to_pylist()
    # the prior (yesterday's posterior) shrinks today's estimates toward yesterday: closer than a fresh fit
    fresh = fit(spec, today, warm_start=first, lock=["global"])
    value_prev, _, found = prev.lookup(new.entity_ids, new.features, new.pair_entity, new.pair_feature)
    value_fresh, _, found_fresh = fresh.coordinates["per_member"].lookup(
        new.entity_ids, new.features, new.pair_entity, new.pair_feature)
    both = found & found_fresh
    assert np.abs(new.value[both] - value_prev[both]).mean() < np.abs(value_fresh[both] - value_prev[both]).mean()
    # a tiny forgetting factor makes the prior vague: the update approaches the data-only fit
    vague = fit(spec, today, warm_start=first, lock=["global"], incremental={"forgetting": 1e-6})
    vague_values = vague.coordinates["per_member"].lookup(new.entity_ids, new.features, new.pair_entity,
                                                          new.pair_feature)[0]
    assert np.abs(vague_values[both] - value_prev[both]).mean() > np.abs(new.value[both] - value_prev[both]).mean()


def test_incremental_update_needs_the_previous_model(days, spec):
    with pytest.raises(DataError, match="previous model"):
        fit(spec, days[0], incremental={"forgetting": 0.9})
