"""Explanations (issue 17, item 2): the score's parts kept with each recommendation, and ``jobrec explain``.

The parts of every recommended pair sum to its score (1e-9), with both engines; the global part splits into
main effects, crosses and the per-field cosine terms; ``jobrec explain``'s total equals ``GLMixModel.score``
of any pair, recommended or not.
"""

from __future__ import annotations

import numpy as np
import pytest
from rescoring_world import DAY, make_world, pairs_table

from pipeline.features.pairs import GlobalSpace
from pipeline.features.vocab import Vocab
from pipeline.rescoring.block import COSINE_COLUMNS, PART_COLUMNS, RECOMMENDATION_SCHEMA
from pipeline.rescoring.explain import explain_pair
from pipeline.scoring import rescore
from pipeline.storage import read_partition


def check_parts(recs) -> None:
    parts = {name: recs[name].to_numpy() for name in PART_COLUMNS}
    score = recs["score"].to_numpy()
    np.testing.assert_allclose(parts["part_global"] + parts["part_member"] + parts["part_job"], score,
                               rtol=0, atol=1e-9)
    inside = parts["part_main"] + parts["part_cross"] + sum(parts[c] for c in COSINE_COLUMNS)
    np.testing.assert_allclose(inside, parts["part_global"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("title_norm", [1.0, 1.7])  # 1.7: title cosines go pair by pair, clipped
def test_the_parts_of_every_recommendation_sum_to_its_score(settings, title_norm):
    make_world(settings, seed=5, title_norm=title_norm)
    rescore(DAY, settings, top_n=8, max_per_company=2, block_members=16, processes=1)
    recs = read_partition(settings.layout.recommendations(DAY))
    assert recs.schema.names[:5] == ["member_id", "rank", "job_id", "score", "model_version"]
    assert recs.schema.equals(RECOMMENDATION_SCHEMA)
    assert recs.num_rows > 100
    check_parts(recs)
    for name in ("part_member", "part_job", "part_cross", *COSINE_COLUMNS):  # every kind of term shows up
        assert np.count_nonzero(recs[name].to_numpy()) > 0, name


def test_explain_total_equals_the_model_score_and_the_recommended_parts(settings):
    world = make_world(settings, seed=6)
    rescore(DAY, settings, top_n=5, max_per_company=None, processes=1)
    recs = read_partition(settings.layout.recommendations(DAY))
    space = GlobalSpace.from_vocab(Vocab(world.vocab))
    rng = np.random.default_rng(0)
    members = world.members["member_id"].to_numpy()
    jobs = world.jobs["job_id"].to_numpy()
    # Two recommended pairs and two arbitrary (possibly expired or never-candidate) pairs.
    picks = [(int(recs["member_id"][i].as_py()), int(recs["job_id"][i].as_py())) for i in (0, recs.num_rows - 1)]
    picks += [(int(rng.choice(members)), int(rng.choice(jobs))) for _ in range(2)]
    expected = world.model.score(pairs_table(world, space, np.array([p[0] for p in picks]),
                                             np.array([p[1] for p in picks])))
    for (m, j), score in zip(picks, expected, strict=True):
        e = explain_pair(DAY, settings, m, j)
        assert abs(e.total - score) <= 1e-9, (m, j)
        assert e.global_terms[0].name == "(intercept)"
        assert all(t.name.startswith(("cos:", "ctx:", "x:", "m:", "j:")) for t in e.global_terms[1:])
    # A recommended pair: the explanation's three parts are the stored parts.
    m, j = picks[0]
    e = explain_pair(DAY, settings, m, j)
    row = recs.slice(0, 1).to_pylist()[0]
    assert e.recommended == (1, row["score"])
    for name in ("part_global", "part_member", "part_job"):
        assert abs(getattr(e, name) - row[name]) <= 1e-9, name


def test_jobrec_explain_prints_the_breakdown(settings, monkeypatch, capsys):
    from pipeline.cli import main

    make_world(settings, seed=7)
    rescore(DAY, settings, top_n=3, processes=1)
    recs = read_partition(settings.layout.recommendations(DAY))
    m, j = int(recs["member_id"][0].as_py()), int(recs["job_id"][0].as_py())
    monkeypatch.setenv("JOBREC_HOME", str(settings.home))
    assert main(["explain", str(m), str(j), "--ds", DAY, "--model", str(settings.layout.model_daily(DAY))]) == 0
    out = capsys.readouterr().out
    assert "global (fixed effect)" in out and "per member" in out and "per job" in out
    assert "cos:title" in out and "total score" in out and "recommended at rank 1" in out
    assert main(["explain", str(m), str(j), "--ds", DAY, "--json"]) == 0
    import json

    payload = json.loads(capsys.readouterr().out)
    assert abs(payload["total"] - recs["score"][0].as_py()) <= 1e-9


@pytest.mark.slow
def test_spark_recommendations_carry_the_same_parts(settings, spark):
    make_world(settings, seed=8)
    rescore(DAY, settings, top_n=6, max_per_company=2, block_members=8, processes=1)
    local = read_partition(settings.layout.recommendations(DAY))
    rescore(DAY, settings, top_n=6, max_per_company=2, block_members=8, engine="spark")
    distributed = read_partition(settings.layout.recommendations(DAY))
    check_parts(distributed)
    assert distributed.equals(local)
