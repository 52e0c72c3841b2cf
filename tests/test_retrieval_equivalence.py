"""The batch engine, Whoosh's own searcher with the cosine weighting, and a brute-force dense cosine all
return the same top-k jobs in the same order (up to exact ties) for random members."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from whoosh.query import Or

from retrieval import batch, index, synthetic, weighting
from retrieval.profiles import Vocabulary, profile_column
from retrieval.schema import PROFILE_FIELDS

FIELD_WEIGHTS = {"title": 1.3, "skills": 2.0, "industry": 0.4, "function": 0.25, "seniority": 0.15, "region": 0.6}
K = 250


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    jobs = synthetic.job_profiles(1200, seed=11)
    # Copies of 150 jobs under new IDs: identical profiles score exactly the same, so rankings contain ties.
    copies = jobs.slice(0, 150).set_column(0, "job_id", pa.array(np.arange(5001, 5151, dtype=np.int64)))
    jobs = pa.concat_tables([jobs, copies])
    members = synthetic.member_profiles(40, seed=12)
    index_dir = tmp_path_factory.mktemp("job_index")
    index.build_index(index_dir, jobs)
    ix = index.open_index(index_dir)
    return jobs, members, ix, batch.JobMatrix.from_index(ix)


def dense_cosine_scores(members: pa.Table, jobs: pa.Table, field_weights: dict[str, float]) -> np.ndarray:
    """Σ_field w_field · cos(member field vector, job field vector), with explicit dense vectors per field."""
    total = np.zeros((members.num_rows, jobs.num_rows))
    for field in PROFILE_FIELDS:
        vocab = {t: i for i, t in enumerate(Vocabulary.from_tables(members, jobs).terms[field].to_pylist())}

        def dense(table: pa.Table, vocab=vocab, field=field) -> np.ndarray:
            out = np.zeros((table.num_rows, len(vocab)))
            for row, profile in enumerate(profile_column(table, field).to_pylist()):
                for entry in profile or []:
                    out[row, vocab[entry["term"]]] += entry["weight"]
            return out

        total += field_weights[field] * (dense(members) @ dense(jobs).T)
    return total


def ranking_from_scores(scores: np.ndarray, job_ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((job_ids, -scores))
    order = order[scores[order] > 0][:k]
    return job_ids[order], scores[order]


def assert_same_ranking(ids_a, scores_a, ids_b, scores_b, reference: dict[int, float], tol: float = 1e-9):
    """Same length, same scores position by position, the same set of jobs in every group of tied scores
    except the last (cut by k), and every listed job carries its true score."""
    assert len(ids_a) == len(ids_b)
    np.testing.assert_allclose(scores_a, scores_b, rtol=0, atol=tol)
    for ids, scores in ((ids_a, scores_a), (ids_b, scores_b)):
        np.testing.assert_allclose([reference[j] for j in ids], scores, rtol=0, atol=tol)
    breaks = np.flatnonzero(np.diff(scores_a) < -tol) + 1
    groups = np.split(np.arange(len(ids_a)), breaks)
    for group in groups[:-1]:
        assert set(np.asarray(ids_a)[group]) == set(np.asarray(ids_b)[group])


def test_index_postings_hold_the_exact_profile_weights(corpus):
    jobs, _, _, from_index = corpus
    from_profiles = batch.JobMatrix.from_profiles(jobs, from_index.vocab)
    assert np.array_equal(from_index.job_ids, from_profiles.job_ids)
    assert (from_index.matrix != from_profiles.matrix).nnz == 0
    assert np.array_equal(from_index.expires_at_us, from_profiles.expires_at_us)
    assert list(from_index.regions) == list(from_profiles.regions)


def test_batch_engine_whoosh_searcher_and_dense_cosine_agree_on_top_k(corpus):
    jobs, members, ix, job_matrix = corpus
    member_ids, queries = batch.member_queries(members, job_matrix, FIELD_WEIGHTS)
    got = pa.Table.from_batches(batch.retrieve(job_matrix, queries, member_ids, K, block_size=7)).to_pydict()
    dense = dense_cosine_scores(members, jobs, FIELD_WEIGHTS)
    all_job_ids = jobs["job_id"].to_numpy()
    profiles = members.to_pylist()
    compared_ties = 0
    with ix.searcher(weighting=weighting.CosineWeighting(FIELD_WEIGHTS)) as searcher:
        for row in np.random.default_rng(3).choice(members.num_rows, size=15, replace=False):
            member_id = profiles[row]["member_id"]
            mask = np.asarray(got["member_id"]) == member_id
            batch_ids, batch_scores = np.asarray(got["job_id"])[mask], np.asarray(got["score"])[mask]
            assert list(np.asarray(got["rank"])[mask]) == list(range(1, len(batch_ids) + 1))
            dense_ids, dense_scores = ranking_from_scores(dense[row], all_job_ids, K)
            reference = dict(zip(all_job_ids.tolist(), dense[row].tolist(), strict=True))
            assert len(batch_ids) == K
            # Whoosh picks its union matcher by index size (a preloaded array below 5000 documents, a
            # binary tree of unions that asks scorers for bounds above): check both.
            for matcher_type in (Or.ARRAY_MATCHER, Or.DEFAULT_MATCHER):
                query = weighting.profile_query(profiles[row], FIELD_WEIGHTS)
                query.matcher_type = matcher_type
                hits = searcher.search(query, limit=K)
                whoosh_ids = np.asarray([hit["job_id"] for hit in hits])
                whoosh_scores = np.asarray([hit.score for hit in hits])
                assert_same_ranking(batch_ids, batch_scores, whoosh_ids, whoosh_scores, reference)
            assert_same_ranking(batch_ids, batch_scores, dense_ids, dense_scores, reference)
            compared_ties += int(np.sum(np.diff(batch_scores) == 0))
    # The copied jobs tie exactly: the comparison above must have met some ties.
    assert compared_ties > 0


def test_parallel_processes_return_the_same_candidates_as_one_process(corpus):
    _, members, _, job_matrix = corpus
    member_ids, queries = batch.member_queries(members, job_matrix, FIELD_WEIGHTS)
    one = pa.Table.from_batches(batch.retrieve(job_matrix, queries, member_ids, K, block_size=8))
    two = pa.Table.from_batches(batch.retrieve(job_matrix, queries, member_ids, K, block_size=8, processes=2))
    assert one.equals(two)


def test_exact_ties_are_ranked_by_job_id_even_across_the_k_cut():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(30, 50)).astype(float)  # many exact ties, zeros are non-candidates
    rows, cols, values, ranks = batch.top_k_rows(scores, 7)
    for row in range(30):
        expected = ranking_from_scores(scores[row], np.arange(50), 7)
        assert list(cols[rows == row]) == list(expected[0])
        assert list(values[rows == row]) == list(expected[1])
        assert list(ranks[rows == row]) == list(range(1, len(expected[0]) + 1))


def test_member_with_no_matching_term_gets_no_candidates(corpus):
    _, _, _, job_matrix = corpus
    stranger = synthetic.member_profiles(1, seed=5)
    stranger = pa.table(
        {"member_id": [99], **{f: pa.array([[{"term": "zzz-unknown", "weight": 1.0}]], stranger[f].type)
                               for f in PROFILE_FIELDS}}
    )
    member_ids, queries = batch.member_queries(stranger, job_matrix, FIELD_WEIGHTS)
    assert pa.Table.from_batches(batch.retrieve(job_matrix, queries, member_ids, K)).num_rows == 0


def test_rows_whose_sampled_threshold_overshoots_are_redone_exactly():
    # Only the sampled columns (stride 2 for k=50 of 400) hold high, distinct scores: the sampled threshold
    # (about the 46th best) leaves fewer than k candidates, so the exact path must take over for rows 0, 2.
    scores = np.full((3, 400), 0.1)
    scores[:, ::2] = np.linspace(0.5, 1.0, 200)
    scores[1] = np.linspace(0.01, 1.0, 400)
    rows, cols, values, _ = batch.top_k_rows(scores, 50)
    for row in range(3):
        expected = ranking_from_scores(scores[row], np.arange(400), 50)
        assert list(cols[rows == row]) == list(expected[0])
        assert list(values[rows == row]) == list(expected[1])
