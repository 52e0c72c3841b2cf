"""Serving store against a real Redis server: publish, lookup, failure, concurrency, rollback, backfill."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import zlib
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
import redis

from pipeline import publishing
from pipeline.storage import write_partition
from serving_store import codec
from serving_store.connection import ServingStoreUnavailable, connect, connect_async, redact_url
from serving_store.keys import Keys
from serving_store.lookup import AsyncLookup, InvalidMemberId, Lookup, NothingPublished, parse_member_id
from serving_store.publisher import (
    PublishFailed,
    PublishVerificationError,
    RecommendationLists,
    fallback_list,
    list_versions,
    publish_lists,
    rollback,
    served_version,
    version_meta,
)

KEYS = Keys()


def make_lists(n_members: int, n_jobs: int = 20, *, day: int = 0, seed: int = 0) -> RecommendationLists:
    """Lists whose job IDs encode the day, so any mixing of versions is visible: job = day * 10^7 + ..."""
    rng = np.random.default_rng(seed)
    member_ids = np.arange(n_members, dtype=np.int64) * 3 + 5
    job_ids = day * 10_000_000 + rng.integers(0, 1_000_000, size=(n_members, n_jobs))
    scores = -np.sort(-rng.random((n_members, n_jobs)), axis=1)
    rank = np.tile(np.arange(1, n_jobs + 1, dtype=np.int32), n_members)
    return RecommendationLists.from_columns(
        np.repeat(member_ids, n_jobs), rank, job_ids.ravel(), scores.ravel()
    )


def write_recs(settings, ds: str, lists: RecommendationLists, model_version: str = "full-1") -> None:
    rank = np.arange(lists.job_ids.size) - np.repeat(lists.offsets[:-1], lists.counts) + 1
    # Rows shuffled on purpose: publish must not depend on the writer's order.
    order = np.random.default_rng(1).permutation(lists.job_ids.size)
    table = pa.table(
        {
            "member_id": np.repeat(lists.member_ids, lists.counts)[order],
            "rank": rank.astype(np.int32)[order],
            "job_id": lists.job_ids[order],
            "score": lists.scores.astype(np.float64)[order],
            "model_version": pa.array([model_version] * lists.job_ids.size),
        }
    )
    write_partition(settings.layout.recommendations(ds), table)


def assert_served_equals(client, lists: RecommendationLists, version: str | None = None) -> None:
    lookup = Lookup(client, KEYS)
    for i in range(len(lists)):
        got = lookup.get(int(lists.member_ids[i]))
        want_ids, want_scores = lists.items(i)
        assert got.source == "member"
        if version is not None:
            assert got.version == version
        assert got.job_ids == want_ids.tolist()
        assert np.array_equal(np.asarray(got.scores, np.float32), want_scores)


@pytest.fixture
def store_settings(settings, redis_url):
    return dataclasses.replace(settings, redis_url=redis_url)


def test_codec_round_trips_compact_and_wide_ids():
    ids = np.array([7, 2**32 - 1, 0], dtype=np.int64)
    scores = np.array([0.9, 0.5, 0.1], dtype=np.float32)
    packed = codec.encode(ids, scores)
    assert len(packed) == codec.value_size(3, 4)
    got_ids, got_scores = codec.decode(packed)
    assert got_ids.tolist() == ids.tolist() and np.array_equal(got_scores, scores)
    wide = np.array([2**40, 3], dtype=np.int64)
    assert codec.decode(codec.encode(wide, scores[:2]))[0].tolist() == wide.tolist()
    with pytest.raises(codec.CodecError):
        codec.decode(b"not a packed list")


def test_parse_member_id_accepts_int64_and_rejects_the_rest():
    assert parse_member_id("42") == 42 and parse_member_id(2**63 - 1) == 2**63 - 1
    for bad in ["-1", "abc", "4.2", "", str(2**63), "١٢"]:
        with pytest.raises(InvalidMemberId):
            parse_member_id(bad)


def test_publish_then_lookup_returns_every_members_list_and_metadata(store_settings):
    lists = make_lists(300, day=1)
    write_recs(store_settings, "2026-01-01", lists)
    report = publishing.publish("2026-01-01", store_settings, batch_size=64)
    assert report["pointer_moved"] and report["members"] == 300
    client = connect(store_settings.redis_url)
    assert_served_equals(client, lists, report["version"])
    recs = Lookup(client, KEYS).get(5, limit=3)
    assert (recs.ds, recs.model_version, len(recs.job_ids)) == ("2026-01-01", "full-1", 3)
    unknown = Lookup(client, KEYS).get(4)  # 4 is not a member (IDs are 5, 8, 11, ...)
    assert unknown.source == "fallback" and len(unknown.job_ids) > 0
    assert publishing.verify("2026-01-01", store_settings)["mismatches"] == []


def test_lookup_before_any_publish_says_to_publish(redis_url):
    with pytest.raises(NothingPublished, match="jobrec publish"):
        Lookup(connect(redis_url), KEYS).get(5)


def test_publish_dropped_halfway_leaves_previous_version_served_and_intact(redis_url):
    old = make_lists(400, day=1)
    client = connect(redis_url)
    first = publish_lists(client, old, ds="2026-01-01", model_version="m1", batch_size=50)
    killer = redis.Redis.from_url(redis_url)

    def drop_connection(members_written: int) -> None:
        if members_written >= 200:  # halfway: kill every other client's connection, like a network drop
            killer.client_kill_filter(_type="normal", skipme=True)

    no_retry = connect(redis_url, retries=0)
    with pytest.raises(ServingStoreUnavailable, match="cannot reach Redis"):
        publish_lists(
            no_retry,
            make_lists(400, day=2),
            ds="2026-01-02",
            model_version="m2",
            batch_size=50,
            on_batch=drop_connection,
        )
    assert served_version(client, KEYS) == first.version
    assert_served_equals(client, old, first.version)
    broken = list_versions(client, KEYS)[-1]
    assert version_meta(client, KEYS, broken)["status"] == "writing"
    half_written = sum(1 for _ in client.scan_iter(KEYS.member_prefix(broken) + "*"))
    assert 200 <= half_written < 400  # it really died halfway
    # The next good publish cleans the half-written version up.
    new = make_lists(400, day=3)
    result = publish_lists(client, new, ds="2026-01-03", model_version="m3", versions_kept=1)
    assert broken in result.deleted_versions and not list(client.scan_iter(KEYS.version_pattern(broken)))
    assert_served_equals(client, new, result.version)


def test_publish_survives_a_connection_drop_by_retrying(redis_url):
    client = connect(redis_url, retries=3, backoff_base=0.001, backoff_cap=0.01)
    killer = redis.Redis.from_url(redis_url)
    killed = []

    def drop_once(members_written: int) -> None:
        if members_written >= 200 and not killed:
            killed.append(killer.client_kill_filter(_type="normal", skipme=True))

    lists = make_lists(400, day=1)
    result = publish_lists(
        client, lists, ds="2026-01-01", model_version="m1", batch_size=50, on_batch=drop_once
    )
    assert killed and killed[0] >= 1 and result.pointer_moved
    assert_served_equals(client, lists, result.version)


def test_unreachable_redis_fails_with_a_clear_message_without_password(store_settings):
    lists = make_lists(50, day=1)
    write_recs(store_settings, "2026-01-01", lists)
    served = publishing.publish("2026-01-01", store_settings)["version"]
    down = dataclasses.replace(store_settings, redis_url="redis://app:s3cret@127.0.0.1:1/0")
    with pytest.raises(ServingStoreUnavailable) as err:
        publishing.publish("2026-01-01", down, retries=1)
    assert "redis://app:***@127.0.0.1:1/0" in str(err.value) and "s3cret" not in str(err.value)
    assert served_version(connect(store_settings.redis_url), KEYS) == served
    assert redact_url("rediss://:pw@h:6380/1") == "rediss://:***@h:6380/1"


def test_concurrent_readers_see_only_complete_lists_of_one_version(redis_url):
    client = connect(redis_url)
    by_day = {1: make_lists(1500, day=1, seed=1), 2: make_lists(1500, day=2, seed=2)}
    v1 = publish_lists(client, by_day[1], ds="2026-01-01", model_version="m1").version
    expected = {v1: by_day[1]}
    done = threading.Event()
    seen: list[tuple[bool, str]] = []  # (the read began after the publish returned, version read)
    errors: list[str] = []

    def reader(seed: int) -> None:
        rng = np.random.default_rng(seed)
        lookup = Lookup(connect(redis_url), KEYS)
        after = 0
        while after < 10:  # keep reading until 10 reads began after the new version was served
            began_after = done.is_set()
            i = int(rng.integers(0, 1500))
            got = lookup.get(int(by_day[1].member_ids[i]))
            lists = expected.get(got.version, by_day[2])  # the next version's id is known once it is served
            if got.job_ids != lists.items(i)[0].tolist():
                errors.append(f"member {i}: list of version {got.version} is not complete/consistent")
            seen.append((began_after, got.version))
            after += began_after

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    v2 = publish_lists(client, by_day[2], ds="2026-01-02", model_version="m2", batch_size=25).version
    done.set()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert {version for _, version in seen} <= {v1, v2}
    # a read that began after the publish returned sees the new version (one begun earlier may finish later)
    assert {version for began_after, version in seen if began_after} == {v2}


def test_batched_lookups_during_a_publish_each_read_one_complete_version(redis_url):
    """The HTTP service's lookups share script calls (AsyncLookup): a batch read while the served version
    flips still gives every member its whole list of one version, the same version for the whole batch."""
    client = connect(redis_url)
    by_day = {1: make_lists(1500, day=1, seed=1), 2: make_lists(1500, day=2, seed=2)}
    v1 = publish_lists(client, by_day[1], ds="2026-01-01", model_version="m1").version
    publisher = threading.Thread(
        target=lambda: publish_lists(client, by_day[2], ds="2026-01-02", model_version="m2", batch_size=25)
    )

    async def read_until_the_new_version_is_served() -> tuple[list, list]:
        answers, rows = [], []  # per batch: the lookups' answers, and the member rows asked for
        aclient = await connect_async(redis_url, socket_timeout=None)
        lookup = AsyncLookup(aclient, KEYS, timeout=10)
        rng = np.random.default_rng(5)
        try:
            publisher.start()
            while not answers or answers[-1][0].version == v1 or publisher.is_alive():
                rows.append(rng.integers(0, 1500, size=32).tolist())
                answers.append(
                    await asyncio.gather(*[lookup.get(int(by_day[1].member_ids[i])) for i in rows[-1]])
                )
                await asyncio.sleep(0.001)
        finally:
            await aclient.aclose()
        return answers, rows

    answers, rows = asyncio.run(read_until_the_new_version_is_served())
    publisher.join(timeout=60)
    versions = {got.version for batch in answers for got in batch}
    assert v1 in versions and len(versions) == 2
    for batch, batch_rows in zip(answers, rows, strict=True):
        assert len({got.version for got in batch}) == 1  # one script call, one version
        for got, i in zip(batch, batch_rows, strict=True):
            lists = by_day[1] if got.version == v1 else by_day[2]
            assert got.job_ids == lists.items(i)[0].tolist(), f"member row {i}: mixed or partial list"


def test_rollback_restores_the_previous_version(store_settings):
    day1, day2 = make_lists(200, day=1), make_lists(200, day=2)
    write_recs(store_settings, "2026-01-01", day1)
    write_recs(store_settings, "2026-01-02", day2)
    v1 = publishing.publish("2026-01-01", store_settings)["version"]
    v2 = publishing.publish("2026-01-02", store_settings)["version"]
    report = publishing.rollback(store_settings)
    assert (report["from_version"], report["to_version"], report["ds"]) == (v2, v1, "2026-01-01")
    assert_served_equals(connect(store_settings.redis_url), day1, v1)
    with pytest.raises(ValueError, match="no earlier complete version"):
        publishing.rollback(store_settings)


def test_publishing_an_older_day_leaves_the_newer_day_served_unless_forced(store_settings):
    day1, day2 = make_lists(200, day=1), make_lists(200, day=2)
    write_recs(store_settings, "2026-01-01", day1)
    write_recs(store_settings, "2026-01-02", day2)
    newer = publishing.publish("2026-01-02", store_settings)
    backfill = publishing.publish("2026-01-01", store_settings)
    assert not backfill["pointer_moved"] and "NOT served" in backfill["message"]
    assert backfill["served_version"] == newer["version"] and backfill["served_ds"] == "2026-01-02"
    client = connect(store_settings.redis_url)
    assert_served_equals(client, day2, newer["version"])
    verified = publishing.verify("2026-01-01", store_settings)  # the backfill is there for inspection
    assert verified["version"] == backfill["version"] and not verified["served"]
    forced = publishing.publish("2026-01-01", store_settings, force=True)
    assert forced["pointer_moved"]
    assert_served_equals(client, day1, forced["version"])


def test_only_the_last_versions_kept_remain(store_settings):
    store_settings = dataclasses.replace(store_settings, versions_kept=2)
    versions = []
    for day in range(1, 5):
        ds = f"2026-01-0{day}"
        write_recs(store_settings, ds, make_lists(100, day=day))
        versions.append(publishing.publish(ds, store_settings)["version"])
    client = connect(store_settings.redis_url)
    assert list_versions(client, KEYS) == versions[-2:]
    for gone in versions[:2]:
        assert not list(client.scan_iter(KEYS.version_pattern(gone)))


def test_backfilled_versions_published_for_inspection_never_evict_rollback_targets(store_settings):
    store_settings = dataclasses.replace(store_settings, versions_kept=3)
    served = []
    for day in (1, 2, 3):  # three served days: the served one and two rollback targets
        ds = f"2026-01-0{day}"
        write_recs(store_settings, ds, make_lists(60, day=day))
        served.append(publishing.publish(ds, store_settings)["version"])
    client = connect(store_settings.redis_url)
    # Two backfills of older days (the report's scenario): each is written for inspection, not served.
    inspected = []
    for _ in range(2):
        for day in (1, 2):
            result = publishing.publish(f"2026-01-0{day}", store_settings)
            assert not result["pointer_moved"]
            inspected.append(result["version"])
    assert served_version(client, KEYS) == served[-1]
    remaining = list_versions(client, KEYS)
    assert set(served) <= set(remaining), remaining
    assert remaining == [*served, inspected[-1]], "older inspection versions go, the newest stays to look at"
    # Rollback still reaches both earlier served versions, in order.
    assert rollback(client, KEYS) == (served[2], served[1])
    assert rollback(client, KEYS) == (served[1], served[0])


def test_publish_of_a_missing_day_says_to_rescore(store_settings):
    with pytest.raises(FileNotFoundError, match="jobrec rescore --ds 2026-02-01"):
        publishing.publish("2026-02-01", store_settings)


def test_publishing_no_rows_is_refused(redis_url):
    empty = RecommendationLists.from_columns([], [], [], [])
    with pytest.raises(ValueError, match="refusing to serve an empty version"):
        publish_lists(connect(redis_url), empty, ds="2026-01-01", model_version="m")


def test_verify_detects_a_list_that_differs_from_the_partition(store_settings):
    lists = make_lists(30, day=1)
    write_recs(store_settings, "2026-01-01", lists)
    version = publishing.publish("2026-01-01", store_settings)["version"]
    client = connect(store_settings.redis_url)
    for member in lists.member_ids:  # tamper with every list so any sample sees it
        client.set(KEYS.member(version, member), codec.encode(np.array([1, 2]), np.array([0.5, 0.4])))
    with pytest.raises(PublishVerificationError, match="differs from the partition"):
        publishing.verify("2026-01-01", store_settings)


@pytest.mark.parametrize("id_scale", [1, 10**12])  # dense IDs (bincount path) and sparse IDs (unique path)
def test_fallback_list_ranks_jobs_by_top_slot_count_then_mean_score(id_scale):
    rng = np.random.default_rng(3)
    counts = rng.integers(1, 15, 500)
    member = np.repeat(np.arange(500), counts)
    rank = np.concatenate([np.arange(1, c + 1) for c in counts])
    job = rng.integers(0, 60, member.size) * id_scale
    score = rng.random(member.size).astype(np.float32)
    ids, _ = fallback_list(RecommendationLists.from_columns(member, rank, job, score), size=20)
    in_top: dict[int, list[float]] = {}
    for r, j, s in zip(rank, job, score, strict=True):  # the plain definition, as the oracle
        if r <= 10:
            in_top.setdefault(int(j), []).append(float(s))
    expected = sorted(in_top, key=lambda j: (-len(in_top[j]), -np.mean(in_top[j])))[:20]
    assert ids.tolist() == expected


def test_publish_refused_by_a_full_server_leaves_previous_version_served(redis_url):
    client = connect(redis_url)
    old = make_lists(100, day=1)
    first = publish_lists(client, old, ds="2026-01-01", model_version="m1")
    used = client.info("memory")["used_memory"]
    client.config_set("maxmemory", used + 200_000)  # room for a few batches only
    try:
        with pytest.raises(PublishFailed, match="refused a write"):
            publish_lists(
                client, make_lists(3000, day=2), ds="2026-01-02", model_version="m2", batch_size=100
            )
    finally:
        client.config_set("maxmemory", 0)
    assert served_version(client, KEYS) == first.version
    assert_served_equals(client, old, first.version)


def _write_recs_in_row_groups(settings, ds: str, lists: RecommendationLists, *, shuffled: bool) -> None:
    """The day as two Parquet files of 7-row row groups, with every score part, sorted or shuffled."""
    import pyarrow.parquet as pq

    rows = lists.job_ids.size
    rank = (np.arange(rows) - np.repeat(lists.offsets[:-1], lists.counts) + 1).astype(np.int32)
    order = np.random.default_rng(2).permutation(rows) if shuffled else np.arange(rows)
    parts = np.random.default_rng(3).random((rows, len(codec.PART_NAMES)))
    table = pa.table({
        "member_id": np.repeat(lists.member_ids, lists.counts)[order], "rank": rank[order],
        "job_id": lists.job_ids[order], "score": lists.scores.astype(np.float64)[order],
        "model_version": pa.array(["full-1"] * rows),
        **{name: parts[order, k] for k, name in enumerate(codec.PART_NAMES)},
    })
    folder = settings.layout.recommendations(ds)
    folder.mkdir(parents=True)
    half = rows // 2 + 3  # a member's list runs across the two files
    pq.write_table(table.slice(0, half), folder / "part-00000.parquet", row_group_size=7)
    pq.write_table(table.slice(half), folder / "part-00001.parquet", row_group_size=7)


@pytest.mark.parametrize("shuffled", [False, True])
def test_lists_read_column_by_column_in_batches_equal_the_lists_of_the_whole_table(
    store_settings, monkeypatch, shuffled
):
    from pipeline.storage import read_partition

    monkeypatch.setattr(publishing, "READ_BATCH_ROWS", 5)
    _write_recs_in_row_groups(store_settings, "2026-01-01", make_lists(40, n_jobs=9, day=1), shuffled=shuffled)
    whole = RecommendationLists.from_table(read_partition(store_settings.layout.recommendations("2026-01-01")))
    for explanations in (False, True):
        lists, model_version = publishing.load_lists("2026-01-01", store_settings, explanations=explanations)
        assert model_version == "full-1"
        for field in ("member_ids", "offsets", "job_ids", "scores"):
            got, want = getattr(lists, field), getattr(whole, field)
            assert got.dtype == want.dtype and np.array_equal(got, want), field
        assert (lists.parts is None) if not explanations else np.array_equal(lists.parts, whole.parts)


def test_lists_are_read_from_one_version_when_rescoring_replaces_the_day_between_columns(store_settings, monkeypatch):
    # load_lists reads the day column by column; a rerun of the day's re-scoring may swap the partition
    # meanwhile. Members of one version must never be paired with jobs and scores of the other.
    import shutil

    from pipeline.storage import read_partition

    old, new = make_lists(40, n_jobs=9, day=1), make_lists(25, n_jobs=7, day=2)
    folder = store_settings.layout.recommendations("2026-01-01")
    _write_recs_in_row_groups(store_settings, "2026-01-01", old, shuffled=False)
    want = RecommendationLists.from_table(read_partition(folder))
    read_column, calls = publishing._read_column, []

    def read_then_replace_the_day(*args, **kwargs):
        values = read_column(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:  # a rescoring rerun writes the day again (its own folder, renamed over this one)
            staged = store_settings.layout.recommendations("2026-01-09")
            _write_recs_in_row_groups(store_settings, "2026-01-09", new, shuffled=False)
            shutil.rmtree(folder)
            staged.rename(folder)
        return values

    monkeypatch.setattr(publishing, "_read_column", read_then_replace_the_day)
    lists, _ = publishing.load_lists("2026-01-01", store_settings)
    for field in ("member_ids", "offsets", "job_ids", "scores"):
        assert np.array_equal(getattr(lists, field), getattr(want, field)), field


def test_verify_samples_one_version_when_rescoring_replaces_the_day_between_its_two_passes(store_settings, monkeypatch):
    # verify picks members from the day's member column, then reads the picks' rows; a rerun of the day's
    # re-scoring swapping the partition between the two passes must not read the picks' lists from the
    # other version (a false mismatch against the published one).
    import shutil

    old, new = make_lists(40, n_jobs=9, day=1), make_lists(40, n_jobs=7, day=2)
    folder = store_settings.layout.recommendations("2026-01-01")
    _write_recs_in_row_groups(store_settings, "2026-01-01", old, shuffled=False)
    publishing.publish("2026-01-01", store_settings)

    def replace_the_day_then_seed(data: bytes) -> int:
        # called once, between the two passes, to seed the member picks: a rescoring rerun renames its own
        # folder over the day there
        staged = store_settings.layout.recommendations("2026-01-09")
        _write_recs_in_row_groups(store_settings, "2026-01-09", new, shuffled=False)
        shutil.rmtree(folder)
        staged.rename(folder)
        return zlib.crc32(data)

    monkeypatch.setattr(publishing, "zlib", SimpleNamespace(crc32=replace_the_day_then_seed))
    report = publishing.verify("2026-01-01", store_settings, sample=40)
    assert (report["checked"], report["mismatches"]) == (41, [])


@pytest.mark.parametrize("shuffled", [False, True])
def test_verify_reads_each_sampled_members_whole_list_across_row_groups_and_files(
    store_settings, monkeypatch, shuffled
):
    monkeypatch.setattr(publishing, "READ_BATCH_ROWS", 5)
    lists = make_lists(40, n_jobs=9, day=1)
    _write_recs_in_row_groups(store_settings, "2026-01-01", lists, shuffled=shuffled)
    version = publishing.publish("2026-01-01", store_settings)["version"]
    report = publishing.verify("2026-01-01", store_settings, sample=40)
    assert (report["checked"], report["mismatches"]) == (41, [])
    client = connect(store_settings.redis_url)
    member = int(lists.member_ids[20])  # the member whose list the two files split
    ids, scores = lists.items(20)
    client.set(KEYS.member(version, member), codec.encode(ids[:-1], scores[:-1]))  # its last job dropped
    with pytest.raises(PublishVerificationError, match=rf"for members \[{member}\]"):
        publishing.verify("2026-01-01", store_settings, sample=40)
