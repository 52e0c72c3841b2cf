"""FeatureIndexMap: name ↔ index round trips, absent names, extend, duplicates, persistence, hash collisions,
and that feature_matrix / model scoring give the same results as the dict-based reference."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest

import glmix_core.index_map as index_map
from glmix_core.data import feature_matrix
from glmix_core.index_map import FeatureIndexMap, IndexMapError, hash_strings
from glmix_core.model import FixedEffectModel, RandomEffectModel
from glmix_core.spec import CoordinateSpec

NAMES = ["(intercept)", "skill=python_3", "skill=sql", "", "région=île-de-france", "x:industry=tech|region=eu",
         "a" * 70, "a" * 71, "title=engineer", "ctx:position"]


def reference_hash(text: str) -> int:
    """Pure-Python reimplementation of the documented hash (pins it across versions and platforms)."""
    mask = (1 << 64) - 1
    data = text.encode()
    h = 0x27D4EB2F165667C5 ^ (len(data) * 0x9E3779B185EBCA87 & mask)
    for k in range(0, len(data), 8):
        word = int.from_bytes(data[k:k + 8].ljust(8, b"\0"), "little")
        acc = (h + word * 0xC2B2AE3D27D4EB4F) & mask
        acc = ((acc << 31) | (acc >> 33)) & mask
        h = (acc * 0x9E3779B185EBCA87) & mask
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & mask
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & mask
    return h ^ (h >> 31)


def test_hash_is_the_documented_stable_function_for_every_length_and_slices():
    names = NAMES + ["b" * n for n in range(20)]
    assert hash_strings(names).tolist() == [reference_hash(s) for s in names]
    arr = pa.array(names)
    assert hash_strings(arr.slice(3, 10)).tolist() == [reference_hash(s) for s in names[3:13]]
    assert hash_strings(arr.cast(pa.large_string())).tolist() == hash_strings(arr).tolist()
    assert hash_strings(pa.chunked_array([arr[:4], arr[4:]])).tolist() == hash_strings(arr).tolist()


def test_round_trip_name_to_index_and_back():
    fmap = FeatureIndexMap.from_names(NAMES)
    assert len(fmap) == len(NAMES)
    assert fmap.names.to_pylist() == NAMES
    idx = fmap.index_of(pa.array(NAMES[::-1]))
    assert idx.dtype == np.int64
    assert idx.tolist() == list(range(len(NAMES)))[::-1]
    assert fmap.name_of(idx).to_pylist() == NAMES[::-1]
    assert fmap[1] == NAMES[1] and fmap[np.int64(-1)] == NAMES[-1]
    assert list(fmap) == NAMES and fmap == NAMES and fmap.tolist() == NAMES
    assert pa.array(fmap, pa.string()).to_pylist() == NAMES
    with pytest.raises(IndexError):
        fmap.name_of(np.array([len(NAMES)]))


def test_absent_and_null_names_give_minus_one():
    fmap = FeatureIndexMap.from_names(pa.array(NAMES))
    got = fmap.index_of(pa.array(["skill=sql", "nope", None, "skill=python_", "a" * 72, ""]))
    assert got.tolist() == [2, -1, -1, -1, -1, 3]
    assert fmap.index_of([]).tolist() == []
    assert FeatureIndexMap.from_names([]).index_of(["x"]).tolist() == [-1]
    assert "skill=sql" in fmap and "nope" not in fmap


def test_extend_keeps_old_indices_and_appends_new_ones_in_first_seen_order():
    fmap = FeatureIndexMap.from_names(NAMES[:5])
    bigger = fmap.extend(["new_b", NAMES[2], "new_a", "new_b", NAMES[0]])
    assert bigger.names.to_pylist() == NAMES[:5] + ["new_b", "new_a"]
    assert bigger.index_of(NAMES[:5]).tolist() == list(range(5))
    assert bigger.index_of(["new_a", "new_b", "missing"]).tolist() == [6, 5, -1]
    assert fmap.names.to_pylist() == NAMES[:5]  # immutable: the old map is unchanged
    assert fmap.extend(NAMES[:3]) is fmap
    assert FeatureIndexMap.from_names([]).extend(["a", "b"]).index_of(["b", "a"]).tolist() == [1, 0]


def test_duplicates_and_nulls_are_rejected():
    with pytest.raises(IndexMapError, match="skill=sql"):
        FeatureIndexMap.from_names(["a", "skill=sql", "b", "skill=sql"])
    with pytest.raises(IndexMapError, match="null"):
        FeatureIndexMap.from_names(pa.array(["a", None]))
    with pytest.raises(IndexMapError):
        FeatureIndexMap.from_names(["a"]).extend(pa.array([None], pa.string()))


@pytest.mark.parametrize("memory_map", [True, False])
def test_save_and_load_give_an_equal_map(tmp_path, memory_map):
    fmap = FeatureIndexMap.from_names(NAMES).extend(["later"])
    path = fmap.save(tmp_path / "features.arrow")
    loaded = FeatureIndexMap.load(path, memory_map=memory_map)
    assert loaded == fmap
    assert loaded.index_of(NAMES + ["later", "absent"]).tolist() == list(range(len(NAMES) + 1)) + [-1]
    assert loaded.extend(["newest"]).index_of(["newest"]).tolist() == [len(NAMES) + 1]
    assert pickle.loads(pickle.dumps(loaded)) == fmap
    (tmp_path / "junk.arrow").write_bytes(b"not arrow")
    with pytest.raises(IndexMapError):
        FeatureIndexMap.load(tmp_path / "junk.arrow")


def test_hash_collisions_never_give_a_wrong_index(monkeypatch):
    def constant_hash(names):
        return np.full(len(index_map._as_string_array(names)), 7, dtype=np.uint64)

    monkeypatch.setattr(index_map, "hash_strings", constant_hash)
    fmap = FeatureIndexMap.from_names(NAMES)
    queries = NAMES[::-1] + ["absent", "skill=pytho"]
    assert fmap.index_of(queries).tolist() == list(range(len(NAMES)))[::-1] + [-1, -1]
    bigger = fmap.extend(["new"])
    assert bigger.index_of(["new", NAMES[4]]).tolist() == [len(NAMES), 4]
    with pytest.raises(IndexMapError, match="skill=sql"):
        FeatureIndexMap.from_names(NAMES + ["skill=sql"])

    # partial collisions: two hash values, several names each
    monkeypatch.setattr(index_map, "hash_strings", lambda names: np.array(
        [len(s) % 2 for s in index_map._as_string_array(names).to_pylist()], dtype=np.uint64))
    fmap = FeatureIndexMap.from_names(NAMES)
    assert fmap.index_of(NAMES + ["zz", "zzz"]).tolist() == list(range(len(NAMES))) + [-1, -1]


def dict_feature_matrix(table, features, bags, intercept, vocabulary=None):
    """The previous dict/list-based implementation, as the reference for the Arrow one."""
    fixed = (["(intercept)"] if intercept else []) + list(features)
    rows, cols, vals = [], [], []
    bag_rows = [(r, e["name"], e["value"]) for bag in bags for r, entries in enumerate(table.column(bag).to_pylist())
                for e in entries]
    vocab = list(vocabulary) if vocabulary is not None else \
        fixed + sorted({name for _, name, _ in bag_rows} - set(fixed))
    position = {name: i for i, name in enumerate(vocab)}
    for r in range(table.num_rows):
        for name in fixed:
            if name in position:
                rows.append(r)
                cols.append(position[name])
                vals.append(1.0 if name == "(intercept)" else float(table.column(name)[r].as_py()))
    for r, name, v in bag_rows:
        if name in position:
            rows.append(r)
            cols.append(position[name])
            vals.append(v)
    dense = np.zeros((table.num_rows, len(vocab)))
    np.add.at(dense, (np.array(rows, int), np.array(cols, int)), np.array(vals))
    return dense, vocab


@pytest.fixture
def bag_table():
    rng = np.random.default_rng(5)
    names = [f"skill=s{i}" for i in range(30)] + ["x0", "émoji=🙂", "z", "(intercept)"]
    bag = [[{"name": names[k], "value": float(rng.normal())} for k in rng.integers(0, len(names), rng.integers(0, 6))]
           for _ in range(40)]
    return pa.table({"x0": rng.normal(size=40), "member_id": rng.integers(0, 5, 40), "label": rng.random(40),
                     "bag": pa.array(bag, pa.list_(pa.struct([("name", pa.string()), ("value", pa.float64())])))})


@pytest.mark.parametrize("intercept", [True, False])
def test_feature_matrix_matches_the_dict_reference(bag_table, intercept):
    X, vocab = feature_matrix(bag_table, ["x0"], ["bag"], intercept)
    dense, ref_vocab = dict_feature_matrix(bag_table, ["x0"], ["bag"], intercept)
    assert isinstance(vocab, FeatureIndexMap) and vocab == ref_vocab
    np.testing.assert_allclose(X.toarray(), dense)
    scoring_vocab = ["z", "skill=s3", "unknown", "x0", "skill=s1"]
    for given in (scoring_vocab, pa.array(scoring_vocab), FeatureIndexMap.from_names(scoring_vocab)):
        Xs, vs = feature_matrix(bag_table, ["x0"], ["bag"], intercept, vocabulary=given)
        dense, _ = dict_feature_matrix(bag_table, ["x0"], ["bag"], intercept, vocabulary=scoring_vocab)
        assert vs == scoring_vocab
        np.testing.assert_allclose(Xs.toarray(), dense)


def test_model_scoring_and_lookup_by_name(bag_table):
    cspec = CoordinateSpec(name="global", type="fixed", features=("x0",), feature_bags=("bag",))
    X, vocab = feature_matrix(bag_table, ["x0"], ["bag"], True)
    coef = np.linspace(-1, 1, len(vocab))
    names = vocab.tolist()
    for given in (names, vocab):
        model = FixedEffectModel(cspec, given, coef)
        np.testing.assert_allclose(model.score(bag_table), X @ coef)
        values, found = model.lookup(["skill=s3", "nope", "(intercept)"])
        assert found.tolist() == [True, False, True]
        np.testing.assert_allclose(values, [coef[names.index("skill=s3")], 0.0, coef[0]])
        assert model.table().column("feature").to_pylist() == names
    rspec = CoordinateSpec(name="per_member", type="random", entity="member_id", feature_bags=("bag",))
    rmodel = RandomEffectModel.from_pairs(rspec, pa.array(["1", "1", "2"]), pa.array(["skill=s3", "z", "z"]),
                                          np.array([0.5, -1.0, 2.0]), np.full(3, np.nan))
    value, _, found = rmodel.lookup(pa.array(["2", "1"]), ["z", "skill=s3", "nope"], np.array([0, 1, 1, 0]),
                                    np.array([0, 1, 0, 2]))
    assert found.tolist() == [True, True, True, False]
    np.testing.assert_allclose(value, [2.0, 0.5, -1.0, 0.0])
    assert sorted(zip(*(rmodel.table().column(c).to_pylist() for c in ("entity", "feature", "value")),
                      strict=True)) == [("1", "skill=s3", 0.5), ("1", "z", -1.0), ("2", "z", 2.0)]
