"""The job-side product split by term density (pipeline.rescoring.layout.SplitProduct)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from pipeline.rescoring.layout import SplitProduct


def _job_side(seed: int = 0, terms: int = 120, jobs: int = 400) -> sp.csr_matrix:
    """Terms × jobs with a few terms on most jobs (categorical-like) and many rare ones."""
    rng = np.random.default_rng(seed)
    common = sp.random(10, jobs, density=0.6, random_state=rng, format="csr")
    rare = sp.random(terms - 10, jobs, density=0.005, random_state=rng, format="csr")
    return sp.vstack([rare[:50], common, rare[50:]], format="csr")


def _members(seed: int = 1, rows: int = 37, terms: int = 120) -> sp.csr_matrix:
    return sp.random(rows, terms, density=0.08, random_state=np.random.default_rng(seed), format="csr")


def test_split_product_has_both_kinds_of_terms_and_equals_the_sparse_product():
    matrix, members = _job_side(), _members()
    split = SplitProduct.of(matrix)
    assert len(split.dense_terms) == 10 and len(split.sparse_terms) == 110
    np.testing.assert_allclose(split.block(members), (members @ matrix).toarray(), rtol=0, atol=1e-12)


def test_split_product_pairs_equal_the_block_entries():
    matrix, members = _job_side(), _members()
    split = SplitProduct.of(matrix)
    rng = np.random.default_rng(3)
    rows, cols = rng.integers(0, members.shape[0], 500), rng.integers(0, matrix.shape[1], 500)
    np.testing.assert_allclose(split.pairs(members, rows, cols), split.block(members)[rows, cols], rtol=0, atol=1e-12)
    assert split.pairs(members, rows[:0], cols[:0]).dtype == np.float64


def test_split_product_offset_reads_the_second_half_of_the_terms():
    matrix, members = _job_side(), _members(terms=60)
    split = SplitProduct.of(matrix)
    expected = (members @ matrix[60:]).toarray()
    np.testing.assert_allclose(split.block(members, offset=60), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(split.pairs(members, [0, 5], [3, 7], offset=60), expected[[0, 5], [3, 7]], atol=1e-12)


def test_a_members_scores_do_not_depend_on_the_other_members_of_its_block():
    split, members = SplitProduct.of(_job_side()), _members()
    whole = split.block(members)
    for row in (0, 13, 36):
        assert np.array_equal(split.block(members[row]), whole[row:row + 1])
    assert np.array_equal(split.block(members[5:20]), whole[5:20])


def test_split_product_gives_back_the_matrix_it_was_built_from():
    matrix = _job_side()
    assert (SplitProduct.of(matrix).to_csr() != matrix).nnz == 0
