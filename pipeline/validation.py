"""Validate a day of raw partitions: schema checks, row checks, quarantine, clean copies (``jobrec validate``).

``validate_day(ds, settings)`` checks ``raw/<table>/ds=D`` for the four raw tables:

1. Schema: every Parquet file must hold every contract column (``pipeline.raw_schema``) with an acceptable
   type; otherwise :class:`ValidationError` names the file and the column, before anything is written.
2. Rows: each rejected row gets one reason, the first that applies, in this order: ``null_id``,
   ``null_value`` (required non-ID field), ``ts_outside_day`` (impression/apply ts not in D, member updated
   after D, job not active during D), ``duplicate_impression_id`` / ``duplicate_id`` (a repeated
   impression/member/job ID: the first row is kept, later copies rejected), ``unknown_member`` / ``unknown_job``
   (not among the day's clean members/jobs snapshot), ``apply_without_impression`` (no clean impression of that
   member and job at or before the apply and within ``settings.label_window_days``; impressions of the
   previous days count too, from their validated partitions, else from their raw ones).
3. Quarantine: ``quarantine/<table>/ds=D/`` gets the rejected rows with their original columns plus
   ``reason`` (written for every table, empty when nothing was rejected, so a re-run replaces it).
4. Clean rows: **validation never rewrites raw**. The accepted rows of each table are written atomically to
   ``validated/<table>/ds=D/`` (same schema as raw, types normalised to the contract); downstream readers
   use :func:`read_clean` (or read that path, ``settings.layout.validated(table, ds)``, from Spark). Nothing is dropped
   silently: raw rows = clean rows + quarantined rows, per table.
5. Threshold: when a table's quarantined fraction exceeds ``settings.max_bad_fraction`` the run fails with
   :class:`ValidationError` after writing the quarantine, and the day's ``validated/`` partitions are removed so
   no stale clean data is read.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import Settings
from pipeline.raw_schema import ID_COLUMNS, RAW_SCHEMAS, REQUIRED_COLUMNS, type_matches
from pipeline.storage import RAW_TABLES, Layout, check_ds, shift_ds, write_partition

log = logging.getLogger(__name__)

# Reason codes: index 0 means "clean"; the order is the priority when several apply.
REASONS = (
    None,
    "null_id",
    "null_value",
    "ts_outside_day",
    "duplicate_impression_id",
    "duplicate_id",
    "unknown_member",
    "unknown_job",
    "apply_without_impression",
)
_CODE = {name: code for code, name in enumerate(REASONS) if name}
US_PER_DAY = 86_400_000_000


class ValidationError(ValueError):
    """A raw partition breaks its contract (schema) or has too many bad rows (``report`` holds the counts)."""

    def __init__(self, message: str, report: dict | None = None) -> None:
        super().__init__(message)
        self.report = report


def read_clean(table: str, ds: str, settings: Settings) -> pa.Table:
    """The rows of raw ``table`` for ``ds`` that passed validation (raw minus quarantine), contract schema.

    Raises ``FileNotFoundError`` saying to run ``jobrec validate --ds`` when the day was not validated (or
    failed validation).
    """
    if table not in RAW_SCHEMAS:
        raise ValueError(f"unknown raw table {table!r}; expected one of {', '.join(RAW_TABLES)}")
    path = settings.layout.validated(table, ds)
    if not path.is_dir():
        raise FileNotFoundError(
            f"no validated {table} for {ds} at {path}: run `jobrec validate --ds {ds}` first "
            "(and fix the raw data if it failed)"
        )
    files = sorted(p for p in path.glob("*.parquet") if not p.name.startswith((".", "_")))
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else RAW_SCHEMAS[table].empty_table()


def read_raw(table: str, ds: str, settings: Settings) -> pa.Table:
    """Read a raw partition, checking every file's schema; columns are cast to the contract types.

    Raises ``FileNotFoundError`` for a missing partition, :class:`ValidationError` naming the file and
    column for a missing or mistyped column.
    """
    part = settings.layout.raw(table, ds)
    schema = RAW_SCHEMAS[table]
    if not part.is_dir():
        raise FileNotFoundError(
            f"raw partition missing: {part}; land the {table} logs for {ds} there "
            f"(or generate a synthetic day with `jobrec synth`)"
        )
    files = sorted(p for p in part.glob("*.parquet") if not p.name.startswith((".", "_")))
    if not files:
        raise FileNotFoundError(f"raw partition has no Parquet files: {part}")
    pieces = []
    for path in files:
        try:
            actual = pq.read_schema(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise ValidationError(f"{path}: not a readable Parquet file ({exc})") from exc
        for field in schema:
            index = actual.get_field_index(field.name)
            if index < 0:
                raise ValidationError(f"{path}: missing column {field.name!r} (expected {field.type})")
            if not type_matches(actual.field(index).type, field.type):
                raise ValidationError(
                    f"{path}: column {field.name!r} has type {actual.field(index).type}, expected {field.type}"
                )
        data = pq.read_table(path, columns=schema.names)
        pieces.append(data.cast(schema, safe=False))
    return pa.concat_tables(pieces)


def _null_mask(table: pa.Table, columns: tuple[str, ...]) -> np.ndarray:
    mask = np.zeros(table.num_rows, dtype=bool)
    for name in columns:
        mask |= pc.is_null(table.column(name)).to_numpy(zero_copy_only=False)
    return mask


def _int_column(table: pa.Table, name: str) -> np.ndarray:
    """int64 values (timestamps as microseconds), nulls as 0 (they are rejected before being compared)."""
    column = table.column(name)
    if pa.types.is_timestamp(column.type):
        column = column.cast(pa.int64())
    return column.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)


def _assign(reason: np.ndarray, mask: np.ndarray, name: str) -> None:
    reason[(reason == 0) & mask] = _CODE[name]


def _first_occurrence_only(reason: np.ndarray, ids: np.ndarray, name: str) -> None:
    candidates = np.flatnonzero(reason == 0)
    _, first = np.unique(ids[candidates], return_index=True)
    repeated = np.ones(len(candidates), dtype=bool)
    repeated[first] = False
    reason[candidates[repeated]] = _CODE[name]


def _base_reasons(table: pa.Table, name: str) -> np.ndarray:
    reason = np.zeros(table.num_rows, dtype=np.int8)
    _assign(reason, _null_mask(table, ID_COLUMNS[name]), "null_id")
    _assign(reason, _null_mask(table, REQUIRED_COLUMNS[name]), "null_value")
    return reason


def _day_bounds(ds: str) -> tuple[int, int]:
    start = dt.datetime.combine(dt.date.fromisoformat(ds), dt.time(), tzinfo=dt.UTC)
    start_us = int(start.timestamp()) * 1_000_000
    return start_us, start_us + US_PER_DAY


def check_members(members: pa.Table, ds: str) -> np.ndarray:
    """Reason codes for the member snapshot of ``ds``."""
    _, day_end = _day_bounds(ds)
    reason = _base_reasons(members, "members")
    _assign(reason, _int_column(members, "updated_at") >= day_end, "ts_outside_day")
    _first_occurrence_only(reason, _int_column(members, "member_id"), "duplicate_id")
    return reason


def check_jobs(jobs: pa.Table, ds: str) -> np.ndarray:
    """Reason codes for the jobs of ``ds`` (each must be active at some time during the day)."""
    day_start, day_end = _day_bounds(ds)
    reason = _base_reasons(jobs, "jobs")
    posted, expires = _int_column(jobs, "posted_at"), _int_column(jobs, "expires_at")
    _assign(reason, (posted >= day_end) | (expires <= day_start) | (expires < posted), "ts_outside_day")
    _first_occurrence_only(reason, _int_column(jobs, "job_id"), "duplicate_id")
    return reason


def check_impressions(impressions: pa.Table, ds: str, member_ids: np.ndarray, job_ids: np.ndarray) -> np.ndarray:
    """Reason codes for the impressions of ``ds`` against the day's clean member and job IDs."""
    day_start, day_end = _day_bounds(ds)
    reason = _base_reasons(impressions, "impressions")
    ts = _int_column(impressions, "ts")
    _assign(reason, (ts < day_start) | (ts >= day_end), "ts_outside_day")
    _first_occurrence_only(reason, _int_column(impressions, "impression_id"), "duplicate_impression_id")
    _assign(reason, ~np.isin(_int_column(impressions, "member_id"), member_ids), "unknown_member")
    _assign(reason, ~np.isin(_int_column(impressions, "job_id"), job_ids), "unknown_job")
    return reason


