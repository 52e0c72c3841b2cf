"""Faults found by probing validation (issue 15, items 1, 3, 4, 5), each reproduced with the real component.

- A failed re-validation (a raw column dropped after the day validated) must not leave the old clean data:
  validation removes it and records a verdict that is not a pass; feature generation refuses the day.
- A Parquet file with an intact footer and corrupt pages fails with exit code 2 naming the file.
- Range and content rules: non-positive IDs, positions outside 1..1000 and bad channel strings are
  quarantined, each with its reason.
- A day whose tables are empty fails unless ``--allow-empty`` / ``JOBREC_ALLOW_EMPTY_DAY`` says it is expected.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main as jobrec
from pipeline.config import Settings
from pipeline.features import input_path, load_arrow_input
from pipeline.raw_schema import RAW_SCHEMAS
from pipeline.storage import RAW_TABLES, read_partition, write_partition
from pipeline.synth import generate_marketplace
from pipeline.validation import NotValidatedError, read_clean, validate_day, validation_verdict

DS = "2026-05-04"
CLI = [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main())"]


@pytest.fixture(scope="module")
def marketplace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("faults")
    generate_marketplace(home, members=80, jobs=30, days=1, start=DS, seed=4)
    return home


@pytest.fixture
def settings(marketplace: Path, tmp_path: Path) -> Settings:
    """A private copy of the small marketplace (one day), so a test can damage it."""
    home = tmp_path / "home"
    shutil.copytree(marketplace, home)
    return Settings.from_env(home=home, max_bad_fraction=1.0)


def _raw_file(settings: Settings, table: str) -> Path:
    return settings.layout.raw(table, DS) / "part-00000.parquet"


def _validated_dirs(settings: Settings) -> list[Path]:
    return [settings.layout.validated(t, DS) for t in RAW_TABLES if settings.layout.validated(t, DS).exists()]


# ------------------------------------------------------------------ 1. stale clean data after a failed run


def test_failed_revalidation_after_a_raw_column_is_dropped_removes_the_clean_data_and_features_refuse_the_day(
    settings, capsys
):
    home = str(settings.home)
    assert jobrec(["validate", "--ds", DS, "--home", home]) == 0
    assert len(_validated_dirs(settings)) == 4
    path = _raw_file(settings, "impressions")
    pq.write_table(pq.read_table(path).drop_columns(["channel"]), path)
    capsys.readouterr()

    assert jobrec(["validate", "--ds", DS, "--home", home]) == 2
    assert "missing column 'channel'" in capsys.readouterr().err
    assert _validated_dirs(settings) == []  # the old clean copies no longer match raw: gone
    verdict = validation_verdict(DS, settings)  # the verdict of the run before (a pass) is replaced
    assert verdict["ok"] is False and "missing column 'channel'" in verdict["error"]

    # Feature generation refuses the day before starting Spark, saying what to do; so do the Arrow readers.
    assert jobrec(["features", "--ds", DS, "--home", home]) == 2
    err = capsys.readouterr().err
    assert "has not passed validation" in err and f"jobrec validate --ds {DS}" in err
    assert "missing column 'channel'" in err
    with pytest.raises(NotValidatedError, match="has not passed validation"):
        load_arrow_input("members", DS, settings)
    with pytest.raises(FileNotFoundError, match=f"jobrec validate --ds {DS}"):
        read_clean("impressions", DS, settings)


def test_a_day_validates_again_once_its_raw_data_is_fixed(settings):
    path = _raw_file(settings, "impressions")
    original = pq.read_table(path)
    pq.write_table(original.drop_columns(["channel"]), path)
    with pytest.raises(ValueError, match="missing column"):
        validate_day(DS, settings)
    pq.write_table(original, path)
    assert validate_day(DS, settings)["ok"]
    assert input_path("impressions", DS, settings) == settings.layout.validated("impressions", DS)
    assert read_clean("impressions", DS, settings).num_rows == original.num_rows


def test_validation_interrupted_while_writing_clean_data_leaves_no_pass(settings, monkeypatch):
    assert validate_day(DS, settings)["ok"]
    import pipeline.validation as validation

    real_write = validation.write_partition

    def interrupted(target, table, **kwargs):
        if target == settings.layout.validated("impressions", DS):
            raise KeyboardInterrupt  # e.g. the task is stopped after members and jobs were replaced
        return real_write(target, table, **kwargs)

    monkeypatch.setattr(validation, "write_partition", interrupted)
    with pytest.raises(KeyboardInterrupt):
        validate_day(DS, settings)
    assert _validated_dirs(settings) == []
    assert validation_verdict(DS, settings)["ok"] is False
    with pytest.raises(NotValidatedError, match=f"jobrec validate --ds {DS}"):
        input_path("members", DS, settings)


def test_a_run_killed_mid_validation_leaves_a_verdict_that_is_not_a_pass(settings):
    validate_day(DS, settings)
    # What a SIGKILL after the first step leaves: the "running" verdict, the old clean partitions.
    settings.layout.validation_report(DS).write_text(json.dumps({"ds": DS, "ok": False, "status": "running"}))
    with pytest.raises(NotValidatedError, match="did not finish"):
        input_path("jobs", DS, settings)


def test_clean_data_without_a_verdict_is_not_read(settings):
    validate_day(DS, settings)
    settings.layout.validation_report(DS).unlink()  # e.g. validated by a version that wrote no verdict
    with pytest.raises(NotValidatedError, match="no validation verdict"):
        input_path("applies", DS, settings)


# ------------------------------------------------------------------------- 3. corrupt pages, intact footer


def _corrupt_pages(path: Path) -> None:
    """Rewrite ``path`` with snappy pages, then overwrite bytes inside each column's first page (the footer,
    and so the schema, stays readable)."""
    pq.write_table(pq.read_table(path), path, compression="snappy")
    metadata = pq.ParquetFile(path).metadata
    data = bytearray(path.read_bytes())
    for column in range(metadata.num_columns):
        chunk = metadata.row_group(0).column(column)
        start = chunk.dictionary_page_offset or chunk.data_page_offset
        end = start + chunk.total_compressed_size
        middle = start + min(40, chunk.total_compressed_size // 2)
        data[middle:min(middle + 200, end)] = b"\xff" * (min(middle + 200, end) - middle)
    path.write_bytes(bytes(data))


def test_corrupt_page_data_fails_with_exit_code_2_naming_the_file(settings):
    path = _raw_file(settings, "impressions")
    _corrupt_pages(path)
    pq.read_schema(path)  # the probe: the footer is intact ...
    with pytest.raises(OSError):
        pq.read_table(path)  # ... the pages are not

    result = subprocess.run([*CLI, "validate", "--ds", DS, "--home", str(settings.home)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert str(path) in result.stderr and "corrupt" in result.stderr.lower()
    assert _validated_dirs(settings) == []


# --------------------------------------------------------------------------------- 4. range and content


def _append(settings: Settings, table: str, rows: list[dict]) -> None:
    raw = read_partition(settings.layout.raw(table, DS))
    extra = pa.Table.from_pylist(rows, schema=RAW_SCHEMAS[table])
    write_partition(settings.layout.raw(table, DS), pa.concat_tables([raw, extra]))


def _reasons_by(quarantine: pa.Table, column: str) -> dict:
    return dict(zip(quarantine.column(column).to_pylist(), quarantine.column("reason").to_pylist(), strict=True))


def test_out_of_range_ids_and_positions_and_bad_channels_are_quarantined_with_their_reason(settings):
    members = read_partition(settings.layout.raw("members", DS))
    jobs = read_partition(settings.layout.raw("jobs", DS))
    impressions = read_partition(settings.layout.raw("impressions", DS))
    member, job, shown = members.to_pylist()[0], jobs.to_pylist()[0], impressions.to_pylist()[0]
    _append(settings, "members", [{**member, "member_id": -7}, {**member, "member_id": 0}])
    _append(settings, "jobs", [{**job, "job_id": 900_000_001, "company_id": 0},
                               {**job, "job_id": 900_000_002, "title": "Engineer\u202eTXT.exe"}])
    cases = {  # impression_id -> (changes, expected reason or None for clean)
        -3: ({}, "id_not_positive"),
        1001: ({"member_id": -7}, "id_not_positive"),
        1002: ({"position": -5}, "position_out_of_range"),
        1003: ({"position": 0}, "position_out_of_range"),
        1004: ({"position": 2**31 - 1}, "position_out_of_range"),
        1005: ({"position": 1001}, "position_out_of_range"),
        1006: ({"channel": ""}, "invalid_channel"),
        1007: ({"channel": "x" * 10_240}, "invalid_channel"),
        1008: ({"channel": "web\x00"}, "invalid_channel"),
        1009: ({"channel": "web\u202e"}, "invalid_channel"),
        1010: ({"channel": "jymbii web"}, "invalid_channel"),
        1011: ({"position": 1000, "channel": "partner-feed_2.v1:eu"}, None),  # the bounds themselves pass
        1012: ({"position": 1}, None),
    }
    _append(settings, "impressions", [{**shown, **changes, "impression_id": i} for i, (changes, _) in cases.items()])
    _append(settings, "applies", [{"member_id": -7, "job_id": shown["job_id"], "ts": shown["ts"]}])

    report = validate_day(DS, settings)

    quarantine = {t: read_partition(settings.layout.quarantine(t, DS)) for t in RAW_TABLES}
    assert _reasons_by(quarantine["members"], "member_id") == {-7: "id_not_positive", 0: "id_not_positive"}
    assert _reasons_by(quarantine["jobs"], "job_id") == {900_000_001: "id_not_positive",
                                                         900_000_002: "invalid_text"}
    assert _reasons_by(quarantine["impressions"], "impression_id") == {
        i: reason for i, (_, reason) in cases.items() if reason
    }
    assert quarantine["applies"].column("reason").to_pylist() == ["id_not_positive"]
    assert report["tables"]["impressions"]["reasons"] == {
        "id_not_positive": 2, "position_out_of_range": 4, "invalid_channel": 5
    }
    clean = read_clean("impressions", DS, settings)
    assert {1011, 1012} <= set(clean.column("impression_id").to_pylist())
    for table in RAW_TABLES:  # nothing silently dropped, and no non-positive ID reaches the clean data
        raw_rows = read_partition(settings.layout.raw(table, DS)).num_rows
        assert read_clean(table, DS, settings).num_rows + quarantine[table].num_rows == raw_rows
        for column in ("member_id", "job_id", "impression_id", "company_id"):
            if column in RAW_SCHEMAS[table].names:
                assert pc.min(read_clean(table, DS, settings).column(column)).as_py() > 0


def test_skills_with_control_characters_or_too_many_items_are_quarantined(settings):
    member = read_partition(settings.layout.raw("members", DS)).to_pylist()[0]
    _append(settings, "members", [
        {**member, "member_id": 800_000_001, "skills": ["python", "sql\x1b[31m"]},
        {**member, "member_id": 800_000_002, "skills": [f"s{i}" for i in range(1001)]},
        {**member, "member_id": 800_000_003, "skills": [], "title": "x" * 513},
        {**member, "member_id": 800_000_004, "skills": [], "title": "Ingénieure données"},  # clean
    ])
    validate_day(DS, settings)
    quarantine = read_partition(settings.layout.quarantine("members", DS))
    assert _reasons_by(quarantine, "member_id") == {
        800_000_001: "invalid_text", 800_000_002: "invalid_text", 800_000_003: "invalid_text"
    }
    assert 800_000_004 in read_clean("members", DS, settings).column("member_id").to_pylist()


def test_a_clean_synthetic_day_still_has_nothing_quarantined(settings):
    report = validate_day(DS, Settings.from_env(home=settings.home, max_bad_fraction=0.0))
    assert report["ok"] and report["quarantined"] == 0 and report["rows"] > 0


# ------------------------------------------------------------------------------------------- 5. empty day


def _empty_day(settings: Settings) -> None:
    for table in RAW_TABLES:
        write_partition(settings.layout.raw(table, DS), RAW_SCHEMAS[table].empty_table(), landed_marker=True)


def test_an_empty_day_fails_validation_unless_allowed_by_the_flag(settings, capsys):
    home = str(settings.home)
    assert jobrec(["validate", "--ds", DS, "--home", home]) == 0
    _empty_day(settings)
    capsys.readouterr()

    assert jobrec(["validate", "--ds", DS, "--home", home]) == 2
    err = capsys.readouterr().err
    assert "no clean rows in members" in err and "applies" in err
    assert "--allow-empty" in err and "JOBREC_ALLOW_EMPTY_DAY" in err
    assert _validated_dirs(settings) == []  # the previous run's clean data went with the failure
    assert validation_verdict(DS, settings)["empty_tables"] == list(RAW_TABLES)

    assert jobrec(["validate", "--ds", DS, "--home", home, "--allow-empty"]) == 0
    assert "0 rows, 0 quarantined" in capsys.readouterr().out
    assert all(read_clean(t, DS, settings).num_rows == 0 for t in RAW_TABLES)


def test_one_empty_table_fails_the_day_too(settings):
    write_partition(settings.layout.raw("applies", DS), RAW_SCHEMAS["applies"].empty_table())
    with pytest.raises(ValueError, match=r"no clean rows in applies \(0 raw rows"):
        validate_day(DS, settings)


def test_an_empty_day_passes_when_the_setting_says_it_is_expected(settings, monkeypatch, capsys):
    _empty_day(settings)
    monkeypatch.setenv("JOBREC_ALLOW_EMPTY_DAY", "true")
    assert Settings.from_env().allow_empty_day is True
    assert jobrec(["validate", "--ds", DS, "--home", str(settings.home)]) == 0
    monkeypatch.setenv("JOBREC_ALLOW_EMPTY_DAY", "sometimes")
    with pytest.raises(ValueError, match="JOBREC_ALLOW_EMPTY_DAY must be true or false"):
        Settings.from_env()
