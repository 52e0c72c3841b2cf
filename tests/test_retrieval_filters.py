"""The first-stage tasks on the storage layout: filters remove exactly expired jobs, jobs already applied to,
and (optionally) jobs outside the member's region; everything else keeps its rank order."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipeline.retrieval_tasks import candidate_batches, day_bounds_us, retrieve_candidates, update_index
from pipeline.storage import read_partition, write_json, write_partition
from retrieval import batch, index, synthetic
from retrieval.profiles import region_strings

DS = "2026-01-02"
K = 40
WEIGHTS = {"title": 1.0, "skills": 2.0, "industry": 0.3, "function": 0.3, "seniority": 0.1, "region": 0.5}


def ranking(table: pa.Table) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for member_id, job_id in zip(table["member_id"].to_pylist(), table["job_id"].to_pylist(), strict=True):
        out.setdefault(member_id, []).append(job_id)
    return out


@pytest.fixture
def day(settings):
    layout = settings.layout
    jobs = synthetic.job_profiles(500, seed=21, ds=DS)
    members = synthetic.member_profiles(30, seed=22)
    write_partition(layout.features("job_profiles", DS), jobs)
    write_partition(layout.features("member_profiles", DS), members)
    write_json(settings.home / "models" / "lr_cosine" / "weights.json", WEIGHTS)
    # Unfiltered top jobs of the first members, to apply to on day 1 and day 2; day 3 applies must not count.
    unfiltered = pa.Table.from_batches(
        candidate_batches(batch.JobMatrix.from_profiles(jobs), members, WEIGHTS, 5)
    )
    firsts = unfiltered.filter(pa.compute.less_equal(unfiltered["rank"], 2))
    applies = firsts.select(["member_id", "job_id"]).append_column(
        "ts", pa.array(np.full(firsts.num_rows, 0), pa.timestamp("us", tz="UTC"))
    )
    write_partition(layout.raw("applies", "2026-01-01"), applies.slice(0, 20))
    write_partition(layout.raw("applies", DS), applies.slice(20))
    future = unfiltered.filter(pa.compute.equal(unfiltered["rank"], 3)).select(["member_id", "job_id"])
    write_partition(layout.raw("applies", "2026-01-03"), future)
    return jobs, members, applies, future


def test_candidates_exclude_expired_and_applied_jobs_and_keep_the_rest_in_order(settings, day):
    jobs, members, applies, future = day
    built = update_index(DS, settings)
    result = retrieve_candidates(DS, settings, k=K, processes=1)
    got = read_partition(settings.layout.candidates(DS))
    assert result["candidates"] == got.num_rows > 0
    assert got.schema.field("rank").type == pa.int32()

    _, end_us = day_bounds_us(DS)
    expires = jobs["expires_at"].cast(pa.int64()).to_numpy()
    expired = set(jobs["job_id"].to_numpy()[expires <= end_us].tolist())
    assert expired and built["documents"] > len(jobs) - len(expired)  # jobs expiring during DS are indexed
    applied = set(zip(applies["member_id"].to_pylist(), applies["job_id"].to_pylist(), strict=True))
    assert not expired & set(got["job_id"].to_pylist())
    assert not applied & set(zip(got["member_id"].to_pylist(), got["job_id"].to_pylist(), strict=True))

    # Everything not filtered keeps its place: the unfiltered ranking minus the removed jobs, cut at K.
    reference = ranking(pa.Table.from_batches(
        candidate_batches(batch.JobMatrix.from_profiles(jobs), members, WEIGHTS, 600)
    ))
    future_pairs = set(zip(future["member_id"].to_pylist(), future["job_id"].to_pylist(), strict=True))
    for member_id, job_ids in ranking(got).items():
        expected = [j for j in reference[member_id] if j not in expired and (member_id, j) not in applied]
        assert job_ids == expected[:K]
    assert future_pairs & set(zip(got["member_id"].to_pylist(), got["job_id"].to_pylist(), strict=True))


def test_region_filter_keeps_only_jobs_of_the_members_region(day):
    jobs, members, _, _ = day
    matrix = batch.JobMatrix.from_profiles(jobs)
    region_of_job = dict(zip(jobs["job_id"].to_pylist(), region_strings(jobs).tolist(), strict=True))
    region_of_member = dict(zip(members["member_id"].to_pylist(), region_strings(members).tolist(), strict=True))
    filtered = pa.Table.from_batches(candidate_batches(matrix, members, WEIGHTS, K, region_filter=True))
    reference = ranking(pa.Table.from_batches(candidate_batches(matrix, members, WEIGHTS, 600)))
    assert filtered.num_rows > 0
    for member_id, job_ids in ranking(filtered).items():
        assert {region_of_job[j] for j in job_ids} == {region_of_member[member_id]}
        expected = [j for j in reference[member_id] if region_of_job[j] == region_of_member[member_id]]
        assert job_ids == expected[:K]


def test_rerunning_a_day_is_idempotent_and_a_failed_update_keeps_the_old_index(settings, day):
    update_index(DS, settings)
    retrieve_candidates(DS, settings, k=K, processes=1)
    first = read_partition(settings.layout.candidates(DS))
    update_index(DS, settings)
    retrieve_candidates(DS, settings, k=K, processes=1)
    assert read_partition(settings.layout.candidates(DS)).equals(first)

    jobs = read_partition(settings.layout.features("job_profiles", DS))
    write_partition(settings.layout.features("job_profiles", DS), jobs.drop_columns(["skills"]))
    with pytest.raises(ValueError, match="skills"):
        update_index(DS, settings, rebuild=True)
    assert index.open_index(settings.layout.index(DS)).doc_count() > 0


def test_retrieving_without_an_index_says_how_to_build_it(settings, day):
    with pytest.raises(FileNotFoundError, match="jobrec index build"):
        retrieve_candidates(DS, settings, k=K)
