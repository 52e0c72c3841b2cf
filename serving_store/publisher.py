"""Publish per-member lists to Redis as a new version, verify it, then move the served pointer atomically.

Readers follow ``{prefix}:current`` to one version, so they see either the old version or the new one,
never a mix: member values of a version are written before its pointer moves, and each value is one
string. The pointer only moves forward in ``ds`` unless forced (a backfill writes its version for
inspection but leaves the newer day served), and the last ``versions_kept`` served versions stay for
rollback.

Writes go out as ``MSETNX`` commands of ``batch_size`` members, built as one NumPy byte matrix per batch
(RESP framing, keys and packed values; no Python loop over members), several batches in flight on one
connection. A connection drop resends the unacknowledged batches as ``MSET`` (idempotent) with the client's
retry policy, after checking on the new connection that the version is still there being written: a Redis
that restarted empty (SIGKILL without persistence) makes the publish fail instead of receiving orphan keys.
When the retries run out the publish fails, the pointer has not moved and the previous version is still
served. Standalone Redis only: a cluster would reject multi-slot ``MSET``.

Version ids are never reused (``<ds>-<seq>-<random>``, see ``serving_store.keys``): the writer claims a fresh
id (refused if any of its keys exist), ``MSETNX`` refuses to overwrite a member key already in the version,
and a store whose bookkeeping is gone (a new or emptied server) first has every key of unlisted versions
swept away. Lookups only read versions whose status is ``complete``.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import redis

from serving_store import codec
from serving_store.connection import RETRYABLE, make_retry, redact_url, store_error
from serving_store.keys import Keys

log = logging.getLogger(__name__)

DEFAULT_BATCH = 1000
IN_FLIGHT = 4  # MSET batches sent before their replies are read
FALLBACK_SIZE = 100

# Move the pointer to a verified version, only forward in ds unless forced. Returns
# {moved 0|1, previous version or "", previous ds or ""}.
_MOVE_POINTER = """
local status = redis.call('HGET', KEYS[3], 'status')
if status ~= 'complete' then
  return redis.error_reply('version ' .. ARGV[1] .. ' is not verified (status ' .. tostring(status) .. ')')
end
local new_ds = redis.call('HGET', KEYS[3], 'ds')
local cur = redis.call('GET', KEYS[1])
local cur_ds = false
if cur then
  cur_ds = redis.call('HGET', ARGV[3] .. ':v' .. cur .. ':meta', 'ds')
  if cur_ds and new_ds < cur_ds and ARGV[2] ~= '1' then
    return {0, cur, cur_ds}
  end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], 0, 99)
redis.call('HSET', KEYS[3], 'served_at', ARGV[4])
return {1, cur or '', cur_ds or ''}
"""

# Point back at the newest earlier-served version that still exists and is complete.
# Returns {from version, to version} or an error when there is nothing to roll back to.
_ROLLBACK = """
local cur = redis.call('GET', KEYS[1])
if not cur then return redis.error_reply('nothing is published yet; nothing to roll back') end
local hist = redis.call('LRANGE', KEYS[2], 0, -1)
local drop = 0
local target = false
for i, v in ipairs(hist) do
  if v ~= cur and redis.call('HGET', ARGV[1] .. ':v' .. v .. ':meta', 'status') == 'complete' then
    target = v
    break
  end
  drop = i
end
if not target then
  return redis.error_reply('no earlier complete version to roll back to (served: ' .. cur .. ')')
end
redis.call('LTRIM', KEYS[2], drop, -1)
redis.call('SET', KEYS[1], target)
redis.call('HSET', ARGV[1] .. ':v' .. cur .. ':meta', 'rolled_back_at', ARGV[2])
return {cur, target}
"""


# Claim a fresh version: refused when any of its bookkeeping keys exist. KEYS: meta, fallback, versions.
# ARGV: version, seq, then meta field/value pairs.
_CLAIM = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then
  return redis.error_reply('version ' .. ARGV[1] .. ' already has keys; refusing to write into it')
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return 1
"""

# Mark a written version complete, only if it is still the one being written (not lost to a Redis restart,
# not being deleted). KEYS: meta, fallback. ARGV: fallback value, verified_at, fallback_size.
_COMPLETE = """
if redis.call('HGET', KEYS[1], 'status') ~= 'writing' then
  return redis.error_reply('the version is no longer being written (status ' ..
    tostring(redis.call('HGET', KEYS[1], 'status')) .. ')')
end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'status', 'complete', 'verified_at', ARGV[2], 'fallback_size', ARGV[3])
return 1
"""


