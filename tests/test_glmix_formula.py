"""lme4-style formulas (glmix_core.formula): parsing, column expansion, errors, YAML/CLI use."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from glmix_core import GLMixSpec, SpecError, fit, load_model, spec_from_formula
from glmix_core.cli import main
from glmix_core.formula import FormulaSpec, looks_like_formula, parse_formula, read_spec
from glmix_core.simulate import make_truth, simulate


@pytest.fixture(scope="module")
def table() -> pa.Table:
    """Simulated GLMix data (bags global/job_features/member_features) plus numeric and string columns."""
    t, _ = simulate(make_truth(30, 10, n_global=3, seed=5), 600, task="logistic", seed=5)
    rng = np.random.default_rng(5)
    for name in ("genre_b", "genre_a", "genre_c", "age"):
        t = t.append_column(name, pa.array(rng.normal(size=t.num_rows)))
    t = t.append_column("w", pa.array(np.ones(t.num_rows)))
    return t.append_column("country", pa.array(["de", "fr", "us"] * (t.num_rows // 3)))


def coords(spec: GLMixSpec) -> dict:
    return {c.name: c for c in spec.coordinates}


def test_formula_and_explicit_spec_fit_the_same_model(table):
    formula = "label ~ global + age + (job_features + genre_* | member_id) + (member_features | job_id)"
    from_formula = spec_from_formula(formula, table, task="logistic", l2={"global": 0.5, "job_id": 2.0},
                                     tolerance=1e-7, max_iterations=30)
    explicit = GLMixSpec.from_dict({
        "task": "logistic", "response": "label", "tolerance": 1e-7, "max_iterations": 30,
        "coordinates": [
            {"name": "global", "type": "fixed", "features": ["age"], "feature_bags": ["global"], "l2": 0.5},
            {"name": "per_member_id", "type": "random", "entity": "member_id",
             "features": ["genre_a", "genre_b", "genre_c"], "feature_bags": ["job_features"]},
            {"name": "per_job_id", "type": "random", "entity": "job_id", "feature_bags": ["member_features"],
             "l2": 2.0},
        ],
    })
    assert from_formula == explicit
    a, b = fit(from_formula, table), fit(explicit, table)
    ca = a.coefficients().to_pandas().sort_values(["coordinate", "entity", "feature"]).reset_index(drop=True)
    cb = b.coefficients().to_pandas().sort_values(["coordinate", "entity", "feature"]).reset_index(drop=True)
    assert ca[["coordinate", "entity", "feature"]].equals(cb[["coordinate", "entity", "feature"]])
    np.testing.assert_allclose(ca["value"], cb["value"], rtol=1e-9, atol=1e-12)
    assert set(ca["coordinate"]) == {"global", "per_member_id", "per_job_id"}
    np.testing.assert_allclose(a.score(table), b.score(table), rtol=1e-9, atol=1e-12)


def test_wildcards_expand_sorted_and_skip_response_entity_and_weight(table):
    spec = spec_from_formula("label ~ genre_* + (0 + genre_[ab] | member_id)", table)
    assert coords(spec)["global"].features == ("genre_a", "genre_b", "genre_c")
    assert coords(spec)["per_member_id"].features == ("genre_a", "genre_b")
    # removal after a wildcard; explicit names keep their written order, duplicates once
    spec = spec_from_formula("label ~ age + genre_* - genre_b + age", table)
    assert coords(spec)["global"].features == ("age", "genre_a", "genre_c")
    # '*' never picks the response, the entity columns or the weight column
    spec = spec_from_formula("label ~ * - country + (1 | member_id) + (1 | job_id)", table, weight="w")
    glob = coords(spec)["global"]
    assert glob.features == ("age", "genre_a", "genre_b", "genre_c")
    assert glob.feature_bags == ("global", "job_features", "member_features")
    assert spec.weight == "w"


def test_intercept_removal_in_fixed_and_random_parts(table):
    for formula in ("label ~ 0 + age", "label ~ -1 + age", "label ~ age - 1", "label ~ age + 0"):
        assert coords(spec_from_formula(formula, table))["global"].intercept is False, formula
    assert coords(spec_from_formula("label ~ 0 + age + 1", table))["global"].intercept is True
    spec = spec_from_formula("label ~ age + (0 + genre_a | member_id) + (1 | job_id) + (genre_b | country)",
                             table)
    c = coords(spec)
    assert c["global"].intercept and c["global"].features == ("age",)
    assert not c["per_member_id"].intercept and c["per_member_id"].features == ("genre_a",)
    assert c["per_job_id"].intercept and c["per_job_id"].features == () and c["per_job_id"].feature_bags == ()
    assert c["per_country"].intercept and c["per_country"].features == ("genre_b",)  # lme4: intercept default
    # no fixed part at all: only random coordinates
    spec = spec_from_formula("label ~ 0 + (1 | member_id)", table)
    assert [x.name for x in spec.coordinates] == ["per_member_id"]
    # the same entity twice: unique coordinate names
    spec = spec_from_formula("label ~ (1 | member_id) + (0 + age | member_id)", table)
    assert [x.name for x in spec.coordinates] == ["global", "per_member_id", "per_member_id_2"]


def test_feature_bags_detected_by_arrow_type(table):
    spec = spec_from_formula("label ~ global + age + (job_features | member_id)", table.schema)
    c = coords(spec)
    assert c["global"].feature_bags == ("global",) and c["global"].features == ("age",)
    assert c["per_member_id"].feature_bags == ("job_features",) and c["per_member_id"].features == ()
    large = pa.schema([("y", pa.float64()), ("u", pa.int64()),
                       ("bag", pa.large_list(pa.struct([("name", pa.string()), ("value", pa.float32())])))])
    assert coords(spec_from_formula("y ~ (bag | u)", large))["per_u"].feature_bags == ("bag",)
    # names only: numeric unless named in bags
    spec = spec_from_formula("y ~ x + b* + (1 | u)", ["y", "x", "bag1", "u"], bags=["bag1"])
    assert coords(spec)["global"].features == ("x",) and coords(spec)["global"].feature_bags == ("bag1",)


@pytest.mark.parametrize("formula, message", [
    ("label ~ agee", "column 'agee' (position 8) is not in the data; close columns: ['age'"),
    ("label ~ genre_x*", "wildcard 'genre_x*' (position 8) matches no column; close columns: ['genre_"),
    ("labels ~ age", "response column 'labels' is not in the data"),
    ("label ~ age + (1 | user)", "entity column 'user' (position 19) is not in the data"),
    ("label ~ country", "column 'country' has type string; a feature must be numeric or a feature bag"),
    ("label ~ zz*", "wildcard 'zz*' (position 8) matches no column; columns: ['age', 'country', 'genre_a'"),
    ("label ~ c*", "column 'country' (matched by 'c*'; exclude it with '- country') has type string"),
    ("label ~ age + label", "the response 'label' cannot also be a feature"),
    ("label ~ (1 | age)", "entity column 'age' must hold integer or string IDs; it has type double"),
    ("label ~ age +", "at position 13: expected a column name, a wildcard, 1, 0 or '(terms | entity)', found the end"),
    ("label ~ age genre_a", "at position 12: expected '+' or '-' between terms"),
    ("label age", "at position 6: expected '~' after the response, found 'age'"),
    ("~ age", "at position 0: expected the response column name"),
    ("label ~ log(age)", "function calls like log(...) are not supported"),
    ("label ~ age:genre_a", "at position 11: operator ':' is not supported"),
    ("label ~ (age)", "a parenthesised term needs '| entity_column'"),
    ("label ~ (1 | member_id + job_id)", "grouping by several columns is not supported"),
    ("label ~ (1 || member_id)", "'||' (uncorrelated random terms) is not supported"),
    ("label ~ ((1 | job_id) | member_id)", "parentheses inside a random term are not supported"),
    ("label ~ 2 + age", "number 2 is not a term"),
    ("label ~ 0", "the formula has no terms"),
    ("label ~ age + (0 | member_id)", "random term has no terms"),
    ("label ~ `age", "unclosed back-quote"),
    ("label ~ genre_[ab", "unclosed '[' in a wildcard"),
    ("label ~ age + (1 | member_*)", "the entity column 'member_*' cannot be a wildcard"),
    ("label ~ age $", "unexpected character '$'"),
])
def test_errors_name_the_problem(table, formula, message):
    with pytest.raises(SpecError) as err:
        spec_from_formula(formula, table)
    assert message in str(err.value)
    assert repr(formula) in str(err.value)


def test_options_l2_coordinate_options_and_spec_fields(table):
    f = "label ~ global + (1 | member_id) + (1 | job_id)"
    spec = spec_from_formula(f, table, task="linear", l2=3)
    assert spec.task == "linear" and {c.l2 for c in spec.coordinates} == {3.0}
    spec = spec_from_formula(f, table, l2={"member_id": 10, "per_job_id": 0.5},
                             coordinate_options={"global": {"l1": 0.01}, "member_id": {"max_samples": 5}},
                             max_iterations=7, tolerance=1e-4, variance="simple")
    c = coords(spec)
    assert (c["global"].l2, c["per_member_id"].l2, c["per_job_id"].l2) == (1.0, 10.0, 0.5)
    assert c["global"].l1 == 0.01 and c["per_member_id"].max_samples == 5
    assert (spec.max_iterations, spec.tolerance, spec.variance) == (7, 1e-4, "simple")
    with pytest.raises(SpecError, match="l2: no coordinate or entity column named 'user'"):
        spec_from_formula(f, table, l2={"user": 1})
    with pytest.raises(SpecError, match=r"unknown formula spec option\(s\) \['l1'\].*coordinate_options"):
        spec_from_formula(f, table, l1=0.1)
    with pytest.raises(SpecError, match=r"coordinate_options\['global'\]: field\(s\) \['features'\]"):
        spec_from_formula(f, table, coordinate_options={"global": {"features": ["x"]}})
    with pytest.raises(SpecError, match="task must be one of"):
        spec_from_formula(f, table, task="probit")
    with pytest.raises(SpecError, match="l2 must be a number"):
        spec_from_formula(f, table, l2="big")


def test_parse_and_detection_helpers():
    parsed = parse_formula("y ~ -1 + `odd col` + x* - x3 + (1 + a | g)")
    assert parsed.response == "y" and not parsed.fixed.intercept
    assert [(t.text, t.quoted, t.remove) for t in parsed.fixed.terms] == \
        [("odd col", True, False), ("x*", False, False), ("x3", False, True)]
    assert parsed.random[0].entity == "g" and [t.text for t in parsed.random[0].terms.terms] == ["a"]
    assert looks_like_formula("y ~ x") and looks_like_formula("`my y` ~ x")
    assert not looks_like_formula("spec.yaml") and not looks_like_formula("formula: y ~ x\ntask: linear")
    spec = spec_from_formula("y ~ `odd col` + x* - x3", pa.schema([(n, pa.float64()) for n in
                                                                   ("y", "odd col", "x1", "x3", "x2")]))
    assert spec.coordinates[0].features == ("odd col", "x1", "x2")


def test_yaml_formula_spec_through_the_cli(table, tmp_path, capsys):
    data = tmp_path / "train.parquet"
    pq.write_table(table, data)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({
        "formula": "label ~ global + genre_* + (job_features | member_id) + (member_features | job_id)",
        "task": "logistic", "l2": {"global": 0.5, "member_id": 2}, "max_iterations": 20,
        "coordinate_options": {"per_job_id": {"min_samples": 2}},
    }))
    source = read_spec(spec_file)
    assert isinstance(source, FormulaSpec)
    with pytest.raises(SpecError, match="holds a 'formula'"):
        GLMixSpec.from_yaml(spec_file)
    assert main(["fit", "--data", str(data), "--spec", str(spec_file), "--out", str(tmp_path / "m1")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sweeps"] >= 1
    model = load_model(tmp_path / "m1")
    expected = source.resolve(table)
    assert model.spec == expected
    assert coords(model.spec)["global"].features == ("genre_a", "genre_b", "genre_c")
    assert coords(model.spec)["per_job_id"].min_samples == 2 and coords(model.spec)["per_member_id"].l2 == 2
    assert model.metadata["formula"].startswith("label ~ global")
    # the same through --formula / --task / --l2
    assert main(["fit", "--data", str(data), "--out", str(tmp_path / "m2"), "--task", "logistic",
                 "--formula", "label ~ global + genre_* + (job_features | member_id) + (member_features | job_id)",
                 "--l2", "global=0.5", "member_id=2"]) == 0
    m2 = load_model(tmp_path / "m2")
    assert [c.name for c in m2.spec.coordinates] == ["global", "per_member_id", "per_job_id"]
    assert coords(m2.spec)["per_member_id"].l2 == 2 and coords(m2.spec)["global"].l2 == 0.5
    capsys.readouterr()
    # errors: exit 2 with a one-line message; --spec and --formula are exclusive and one is required
    assert main(["fit", "--data", str(data), "--out", str(tmp_path / "m3"), "--formula", "label ~ nope"]) == 2
    assert "column 'nope' (position 8) is not in the data" in capsys.readouterr().err
    for argv in (["--spec", str(spec_file), "--formula", "label ~ 1"], []):
        with pytest.raises(SystemExit) as exc:
            main(["fit", "--data", str(data), "--out", str(tmp_path / "m4"), *argv])
        assert exc.value.code == 2
    assert main(["fit", "--data", str(data), "--out", str(tmp_path / "m5"), "--spec", str(spec_file),
                 "--task", "linear"]) == 2
    assert "--task and --l2 go with --formula" in capsys.readouterr().err
