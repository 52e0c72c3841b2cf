"""An incremental index update (jobs closed, expired, added, changed) equals a full rebuild."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from retrieval import batch, index, synthetic, weighting
from retrieval.profiles import profile_column

WEIGHTS = {"title": 1.0, "skills": 1.5, "industry": 0.5, "function": 0.5, "seniority": 0.2, "region": 0.8}
DAY2_START_US = 1_767_312_000_000_000  # 2026-01-02T00:00Z


def day2_jobs(day1: pa.Table) -> pa.Table:
    """Day 1's jobs with 40 closed, 30 changed profiles, 20 extended, and 150 new jobs; some have expired by
    day 2."""
    kept = day1.slice(40)  # jobs 1..40 closed (gone from the table)
    skills = profile_column(kept, "skills")
    changed_skills = profile_column(synthetic.job_profiles(kept.num_rows, seed=99), "skills")
    is_changed = pa.array(np.arange(kept.num_rows) < 30)
    kept = kept.set_column(kept.schema.get_field_index("skills"), "skills", pc.if_else(is_changed, changed_skills,
                                                                                        skills))
    # Jobs 71..90 keep their profile but get their expiry extended by ten days.
    expires = kept["expires_at"].cast(pa.int64()).to_numpy().copy()
    expires[30:50] += 10 * 86_400_000_000
    kept = kept.set_column(kept.schema.get_field_index("expires_at"), "expires_at",
                           pa.array(expires).cast(kept.schema.field("expires_at").type))
    new = synthetic.job_profiles(150, seed=7, first_id=10_001, ds="2026-01-02")
    return pa.concat_tables([kept, new.select(kept.column_names)])


@pytest.fixture(scope="module")
def indexes(tmp_path_factory):
    root = tmp_path_factory.mktemp("update")
    day1 = synthetic.job_profiles(600, seed=3, ds="2026-01-01")
    day2 = day2_jobs(day1)
    index.build_index(root / "day1", day1)
    before = sorted((p.name, p.stat().st_size) for p in (root / "day1").iterdir())
    stats = index.update_index(root / "day1", root / "updated", day2, active_from_us=DAY2_START_US)
    index.build_index(root / "rebuilt", day2, active_from_us=DAY2_START_US)
    after = sorted((p.name, p.stat().st_size) for p in (root / "day1").iterdir())
    return root, day1, day2, stats, before == after


def test_update_applies_adds_deletes_and_leaves_yesterday_untouched(indexes):
    _, day1, day2, stats, yesterday_unchanged = indexes
    expired = int(np.sum(day2["expires_at"].to_numpy().astype("datetime64[us]").astype(np.int64) <= DAY2_START_US))
    assert yesterday_unchanged
    assert stats.documents == day2.num_rows - expired
    assert stats.deleted >= 40 + 30  # closed and changed jobs (plus the expired ones)
    assert stats.added >= 150 + 30 - expired
    assert expired > 0  # the scenario must exercise the expiry path


def test_updated_index_equals_rebuilt_index_matrix_and_rankings(indexes):
    root, _, _, _, _ = indexes
    updated_ix, rebuilt_ix = index.open_index(root / "updated"), index.open_index(root / "rebuilt")
    updated, rebuilt = batch.JobMatrix.from_index(updated_ix), batch.JobMatrix.from_index(rebuilt_ix)
    assert np.array_equal(updated.job_ids, rebuilt.job_ids)
    assert [a.to_pylist() for a in updated.vocab.terms.values()] == [
        a.to_pylist() for a in rebuilt.vocab.terms.values()
    ]
    assert (updated.matrix != rebuilt.matrix).nnz == 0
    assert np.array_equal(updated.expires_at_us, rebuilt.expires_at_us)

    members = synthetic.member_profiles(25, seed=4)
    results = []
    for matrix in (updated, rebuilt):
        member_ids, queries = batch.member_queries(members, matrix, WEIGHTS)
        results.append(pa.Table.from_batches(batch.retrieve(matrix, queries, member_ids, 80)))
    assert results[0].num_rows > 0 and results[0].equals(results[1])

    # Whoosh's own searcher gives the same scores on both (docnums differ, so compare by job).
    profile = members.to_pylist()[0]
    query = weighting.profile_query(profile, WEIGHTS)
    hits = []
    for ix in (updated_ix, rebuilt_ix):
        with ix.searcher(weighting=weighting.CosineWeighting(WEIGHTS)) as searcher:
            hits.append({h["job_id"]: h.score for h in searcher.search(query, limit=None)})
    assert hits[0].keys() == hits[1].keys()
    assert all(abs(hits[0][j] - hits[1][j]) < 1e-12 for j in hits[0])


def test_update_merges_segments_when_they_pile_up(tmp_path, monkeypatch):
    jobs = synthetic.job_profiles(120, seed=5)
    index.build_index(tmp_path / "d0", jobs.slice(0, 60))
    monkeypatch.setattr(index, "MAX_SEGMENTS", 1)
    stats = index.update_index(tmp_path / "d0", tmp_path / "d1", jobs)
    assert stats.optimised and stats.segments == 1 and stats.documents == 120


def test_update_from_a_missing_index_says_to_build_first(tmp_path):
    with pytest.raises(FileNotFoundError, match="jobrec index build"):
        index.update_index(tmp_path / "nothing", tmp_path / "out", synthetic.job_profiles(3))


def test_engine_reads_an_index_with_unmerged_deletions_and_segments(tmp_path):
    jobs = synthetic.job_profiles(300, seed=8)
    index.build_index(tmp_path, jobs.slice(0, 200))
    ix = index.open_index(tmp_path)
    writer = ix.writer()
    for job_id in range(1, 200, 3):  # delete every third job, keeping the deletions unmerged
        writer.delete_by_term("job_id", job_id)
    writer.commit(merge=False)
    writer = ix.writer()
    for doc in index._documents(jobs.slice(200)):
        writer.add_document(**doc)
    writer.commit(merge=False)
    with ix.reader() as reader:
        assert len(reader.leaf_readers()) == 2 and reader.has_deletions()
    ids = jobs["job_id"].to_numpy()
    remaining = jobs.filter(pa.array(((ids - 1) % 3 != 0) | (ids > 200)))
    from_index = batch.JobMatrix.from_index(ix)
    from_profiles = batch.JobMatrix.from_profiles(remaining, from_index.vocab)
    assert np.array_equal(from_index.job_ids, remaining["job_id"].to_numpy())
    assert (from_index.matrix != from_profiles.matrix).nnz == 0
