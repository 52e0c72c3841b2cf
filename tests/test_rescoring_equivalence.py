"""Block re-scoring gives the GLMix score of every pair exactly and the same lists whatever the blocking.

The oracle is ``GLMixModel.score`` on the pairs' feature table (the training code path's bags), and the
pre-block scoring formula (pair_features x'b plus the random effects by row-wise dot products); the selection
oracle is :func:`pipeline.rescoring.block.select_top` over every eligible pair.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from rescoring_world import DAY, World, make_world, pairs_table

from pipeline.features.pairs import (
    GlobalSpace,
    PairRows,
    ProfileBlock,
    pair_features,
    profile_feature_names,
    rowwise_dot,
)
from pipeline.features.vocab import Vocab
from pipeline.rescoring.block import select_top, top_per_member
from pipeline.scoring import rescore
from pipeline.storage import read_partition


def recommendations(settings) -> pa.Table:
    return read_partition(settings.layout.recommendations(DAY))


def eligible_pairs(world: World, space: GlobalSpace, pool_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(member_id, job_id) every member may be recommended, in (member, job_id) order: its candidates that are
    known, open after DAY and not applied to; the fallback pool (minus applied) when nothing is left."""
    jobs = world.jobs
    end = dt.datetime.fromisoformat("2026-03-11").replace(tzinfo=dt.UTC)
    active_ids = np.sort(jobs.filter(pc.greater(jobs["expires_at"], pa.scalar(end, pa.timestamp("us", tz="UTC"))))
                         ["job_id"].to_numpy())
    applied = set(zip(world.applies["member_id"].to_pylist(), world.applies["job_id"].to_pylist(), strict=True))
    cand = world.candidates
    pairs = {(m, j) for m, j in zip(cand["member_id"].to_pylist(), cand["job_id"].to_pylist(), strict=True)
             if j in set(active_ids.tolist()) and (m, j) not in applied}
    members = sorted(set(world.members["member_id"].to_pylist()) | set(cand["member_id"].to_pylist()))
    # The fallback pool: active jobs by the score of a member with an empty profile and no coefficients.
    nobody = np.full(len(active_ids), -1)
    prior = world.model.score(pairs_table(world, space, nobody, active_ids))
    pool = active_ids[np.lexsort((active_ids, -prior))][:pool_size].tolist()
    with_pairs = {m for m, _ in pairs}
    for m in members:
        if m not in with_pairs:
            pairs |= {(m, j) for j in pool if (m, j) not in applied}
    ordered = sorted(pairs)
    return np.array([p[0] for p in ordered], np.int64), np.array([p[1] for p in ordered], np.int64)


def formula_scores(world: World, space: GlobalSpace, member_ids: np.ndarray, job_ids: np.ndarray) -> np.ndarray:
    """The pre-block formula: x'b + b0 from pair_features, α and β through row-wise sparse dot products."""
    model = world.model
    fixed = model.coefficient_matrix("global", space.names)
    names = profile_feature_names(space.vocab, space.vocab.size)
    m_all = read_members_with_empty(world, member_ids)
    m_pos = {m: i for i, m in enumerate(m_all["member_id"].to_pylist())}
    j_pos = {j: i for i, j in enumerate(world.jobs["job_id"].to_pylist())}
    m_rows = np.array([m_pos[m] for m in member_ids.tolist()])
    j_rows = np.array([j_pos[j] for j in job_ids.tolist()])
    members, jobs = ProfileBlock.from_table(m_all, space.vocab), ProfileBlock.from_table(world.jobs, space.vocab)
    pairs = PairRows.of(m_rows, j_rows)
    x = pair_features(members, m_rows, jobs, j_rows, np.ones(len(m_rows)), space, pairs)
    score = x.score(fixed.vector) + fixed.intercept[0]
    alpha = model.coefficient_matrix("per_member", names, entities=m_all["member_id"].cast(pa.string()))
    beta = model.coefficient_matrix("per_job", names, entities=world.jobs["job_id"].cast(pa.string()))
    score += rowwise_dot(alpha.matrix, jobs.combined(), pairs) + alpha.intercept[m_rows]
    score += rowwise_dot(members.combined(), beta.matrix, pairs) + beta.intercept[j_rows]
    return score


