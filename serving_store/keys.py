"""Key names of the serving store, in one place (prefix, version), so no f-string key is spread around.

Layout under a prefix (default ``jobrec``)::

    {prefix}:current              string  the served version (the pointer readers follow)
    {prefix}:history              list    versions the pointer has pointed at, newest first (for rollback)
    {prefix}:versions             zset    every written version, scored by its sequence number
    {prefix}:seq                  string  counter handing out version numbers
    {prefix}:v{N}:meta            hash    ds, model_version, members, status (writing|complete|deleting), ...
    {prefix}:v{N}:m:{member_id}   string  the member's packed list (see ``serving_store.codec``)
    {prefix}:v{N}:fallback        string  the packed fallback list for members without a list

A version is a decimal sequence number; member IDs are written in decimal.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "jobrec"


@dataclass(frozen=True)
class Keys:
    """Key names under ``prefix``; ``version`` arguments are the decimal version strings (e.g. ``"7"``)."""

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

    def version_base(self, version: str) -> str:
        """``{prefix}:v{N}``: every key of one version starts with this (used by the Lua scripts too)."""
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
