"""Photon-ML's GAME driver controls in the local engine: normalization, negative down-sampling, per-entity
feature selection, hash-keyed active-data bounds with reweighting, variance types, sparsity threshold, and
the Spark engine refusing what it does not implement."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from glmix_core import GLMixSpec, fit, load_model
from glmix_core.building import active_rows
from glmix_core.design import RandomDesign, select_features
from glmix_core.sampling import down_sample, entity_reweighting, row_keys
from glmix_core.spec import CoordinateSpec

# -- data -----------------------------------------------------------------------------------------------------


def _mixed_table(n: int = 600, entities: int = 12, seed: int = 1) -> tuple[pa.Table, dict]:
    """Logistic rows with dense numeric features of very different means and scales: x0..x2 for a fixed
    effect, z0, z1 for a random effect on entity ``g`` (every row has every feature, so condensing drops
    nothing and an explicitly normalized copy of the table has the same design)."""
    rng = np.random.default_rng(seed)
    X = rng.normal([2.0, -1.0, 5.0], [3.0, 0.2, 10.0], size=(n, 3))
    Z = rng.normal([1.0, 4.0], [2.0, 0.5], size=(n, 2))
    g = rng.integers(0, entities, n)
    alpha = rng.normal(0, 0.5, (entities, 3))
    eta = 0.3 + X @ [0.3, -1.0, 0.05] + alpha[g, 0] + 0.3 * (Z * alpha[g, 1:]).sum(1)
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    table = pa.table({"label": y, "g": g.astype(np.int64), **{f"x{i}": X[:, i] for i in range(3)},
                      **{f"z{i}": Z[:, i] for i in range(2)}})
    return table, {"X": X, "Z": Z, "g": g, "y": y}


def _mixed_spec(normalization: str = "none", l2_fixed: float = 2.0, l2_random: float = 3.0,
                **extra) -> GLMixSpec:
    return GLMixSpec.from_dict({
        "task": "logistic", "response": "label", "tolerance": 1e-13, "max_iterations": 500, **extra,
        "coordinates": [
            {"name": "fe", "type": "fixed", "features": ["x0", "x1", "x2"], "l2": l2_fixed,
             "normalization": normalization},
            {"name": "re", "type": "random", "entity": "g", "features": ["z0", "z1"], "l2": l2_random,
             "normalization": normalization}]})


def _pairs(model, name: str) -> dict[tuple[str, str], tuple[float, float]]:
    t = model.coordinates[name].table()
    return {(e, f): (v, s) for e, f, v, s in zip(t["entity"].to_pylist(), t["feature"].to_pylist(),
                                                 t["value"].to_pylist(), t["variance"].to_pylist(), strict=True)}


# -- normalization ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["standardization", "scale_with_standard_deviation", "scale_with_max_magnitude"])
def test_normalization_without_l2_leaves_the_fixed_effect_optimum_unchanged(kind):
    table, _ = _mixed_table()
    spec = GLMixSpec.from_dict({"task": "logistic", "response": "label", "tolerance": 1e-13, "coordinates": [
        {"name": "fe", "type": "fixed", "features": ["x0", "x1", "x2"], "l2": 0.0, "normalization": kind}]})
    plain = fit(GLMixSpec.from_dict({**spec.to_dict(), "coordinates": [
        {**spec.to_dict()["coordinates"][0], "normalization": "none"}]}), table)
    normalized = fit(spec, table)
    np.testing.assert_allclose(normalized.score(table), plain.score(table), atol=1e-6)
    np.testing.assert_allclose(normalized.coordinates["fe"].coef, plain.coordinates["fe"].coef, rtol=1e-5,
                               atol=1e-7)


def test_standardization_with_l2_penalises_normalized_coefficients_and_reports_original_scale():
    table, d = _mixed_table()
    standardized = fit(_mixed_spec("standardization"), table)
    plain = fit(_mixed_spec("none"), table)
    assert np.abs(standardized.score(table) - plain.score(table)).max() > 0.05  # the penalty moved

    # the same spec without normalization on an explicitly standardized copy of the data
    X, Z = d["X"], d["Z"]
    mx, sx, mz, sz = X.mean(0), X.std(0, ddof=1), Z.mean(0), Z.std(0, ddof=1)
    Xn, Zn = (X - mx) / sx, (Z - mz) / sz
    normalized_table = pa.table({"label": d["y"], "g": d["g"].astype(np.int64),
                                 **{f"x{i}": Xn[:, i] for i in range(3)}, **{f"z{i}": Zn[:, i] for i in range(2)}})
    explicit = fit(_mixed_spec("none"), normalized_table)
    # raw data scored with the reported (original-scale) coefficients = normalized data with normalized ones
    np.testing.assert_allclose(standardized.score(table), explicit.score(normalized_table), atol=1e-5)
    b_norm = explicit.coordinates["fe"].coef
    expected = np.r_[b_norm[0] - np.sum(b_norm[1:] * mx / sx), b_norm[1:] / sx]
    np.testing.assert_allclose(standardized.coordinates["fe"].coef, expected, atol=1e-5)
    mine, theirs = _pairs(standardized, "re"), _pairs(explicit, "re")
    for e in {k[0] for k in mine}:
        a = np.array([theirs[(e, f)][0] for f in ("(intercept)", "z0", "z1")])
        want = np.r_[a[0] - np.sum(a[1:] * mz / sz), a[1:] / sz]
        got = np.array([mine[(e, f)][0] for f in ("(intercept)", "z0", "z1")])
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("kind", ["standardization", "scale_with_standard_deviation"])
@pytest.mark.parametrize("variance", ["simple", "full"])
def test_normalized_large_entity_fallback_equals_the_batched_solve(kind, variance):
    table, _ = _mixed_table(n=300, entities=6)
    batched = fit(_mixed_spec(kind, variance=variance), table)
    raw = _mixed_spec(kind, variance=variance).to_dict()
    raw["coordinates"][1]["max_dense_features"] = 1  # every entity takes the sparse per-entity path
    fallback = fit(GLMixSpec.from_dict(raw), table)
    np.testing.assert_allclose(fallback.score(table), batched.score(table), atol=1e-6)
    np.testing.assert_allclose(fallback.coordinates["re"].variance, batched.coordinates["re"].variance, rtol=1e-6)


def test_normalized_warm_start_converts_original_scale_coefficients():
    table, _ = _mixed_table()
    spec = _mixed_spec("scale_with_max_magnitude")
    first = fit(spec, table)
    again = fit(spec, table, warm_start=first)
    assert again.metadata["fit"]["sweeps"] <= 2
    np.testing.assert_allclose(again.score(table), first.score(table), atol=1e-6)


# -- negative down-sampling ----------------------------------------------------------------------------------------


def test_down_sampling_keeps_positives_and_reweights_negatives_deterministically():
    rng = np.random.default_rng(0)
    y = (rng.random(20_000) < 0.1).astype(float)
    w = np.ones(y.size)
    keys = np.arange(y.size, dtype=np.uint64)
    rows, weight = down_sample(y, w, keys, 0.25, seed=7)
    again, _ = down_sample(y, w, keys, 0.25, seed=7)
    other, _ = down_sample(y, w, keys, 0.25, seed=8)
    np.testing.assert_array_equal(rows, again)
    assert not np.array_equal(rows, other)
    assert set(np.flatnonzero(y == 1)) <= set(rows)
    negatives = np.sum(y[rows] == 0)
    n_neg = np.sum(y == 0)
    assert abs(negatives - 0.25 * n_neg) < 4 * math.sqrt(n_neg * 0.25 * 0.75)
    np.testing.assert_array_equal(weight, np.where(y[rows] == 1, 1.0, 4.0))


def test_down_sampled_intercept_is_unbiased_and_keyed_by_uid_not_row_order():
    rng = np.random.default_rng(5)
    n, rate = 200_000, 0.1
    y = (rng.random(n) < 0.05).astype(float)
    uid = rng.permutation(n).astype(np.int64) * 7919 + 13
    table = pa.table({"label": y, "uid": uid})

    def spec(r):
        return GLMixSpec.from_dict({"task": "logistic", "response": "label", "uid": "uid", "tolerance": 1e-12,
                                    "coordinates": [{"name": "fe", "type": "fixed", "down_sampling_rate": r,
                                                     "seed": 3}]})

    full = fit(spec(1.0), table).coordinates["fe"].coef[0]
    sampled = fit(spec(rate), table).coordinates["fe"].coef[0]
    assert full == pytest.approx(math.log(y.mean() / (1 - y.mean())), abs=1e-6)
    # the estimate differs from the full one only through the binomial count of kept negatives:
    # sd(log(kept / rate)) ≈ sqrt((1 - rate) / (negatives · rate))
    sd = math.sqrt((1 - rate) / (np.sum(y == 0) * rate))
    assert abs(sampled - full) < 4 * sd
    assert sampled != full
    shuffled = table.take(pa.array(rng.permutation(n)))
    assert fit(spec(rate), shuffled).coordinates["fe"].coef[0] == pytest.approx(sampled, abs=1e-9)


def test_down_sampled_fixed_effect_still_scores_every_row_for_the_random_effect():
    table, _ = _mixed_table(n=800)
    spec = _mixed_spec()
    raw = spec.to_dict()
    raw["coordinates"][0]["down_sampling_rate"] = 0.5
    model = fit(GLMixSpec.from_dict(raw), table)
    # at the fit's fixed point, the random effect is the block optimum given the fixed score of ALL rows
    entity_only = GLMixSpec.from_dict({**raw, "offset": "fixed_score", "coordinates": [raw["coordinates"][1]]})
    with_offset = table.append_column("fixed_score", pa.array(model.coordinates["fe"].score(table)))
    refit = fit(entity_only, with_offset)
    np.testing.assert_allclose(refit.coordinates["re"].value, model.coordinates["re"].value, atol=1e-5)


# -- per-entity feature selection ------------------------------------------------------------------------------


def _bag(rows: list[dict[str, float]]) -> pa.Array:
    return pa.array([[{"name": k, "value": v} for k, v in r.items()] for r in rows],
                    pa.list_(pa.struct([("name", pa.string()), ("value", pa.float64())])))


def test_feature_selection_keeps_each_entitys_most_correlated_features_and_the_intercept():
    # entity a: 4 rows, ratio 0.5 → 2 features; f1 = y (|r| = 1), f3 = 1 − y on one row only (|r| = 0.577),
    # f2 (|r| = 0.577, ties f3 → lower index f2 wins), f4 constant (r = 0)
    # entity b: 2 rows → 1 feature; f5 and f6 are identical (tie → f5), f7 uncorrelated (constant)
    y = [1, 0, 1, 0, 1, 0]
    rows = [
        {"f1": 1, "f2": 1, "f4": 1},
        {"f2": 1, "f4": 1},
        {"f1": 1, "f2": 1, "f4": 1},
        {"f3": 1, "f4": 1},
        {"f5": 2.0, "f6": 2.0, "f7": 1},
        {"f5": 1.0, "f6": 1.0, "f7": 1},
    ]
    table = pa.table({"label": pa.array(y, pa.float64()), "e": ["a"] * 4 + ["b"] * 2, "bag": _bag(rows)})
    spec = GLMixSpec.from_dict({"task": "logistic", "response": "label", "coordinates": [
        {"name": "re", "type": "random", "entity": "e", "feature_bags": ["bag"], "l2": 1.0,
         "features_to_samples_ratio": 0.5}]})
    za = np.array([[r.get(f, 0.0) for f in ("f1", "f2", "f3")] for r in rows[:4]])
    r = [abs(np.corrcoef(za[:, j], y[:4])[0, 1]) for j in range(3)]
    assert r[0] == pytest.approx(1.0) and r[1] == pytest.approx(r[2])
    kept = set(_pairs(fit(spec, table), "re"))
    assert kept == {("a", "(intercept)"), ("a", "f1"), ("a", "f2"), ("b", "(intercept)"), ("b", "f5")}


def test_feature_selection_matches_a_brute_force_count_on_random_sparse_data():
    rng = np.random.default_rng(11)
    n, p, entities, ratio = 400, 15, 25, 0.3
    Z = sp.hstack([np.ones((n, 1)), sp.random(n, p - 1, density=0.3, random_state=3)], format="csr")
    codes = rng.integers(0, entities, n)
    y = (rng.random(n) < 0.4).astype(float)
    coo = Z.tocoo()
    keep = select_features(codes, y, coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data, entities, p,
                           ratio, True)
    dense = Z.toarray()
    for e in range(entities):
        rows = codes == e
        present = np.flatnonzero((dense[rows] != 0).any(axis=0))
        limit = math.ceil(ratio * rows.sum())
        corr = []
        for j in present[present > 0]:
            col, yy = dense[rows, j], y[rows]
            c = 0.0 if col.std() == 0 or yy.std() == 0 else abs(np.corrcoef(col, yy)[0, 1])
            corr.append((-round(c, 12), j))
        expected = {0} | {j for _, j in sorted(corr)[:limit]}
        got = set(coo.col[keep & (codes[coo.row] == e)])
        assert got == expected, e


# -- active-data upper bound (hash-keyed reservoir) --------------------------------------------------------------


def _bounded_table():
    rng = np.random.default_rng(2)
    sizes = {"big": 50, "mid": 12, "small": 5}
    ent = np.repeat(list(sizes), list(sizes.values()))
    n = ent.size
    z = rng.normal(size=n)
    y = (rng.random(n) < 0.4).astype(float)
    return pa.table({"label": y, "e": ent, "z": z, "uid": pa.array([f"row-{i}" for i in range(n)])}), sizes


def test_active_data_bound_keeps_max_samples_rows_per_entity_deterministically_by_uid():
    table, sizes = _bounded_table()
    cspec = CoordinateSpec(name="re", type="random", entity="e", features=("z",), max_samples=10, seed=4)
    codes = pa.array(table["e"]).dictionary_encode().indices.to_numpy().astype(np.int64)
    keep = active_rows(codes, 3, cspec, row_keys(table, "uid"))
    counts = np.bincount(codes[keep], minlength=3)
    assert sorted(counts) == [5, 10, 10]
    kept_uids = set(np.asarray(table["uid"].to_pylist())[keep])
    # another row order (keys are the uid values, not positions) keeps the same rows
    order = np.random.default_rng(0).permutation(table.num_rows)
    shuffled = table.take(pa.array(order))
    codes2 = pa.array(shuffled["e"]).dictionary_encode().indices.to_numpy().astype(np.int64)
    keep2 = active_rows(codes2, 3, cspec, row_keys(shuffled, "uid"))
    assert set(np.asarray(shuffled["uid"].to_pylist())[keep2]) == kept_uids
    factor = entity_reweighting(codes, 3, keep)
    big = codes == codes[0]
    np.testing.assert_allclose(factor[big], sizes["big"] / 10)
    np.testing.assert_allclose(factor[~big & (np.bincount(codes)[codes] == 5)], 1.0)


def test_bounded_fit_equals_an_explicit_reweighted_subsample_and_scores_passive_rows():
    table, sizes = _bounded_table()
    base = {"task": "logistic", "response": "label", "uid": "uid", "tolerance": 1e-12}
    bounded = GLMixSpec.from_dict({**base, "coordinates": [
        {"name": "re", "type": "random", "entity": "e", "features": ["z"], "l2": 1.0, "max_samples": 10,
         "seed": 4}]})
    model = fit(bounded, table)
    codes = pa.array(table["e"]).dictionary_encode().indices.to_numpy().astype(np.int64)
    keep = active_rows(codes, 3, bounded.coordinates[0], row_keys(table, "uid"))
    factor = entity_reweighting(codes, 3, keep)
    subsample = table.filter(pa.array(keep)).append_column("w", pa.array(factor[keep]))
    explicit = fit(GLMixSpec.from_dict({**base, "weight": "w", "coordinates": [
        {"name": "re", "type": "random", "entity": "e", "features": ["z"], "l2": 1.0}]}), subsample)
    mine, theirs = _pairs(model, "re"), _pairs(explicit, "re")
    assert mine.keys() == theirs.keys()
    for key in mine:
        assert mine[key][0] == pytest.approx(theirs[key][0], abs=1e-6)
    assert fit(bounded, table).coordinates["re"].value.tolist() == model.coordinates["re"].value.tolist()
    # passive rows (left out of the fit) are scored by the design with their entity's coefficients
    Z = sp.csr_matrix(np.column_stack([np.ones(table.num_rows), table["z"].to_numpy()]))
    design = RandomDesign(Z, codes, 3, keep, intercept=True)
    values = np.arange(1.0, design.n_pairs + 1.0)
    per_entity = values.reshape(3, 2)
    np.testing.assert_allclose(design.score(values), per_entity[codes, 0] + per_entity[codes, 1] * Z[:, 1].toarray()[:, 0])


# -- variances ------------------------------------------------------------------------------------------------


def _dense_hessians(model, table, d, normalization: str):
    """Dense original-space Hessians of the fitted objective: fixed effect (4×4) and one per entity (3×3)."""
    eta = model.score(table)
    p = 1 / (1 + np.exp(-eta))
    c = p * (1 - p)
    X = np.column_stack([np.ones(len(eta)), d["X"]])
    Z = np.column_stack([np.ones(len(eta)), d["Z"]])
    if normalization == "standardization":
        fx, fz = 1 / d["X"].std(0, ddof=1), 1 / d["Z"].std(0, ddof=1)
        mz = d["Z"].mean(0)
    else:
        fx, fz, mz = np.ones(3), np.ones(2), np.zeros(2)
    # penalty ½ l2 Σ (b_j / f_j)² (the intercept free); random: ½ l2 [(b0 + Σ mean·b)² + Σ (b_j / f_j)²]
    Hf = X.T @ (X * c[:, None]) + np.diag(np.r_[0.0, 2.0 / fx**2])
    u = np.r_[1.0, mz]
    He = {}
    for e in np.unique(d["g"]):
        r = d["g"] == e
        He[str(e)] = Z[r].T @ (Z[r] * c[r, None]) + 3.0 * (np.diag(np.r_[0.0, 1 / fz**2]) + np.outer(u, u))
    return Hf, He


@pytest.mark.parametrize("normalization", ["none", "standardization"])
def test_simple_and_full_variances_equal_dense_hessian_diagonals(normalization):
    table, d = _mixed_table(n=300, entities=6)
    simple = fit(_mixed_spec(normalization, variance="simple"), table)
    full = fit(_mixed_spec(normalization, variance="full"), table)
    np.testing.assert_allclose(simple.score(table), full.score(table))
    Hf, He = _dense_hessians(full, table, d, normalization)
    np.testing.assert_allclose(simple.coordinates["fe"].variance, 1 / np.diag(Hf), rtol=1e-6)
    np.testing.assert_allclose(full.coordinates["fe"].variance, np.diag(np.linalg.inv(Hf)), rtol=1e-6)
    s, f = _pairs(simple, "re"), _pairs(full, "re")
    for e, H in He.items():
        names = ("(intercept)", "z0", "z1")
        np.testing.assert_allclose([s[(e, n)][1] for n in names], 1 / np.diag(H), rtol=1e-6)
        np.testing.assert_allclose([f[(e, n)][1] for n in names], np.diag(np.linalg.inv(H)), rtol=1e-6)


def test_variance_none_stores_nulls_and_an_incremental_update_falls_back_to_the_l2_prior(tmp_path):
    table, _ = _mixed_table(n=300, entities=6)
    model = fit(_mixed_spec(variance="none"), table)
    model.save(tmp_path / "m")
    stored = pq.read_table(tmp_path / "m" / "coefficients.parquet")
    assert stored["variance"].null_count == stored.num_rows > 0
    loaded = load_model(tmp_path / "m")
    update = fit(_mixed_spec(), table, warm_start=loaded, lock=["fe"], incremental={"forgetting": 1.0})
    # the same update with explicit prior variances 1 / l2 (precision l2 = 3) around the previous means
    prior = load_model(tmp_path / "m")
    prior.coordinates["re"].variance = np.full(prior.coordinates["re"].value.size, 1 / 3.0)
    explicit = fit(_mixed_spec(), table, warm_start=prior, lock=["fe"], incremental={"forgetting": 1.0})
    np.testing.assert_allclose(update.coordinates["re"].value, explicit.coordinates["re"].value, atol=1e-8)


# -- sparsity threshold ------------------------------------------------------------------------------------------


def test_sparsity_threshold_drops_small_coefficients_but_never_the_fixed_intercept(tmp_path):
    table, _ = _mixed_table(n=300, entities=6)
    dense = fit(_mixed_spec(), table)
    threshold = float(np.median(np.abs(dense.coefficients()["value"].to_numpy())))
    sparse = fit(_mixed_spec(sparsity_threshold=threshold), table)
    sparse.save(tmp_path / "m")
    stored = load_model(tmp_path / "m").coefficients()
    full_table = dense.coefficients()
    big = np.abs(full_table["value"].to_numpy()) >= threshold
    expected = {(c, e, f) for c, e, f, b in zip(full_table["coordinate"].to_pylist(), full_table["entity"].to_pylist(),
                                                full_table["feature"].to_pylist(), big, strict=True)
                if b or (c == "fe" and f == "(intercept)")}
    got = set(zip(stored["coordinate"].to_pylist(), stored["entity"].to_pylist(), stored["feature"].to_pylist(),
                  strict=True))
    assert got == expected and 0 < len(got) < full_table.num_rows
    everything = fit(_mixed_spec(sparsity_threshold=1e9), table)
    assert list(everything.coordinates["fe"].features) == ["(intercept)"]
    assert everything.coordinates["re"].value.size == 0 and everything.coordinates["re"].n_entities == 0
    np.testing.assert_allclose(everything.score(table), everything.coordinates["fe"].coef[0])