def read_members_with_empty(world: World, member_ids: np.ndarray) -> pa.Table:
    """The member profiles plus empty (null) ones for ``member_ids`` that have none."""
    members = world.members
    missing = np.setdiff1d(np.unique(member_ids), members["member_id"].to_numpy())
    if len(missing):
        empty = pa.table({"member_id": pa.array(missing, pa.int64()),
                          **{f: pa.nulls(len(missing), members.schema.field(f).type) for f in members.column_names
                             if f != "member_id"}})
        members = pa.concat_tables([members, empty])
    return members


def space_of(world: World) -> GlobalSpace:
    return GlobalSpace.from_vocab(Vocab(world.vocab))


@pytest.mark.parametrize("cap", [2, None])
def test_recommendations_are_the_top_of_every_eligible_pair_by_the_glmix_score(settings, cap):
    world = make_world(settings, seed=1)
    report = rescore(DAY, settings, top_n=7, max_per_company=cap, processes=1)
    recs = recommendations(settings)
    space = space_of(world)
    pm, pj = eligible_pairs(world, space, pool_size=5 * 7)
    scores = world.model.score(pairs_table(world, space, pm, pj))
    members = np.unique(pm)
    company = dict(zip(world.jobs["job_id"].to_pylist(), world.jobs["company_id"].to_pylist(), strict=True))
    job_rows = np.searchsorted(np.unique(pj), pj)
    companies = np.array([company[j] for j in np.unique(pj).tolist()])
    rm, rj, rs, rank = select_top(np.searchsorted(members, pm), job_rows, scores, companies, 7, cap)
    assert report["members"] == len(members) and report["members_on_fallback"] >= 5
    assert recs["member_id"].to_pylist() == members[rm].tolist()
    assert recs["job_id"].to_pylist() == np.unique(pj)[rj].tolist()
    assert recs["rank"].to_pylist() == rank.tolist()
    np.testing.assert_allclose(recs["score"].to_numpy(), rs, rtol=0, atol=1e-9)


@pytest.fixture(params=["block", "pairs"])
def product_mode(request, monkeypatch) -> str:
    """Run a test with block products (the default at this size) and with candidate pairs scored one by one."""
    import pipeline.scoring

    monkeypatch.setattr(pipeline.scoring, "pairwise_pays", lambda *_: request.param == "pairs")
    return request.param


def test_scores_equal_glmix_model_score_and_the_pre_block_formula_on_the_same_pairs(settings, product_mode):
    world = make_world(settings, seed=2)
    report = rescore(DAY, settings, top_n=1000, max_per_company=None)
    assert report["product"] == product_mode
    recs = recommendations(settings)
    m, j = recs["member_id"].to_numpy(), recs["job_id"].to_numpy()
    space = space_of(world)
    assert len(m) > 1000
    np.testing.assert_allclose(recs["score"].to_numpy(), world.model.score(pairs_table(world, space, m, j)),
                               rtol=0, atol=1e-9)
    np.testing.assert_allclose(recs["score"].to_numpy(), formula_scores(world, space, m, j), rtol=0, atol=1e-9)


def test_profiles_that_are_not_unit_norm_still_score_with_clipped_cosines(settings, product_mode):
    world = make_world(settings, seed=3, title_norm=1.7)  # title cosines above 1 are clipped to 1
    rescore(DAY, settings, top_n=1000, max_per_company=None)
    recs = recommendations(settings)
    m, j = recs["member_id"].to_numpy(), recs["job_id"].to_numpy()
    space = space_of(world)
    np.testing.assert_allclose(recs["score"].to_numpy(), world.model.score(pairs_table(world, space, m, j)),
                               rtol=0, atol=1e-9)


