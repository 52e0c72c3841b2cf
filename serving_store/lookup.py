"""Look up a member's served list: one round trip (a Lua script reads pointer, list and metadata
atomically), so a reader never combines one version's pointer with another version's list, and never reads
the lists of a version whose metadata does not say ``complete`` (being written, being deleted, or lost)."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from serving_store import codec
from serving_store.keys import Keys

INT64_MAX = 2**63 - 1
_INT64_DIGITS = len(str(INT64_MAX))  # 19

_LOOKUP = """
local v = ARGV[3]
if v == '' then
  v = redis.call('GET', KEYS[1])
  if not v then return false end
end
local base = ARGV[1] .. ':v' .. v
local meta = redis.call('HMGET', base .. ':meta', 'ds', 'model_version', 'status')
if meta[3] ~= 'complete' then
  return {v, '', '', meta[1] or '', meta[2] or '', meta[3] or ''}
end
local val = redis.call('GET', base .. ':m:' .. ARGV[2])
local source = 'member'
if not val then
  val = redis.call('GET', base .. ':fallback')
  source = 'fallback'
end
return {v, source, val or '', meta[1] or '', meta[2] or '', meta[3]}
"""


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


def _recommendations(
    member: int, limit: int | None, reply, version: str | None, explain: bool = False
) -> Recommendations:
    """Decode the lookup script's reply (with ``explain``, the parts too)."""
    if not reply:
        raise NothingPublished("no recommendations are published yet; run `jobrec publish --ds YYYY-MM-DD`")
    served, source, value, ds, model_version, status = (
        x.decode() if isinstance(x, bytes) and i != 2 else x for i, x in enumerate(reply)
    )
    if version is not None and not status:
        raise NothingPublished(f"version {version} does not exist (deleted or never written)")
    if status != "complete":
        raise NothingPublished(
            f"version {served} is not complete (status {status or 'missing'}): its lists are not served; "
            "publish again (`jobrec publish --ds YYYY-MM-DD`) or roll back (`jobrec rollback`)"
        )
    job_ids, scores = codec.decode_lists(value, limit) if value else ([], [])
    parts = codec.decode_parts_lists(value, limit) if explain and value else None
    return Recommendations(
        member_id=member,
        job_ids=job_ids,
        scores=scores,
        version=served,
        ds=ds,
        model_version=model_version,
        source=source,
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
        reply = self._script(keys=[self.keys.current], args=[self.keys.prefix, str(member), version or ""])
        return _recommendations(member, limit, reply, version, explain)

    def served(self) -> dict | None:
        """The served version's metadata (version, ds, model_version, members, ...) or ``None``."""
        version = self.client.get(self.keys.current)
        return _served(version, self.client.hgetall(self.keys.meta(version.decode())) if version else {})


class AsyncLookup:
    """:class:`Lookup` on a ``redis.asyncio`` client (used by the HTTP service)."""

    def __init__(self, client, keys: Keys | None = None) -> None:
        self.client = client
        self.keys = keys or Keys()
        self._script = client.register_script(_LOOKUP)

    async def get(
        self, member_id: int | str, limit: int | None = None, *, version: str | None = None,
        explain: bool = False,
    ) -> Recommendations:
        """As :meth:`Lookup.get`."""
        member = _check(member_id, limit)
        reply = await self._script(
            keys=[self.keys.current], args=[self.keys.prefix, str(member), version or ""]
        )
        return _recommendations(member, limit, reply, version, explain)

    async def served(self) -> dict | None:
        """As :meth:`Lookup.served`."""
        version = await self.client.get(self.keys.current)
        return _served(
            version, await self.client.hgetall(self.keys.meta(version.decode())) if version else {}
        )
