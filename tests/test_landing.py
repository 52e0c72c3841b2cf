"""The landed-marker convention the DAGs' first task waits on: synth writes it, `jobrec land` checks and writes it."""

from __future__ import annotations

from pipeline.cli import main
from pipeline.landing import mark_landed, missing_raw_partitions
from pipeline.storage import LANDED_MARKER, RAW_TABLES
from pipeline.synth import generate_marketplace

DS = "2024-02-01"


def test_synth_lands_every_raw_table_with_its_marker(settings) -> None:
    generate_marketplace(settings.home, members=40, jobs=15, days=1, start=DS, seed=3)
    assert missing_raw_partitions(DS, settings) == []
    for table in RAW_TABLES:
        assert (settings.layout.raw(table, DS) / LANDED_MARKER).exists()


def test_a_partition_without_its_marker_or_folder_is_reported_with_its_path(settings) -> None:
    generate_marketplace(settings.home, members=40, jobs=15, days=1, start=DS, seed=3)
    (settings.layout.raw("applies", DS) / LANDED_MARKER).unlink()
    missing = missing_raw_partitions("2024-02-01", settings)
    assert [(m.table, m.reason) for m in missing] == [("applies", "no _SUCCESS")]
    assert str(missing[0]) == f"applies (no _SUCCESS: {settings.layout.raw('applies', DS) / LANDED_MARKER})"
    other_day = missing_raw_partitions("2024-02-02", settings)
    assert [(m.table, m.reason) for m in other_day] == [(t, "no folder") for t in RAW_TABLES]


def test_jobrec_land_checks_then_marks_a_day(settings, capsys, monkeypatch) -> None:
    monkeypatch.setenv("JOBREC_HOME", str(settings.home))
    generate_marketplace(settings.home, members=40, jobs=15, days=1, start=DS, seed=3)
    (settings.layout.raw("jobs", DS) / LANDED_MARKER).unlink()
    assert main(["land", "--ds", DS, "--check"]) == 1
    assert "not landed: jobs (no _SUCCESS" in capsys.readouterr().out
    assert main(["land", "--ds", DS]) == 0
    assert missing_raw_partitions(DS, settings) == []
    assert mark_landed(DS, settings, ("jobs",)) == [settings.layout.raw("jobs", DS) / LANDED_MARKER]
    assert main(["land", "--ds", "2024-02-03"]) == 2  # no files at all: a clear error, nothing marked
    assert "raw partition missing" in capsys.readouterr().err
