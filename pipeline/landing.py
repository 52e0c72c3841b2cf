"""Has a day's raw data landed? The landed-marker convention both DAGs wait on.

A producer writes a day's files of a raw table into ``raw/<table>/ds=YYYY-MM-DD/`` and, once every file of
that day is complete, an empty ``_SUCCESS`` file in the same folder (what Spark and Hadoop jobs write on
commit; ``jobrec synth`` writes it too). A partition without the marker is still being written (or late):
the pipeline waits for it instead of reading half a day.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Settings


@dataclass(frozen=True)
class MissingPartition:
    """A raw table whose partition for the day has not landed: ``reason`` is "no folder" or "no _SUCCESS"."""

    table: str
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.table} ({self.reason}: {self.path})"


def missing_raw_partitions(ds: str, settings: Settings) -> list[MissingPartition]:
    """The raw tables whose ``ds`` partition has not landed yet (empty when the whole day is there)."""
    from pipeline.storage import LANDED_MARKER, RAW_TABLES

    missing = []
    for table in RAW_TABLES:
        part = settings.layout.raw(table, ds)
        if not part.is_dir():
            missing.append(MissingPartition(table, part, "no folder"))
        elif not (part / LANDED_MARKER).exists():
            missing.append(MissingPartition(table, part / LANDED_MARKER, f"no {LANDED_MARKER}"))
    return missing


def mark_landed(ds: str, settings: Settings, tables: tuple[str, ...] | None = None) -> list[Path]:
    """Write the ``_SUCCESS`` marker of each raw ``tables`` partition of ``ds`` that exists (all by default).

    For producers that land files by other means (a copy, a sync): ``jobrec land --ds D``.
    Raises ``FileNotFoundError`` naming the folder when a partition has no folder at all.
    """
    from pipeline.storage import LANDED_MARKER, RAW_TABLES

    written = []
    for table in tables or RAW_TABLES:
        part = settings.layout.raw(table, ds)
        if not part.is_dir():
            raise FileNotFoundError(f"raw partition missing: {part}; land the {table} files before marking them")
        marker = part / LANDED_MARKER
        marker.touch()
        written.append(marker)
    return written
