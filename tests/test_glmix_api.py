"""The notebook API (glmix_core.GLMix): pandas/pyarrow/path inputs, coefficients, save/load, warm start."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from glmix_core import GLMix, GLMixModel, GLMixSpec, ModelError, SpecError, fit

FORMULA = "y ~ x1 + x2 + (1 + genre_* | user) + (1 + age | item)"


def make_frame(n: int = 800, seed: int = 3) -> pd.DataFrame:
    """Ratings-like data from a known mixed model: 40 users (strings), 15 items (ints)."""
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 40, n)
    item = rng.integers(0, 15, n)
    df = pd.DataFrame({
        "x1": rng.normal(size=n), "x2": rng.normal(size=n), "genre_drama": rng.integers(0, 2, n).astype(float),
        "genre_comedy": rng.integers(0, 2, n).astype(float), "age": rng.normal(size=n),
        "user": [f"u{u}" for u in user], "item": item.astype(np.int64),
    })
    eta = (-0.5 + 0.8 * df.x1 - 0.4 * df.x2 + rng.normal(0, 0.7, 40)[user]
           + rng.normal(0, 0.5, 40)[user] * df.genre_drama + rng.normal(0, 0.5, 15)[item] * df.age)
    df.insert(0, "y", (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float))
    return df


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    return make_frame(800, 3), make_frame(300, 4)


@pytest.fixture(scope="module")
def fitted(frames) -> GLMix:
    return GLMix(FORMULA, task="logistic", l2={"user": 2.0}, max_iterations=30).fit(frames[0])


def test_pandas_and_arrow_inputs_give_the_same_model(frames, fitted):
    train, test = frames
    arrow = GLMix(FORMULA, task="logistic", l2={"user": 2.0}, max_iterations=30).fit(pa.Table.from_pandas(train))
    assert arrow.spec_ == fitted.spec_
    assert [c.name for c in fitted.spec_.coordinates] == ["global", "per_user", "per_item"]
    assert fitted.spec_.coordinate("per_user").features == ("genre_comedy", "genre_drama")
    assert fitted.spec_.coordinate("per_user").l2 == 2.0
    s_pd, s_pa = fitted.score(test), arrow.score(pa.Table.from_pandas(test))
    assert isinstance(s_pd, np.ndarray) and s_pd.shape == (len(test),)
    np.testing.assert_allclose(s_pd, s_pa, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(s_pd, fitted.model_.score(pa.Table.from_pandas(test, preserve_index=False)))
    p = fitted.predict(test)
    assert np.all((p > 0) & (p < 1))
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-s_pd)))
    metrics = fitted.evaluate(test)
    assert metrics["rows"] == len(test) and 0.5 < metrics["auc"] <= 1 and "per_user_auc" in metrics
    assert fitted.evaluate(test, group_by=[])["rows"] == len(test)
    assert fitted.model_.metadata["formula"] == FORMULA
    # the pandas index is not a feature: a filtered frame (non-default index) scores the same rows
    sub = test[test.x1 > 0]
    np.testing.assert_allclose(fitted.score(sub), s_pd[(test.x1 > 0).to_numpy()], rtol=1e-10, atol=1e-12)


def test_coefficients_dataframe(fitted):
    coef = fitted.coefficients()
    assert isinstance(coef, pd.DataFrame)
    assert list(coef.columns) == ["coordinate", "entity", "feature", "value", "variance"]
    assert set(coef.coordinate) == {"global", "per_user", "per_item"}
    glob = fitted.coefficients("global")
    assert list(glob.feature) == ["(intercept)", "x1", "x2"] and glob.entity.isna().all()
    assert glob.set_index("feature").loc["x1", "value"] > 0.3  # true value 0.8, shrunk by l2
    users = fitted.coefficients("per_user")
    assert set(users.feature) == {"(intercept)", "genre_comedy", "genre_drama"}
    assert users.entity.str.startswith("u").all() and (users.variance > 0).all()
    with pytest.raises(ModelError, match="no coordinate named 'per_nobody'"):
        fitted.coefficients("per_nobody")


def test_save_load_round_trip(frames, fitted, tmp_path):
    path = fitted.save(tmp_path / "m")
    assert (path / "model.json").is_file() and (path / "coefficients.parquet").is_file()
    loaded = GLMix.load(tmp_path / "m")
    assert loaded.spec_ == fitted.spec_
    pd.testing.assert_frame_equal(loaded.coefficients(), fitted.coefficients())
    np.testing.assert_array_equal(loaded.score(frames[1]), fitted.score(frames[1]))
    assert "fitted" in repr(loaded) and FORMULA in repr(loaded)


def test_score_before_fit_says_so(frames):
    model = GLMix(FORMULA)
    for call in (lambda: model.score(frames[1]), lambda: model.predict(frames[1]),
                 lambda: model.evaluate(frames[1]), lambda: model.coefficients(), lambda: model.save("x")):
        with pytest.raises(ModelError, match="not fitted yet .* call .fit\\(data\\) first"):
            call()
    assert repr(model) == f"GLMix({FORMULA!r}, task='logistic', not fitted)"
    with pytest.raises(SpecError, match="at position 8: expected a column name"):
        GLMix("y ~ x1 +")  # syntax errors show at construction
    with pytest.raises(SpecError, match="column 'nope'"):
        GLMix("y ~ nope").fit(frames[0])  # column errors at fit


def test_spec_sources_dict_yaml_path_and_data_path(frames, fitted, tmp_path):
    spec_dict = fitted.spec_.to_dict()
    by_dict = GLMix(spec_dict)
    assert by_dict.spec_ == fitted.spec_ and "not fitted" in repr(by_dict)
    assert GLMix(fitted.spec_, l2=5).spec_.coordinate("per_item").l2 == 5.0
    assert GLMix(spec_dict, l2={"item": 3}, max_iterations=4).spec_.coordinate("per_item").l2 == 3.0
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec_dict))
    (tmp_path / "formula.yaml").write_text(yaml.safe_dump({"formula": FORMULA, "l2": {"user": 2.0},
                                                           "max_iterations": 30}))
    assert GLMix(tmp_path / "spec.yaml").spec_ == fitted.spec_
    data = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pandas(frames[0], preserve_index=False), data)
    from_yaml = GLMix(str(tmp_path / "formula.yaml")).fit(str(data))
    assert from_yaml.spec_ == fitted.spec_
    assert from_yaml.model_.metadata["training_data"] == str(data.resolve())
    np.testing.assert_allclose(from_yaml.score(frames[1]), fitted.score(frames[1]), rtol=1e-10, atol=1e-12)
    with pytest.raises(SpecError, match="a spec must be a GLMixSpec"):
        GLMix(42)


def test_warm_start_lock_and_incremental_mirror_fit(frames, fitted, tmp_path):
    train, test = frames
    fitted.save(tmp_path / "prev")
    expected = fit(fitted.spec_, pa.Table.from_pandas(test, preserve_index=False), warm_start=fitted.model_,
                   lock=["global"])
    for warm in (fitted, fitted.model_, tmp_path / "prev", str(tmp_path / "prev")):
        daily = GLMix(fitted.spec_).fit(test, warm_start=warm, lock=["global"])
        assert isinstance(daily.model_, GLMixModel)
        pd.testing.assert_frame_equal(daily.coefficients("global"), fitted.coefficients("global"))
        np.testing.assert_allclose(daily.score(train), expected.score(pa.Table.from_pandas(train)),
                                   rtol=1e-8, atol=1e-10)
    inc = GLMix(fitted.spec_).fit(test[test.user != "u0"], warm_start=fitted, lock=["global"], incremental=0.9)
    assert inc.model_.metadata["fit"]["incremental"] == {"forgetting": 0.9}
    # a user absent from the new rows keeps its previous coefficients
    old = fitted.coefficients("per_user").set_index(["entity", "feature"]).value
    new = inc.coefficients("per_user").set_index(["entity", "feature"]).value
    np.testing.assert_allclose(new.loc["u0"].sort_index(), old.loc["u0"].sort_index())
    assert not np.allclose(new.loc["u1"].sort_index(), old.loc["u1"].sort_index())
    with pytest.raises(ModelError, match="not fitted yet and cannot be used as warm_start"):
        GLMix(FORMULA).fit(test, warm_start=GLMix(FORMULA))
    assert isinstance(GLMix.from_model(fitted.model_).spec_, GLMixSpec)