class PublishFailed(RuntimeError):
    """A publish stopped before moving the pointer (the previous version stays served)."""


class PublishVerificationError(PublishFailed):
    """The written version does not match the input; the pointer was not moved."""


class VersionLost(PublishFailed):
    """The version being written vanished from Redis (a restart without persistence, or a concurrent
    delete); nothing more is written into it and it is never served."""


@dataclass(frozen=True)
class RecommendationLists:
    """Every member's ranked list in grouped (CSR-like) arrays.

    Attributes:
        member_ids: (n,) int64, unique, ascending.
        offsets: (n + 1,) int64; member i's jobs are ``job_ids[offsets[i]:offsets[i + 1]]`` in rank order.
        job_ids: (total,) int64.
        scores: (total,) float32.
        parts: optional (total, k) float32, each score's parts (``codec.PART_NAMES`` order); when given, the
            packed values carry them (explanations).
    """

    member_ids: np.ndarray
    offsets: np.ndarray
    job_ids: np.ndarray
    scores: np.ndarray
    parts: np.ndarray | None = None

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return int(self.member_ids.size)

    def items(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(job_ids, scores) of the member at position ``index``."""
        lo, hi = int(self.offsets[index]), int(self.offsets[index + 1])
        return self.job_ids[lo:hi], self.scores[lo:hi]

    @classmethod
    def from_columns(cls, member_id, rank, job_id, score, parts=None) -> RecommendationLists:
        """Group rows (any order) by member, ordered by rank (``parts``: optional (rows, k) parts per row).
        Raises ``ValueError`` on negative member IDs."""
        member_id = np.asarray(member_id, dtype=np.int64)
        rank = np.asarray(rank)
        job_id = np.asarray(job_id, dtype=np.int64)
        score = np.asarray(score, dtype=np.float32)
        parts = None if parts is None else np.asarray(parts, dtype=np.float32).reshape(member_id.size, -1)
        if member_id.size and int(member_id.min()) < 0:
            raise ValueError("recommendations hold negative member IDs; member IDs must be >= 0")
        # Re-scoring writes rows sorted by (member_id, rank); sort only when they are not.
        in_order = member_id.size < 2 or bool(
            np.all(
                (member_id[1:] > member_id[:-1])
                | ((member_id[1:] == member_id[:-1]) & (rank[1:] > rank[:-1]))
            )
        )
        if not in_order:
            order = np.lexsort((rank, member_id))
            member_id, job_id, score = member_id[order], job_id[order], score[order]
            parts = None if parts is None else parts[order]
        starts = (
            np.flatnonzero(np.r_[True, member_id[1:] != member_id[:-1]])
            if member_id.size
            else np.array([], np.int64)
        )
        offsets = np.r_[starts, member_id.size].astype(np.int64)
        return cls(member_id[starts], offsets, job_id, score, parts)

    @classmethod
    def from_table(cls, table) -> RecommendationLists:
        """From a ``recommendations`` table (member_id, rank, job_id, score; with every column of
        ``codec.PART_NAMES`` too, the lists carry the parts)."""
        names = set(table.column_names)
        parts = None
        if all(name in names for name in codec.PART_NAMES):
            parts = np.column_stack([table.column(name).to_numpy() for name in codec.PART_NAMES])
        return cls.from_columns(
            table.column("member_id").to_numpy(),
            table.column("rank").to_numpy(),
            table.column("job_id").to_numpy(),
            table.column("score").to_numpy(),
            parts,
        )


def fallback_list(
    lists: RecommendationLists, size: int = FALLBACK_SIZE, top_slots: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """The fallback list: jobs appearing most often in members' top ``top_slots``, ties by mean score.

    Returns (job_ids, scores) where the score is the job's mean score in those slots.
    """
    if len(lists) == 0:
        return np.array([], np.int64), np.array([], np.float32)
    slots = np.arange(top_slots)
    take = (lists.offsets[:-1, None] + slots)[slots < lists.counts[:, None]]
    jobs, scores = lists.job_ids[take], lists.scores[take].astype(np.float64)
    if int(jobs.min()) >= 0 and int(jobs.max()) < 8 * jobs.size + 1_000_000:
        # Dense job IDs (the usual case): count with bincount, no sort of the top slots.
        count = np.bincount(jobs)
        total = np.bincount(jobs, weights=scores)
        ids = np.flatnonzero(count)
        count, total = count[ids], total[ids]
    else:
        ids, inverse = np.unique(jobs, return_inverse=True)
        count = np.bincount(inverse)
        total = np.bincount(inverse, weights=scores)
    mean = total / count
    order = np.lexsort((-mean, -count))[:size]
    return ids[order].astype(np.int64), mean[order].astype(np.float32)


@dataclass
class PublishResult:
    """What a publish did (returned as the task's report dict via :meth:`as_dict`)."""

    version: str
    ds: str
    model_version: str
    members: int
    jobs: int
    pointer_moved: bool
    served_version: str
    served_ds: str
    previous_version: str | None
    message: str
    bytes_written: int
    deleted_versions: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _digit_counts(values: np.ndarray) -> np.ndarray:
    """Decimal digits of each non-negative int64 (vectorized)."""
    powers = 10 ** np.arange(1, 19, dtype=np.int64)
    return np.searchsorted(powers, values, side="right") + 1


def _key_rows(member_ids: np.ndarray, member_prefix: bytes, digits: int) -> np.ndarray:
    """RESP bulk strings ``$len\\r\\n<prefix><id>\\r\\n`` for IDs of ``digits`` digits, one row each."""
    head = b"$%d\r\n" % (len(member_prefix) + digits) + member_prefix
    rows = np.empty((member_ids.size, len(head) + digits + 2), dtype=np.uint8)
    rows[:, : len(head)] = np.frombuffer(head, dtype=np.uint8)
    place = 10 ** np.arange(digits - 1, -1, -1, dtype=np.int64)
    rows[:, len(head) : len(head) + digits] = 48 + (member_ids[:, None] // place) % 10
    rows[:, -2:] = np.frombuffer(b"\r\n", dtype=np.uint8)
    return rows


def _batches(lists: RecommendationLists, batch_size: int):
    """Yield index arrays of members sharing list length and ID digit count, at most ``batch_size`` each."""
    counts = lists.counts
    digits = _digit_counts(lists.member_ids)
    group = counts.astype(np.int64) * 32 + digits
    order = np.argsort(group, kind="stable")
    bounds = np.flatnonzero(np.r_[True, group[order][1:] != group[order][:-1], True])
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        for start in range(lo, hi, batch_size):
            yield order[start : min(start + batch_size, hi)]


class _Command(NamedTuple):
    """A packed command for :func:`_run_pipelined`: ``payload`` is sent first, ``resend`` (if given) instead
    of it after a reconnect; ``members`` counts the members it covers."""

    payload: list[bytes]
    members: int
    resend: list[bytes] | None = None


def _mset_command(lists: RecommendationLists, idx: np.ndarray, member_prefix: bytes, width: int) -> _Command:
    """``MSETNX key value ...`` (RESP bytes) for the members at positions ``idx``; ``MSET`` as its resend.

    ``MSETNX`` writes nothing and replies 0 when any of the keys exists: a first write never overwrites.
    """
    count = int(lists.counts[idx[0]])
    starts = lists.offsets[idx]
    take = starts[:, None] + np.arange(count)
    parts = None if lists.parts is None else lists.parts[take]
    values = codec.encode_matrix(lists.job_ids[take], lists.scores[take], width, parts)
    keys = _key_rows(lists.member_ids[idx], member_prefix, int(_digit_counts(lists.member_ids[idx[:1]])[0]))
    value_head = np.frombuffer(b"$%d\r\n" % values.shape[1], dtype=np.uint8)
    crlf = np.frombuffer(b"\r\n", dtype=np.uint8)
    rows = np.concatenate(
        [
            keys,
            np.broadcast_to(value_head, (idx.size, value_head.size)),
            values,
            np.broadcast_to(crlf, (idx.size, 2)),
        ],
        axis=1,
    )
    rows = rows.tobytes()
    head = b"*%d\r\n" % (2 * idx.size + 1)
    return _Command([head + b"$6\r\nMSETNX\r\n", rows], int(idx.size), [head + b"$4\r\nMSET\r\n", rows])


def _exists_command(lists: RecommendationLists, idx: np.ndarray, member_prefix: bytes) -> _Command:
    """One ``EXISTS key ...`` command (RESP bytes) counting the members at positions ``idx``."""
    keys = _key_rows(lists.member_ids[idx], member_prefix, int(_digit_counts(lists.member_ids[idx[:1]])[0]))
    return _Command([b"*%d\r\n$6\r\nEXISTS\r\n" % (idx.size + 1), keys.tobytes()], int(idx.size))


def _still_writing(keys: Keys, version: str) -> Callable[[object], None]:
    """A reconnect check for :func:`_run_pipelined`: raise :class:`VersionLost` unless ``version``'s status
    on the (new) connection's server is ``writing``. Resending into a server that restarted empty would leave
    orphan keys under a version nobody lists."""
    meta = keys.meta(version)

    def check(conn) -> None:
        conn.send_command("HGET", meta, "status", check_health=False)
        status = conn.read_response()
        if status != b"writing":
            raise VersionLost(
                f"version {version} is gone from Redis (status {_s(status) if status else 'missing'}): the "
                "server restarted without its data or the version was deleted; nothing more was written, "
                "the previously published version stays served (if the server kept it); publish again"
            )

    return check


def _run_pipelined(
    client: redis.Redis,
    commands,
    retry,
    url: str,
    on_reply: Callable[[object, int], None],
    on_reconnect: Callable[[object], None] | None = None,
) -> None:
    """Send packed ``commands`` (an iterable of :class:`_Command`) with ``IN_FLIGHT`` in flight.

    On a connection/timeout error the connection is dropped; on the next connection ``on_reconnect(conn)``
    runs first (it may raise to stop), then every unacknowledged command is resent (its ``resend`` form
    when it has one: resends must be idempotent) under ``retry``; when it gives up, raises
    ``ServingStoreUnavailable`` (``ServingStoreAuthError`` for refused credentials). Sends skip redis-py's
    idle health check: its silent reconnect would lose the replies in flight and skip ``on_reconnect``.
    """
    pool = client.connection_pool
    conn = pool.get_connection()
    pending: deque = deque()
    resend = False

    def step(next_command: _Command | None) -> None:
        nonlocal resend
        if resend:
            if on_reconnect is not None:
                on_reconnect(conn)
            for command in pending:
                conn.send_packed_command(command.resend or command.payload, check_health=False)
            resend = False
        # On a retry the command may already be pending (sent, reply lost): it was just resent above.
        if next_command is not None and not (pending and pending[-1] is next_command):
            conn.send_packed_command(next_command.payload, check_health=False)
            pending.append(next_command)
        while pending and (next_command is None or len(pending) >= IN_FLIGHT):
            reply = conn.read_response()
            on_reply(reply, pending.popleft().members)

    def failed(error: Exception) -> None:
        nonlocal resend
        log.warning(
            "Redis connection error during publish (%s); reconnecting and resending %d batches",
            error,
            len(pending),
        )
        conn.disconnect()
        resend = True

    def call(command: _Command | None) -> None:
        try:
            retry.call_with_retry(lambda: step(command), failed)
        except RETRYABLE as exc:
            raise store_error(url, getattr(retry, "_retries", -1), exc) from exc
        except redis.ResponseError as exc:
            raise PublishFailed(
                f"Redis at {redact_url(url)} refused a write ({exc}); the previously published "
                "version stays served"
            ) from exc

    try:
        for command in commands:
            call(command)
        call(None)  # read the replies still in flight
    finally:
        if pending:  # replies left unread (an error reply stopped us): never hand this connection on
            conn.disconnect()
        pool.release(conn)


def _client_url(client: redis.Redis) -> str:
    kw = client.connection_pool.connection_kwargs
    if kw.get("path"):
        return f"unix://{kw['path']}"
    scheme = "rediss" if client.connection_pool.connection_class.__name__.startswith("SSL") else "redis"
    return f"{scheme}://{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def new_version_id(ds: str, seq: int) -> str:
    """A fresh version id ``<ds digits>-<seq>-<8 random hex digits>`` (e.g. ``20260105-7-3fa9c2d1``).

    The random part makes ids unique even when Redis loses ``seq`` (a restart without persistence starts it
    again at 1), so orphan keys of a failed publish can never be read as part of a later version.
    """
    day = "".join(c for c in ds if c.isascii() and c.isalnum())[:16] or "x"
    return f"{day}-{int(seq)}-{secrets.token_hex(4)}"


def claim_version(client: redis.Redis, keys: Keys, ds: str, meta: dict) -> str:
    """Create a fresh version with status ``writing`` and list it; returns its id.

    Sweeps unlisted versions first when the store's bookkeeping is missing (:func:`sweep_unlisted`).
    Raises :class:`PublishFailed` when the new id already has keys (the writer never writes into a version
    that has keys).
    """
    if not client.exists(keys.store):
        swept = sweep_unlisted(client, keys)
        if swept:
            log.warning("removed %d keys of versions no longer listed (left by a failed publish)", swept)
        client.hset(keys.store, mapping={"format": 2, "swept_at": _now()})
    seq = int(client.incr(keys.seq))
    version = new_version_id(ds, seq)
    fields = [x for kv in {**meta, "status": "writing", "created_at": _now()}.items() for x in kv]
    try:
        client.eval(_CLAIM, 3, keys.meta(version), keys.fallback(version), keys.versions, version, seq, *fields)
    except redis.ResponseError as exc:
        raise PublishFailed(str(exc)) from exc
    return version


def write_version(
    client: redis.Redis,
    lists: RecommendationLists,
    *,
    ds: str,
    model_version: str,
    keys: Keys,
    batch_size: int = DEFAULT_BATCH,
    verify_sample: int = 20,
    on_batch: Callable[[int], None] | None = None,
    retry=None,
) -> tuple[str, dict]:
    """Write ``lists`` as a new version (status ``complete`` only after verification); pointer untouched.

    Returns (version, info) where info holds bytes written and stage timings. Raises
    ``PublishVerificationError`` when the counts or the sample do not match (the version stays
    ``writing`` and is never served), :class:`VersionLost` when the version vanished from Redis while being
    written (a restart without persistence: nothing is resent to the new server), :class:`PublishFailed` when
    the version already held a key being written, ``ServingStoreUnavailable`` when Redis stays unreachable.
    """
    retry = retry or client.get_retry() or make_retry()
    url = _client_url(client)
    timings: dict[str, float] = {}
    width = codec.id_width(lists.job_ids)
    version = claim_version(
        client, keys, ds, {"ds": ds, "model_version": model_version, "members": len(lists), "id_width": width}
    )
    member_prefix = keys.member_prefix(version).encode()
    on_reconnect = _still_writing(keys, version)

    t0 = time.perf_counter()
    written = {"members": 0, "bytes": 0, "next_log": max(len(lists) // 10, 1)}

    def commands():
        for idx in _batches(lists, batch_size):
            command = _mset_command(lists, idx, member_prefix, width)
            written["bytes"] += len(command.payload[1])
            yield command

    def acked(reply, n: int) -> None:
        if reply == 0:  # MSETNX found a key already there: never overwrite inside a version
            raise PublishFailed(
                f"version {version} already holds lists of members being written; refusing to overwrite "
                "them (the version is left unserved and removed by the next publish)"
            )
        written["members"] += n
        if on_batch is not None:  # the caller reports progress
            on_batch(written["members"])
        elif written["members"] >= written["next_log"]:
            log.info("version %s: %d/%d members written", version, written["members"], len(lists))
            written["next_log"] += max(len(lists) // 10, 1)

    _run_pipelined(client, commands(), retry, url, acked, on_reconnect)
    timings["write_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    found = {"n": 0}

    def counted(reply, n: int) -> None:
        found["n"] += int(reply)

    exists = (_exists_command(lists, idx, member_prefix) for idx in _batches(lists, 4 * batch_size))
    _run_pipelined(client, exists, retry, url, counted, on_reconnect)
    if found["n"] != len(lists):
        raise PublishVerificationError(
            f"version {version}: {found['n']} member lists found in Redis, {len(lists)} written; not served"
        )
    _verify_sample(client, lists, keys, version, verify_sample)
    fb_jobs, fb_scores = fallback_list(lists)
    try:
        client.eval(
            _COMPLETE,
            2,
            keys.meta(version),
            keys.fallback(version),
            codec.encode(fb_jobs, fb_scores),
            _now(),
            int(fb_jobs.size),
        )
    except redis.ResponseError as exc:
        raise VersionLost(f"version {version} could not be marked complete: {exc}; not served") from exc
    timings["verify_s"] = time.perf_counter() - t0
    return version, {"bytes_written": written["bytes"], "timings": timings}


def _verify_sample(
    client: redis.Redis, lists: RecommendationLists, keys: Keys, version: str, sample: int
) -> None:
    """Read back ``sample`` random members and compare them with the input exactly."""
    if len(lists) == 0 or sample <= 0:
        return
    rng = np.random.default_rng(zlib.crc32(version.encode()))
    picks = rng.choice(len(lists), size=min(sample, len(lists)), replace=False)
    values = client.mget([keys.member(version, lists.member_ids[i]) for i in picks])
    for i, value in zip(picks, values, strict=True):
        want_ids, want_scores = lists.items(int(i))
        if value is None:
            raise PublishVerificationError(
                f"version {version}: member {lists.member_ids[i]} missing after write"
            )
        got_ids, got_scores = codec.decode(value)
        got_parts = codec.decode_parts(value)
        want_parts = None if lists.parts is None else lists.parts[lists.offsets[i] : lists.offsets[i + 1]]
        same_parts = (got_parts is None) if want_parts is None else (
            got_parts is not None and np.array_equal(got_parts, want_parts.astype(np.float32))
        )
        if not (
            np.array_equal(got_ids, want_ids) and np.array_equal(got_scores, want_scores.astype(np.float32))
            and same_parts
        ):
            raise PublishVerificationError(
                f"version {version}: member {lists.member_ids[i]} read back differs"
            )


def move_pointer(
    client: redis.Redis, keys: Keys, version: str, *, force: bool = False
) -> tuple[bool, str, str]:
    """Atomically serve ``version`` unless a newer ds is served (and not ``force``).

    Returns (moved, previous_version, previous_ds) — previous values are "" when nothing was served.
    Raises :class:`PublishFailed` when ``version`` is not complete (never served).
    """
    try:
        moved, prev, prev_ds = client.eval(
            _MOVE_POINTER,
            3,
            keys.current,
            keys.history,
            keys.meta(version),
            version,
            "1" if force else "0",
            keys.prefix,
            _now(),
        )
    except redis.ResponseError as exc:
        raise PublishFailed(f"the pointer was not moved: {exc}") from exc
    return bool(moved), _s(prev), _s(prev_ds)


def rollback(client: redis.Redis, keys: Keys) -> tuple[str, str]:
    """Serve the previously served version again. Returns (from_version, to_version).

    Raises ``ValueError`` when nothing is published or no earlier complete version remains.
    """
    try:
        old, new = client.eval(_ROLLBACK, 2, keys.current, keys.history, keys.prefix, _now())
    except redis.ResponseError as exc:
        raise ValueError(f"cannot roll back: {exc}") from exc
    return _s(old), _s(new)


def _s(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def version_meta(client: redis.Redis, keys: Keys, version: str) -> dict[str, str]:
    """The metadata hash of ``version`` as str → str (empty when it does not exist)."""
    return {_s(k): _s(v) for k, v in client.hgetall(keys.meta(version)).items()}


def list_versions(client: redis.Redis, keys: Keys) -> list[str]:
    """Every written version, oldest first."""
    return [_s(v) for v in client.zrange(keys.versions, 0, -1)]


def _version_order(client: redis.Redis, keys: Keys) -> dict[str, float]:
    """Every listed version → its sequence number (the order versions were claimed in)."""
    return {_s(v): float(score) for v, score in client.zrange(keys.versions, 0, -1, withscores=True)}


def served_version(client: redis.Redis, keys: Keys) -> str | None:
    value = client.get(keys.current)
    return _s(value) if value is not None else None


def delete_version(client: redis.Redis, keys: Keys, version: str, scan_count: int = 5000) -> int:
    """Delete every key of ``version`` (never the served one). Returns the number of keys unlinked."""
    if served_version(client, keys) == version:
        raise ValueError(f"version {version} is served; roll back or publish another before deleting it")
    # Mark first so rollback skips it while its keys disappear.
    client.hset(keys.meta(version), "status", "deleting")
    client.zrem(keys.versions, version)
    client.lrem(keys.history, 0, version)
    removed = 0
    meta_key = keys.meta(version).encode()
    for batch in _scan_batches(client, keys.version_pattern(version), scan_count):
        batch = [k for k in batch if k != meta_key]
        if batch:
            removed += client.unlink(*batch)
    removed += client.unlink(keys.meta(version))
    return removed


def sweep_unlisted(client: redis.Redis, keys: Keys, scan_count: int = 5000) -> int:
    """Unlink every version key (``{prefix}:v{V}:meta|fallback|m:{id}``) whose version ``V`` is not listed in
    ``{prefix}:versions``. Returns the number of keys unlinked.

    Such keys are left when Redis lost its bookkeeping (e.g. a restart without persistence during a publish
    of an older jobrec, which resent batches into the empty server); no listed version is touched. One SCAN
    of the keyspace: :func:`claim_version` runs it only when ``{prefix}:store`` is missing (a new, emptied or
    never-swept store).
    """
    listed = set(list_versions(client, keys))
    shape = re.compile(re.escape(keys.prefix.encode()) + rb":v([^:]+):(?:meta|fallback|m:[0-9]+)\Z")
    removed = 0
    for batch in _scan_batches(client, keys.versions_pattern, scan_count):
        doomed = [k for k in batch if (m := shape.match(k)) and m.group(1).decode() not in listed]
        if doomed:
            removed += client.unlink(*doomed)
    return removed


def _scan_batches(client: redis.Redis, pattern: str, count: int):
    cursor = 0
    while True:
        cursor, found = client.scan(cursor=cursor, match=pattern, count=count)
        if found:
            yield found
        if cursor == 0:
            return


def served_history(client: redis.Redis, keys: Keys) -> list[str]:
    """Versions that have been served, newest first, each once (what rollback can go back to)."""
    return list(dict.fromkeys(_s(v) for v in client.lrange(keys.history, 0, -1)))


def prune_versions(client: redis.Redis, keys: Keys, keep: int, own_version: str) -> list[str]:
    """Delete what rollback does not need: keep the newest ``keep`` served versions (the served one among
    them) and ``own_version``; versions written for inspection only (a backfilled older day) stay until the
    next publish and never count against ``keep``, so a backfill cannot evict a rollback target.

    Versions still ``writing`` that are older than ``own_version`` are failed publishes and go too.
    Returns the deleted versions. Assumes one publisher at a time per prefix.
    """
    served = served_version(client, keys)
    order = _version_order(client, keys)
    status = {v: version_meta(client, keys, v).get("status", "") for v in order}
    rollback_targets = [v for v in served_history(client, keys) if status.get(v) == "complete"][: max(keep, 1)]
    kept = set(rollback_targets) | {own_version} | ({served} if served else set())
    own = order.get(own_version, float("inf"))
    doomed = [v for v in order if v not in kept and (status[v] != "writing" or order[v] < own)]
    for v in doomed:
        n = delete_version(client, keys, v)
        log.info("deleted old version %s (%d keys)", v, n)
    return doomed


def publish_lists(
    client: redis.Redis,
    lists: RecommendationLists,
    *,
    ds: str,
    model_version: str,
    keys: Keys | None = None,
    versions_kept: int = 3,
    force: bool = False,
    batch_size: int = DEFAULT_BATCH,
    verify_sample: int = 20,
    on_batch: Callable[[int], None] | None = None,
    retry=None,
) -> PublishResult:
    """Write, verify, switch the pointer (forward in ds unless ``force``), prune old versions.

    Returns a :class:`PublishResult`; ``pointer_moved`` is False for a backfill of an older ds than the
    served one (its version is kept for inspection) and ``message`` says which happened.
    """
    keys = keys or Keys()
    if len(lists) == 0:
        raise ValueError(f"no recommendations to publish for ds={ds}; refusing to serve an empty version")
    t_start = time.perf_counter()
    version, info = write_version(
        client,
        lists,
        ds=ds,
        model_version=model_version,
        keys=keys,
        batch_size=batch_size,
        verify_sample=verify_sample,
        on_batch=on_batch,
        retry=retry,
    )
    moved, previous, previous_ds = move_pointer(client, keys, version, force=force)
    if moved:
        message = f"version {version} (ds {ds}) is now served" + (
            f", replacing version {previous} (ds {previous_ds})" if previous else ""
        )
        served, served_ds = version, ds
    else:
        message = (
            f"version {version} (ds {ds}) written for inspection but NOT served: version {previous} "
            f"of the newer ds {previous_ds} stays served (use --force to serve an older day)"
        )
        served, served_ds = previous, previous_ds
    log.info(message)
    deleted = prune_versions(client, keys, versions_kept, version)
    timings = dict(info["timings"], total_s=time.perf_counter() - t_start)
    return PublishResult(
        version=version,
        ds=ds,
        model_version=model_version,
        members=len(lists),
        jobs=int(lists.job_ids.size),
        pointer_moved=moved,
        served_version=served,
        served_ds=served_ds,
        previous_version=previous or None,
        message=message,
        bytes_written=info["bytes_written"],
        deleted_versions=deleted,
        timings=timings,
    )
