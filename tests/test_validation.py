"""Raw-data validation: schema breaks fail loudly, each kind of bad row is quarantined with its reason."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main as jobrec
from pipeline.config import Settings
from pipeline.raw_schema import RAW_SCHEMAS
from pipeline.storage import RAW_TABLES, read_partition, write_partition
from pipeline.synth import generate_marketplace
from pipeline.validation import ValidationError, read_clean, validate_day

DAY1, DAY2 = "2026-03-01", "2026-03-02"
DAY2_START = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def marketplace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("market")
    generate_marketplace(home, members=300, jobs=120, days=2, start=DAY1, seed=11)
    return home


@pytest.fixture
def home_settings(marketplace: Path, tmp_path: Path) -> Settings:
    """A private copy of the tiny marketplace, so tests can damage it."""
    home = tmp_path / "home"
    shutil.copytree(marketplace, home)
    return Settings.from_env(home=home, max_bad_fraction=1.0)


def _raw(settings: Settings, table: str, ds: str = DAY2) -> pa.Table:
    return read_partition(settings.layout.raw(table, ds))


def _append_rows(settings: Settings, table: str, rows: list[dict], ds: str = DAY2) -> None:
    extra = pa.Table.from_pylist(rows, schema=RAW_SCHEMAS[table])
    write_partition(settings.layout.raw(table, ds), pa.concat_tables([_raw(settings, table, ds), extra]))


def _pairs(table: pa.Table) -> set[tuple[int, int]]:
    return set(zip(table.column("member_id").to_pylist(), table.column("job_id").to_pylist(), strict=True))


def _impression_of(settings: Settings, ds: str, other_ds: str, from_end: bool) -> dict:
    """An impression of ``ds`` (late in the day if ``from_end``, else mid-day) whose member-job pair is not
    shown on ``other_ds``, so label-window effects across days cannot interfere with the test."""
    table = _raw(settings, "impressions", ds)
    other = _pairs(_raw(settings, "impressions", other_ds))
    rows = range(table.num_rows - 1, -1, -1) if from_end else range(table.num_rows // 2, table.num_rows)
    for row in rows:
        candidate = table.slice(row, 1).to_pylist()[0]
        if (candidate["member_id"], candidate["job_id"]) not in other:
            return candidate
    raise AssertionError("no suitable impression in the fixture")


def _quarantine(settings: Settings, table: str, ds: str = DAY2) -> pa.Table:
    return read_partition(settings.layout.quarantine(table, ds))


def test_generated_day_passes_with_nothing_quarantined_and_clean_equals_raw(home_settings):
    report = validate_day(DAY2, home_settings)
    assert report["ok"] and report["quarantined"] == 0
    for table in RAW_TABLES:
        assert read_clean(table, DAY2, home_settings).equals(_raw(home_settings, table))
        quarantine = _quarantine(home_settings, table)
        assert quarantine.num_rows == 0 and "reason" in quarantine.column_names


def test_each_kind_of_bad_row_is_quarantined_with_its_reason(home_settings):
    s = home_settings
    member = _raw(s, "members").slice(0, 1).to_pylist()[0]
    job = _raw(s, "jobs").slice(0, 1).to_pylist()[0]
    impression = _impression_of(s, DAY2, DAY1, from_end=False)
    day1_impression = _impression_of(s, DAY1, DAY2, from_end=True)
    inside = DAY2_START + dt.timedelta(hours=12)
    after_day = DAY2_START + dt.timedelta(days=1, hours=1)

    _append_rows(s, "members", [
        {**member, "member_id": None},                                   # null_id
        {**member, "member_id": 99_000_001, "region": None},              # null_value
        {**member, "member_id": 99_000_002, "updated_at": after_day},     # ts_outside_day
        {**member},                                                       # duplicate_id
    ])
    _append_rows(s, "jobs", [
        {**job, "job_id": None},                                          # null_id
        {**job, "job_id": 98_000_001, "expires_at": DAY2_START - dt.timedelta(hours=1)},  # ts_outside_day
    ])
    _append_rows(s, "impressions", [
        {**impression, "impression_id": 1, "member_id": None},            # null_id
        {**impression, "impression_id": 2, "channel": None},              # null_value
        {**impression, "impression_id": 3, "ts": after_day},              # ts_outside_day
        {**impression},                                                   # duplicate_impression_id
        {**impression, "impression_id": 4, "member_id": 99_000_001},      # unknown_member (its row was bad)
        {**impression, "impression_id": 5, "job_id": 98_000_001},         # unknown_job (not active on DAY2)
    ])
    _append_rows(s, "applies", [
        {"member_id": impression["member_id"], "job_id": None, "ts": inside},             # null_id
        {"member_id": impression["member_id"], "job_id": impression["job_id"],
         "ts": DAY2_START - dt.timedelta(seconds=1)},                                      # ts_outside_day
        {"member_id": 77_000_000, "job_id": impression["job_id"], "ts": inside},         # unknown_member
        {"member_id": impression["member_id"], "job_id": 77_000_000, "ts": inside},      # unknown_job
        {"member_id": impression["member_id"], "job_id": impression["job_id"],
         "ts": impression["ts"] - dt.timedelta(seconds=1)},                                # before its impression
        # An apply to yesterday's impression within the one-day label window is valid ...
        {"member_id": day1_impression["member_id"], "job_id": day1_impression["job_id"],
         "ts": day1_impression["ts"] + dt.timedelta(hours=23)},
    ])

    report = validate_day(DAY2, s)

    expected = {
        "members": {"null_id": 1, "null_value": 1, "ts_outside_day": 1, "duplicate_id": 1},
        "jobs": {"null_id": 1, "ts_outside_day": 1},
        "impressions": {"null_id": 1, "null_value": 1, "ts_outside_day": 1, "duplicate_impression_id": 1,
                        "unknown_member": 1, "unknown_job": 1},
        "applies": {"null_id": 1, "ts_outside_day": 1, "unknown_member": 1, "unknown_job": 1,
                    "apply_without_impression": 1},
    }
    for table, reasons in expected.items():
        quarantine = _quarantine(s, table)
        assert sorted(quarantine.column("reason").to_pylist()) == sorted(
            r for r, n in reasons.items() for _ in range(n)
        ), table
        assert quarantine.column_names == RAW_SCHEMAS[table].names + ["reason"]
        assert report["tables"][table]["reasons"] == reasons
        # Nothing silently dropped: every raw row is either clean or quarantined.
        assert read_clean(table, DAY2, s).num_rows + quarantine.num_rows == _raw(s, table).num_rows
    impressions_q = _quarantine(s, "impressions")
    duplicate = impressions_q.filter(pc.equal(impressions_q.column("reason"), "duplicate_impression_id"))
    assert duplicate.column("impression_id").to_pylist() == [impression["impression_id"]]
    clean_ids = read_clean("impressions", DAY2, s).column("impression_id").to_pylist()
    assert clean_ids.count(impression["impression_id"]) == 1  # the first copy is kept
    clean_applies = read_clean("applies", DAY2, s).to_pylist()
    assert {"member_id": day1_impression["member_id"], "job_id": day1_impression["job_id"],
            "ts": day1_impression["ts"] + dt.timedelta(hours=23)} in clean_applies


def test_apply_beyond_the_label_window_is_quarantined(home_settings):
    day1_impression = _impression_of(home_settings, DAY1, DAY2, from_end=False)
    late = day1_impression["ts"] + dt.timedelta(days=1, seconds=1)
    assert late < DAY2_START + dt.timedelta(days=1)
    _append_rows(home_settings, "applies", [
        {"member_id": day1_impression["member_id"], "job_id": day1_impression["job_id"], "ts": late}
    ])
    report = validate_day(DAY2, home_settings)
    assert report["tables"]["applies"]["reasons"] == {"apply_without_impression": 1}


def _rewrite_first_file(settings: Settings, table: str, transform) -> Path:
    path = settings.layout.raw(table, DAY2) / "part-00000.parquet"
    pq.write_table(transform(pq.read_table(path)), path)
    return path


def test_missing_column_fails_naming_file_and_column(home_settings):
    path = _rewrite_first_file(home_settings, "impressions", lambda t: t.drop_columns(["position"]))
    with pytest.raises(ValidationError, match=r"missing column 'position'") as failure:
        validate_day(DAY2, home_settings)
    assert str(path) in str(failure.value)
    assert not home_settings.layout.quarantine("impressions", DAY2).exists()  # nothing written on a schema break


def test_mistyped_column_fails_naming_file_column_and_types(home_settings):
    def member_id_as_string(table: pa.Table) -> pa.Table:
        index = table.schema.get_field_index("member_id")
        return table.set_column(index, "member_id", table.column("member_id").cast(pa.string()))

    path = _rewrite_first_file(home_settings, "members", member_id_as_string)
    with pytest.raises(ValidationError) as failure:
        validate_day(DAY2, home_settings)
    message = str(failure.value)
    assert str(path) in message and "'member_id'" in message and "string" in message and "int64" in message


def test_bad_fraction_above_threshold_fails_after_writing_quarantine(home_settings):
    s = Settings.from_env(home=home_settings.home, max_bad_fraction=0.01)
    validate_day(DAY2, s)  # a clean run leaves validated partitions behind ...
    impressions = _raw(s, "impressions")
    bad = impressions.slice(0, 20).set_column(
        impressions.schema.get_field_index("job_id"), "job_id", pa.array([55_000_000] * 20, pa.int64())
    )
    bad = bad.set_column(0, "impression_id", pa.array(np.arange(20) + 1, pa.int64()))
    write_partition(s.layout.raw("impressions", DAY2), pa.concat_tables([impressions, bad]))

    with pytest.raises(ValidationError, match="impressions: 20/") as failure:
        validate_day(DAY2, s)
    assert failure.value.report["tables"]["impressions"]["reasons"] == {"unknown_job": 20}
    assert _quarantine(s, "impressions").num_rows == 20
    with pytest.raises(FileNotFoundError, match="jobrec validate"):  # ... which a failed run removes
        read_clean("impressions", DAY2, s)
    # The same data passes when the threshold allows it.
    assert validate_day(DAY2, Settings.from_env(home=s.home, max_bad_fraction=0.05))["quarantined"] == 20


def test_read_clean_before_validation_says_to_run_validate(home_settings):
    with pytest.raises(FileNotFoundError, match=f"jobrec validate --ds {DAY2}"):
        read_clean("applies", DAY2, home_settings)
    assert not home_settings.layout.validated("applies", DAY2).exists()


def test_validate_cli_prints_counts_and_fails_with_exit_code_2_on_a_schema_break(home_settings, capsys):
    home = str(home_settings.home)
    assert jobrec(["validate", "--ds", DAY2, "--home", home]) == 0
    assert "quarantined" in capsys.readouterr().out
    _rewrite_first_file(home_settings, "applies", lambda t: t.drop_columns(["ts"]))
    assert jobrec(["validate", "--ds", DAY2, "--home", home]) == 2
    assert "missing column 'ts'" in capsys.readouterr().err


def test_missing_raw_partition_says_what_to_do(home_settings):
    with pytest.raises(FileNotFoundError, match="raw partition missing.*jobrec synth"):
        validate_day("2026-04-01", home_settings)