def check_applies(applies: pa.Table, ds: str, member_ids: np.ndarray, job_ids: np.ndarray,
                  impressions: pa.Table, window_days: int) -> np.ndarray:
    """Reason codes for the applies of ``ds``; ``impressions`` are the clean ones of ``ds`` and the window."""
    day_start, day_end = _day_bounds(ds)
    reason = _base_reasons(applies, "applies")
    apply_member, apply_job = _int_column(applies, "member_id"), _int_column(applies, "job_id")
    apply_ts = _int_column(applies, "ts")
    _assign(reason, (apply_ts < day_start) | (apply_ts >= day_end), "ts_outside_day")
    _assign(reason, ~np.isin(apply_member, member_ids), "unknown_member")
    _assign(reason, ~np.isin(apply_job, job_ids), "unknown_job")
    has_impression = _has_prior_impression(
        apply_member, apply_job, apply_ts,
        _int_column(impressions, "member_id"), _int_column(impressions, "job_id"), _int_column(impressions, "ts"),
        window_days * US_PER_DAY,
    )
    _assign(reason, ~has_impression, "apply_without_impression")
    return reason


def _has_prior_impression(apply_member, apply_job, apply_ts, imp_member, imp_job, imp_ts, window_us) -> np.ndarray:
    """For each apply: is there an impression of the same pair with ``apply_ts - window ≤ ts ≤ apply_ts``?

    Vectorised: pairs and timestamps are turned into dense ranks so one composite int64 key sorts by
    (pair, time); a ``searchsorted`` then finds each apply's latest impression at or before it.
    """
    if len(apply_ts) == 0:
        return np.zeros(0, dtype=bool)
    if len(imp_ts) == 0:
        return np.zeros(len(apply_ts), dtype=bool)
    _, member_code = np.unique(np.concatenate([apply_member, imp_member]), return_inverse=True)
    _, job_code = np.unique(np.concatenate([apply_job, imp_job]), return_inverse=True)
    pair = member_code.astype(np.int64) * (int(job_code.max()) + 1) + job_code
    _, ts_rank = np.unique(np.concatenate([apply_ts, imp_ts]), return_inverse=True)
    key = pair * (int(ts_rank.max()) + 1) + ts_rank
    n_apply = len(apply_ts)
    imp_key, imp_pair = key[n_apply:], pair[n_apply:]
    order = np.argsort(imp_key, kind="stable")
    latest = np.searchsorted(imp_key[order], key[:n_apply], side="right") - 1
    found = latest >= 0
    index = order[np.maximum(latest, 0)]
    same_pair = imp_pair[index] == pair[:n_apply]
    in_window = apply_ts - imp_ts[index] <= window_us
    return found & same_pair & in_window


