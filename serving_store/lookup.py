"""Look up members' served lists: one round trip (a Lua script reads pointer, metadata and lists
atomically), so a reader never combines one version's pointer with another version's list, and never reads
the lists of a version whose metadata does not say ``complete`` (being written, being deleted, or lost).

The script reads any number of members at once. :class:`AsyncLookup` (the HTTP service) uses that: lookups
started in the same event-loop iteration share one script call (see :class:`AsyncLookup`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

import redis

from serving_store import codec
from serving_store.keys import Keys

INT64_MAX = 2**63 - 1
_INT64_DIGITS = len(str(INT64_MAX))  # 19
MAX_BATCH = 128  # members per script call of AsyncLookup: bounds the script's run time and reply size
T = TypeVar("T")

# KEYS[1]: the served-version pointer. ARGV[1]: the key prefix; ARGV[2]: a version ('' = the served one);
# ARGV[3..]: member IDs. Reply: false when nothing is served, else {version, ds, model_version, status}
# followed, when status is 'complete', by a (source, list) pair per member: ('member', its list) or
# ('fallback', the fallback list or '' when there is none).
_LOOKUP = """
local v = ARGV[2]
if v == '' then
  v = redis.call('GET', KEYS[1])
  if not v then return false end
end
local base = ARGV[1] .. ':v' .. v
local meta = redis.call('HMGET', base .. ':meta', 'ds', 'model_version', 'status')
local reply = {v, meta[1] or '', meta[2] or '', meta[3] or ''}
if meta[3] ~= 'complete' then return reply end
local fallback
for i = 3, #ARGV do
  local val = redis.call('GET', base .. ':m:' .. ARGV[i])
  if val then
    reply[#reply + 1] = 'member'
    reply[#reply + 1] = val
  else
    if fallback == nil then fallback = redis.call('GET', base .. ':fallback') or '' end
    reply[#reply + 1] = 'fallback'
    reply[#reply + 1] = fallback
  end
end
return reply
"""


class StoreTimeout(RuntimeError):
    """Redis did not answer within the lookup's budget."""


async def within(seconds: float | None, awaitable: Awaitable[T]) -> T:
    """``await awaitable``, raising :class:`StoreTimeout` after ``seconds`` (``None``: no bound). The cancelled
    command's connection is dropped by redis-py, not reused."""
    if seconds is None:
        return await awaitable
    try:
        async with asyncio.timeout(seconds):
            return await awaitable
    except TimeoutError as exc:
        raise StoreTimeout(f"serving store unavailable: Redis did not answer within {seconds:g} s") from exc


class InvalidMemberId(ValueError):
    """A member ID that is not a non-negative 64-bit integer."""


class NothingPublished(LookupError):
    """No version is served yet (run ``jobrec publish --ds``), the requested version does not exist, or the
    version found is not complete (its lists are never read)."""


def _shown(text: str, limit: int = 40) -> str:
    """``text`` for an error message, cut to ``limit`` characters."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def parse_member_id(raw: str | int) -> int:
    """``raw`` as a member ID (a non-negative integer that fits int64), else :class:`InvalidMemberId`.

    Any input is either an ID or this error: never another exception (a string of 4,301+ digits would make
    ``int()`` raise its own ``ValueError``), and the message quotes at most 40 characters of it.
    """
    text = str(raw).strip()
    if not text.isascii() or not text.isdigit():
        raise InvalidMemberId(f"member_id must be a non-negative integer; got {_shown(str(raw))}")
    if len(text.lstrip("0")) > _INT64_DIGITS:
        raise InvalidMemberId(
            f"member_id must fit in a 64-bit integer (<= {INT64_MAX}); got {_shown(text)}"
        )
    value = int(text.lstrip("0") or "0")
    if value > INT64_MAX:
        raise InvalidMemberId(f"member_id must fit in a 64-bit integer (<= {INT64_MAX}); got {text}")
    return value


@dataclass(frozen=True)
class Recommendations:
    """A member's list as served: rank i (1-based) is ``job_ids[i - 1]``.

    ``source`` is ``member`` (the member's own list) or ``fallback`` (top jobs overall: unknown member).
    ``explain``: the lookup asked for explanations; ``parts`` then holds each job's score parts by name
    (:data:`serving_store.codec.PART_NAMES`), or None when the list was published without them.
    """

    member_id: int
    job_ids: list[int]
    scores: list[float]
    version: str
    ds: str
    model_version: str
    source: str
    parts: list[dict[str, float]] | None = None
    explain: bool = False

    def as_dict(self) -> dict:
        """The JSON answer; with ``explain``, each entry gets its ``parts`` and the answer an
        ``explanations`` note saying whether they were published."""
        body = {
            "member_id": self.member_id,
            "version": self.version,
            "ds": self.ds,
            "model_version": self.model_version,
            "source": self.source,
            "recommendations": [
                {"rank": i + 1, "job_id": j, "score": s}
                for i, (j, s) in enumerate(zip(self.job_ids, self.scores, strict=True))
            ],
        }
        if self.explain:
            if self.parts is not None:
                for entry, parts in zip(body["recommendations"], self.parts, strict=True):
                    entry["parts"] = parts
                body["explanations"] = {"published": True, "note": "score = part_global + part_member + part_job"}
            else:
                why = ("the fallback list has no explanations" if self.source == "fallback" else
                       "explanations were not published for this version (publish with "
                       "JOBREC_PUBLISH_EXPLANATIONS=true or the DAG param publish_explanations)")
                body["explanations"] = {"published": False, "note": why}
        return body


def _check(member_id: int | str, limit: int | None) -> int:
    member = parse_member_id(member_id)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1; got {limit}")
    return member


def _served_header(reply, version: str | None) -> tuple[str, str, str]:
    """(served version, ds, model_version) of the lookup script's reply, or :class:`NothingPublished` when
    nothing is served, ``version`` does not exist or the version is not complete."""
    if not reply:
        raise NothingPublished("no recommendations are published yet; run `jobrec publish --ds YYYY-MM-DD`")
    served, ds, model_version, status = (x.decode() for x in reply[:4])
    if version is not None and not status:
        raise NothingPublished(f"version {version} does not exist (deleted or never written)")
    if status != "complete":
        raise NothingPublished(
            f"version {served} is not complete (status {status or 'missing'}): its lists are not served; "
            "publish again (`jobrec publish --ds YYYY-MM-DD`) or roll back (`jobrec rollback`)"
        )
    return served, ds, model_version


def _recommendations(
    member: int, limit: int | None, header: tuple[str, str, str], source: bytes, value: bytes,
    explain: bool = False,
) -> Recommendations:
    """Decode one member's (source, packed list) from the script's reply (with ``explain``, the parts too)."""
    served, ds, model_version = header
    job_ids, scores = codec.decode_lists(value, limit) if value else ([], [])
    parts = codec.decode_parts_lists(value, limit) if explain and value else None
    return Recommendations(
        member_id=member,
        job_ids=job_ids,
        scores=scores,
        version=served,
        ds=ds,
        model_version=model_version,
        source=source.decode(),
        parts=parts,
        explain=explain,
    )


def _served(version, meta: dict) -> dict | None:
    if version is None:
        return None
    return {"version": version.decode(), **{k.decode(): v.decode() for k, v in meta.items()}}


class Lookup:
    """Reads served lists from one Redis client (thread-safe: redis-py's pool hands out connections)."""

    def __init__(self, client: redis.Redis, keys: Keys | None = None) -> None:
        self.client = client
        self.keys = keys or Keys()
        self._script = client.register_script(_LOOKUP)

    def get(
        self, member_id: int | str, limit: int | None = None, *, version: str | None = None,
        explain: bool = False,
    ) -> Recommendations:
        """The served list of ``member_id`` (or of ``version`` when given), at most ``limit`` entries; with
        ``explain``, each job's score parts when they were published (see :class:`Recommendations`).

        Unknown members get the fallback list (``source == "fallback"``). Raises :class:`InvalidMemberId`,
        :class:`NothingPublished`, or ``ValueError`` for a limit below 1.
        """
        member = _check(member_id, limit)
        reply = self._script(keys=[self.keys.current], args=[self.keys.prefix, version or "", str(member)])
        return _recommendations(member, limit, _served_header(reply, version), *reply[4:6], explain)

    def served(self) -> dict | None:
        """The served version's metadata (version, ds, model_version, members, ...) or ``None``."""
        version = self.client.get(self.keys.current)
        return _served(version, self.client.hgetall(self.keys.meta(version.decode())) if version else {})


class AsyncLookup:
    """:class:`Lookup` on a ``redis.asyncio`` client (used by the HTTP service), batching concurrent lookups.

    Lookups started in the same event-loop iteration (the requests that one poll of the sockets delivered)
    share one script call of up to :data:`MAX_BATCH` members: one round trip and one command's worth of
    client work instead of one each, which is most of a lookup's CPU time under load. Each member's answer
    is the same as alone (one atomic read of pointer, metadata and lists); a failed call fails every lookup
    of its batch with its error.

    Args:
        timeout: seconds a batch's script call may take (retries of dropped connections included) before
            its lookups fail with :class:`StoreTimeout` (the call is cancelled and redis-py drops its
            connection); ``None``: only the client's own socket timeout bounds it. Cancelling one lookup
            does not cancel its batch's call.
    """

    def __init__(self, client, keys: Keys | None = None, *, timeout: float | None = None) -> None:
        self.client = client
        self.keys = keys or Keys()
        self.timeout = timeout
        self._script = client.register_script(_LOOKUP)
        self._waiting: dict[str, list[tuple[int, asyncio.Future]]] = {}  # by version ('' = the served one)
        self._calls: set[asyncio.Task] = set()  # running script calls (the loop keeps only weak references)

    async def get(
        self, member_id: int | str, limit: int | None = None, *, version: str | None = None,
        explain: bool = False,
    ) -> Recommendations:
        """As :meth:`Lookup.get`."""
        member = _check(member_id, limit)
        header, source, value = await self._read(member, version or "")
        return _recommendations(member, limit, header, source, value, explain)

    def _read(self, member: int, version: str) -> asyncio.Future:
        """A future of (header, source, packed list) for ``member``, read with the other lookups of this
        loop iteration (the batch is sent by a callback queued behind the tasks already ready to run)."""
        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        waiting = self._waiting.get(version)
        if waiting is None:
            waiting = self._waiting[version] = []
            loop.call_soon(self._send, version)
        waiting.append((member, answer))
        if len(waiting) >= MAX_BATCH:
            self._send(version)
        return answer

    def _send(self, version: str) -> None:
        waiting = self._waiting.pop(version, None)
        if waiting:
            call = asyncio.ensure_future(self._call(version, waiting))
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)

    async def _call(self, version: str, waiting: list[tuple[int, asyncio.Future]]) -> None:
        """One script call for ``waiting``'s members; every future gets its member's answer or the error."""
        try:
            reply = await within(
                self.timeout,
                self._script(
                    keys=[self.keys.current],
                    args=[self.keys.prefix, version, *[str(member) for member, _ in waiting]],
                )
            )
            header = _served_header(reply, version or None)
        except BaseException as exc:  # handed to every waiter, which raises it
            for _, answer in waiting:
                if answer.done():  # a lookup cancelled meanwhile (its request timed out) wants nothing
                    continue
                if isinstance(exc, Exception):
                    answer.set_exception(exc)
                else:  # this call was cancelled (shutdown): so are its lookups
                    answer.cancel()
            if not isinstance(exc, Exception):
                raise
            return
        for i, (_, answer) in enumerate(waiting):
            if not answer.done():
                answer.set_result((header, reply[4 + 2 * i], reply[5 + 2 * i]))

    async def served(self) -> dict | None:
        """As :meth:`Lookup.served`."""
        version = await self.client.get(self.keys.current)
        return _served(
            version, await self.client.hgetall(self.keys.meta(version.decode())) if version else {}
        )
