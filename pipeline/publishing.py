"""Pipeline tasks of the serving store: publish a day's recommendations, verify them, roll back.

Each task takes the run's ``ds`` (where it has one) and the ``Settings`` and returns a report dict.
Redis is ``settings.redis_url`` or, unset, the embedded server under ``$JOBREC_HOME/redis``.
"""

from __future__ import annotations

import logging
import time
import zlib

import numpy as np

from pipeline.config import Settings
from pipeline.progress import progress
from pipeline.storage import check_ds

log = logging.getLogger(__name__)

REC_COLUMNS = ["member_id", "rank", "job_id", "score"]
READ_BATCH_ROWS = 1 << 20


def serving_keys(settings: Settings):
    """Key names of the serving store under ``settings.redis_prefix`` (``JOBREC_REDIS_PREFIX``), else the serving
    store's default prefix ``jobrec`` (several deployments can share one Redis)."""
    from serving_store.keys import DEFAULT_PREFIX, Keys

    return Keys(settings.redis_prefix or DEFAULT_PREFIX)


def _model_versions(files) -> str:
    """The distinct model versions of a recommendations partition's open files (``model_version`` read
    dictionary-encoded: one day holds ~10^8 rows of, almost always, a single version string), comma-joined."""
    values = set()
    for f in files:
        for chunk in f.read(columns=["model_version"]).column(0).chunks:
            values.update(v for v in chunk.unique().dictionary_decode().to_pylist() if v is not None)
    return ",".join(sorted(str(v) for v in values))


def _recommendations_path(ds: str, settings: Settings):
    path = settings.layout.recommendations(check_ds(ds))
    if not path.exists():
        raise FileNotFoundError(
            f"no recommendations for ds={ds} at {path}; run `jobrec rescore --ds {ds}` first"
        )
    return path


def _read_column(files, name: str, dtype) -> np.ndarray:
    """One column of the partition's open files as a NumPy array of ``dtype``, filled batch by batch: reading
    costs the array plus one batch (reading the column whole and converting it held it two or three times)."""
    out = np.empty(sum(f.metadata.num_rows for f in files), dtype)
    at = 0
    for f in files:
        for batch in f.iter_batches(batch_size=READ_BATCH_ROWS, columns=[name]):
            values = batch.column(0).to_numpy(zero_copy_only=False)
            out[at : at + values.size] = values
            at += values.size
    return out


def load_lists(ds: str, settings: Settings, *, explanations: bool = False):
    """The ``recommendations/ds=`` partition as grouped lists, and its model version(s); with
    ``explanations``, the lists carry each score's parts (``serving_store.codec.PART_NAMES``).

    Read column by column, batch by batch, into the lists' own dtypes: a 1M-member day holds 10^8 rows, and
    reading the table whole and converting it peaked at 9.2 GiB for four columns (3.6 GiB this way).
    """
    from pipeline.storage import closing_all, open_partition
    from serving_store.codec import PART_NAMES
    from serving_store.publisher import RecommendationLists

    # Every column from the same open files: a rerun of the day's re-scoring replacing the partition meanwhile
    # cannot pair one version's members with another's jobs.
    with closing_all(open_partition(_recommendations_path(ds, settings), read_dictionary=["model_version"])) as files:
        parts = None
        if explanations:
            first = _read_column(files, PART_NAMES[0], np.float32)
            parts = np.empty((first.size, len(PART_NAMES)), np.float32)
            parts[:, 0] = first
            del first
            for k, name in enumerate(PART_NAMES[1:], start=1):
                parts[:, k] = _read_column(files, name, np.float32)
        lists = RecommendationLists.from_columns(
            _read_column(files, "member_id", np.int64),
            _read_column(files, "rank", np.int32),
            _read_column(files, "job_id", np.int64),
            _read_column(files, "score", np.float32),
            parts,
        )
        return lists, _model_versions(files)


def _sample_lists(ds: str, settings: Settings, sample: int):
    """``sample`` members of the partition (the same picks as over the whole day's lists) as lists, and the
    largest member ID. Reads the member column batch by batch and then only the row groups whose statistics
    admit a picked member (rows are sorted by member, so about one row group per pick); both passes read
    the same open files, so a rerun replacing the day between them cannot make a false mismatch."""
    import pyarrow as pa

    from pipeline.storage import closing_all, open_partition
    from serving_store.publisher import RecommendationLists

    with closing_all(open_partition(_recommendations_path(ds, settings))) as files:
        members = np.unique(np.concatenate([np.empty(0, np.int64)] + [
            np.unique(batch.column(0).to_numpy())
            for f in files for batch in f.iter_batches(batch_size=READ_BATCH_ROWS, columns=["member_id"])]))
        if not members.size:
            return RecommendationLists.from_columns([], [], [], []), -1
        rng = np.random.default_rng(zlib.crc32(ds.encode()))
        picks = np.sort(members[rng.choice(members.size, size=min(sample, members.size), replace=False)])
        table = pa.concat_tables([_rows_of_members(f, picks) for f in files])
    return RecommendationLists.from_table(table), int(members[-1])