def _window_impressions(ds: str, settings: Settings, today_clean: pa.Table) -> pa.Table:
    """Clean impressions of ``ds`` plus those of the ``label_window_days`` days before (when present)."""
    columns = ["member_id", "job_id", "ts"]
    pieces = [today_clean.select(columns)]
    for back in range(1, max(0, settings.label_window_days) + 1):
        day = shift_ds(ds, -back)
        if settings.layout.validated("impressions", day).is_dir():
            pieces.append(read_clean("impressions", day, settings).select(columns))
        elif settings.layout.raw("impressions", day).is_dir():
            earlier = read_raw("impressions", day, settings).select(columns)
            pieces.append(earlier.filter(pa.array(~_null_mask(earlier, tuple(columns)))))
    return pa.concat_tables(pieces)


def _with_reason(table: pa.Table, reason: np.ndarray) -> pa.Table:
    rejected = table.filter(pa.array(reason > 0))
    names = pa.array([r or "" for r in REASONS]).take(pa.array(reason[reason > 0].astype(np.int64)))
    return rejected.append_column("reason", names)


def validate_day(ds: str, settings: Settings) -> dict:
    """Validate the four raw partitions of ``ds``; write quarantine and clean copies; return the report.

    Report: ``{"ds", "ok", "max_bad_fraction", "rows", "quarantined", "tables": {table: {"rows", "clean",
    "quarantined", "bad_fraction", "reasons": {reason: count}}}}``.

    Raises ``FileNotFoundError`` for a missing raw partition, :class:`ValidationError` for a schema break
    (naming file and column; nothing written) or when a table's bad fraction exceeds
    ``settings.max_bad_fraction`` (after writing the quarantine; the error's ``report`` holds the counts).
    """
    check_ds(ds)
    layout: Layout = settings.layout
    raw = {table: read_raw(table, ds, settings) for table in RAW_TABLES}

    reasons: dict[str, np.ndarray] = {}
    reasons["members"] = check_members(raw["members"], ds)
    reasons["jobs"] = check_jobs(raw["jobs"], ds)
    clean = {t: raw[t].filter(pa.array(reasons[t] == 0)) for t in ("members", "jobs")}
    member_ids = np.sort(_int_column(clean["members"], "member_id"))
    job_ids = np.sort(_int_column(clean["jobs"], "job_id"))
    reasons["impressions"] = check_impressions(raw["impressions"], ds, member_ids, job_ids)
    clean["impressions"] = raw["impressions"].filter(pa.array(reasons["impressions"] == 0))
    reasons["applies"] = check_applies(
        raw["applies"], ds, member_ids, job_ids,
        _window_impressions(ds, settings, clean["impressions"]), settings.label_window_days,
    )
    clean["applies"] = raw["applies"].filter(pa.array(reasons["applies"] == 0))

    tables = {}
    for table in RAW_TABLES:
        reason = reasons[table]
        rows, bad = len(reason), int((reason > 0).sum())
        counts = np.bincount(reason, minlength=len(REASONS))
        tables[table] = {
            "rows": rows,
            "clean": rows - bad,
            "quarantined": bad,
            "bad_fraction": bad / rows if rows else 0.0,
            "reasons": {REASONS[c]: int(counts[c]) for c in range(1, len(REASONS)) if counts[c]},
        }
        write_partition(layout.quarantine(table, ds), _with_reason(raw[table], reason))
    report = {
        "ds": ds,
        "ok": True,
        "max_bad_fraction": settings.max_bad_fraction,
        "rows": sum(t["rows"] for t in tables.values()),
        "quarantined": sum(t["quarantined"] for t in tables.values()),
        "tables": tables,
    }
    failing = {t: v["bad_fraction"] for t, v in tables.items() if v["bad_fraction"] > settings.max_bad_fraction}
    if failing:
        report["ok"] = False
        for table in RAW_TABLES:
            shutil.rmtree(settings.layout.validated(table, ds), ignore_errors=True)
        detail = ", ".join(
            f"{t}: {tables[t]['quarantined']}/{tables[t]['rows']} rows ({f:.2%}; {tables[t]['reasons']})"
            for t, f in failing.items()
        )
        raise ValidationError(
            f"validation of {ds} failed: bad fraction above max_bad_fraction={settings.max_bad_fraction} "
            f"in {detail}; rejected rows are in {layout.quarantine_dir()}/<table>/ds={ds} "
            "(fix the raw data, or raise JOBREC_MAX_BAD_FRACTION to accept them)",
            report,
        )
    for table in RAW_TABLES:
        write_partition(settings.layout.validated(table, ds), clean[table])
    log.info("validate %s: %d rows, %d quarantined (%s)", ds, report["rows"], report["quarantined"],
             {t: v["reasons"] for t, v in tables.items() if v["reasons"]})
    return report
