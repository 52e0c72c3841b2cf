"""Key names of the serving store, in one place (prefix, version), so no f-string key is spread around.

Layout under a prefix (default ``jobrec``)::

    {prefix}:current              string  the served version (the pointer readers follow)
    {prefix}:history              list    versions the pointer has pointed at, newest first (for rollback)
    {prefix}:versions             zset    every written version, scored by its sequence number
    {prefix}:seq                  string  counter handing out sequence numbers (ordering only)
    {prefix}:store                hash    marks a store whose bookkeeping is intact (see publisher.sweep_unlisted)
    {prefix}:v{V}:meta            hash    ds, model_version, members, status (writing|complete|deleting), ...
    {prefix}:v{V}:m:{member_id}   string  the member's packed list (see ``serving_store.codec``)
    {prefix}:v{V}:fallback        string  the packed fallback list for members without a list

A version id ``V`` is ``<ds digits>-<seq>-<8 random hex digits>`` (e.g. ``20260105-7-3fa9c2d1``; older
stores hold plain decimal ids): never reused, even when Redis loses its data and ``seq`` starts again.
Member IDs are written in decimal.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "jobrec"


@dataclass(frozen=True)
class Keys:
    """Key names under ``prefix``; ``version`` arguments are version id strings (e.g. ``"20260105-7-3fa9c2d1"``)."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not self.prefix or any(c in self.prefix for c in " *?[]"):
            raise ValueError(
                f"key prefix must be non-empty without spaces or glob characters; got {self.prefix!r}"
            )

    @property
    def current(self) -> str:
        return f"{self.prefix}:current"

    @property
    def history(self) -> str:
        return f"{self.prefix}:history"

    @property
    def versions(self) -> str:
        return f"{self.prefix}:versions"

    @property
    def seq(self) -> str:
        return f"{self.prefix}:seq"

    @property
    def store(self) -> str:
        return f"{self.prefix}:store"

    @property
    def versions_pattern(self) -> str:
        """SCAN pattern matching every key of every version (and possibly other keys: check the shape)."""
        return f"{self.prefix}:v*"

    def version_base(self, version: str) -> str:
        """``{prefix}:v{V}``: every key of one version starts with this (used by the Lua scripts too)."""
        return f"{self.prefix}:v{version}"

    def meta(self, version: str) -> str:
        return f"{self.version_base(version)}:meta"

    def member_prefix(self, version: str) -> str:
        """Member keys are this string followed by the decimal member ID."""
        return f"{self.version_base(version)}:m:"

    def member(self, version: str, member_id: int) -> str:
        return f"{self.member_prefix(version)}{int(member_id)}"

    def fallback(self, version: str) -> str:
        return f"{self.version_base(version)}:fallback"

    def version_pattern(self, version: str) -> str:
        """SCAN pattern matching every key of one version."""
        return f"{self.version_base(version)}:*"