def test_block_size_and_worker_processes_do_not_change_a_single_bit(settings):
    make_world(settings, seed=4)
    rescore(DAY, settings, processes=1)
    one = recommendations(settings)
    for kwargs in ({"processes": 2, "block_members": 7}, {"processes": 1, "block_members": 1}):
        report = rescore(DAY, settings, **kwargs)
        assert report["blocks"] > 8
        assert recommendations(settings).equals(one), kwargs


def test_scoring_pair_by_pair_gives_the_same_bits_as_block_products(settings, monkeypatch):
    import pipeline.scoring

    make_world(settings, seed=4)
    assert rescore(DAY, settings, processes=1)["product"] == "block"
    by_block = recommendations(settings)
    monkeypatch.setattr(pipeline.scoring, "pairwise_pays", lambda *_: True)
    for kwargs in ({"processes": 1}, {"processes": 2, "block_members": 7}):
        assert rescore(DAY, settings, **kwargs)["product"] == "pairs"
        assert recommendations(settings).equals(by_block), kwargs


def test_pairs_pay_only_with_few_candidates_among_many_active_jobs():
    from pipeline.rescoring.layout import pairwise_pays

    assert not pairwise_pays(1000, 20_000) and pairwise_pays(1000, 80_000) and not pairwise_pays(10, 0)


def test_candidates_in_any_file_order_give_the_same_recommendations(settings):
    world = make_world(settings, seed=5)
    rescore(DAY, settings, block_members=9)
    expected = recommendations(settings)
    # Rewrite the candidates as three files of shuffled rows (as Spark writes them): bucketed, not streamed.
    target = settings.layout.candidates(DAY)
    for part in target.glob("*.parquet"):
        part.unlink()
    shuffled = world.candidates.take(pa.array(np.random.default_rng(0).permutation(world.candidates.num_rows)))
    for i, chunk in enumerate(np.array_split(np.arange(shuffled.num_rows), 3)):
        pq.write_table(shuffled.take(pa.array(chunk)), target / f"part-{i:05d}.parquet", row_group_size=50)
    rescore(DAY, settings, block_members=9)
    assert recommendations(settings).equals(expected)


def test_top_per_member_equals_sorting_every_pair():
    rng = np.random.default_rng(8)
    counts = rng.integers(0, 300, 40)
    rows = np.repeat(np.arange(40), counts)
    cols = np.concatenate([np.sort(rng.choice(500, c, replace=False)) for c in counts])
    scores = np.round(rng.normal(size=len(rows)), 1)  # many exact ties: broken by column
    company = rng.integers(0, 6, 500)
    company[:200] = 0  # one company dominates: rows need more than the 2·top_n prefix
    for top_n, cap in ((10, 3), (10, None), (1, 1), (500, 2)):
        got = top_per_member(rows, cols, scores, 40, company, top_n, cap)
        expected = select_top(rows, cols, scores, company, top_n, cap)
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(a, b)


def test_member_vectors_times_job_vectors_are_the_pairs_linear_terms(settings):
    """The decomposition itself: [b⊙q + α | q]·[s | β] equals Σ b_f cos_f + α·s + q·β pair by pair."""
    from pipeline.rescoring.layout import build_rescorer

    world = make_world(settings, seed=6)
    space = space_of(world)
    jobs = world.jobs.sort_by("job_id")
    rescorer = build_rescorer(world.model, space, jobs, np.ones(jobs.num_rows, bool), "v", 10)
    members = ProfileBlock.from_table(world.members, space.vocab)
    alpha, _, _ = rescorer.members.rows(world.members["member_id"].to_numpy())
    profile = members.combined()
    vectors = sp.hstack([(profile @ sp.diags(rescorer.column_weights(set()))).tocsr() + alpha, profile], format="csr")
    product = rescorer.jobs.scores(vectors)
    job_block = ProfileBlock.from_table(jobs, space.vocab)
    beta = world.model.coefficient_matrix(
        "per_job", profile_feature_names(space.vocab, space.vocab.size), entities=jobs["job_id"].cast(pa.string())
    ).matrix
    expected = (profile @ beta.T).toarray() + (alpha @ job_block.combined().T).toarray()
    for fid, f in enumerate(("title", "skills", "industry", "function", "seniority", "region")):
        expected += rescorer.fixed.cosine[fid] * (members.fields[f] @ job_block.fields[f].T).toarray()
    np.testing.assert_allclose(product, expected, rtol=0, atol=1e-12)


