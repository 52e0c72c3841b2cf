"""The shared pair-feature code (no Spark): the block-product and row-gather paths agree, the scoring form of
the global features equals the bag the training job writes, and categorical cosines fall back to matrices."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipeline.features.pairs import (
    PROFILE_TYPE,
    GlobalSpace,
    PairRows,
    ProfileBlock,
    feature_bags,
    pair_features,
    rowwise_dot,
)
from pipeline.features.vocab import FIELDS, VOCAB_SCHEMA, Vocab

TERMS = {
    "title": ["data", "engineer", "nurse", "chef"],
    "skills": ["python", "care", "sql"],
    "industry": ["software", "health"],
    "function": ["engineering", "medical"],
    "seniority": ["senior", "entry"],
    "region": ["us-west", "us-east"],
}


def vocab() -> Vocab:
    rows = [(f, t) for f in FIELDS for t in TERMS[f]]
    return Vocab(pa.table({"field": [f for f, _ in rows], "term": [t for _, t in rows],
                           "index": list(range(len(rows))), "df": [1] * len(rows),
                           "first_ds": ["2026-01-01"] * len(rows)}, schema=VOCAB_SCHEMA))


def random_profiles(n: int, rng: np.random.Generator, prefix: str = "") -> dict:
    columns = {}
    for f in FIELDS:
        lists = []
        for _ in range(n):
            k = rng.integers(0, 3 if f in ("title", "skills") else 2)
            terms = sorted(rng.choice(TERMS[f], size=k, replace=False).tolist())
            w = rng.random(len(terms)) + 0.1
            w = w / np.linalg.norm(w) if len(terms) else w
            lists.append(list(zip(terms, w.tolist(), strict=True)))
        columns[prefix + f] = pa.array(lists, PROFILE_TYPE)
    return columns


def test_block_product_and_row_gather_give_the_same_dot_products():
    rng = np.random.default_rng(3)
    v = vocab()
    members = ProfileBlock.from_table(pa.table(random_profiles(5, rng)), v).combined()
    jobs = ProfileBlock.from_table(pa.table(random_profiles(40, rng)), v).combined()
    left, right = np.repeat(np.arange(5), 40), np.tile(np.arange(40), 5)
    repeated = PairRows.of(left, right)
    aligned = PairRows.of(np.arange(200) % 5, np.arange(200) % 40)
    assert repeated.repeated
    gathered = np.asarray(members[left].multiply(jobs[right]).sum(axis=1)).ravel()
    np.testing.assert_allclose(rowwise_dot(members, jobs, repeated), gathered, atol=1e-14)
    np.testing.assert_allclose(
        rowwise_dot(members, jobs, aligned),
        np.asarray(members[aligned.left].multiply(jobs[aligned.right]).sum(axis=1)).ravel(), atol=1e-14)


def test_scoring_form_of_global_features_equals_the_training_bag():
    rng = np.random.default_rng(5)
    space = GlobalSpace.from_vocab(vocab())
    n = 60
    batch = pa.table({"position": pa.array(rng.integers(1, 10, n), pa.int32()),
                      **random_profiles(n, rng, "m_"), **random_profiles(n, rng, "j_")})
    bags = feature_bags(batch, space)
    coefficients = rng.normal(size=len(space.names))
    by_name = dict(zip(space.names.to_pylist(), coefficients, strict=True))
    from_bags = [sum(by_name[e["name"]] * e["value"] for e in row) for row in bags["global"].to_pylist()]
    members = ProfileBlock.from_table(batch, space.vocab, "m_")
    jobs = ProfileBlock.from_table(batch, space.vocab, "j_")
    rows = np.arange(n)
    x = pair_features(members, rows, jobs, rows, batch["position"].to_numpy(), space)
    np.testing.assert_allclose(x.score(coefficients), from_bags, atol=1e-12)
    for row in bags["global"].to_pylist():
        cos = {e["name"]: e["value"] for e in row if e["name"].startswith("cos:")}
        assert len(cos) == len(FIELDS) and all(0.0 <= c <= 1.0 for c in cos.values())


def test_categorical_field_with_several_terms_uses_the_matrices():
    space = GlobalSpace.from_vocab(vocab())
    two_regions = [("us-east", 0.6), ("us-west", 0.8)]
    empty = {f: pa.array([[]], PROFILE_TYPE) for f in FIELDS}
    members = ProfileBlock.from_table(pa.table({**empty, "region": pa.array([two_regions], PROFILE_TYPE)}), space.vocab)
    jobs = ProfileBlock.from_table(pa.table({**empty, "region": pa.array([[("us-west", 1.0)]], PROFILE_TYPE)}),
                                   space.vocab)
    assert members.code_weights["region"] is None
    x = pair_features(members, np.array([0]), jobs, np.array([0]), np.array([1]), space)
    row, feature, value = x.coordinates()
    names = space.names.take(pa.array(feature)).to_pylist()
    assert dict(zip(names, value, strict=True))["cos:region"] == pytest.approx(0.8)