def _rows_of_members(file, picks: np.ndarray):
    """The ``REC_COLUMNS`` rows of an open Parquet file whose member is in the sorted ``picks``, reading only
    the row groups whose member statistics admit a pick (all of them when a row group has no statistics)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = file.metadata.schema.names.index("member_id")
    groups = []
    for g in range(file.num_row_groups):
        stats = file.metadata.row_group(g).column(column).statistics
        if stats is None or not stats.has_min_max:
            groups.append(g)
            continue
        first = np.searchsorted(picks, stats.min)
        if first < picks.size and picks[first] <= stats.max:
            groups.append(g)
    table = file.read_row_groups(groups, columns=REC_COLUMNS)
    members = table["member_id"]
    return table.filter(pc.is_in(members, value_set=pa.array(picks).cast(members.type)))


def publish(
    ds: str,
    settings: Settings,
    force: bool = False,
    *,
    retries: int | None = None,
    batch_size: int | None = None,
    explanations: bool | None = None,
) -> dict:
    """Publish ``recommendations/ds=ds`` as a new serving-store version and serve it if it is not older
    than the served day (or ``force``). ``explanations`` (default ``settings.publish_explanations``): also
    store each recommendation's score parts in the packed lists.

    Returns the report: version, members, ``pointer_moved`` (False for a backfill of an older day: the
    version is written for inspection, the newer one stays served), ``message``, served version/ds,
    deleted versions and timings (read_s, write_s, verify_s, total_s).

    Raises ``FileNotFoundError`` (no partition), ``ServingStoreUnavailable`` (Redis unreachable after
    retries: nothing changed for readers; ``ServingStoreAuthError`` when it refused the password, not
    retried), ``PublishVerificationError`` (written data did not check out), ``VersionLost`` (Redis lost the
    version mid-publish, e.g. restarted without persistence: nothing was resent into the new server). All
    but the first leave the previous version served.
    """
    from serving_store.connection import DEFAULT_RETRIES, connect
    from serving_store.publisher import DEFAULT_BATCH, publish_lists

    t0 = time.perf_counter()
    explanations = settings.publish_explanations if explanations is None else bool(explanations)
    lists, model_version = load_lists(ds, settings, explanations=explanations)
    read_s = time.perf_counter() - t0
    log.info(
        "publishing %d members (%d rows) of ds=%s, model %s",
        len(lists),
        lists.job_ids.size,
        ds,
        model_version,
    )
    client = connect(
        settings, retries=DEFAULT_RETRIES if retries is None else retries, client_name="jobrec-publish"
    )
    try:
        with progress(len(lists), "publish", unit="members", logger=log) as bar:
            result = publish_lists(
                client,
                lists,
                ds=ds,
                model_version=model_version,
                keys=serving_keys(settings),
                versions_kept=settings.versions_kept,
                force=force,
                batch_size=batch_size or DEFAULT_BATCH,
                on_batch=bar.advance_to,
            )
    finally:
        client.close()
    report = result.as_dict()
    report["timings"] = dict(report["timings"], read_s=read_s)
    report["explanations"] = explanations
    return report


def verify(ds: str, settings: Settings, sample: int = 20) -> dict:
    """Look up ``sample`` members of ``ds`` in the newest complete version published for ``ds`` and compare
    with the partition; also check that an unknown member gets the fallback list.

    Returns {version, served (is it the served version), checked, mismatches}. Raises ``LookupError``
    when no complete version of ``ds`` exists and ``PublishVerificationError`` on any mismatch.
    """
    from serving_store.connection import connect
    from serving_store.lookup import Lookup
    from serving_store.publisher import PublishVerificationError, list_versions, served_version, version_meta

    lists, largest_member = _sample_lists(ds, settings, sample)
    keys = serving_keys(settings)
    client = connect(settings, client_name="jobrec-verify")
    try:
        candidates = [
            v
            for v in reversed(list_versions(client, keys))
            if (m := version_meta(client, keys, v)).get("ds") == ds and m.get("status") == "complete"
        ]
        if not candidates:
            raise LookupError(
                f"no complete serving-store version for ds={ds}; run `jobrec publish --ds {ds}`"
            )
        version = candidates[0]
        lookup = Lookup(client, keys)
        mismatches = []
        for i in range(len(lists)):
            got = lookup.get(int(lists.member_ids[i]), version=version)
            want_ids, want_scores = lists.items(i)
            if (
                got.source != "member"
                or got.job_ids != want_ids.tolist()
                or not np.array_equal(np.asarray(got.scores, np.float32), want_scores.astype(np.float32))
            ):
                mismatches.append(int(lists.member_ids[i]))
        unknown = largest_member + 1
        if lookup.get(unknown, version=version).source != "fallback":
            mismatches.append(unknown)
        report = {
            "ds": ds,
            "version": version,
            "served": served_version(client, keys) == version,
            "checked": len(lists) + 1,
            "mismatches": mismatches,
        }
    finally:
        client.close()
    if mismatches:
        raise PublishVerificationError(
            f"version {version} of ds={ds} differs from the partition for members {mismatches[:10]}"
        )
    return report


def rollback(settings: Settings) -> dict:
    """Serve the previously served version again. Returns {from_version, to_version, ds, model_version}.

    Raises ``ValueError`` when there is nothing to roll back to.
    """
    from serving_store.connection import connect
    from serving_store.publisher import rollback as rollback_pointer
    from serving_store.publisher import version_meta

    keys = serving_keys(settings)
    client = connect(settings, client_name="jobrec-rollback")
    try:
        old, new = rollback_pointer(client, keys)
        meta = version_meta(client, keys, new)
    finally:
        client.close()
    log.info("rolled back from version %s to version %s (ds %s)", old, new, meta.get("ds"))
    return {
        "from_version": old,
        "to_version": new,
        "ds": meta.get("ds"),
        "model_version": meta.get("model_version"),
    }