def test_top_per_member_breaks_ties_by_column_whatever_the_order_inside_a_row():
    rng = np.random.default_rng(9)
    counts = rng.integers(0, 200, 30)
    rows = np.repeat(np.arange(30), counts)
    cols = np.concatenate([rng.choice(400, c, replace=False) for c in counts])  # not sorted inside a row
    scores = np.round(rng.normal(size=len(rows)), 1)
    company = rng.integers(0, 5, 400)
    by_column = np.lexsort((cols, rows))
    for top_n, cap in ((10, 3), (7, None), (300, 1)):
        got = top_per_member(rows, cols, scores, 30, company, top_n, cap)
        expected = select_top(rows[by_column], cols[by_column], scores[by_column], company, top_n, cap)
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(a, b)


def test_applies_of_a_day_that_failed_validation_are_not_read(settings):
    """Looking back at past applies skips days whose last validation did not pass (their raw rows are not
    trusted), as it skips days without applies."""
    from pipeline.storage import write_json, write_partition

    world = make_world(settings, seed=12)
    rescore(DAY, settings, top_n=1000, max_per_company=None)
    recs = recommendations(settings)
    member, job = recs["member_id"][0].as_py(), recs["job_id"][0].as_py()
    day_before = "2026-03-09"
    ts = dt.datetime.fromisoformat(day_before).replace(tzinfo=dt.UTC)
    write_partition(settings.layout.raw("applies", day_before), pa.table(
        {"member_id": pa.array([member], pa.int64()), "job_id": pa.array([job], pa.int64()),
         "ts": pa.array([ts], world.applies.schema.field("ts").type)}))
    write_json(settings.layout.validation_report(day_before), {"ok": False, "status": "failed", "error": "bad rows"})
    rescore(DAY, settings, top_n=1000, max_per_company=None)
    assert recommendations(settings).equals(recs)
    write_json(settings.layout.validation_report(day_before), {"ok": True, "status": "passed"})
    (settings.layout.validated("applies", day_before)).mkdir(parents=True)
    write_partition(settings.layout.validated("applies", day_before), read_partition(
        settings.layout.raw("applies", day_before)))
    rescore(DAY, settings, top_n=1000, max_per_company=None)
    again = recommendations(settings)
    pairs = set(zip(again["member_id"].to_pylist(), again["job_id"].to_pylist(), strict=True))
    assert (member, job) not in pairs and again.num_rows == recs.num_rows - 1


def test_only_entity_ids_that_an_int64_id_prints_as_are_matched():
    """glmix_core compares entity IDs as strings; an int64 member/job ID prints in one canonical way."""
    from pipeline.rescoring.layout import integer_entity_ids

    ids = ["0", "-0", "007", "7", " 7", "7 ", "+7", "-12", "9223372036854775807", "9223372036854775808",
           "-9223372036854775808", "-9223372036854775809", "12a", "", None]
    values, keep = integer_entity_ids(pa.array(ids, pa.string()))
    expected = {"0": 0, "7": 7, "-12": -12, "9223372036854775807": 2**63 - 1, "-9223372036854775808": -(2**63)}
    assert [i for i, k in zip(ids, keep.tolist(), strict=True) if k] == list(expected)
    assert values[keep].tolist() == list(expected.values())
    assert [str(v) for v in values[keep].tolist()] == list(expected)  # what pa.int64 → string gives back
