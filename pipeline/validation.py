"""Validate a day of raw partitions: schema checks, row checks, quarantine, clean copies (``jobrec validate``).

``validate_day(ds, settings)`` checks ``raw/<table>/ds=D`` for the four raw tables:

1. Schema: every Parquet file must hold every contract column (``pipeline.raw_schema``) with an acceptable
   type; otherwise :class:`ValidationError` names the file and the column, before anything is written.
2. Rows: each rejected row gets one reason, the first that applies, in this order: ``null_id``,
   ``null_value`` (required non-ID field), the value rules of ``pipeline.raw_schema.VALUE_RULES``
   (``id_not_positive``: an ID ≤ 0; ``invalid_text``: a string longer than its bound or holding control or
   bidirectional-override characters; ``position_out_of_range``: not in 1..1000; ``invalid_channel``: not a
   1-64 character token), ``ts_outside_day`` (impression/apply ts not in D, member updated
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
   :class:`ValidationError` after writing the quarantine.
6. Empty tables: a table with no clean rows fails the day (usually logs that did not land) unless
   ``settings.allow_empty_day`` (``JOBREC_ALLOW_EMPTY_DAY``, ``jobrec validate --allow-empty``) says an empty
   day is expected.
7. Verdict: ``validated/_reports/ds=D.json`` (``settings.layout.validation_report(ds)``) records the outcome.
   It is set to "not passed" before anything else happens and to the report (``ok`` true) only after every
   clean partition is in place. A run that fails in any way (missing or unreadable raw file, schema break,
   threshold, empty table, an interruption) removes the day's ``validated/`` partitions and leaves a verdict
   that is not a pass, so no stale clean data is read: :func:`read_clean` and feature generation
   (:func:`require_pass`) refuse such a day with :class:`NotValidatedError`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import Settings
from pipeline.raw_schema import (
    ID_COLUMNS,
    RAW_SCHEMAS,
    REQUIRED_COLUMNS,
    VALUE_REASONS,
    type_matches,
    value_violations,
)
from pipeline.storage import (
    RAW_TABLES,
    Layout,
    check_ds,
    remove_directory,
    shift_ds,
    write_json,
    write_partition,
)

log = logging.getLogger(__name__)

# Reason codes: index 0 means "clean"; the order is the priority when several apply.
REASONS = (
    None,
    "null_id",
    "null_value",
    *VALUE_REASONS,
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


class NotValidatedError(FileNotFoundError):
    """A day's clean data is not available: its last validation failed or did not finish (``verdict`` holds
    what was recorded). A ``FileNotFoundError``, like a day that was never validated: callers that skip
    missing days skip it too, and the command line exits with code 2 and the message."""

    def __init__(self, message: str, verdict: dict | None = None) -> None:
        super().__init__(message)
        self.verdict = verdict


def validation_verdict(ds: str, settings: Settings) -> dict | None:
    """The verdict of the last validation of ``ds`` (the report, ``ok`` true for a pass), or ``None`` when the
    day was never validated. An unreadable verdict file counts as a failed validation."""
    path = settings.layout.validation_report(ds)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return {"ds": ds, "ok": False, "error": f"unreadable validation verdict {path}: {exc}"}


def was_validated(ds: str, settings: Settings) -> bool:
    """Whether validation ever ran on ``ds``: a verdict or a ``validated/`` partition exists."""
    layout = settings.layout
    return layout.validation_report(ds).exists() or any(layout.validated(t, ds).exists() for t in RAW_TABLES)


def require_pass(ds: str, settings: Settings) -> dict:
    """Return the verdict of ``ds`` when its last validation passed; else raise :class:`NotValidatedError`.

    The error says why (the failure recorded by validation, an interrupted run, or validated data without a
    verdict) and what to do: fix the raw data and run ``jobrec validate --ds``.
    """
    verdict = validation_verdict(ds, settings)
    if verdict is not None and verdict.get("ok") is True:
        return verdict
    if verdict is None:
        why = "its validated data has no validation verdict (validated by an older version, or cut off)"
    elif verdict.get("status") == "running":
        why = "its last validation did not finish (still running, or killed)"
    else:
        why = f"its last validation failed: {verdict.get('error') or 'see the validation report'}"
    raise NotValidatedError(
        f"ds={ds} has not passed validation, so its data is not used: {why}. Fix the raw data under "
        f"{settings.layout.raw_dir()}/<table>/ds={ds} (rejected rows are in "
        f"{settings.layout.quarantine_dir()}/<table>/ds={ds}) and run `jobrec validate --ds {ds}`",
        verdict,
    )


def read_clean(table: str, ds: str, settings: Settings) -> pa.Table:
    """The rows of raw ``table`` for ``ds`` that passed validation (raw minus quarantine), contract schema.

    Raises ``FileNotFoundError`` saying to run ``jobrec validate --ds`` when the day was not validated, or
    (:class:`NotValidatedError`, via :func:`require_pass`) when its last validation did not pass.
    """
    if table not in RAW_SCHEMAS:
        raise ValueError(f"unknown raw table {table!r}; expected one of {', '.join(RAW_TABLES)}")
    path = settings.layout.validated(table, ds)
    if not was_validated(ds, settings):
        raise FileNotFoundError(
            f"no validated {table} for {ds} at {path}: run `jobrec validate --ds {ds}` first "
            "(and fix the raw data if it failed)"
        )
    require_pass(ds, settings)
    if not path.is_dir():
        raise FileNotFoundError(
            f"no validated {table} for {ds} at {path}: run `jobrec validate --ds {ds}` again"
        )
    files = sorted(p for p in path.glob("*.parquet") if not p.name.startswith((".", "_")))
    tables = [_read_parquet(f, RAW_SCHEMAS[table]) for f in files]
    return pa.concat_tables(tables) if tables else RAW_SCHEMAS[table].empty_table()


def _read_parquet(path: Path, schema: pa.Schema) -> pa.Table:
    """The columns of ``schema`` from one Parquet file, cast to it; an unreadable file (corrupt or truncated
    pages, bad compression) raises :class:`ValidationError` naming the file."""
    try:
        return pq.read_table(path, columns=schema.names).cast(schema, safe=False)
    except (OSError, pa.ArrowException) as exc:
        raise ValidationError(
            f"{path}: cannot read its Parquet data ({type(exc).__name__}: {exc}); the file is corrupt or "
            "truncated: land it again"
        ) from exc


def read_raw(table: str, ds: str, settings: Settings) -> pa.Table:
    """Read a raw partition, checking every file's schema; columns are cast to the contract types.

    Raises ``FileNotFoundError`` for a missing partition, :class:`ValidationError` naming the file (and the
    column) for an unreadable file or a missing or mistyped column.
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
        pieces.append(_read_parquet(path, schema))
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
    """Reason codes from the checks of one row alone: nulls, then the value rules of ``raw_schema``."""
    reason = np.zeros(table.num_rows, dtype=np.int8)
    _assign(reason, _null_mask(table, ID_COLUMNS[name]), "null_id")
    _assign(reason, _null_mask(table, REQUIRED_COLUMNS[name]), "null_value")
    for rule_reason, mask in value_violations(name, table):
        _assign(reason, mask, rule_reason)
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
        if _passed(day, settings) and settings.layout.validated("impressions", day).is_dir():
            pieces.append(read_clean("impressions", day, settings).select(columns))
        elif settings.layout.raw("impressions", day).is_dir():
            earlier = read_raw("impressions", day, settings).select(columns)
            pieces.append(earlier.filter(pa.array(~_null_mask(earlier, tuple(columns)))))
    return pa.concat_tables(pieces)


def _with_reason(table: pa.Table, reason: np.ndarray) -> pa.Table:
    rejected = table.filter(pa.array(reason > 0))
    names = pa.array([r or "" for r in REASONS]).take(pa.array(reason[reason > 0].astype(np.int64)))
    return rejected.append_column("reason", names)


def _passed(ds: str, settings: Settings) -> bool:
    verdict = validation_verdict(ds, settings)
    return verdict is not None and verdict.get("ok") is True


def validate_day(ds: str, settings: Settings) -> dict:
    """Validate the four raw partitions of ``ds``; write quarantine, clean copies and the verdict; return the
    report.

    Report (also the verdict, ``settings.layout.validation_report(ds)``): ``{"ds", "ok", "max_bad_fraction",
    "allow_empty_day", "rows", "quarantined", "empty_tables", "tables": {table: {"rows", "clean",
    "quarantined", "bad_fraction", "reasons": {reason: count}}}}``.

    Raises ``FileNotFoundError`` for a missing raw partition, :class:`ValidationError` for an unreadable file
    or a schema break (naming the file and column; no quarantine written), when a table's bad fraction exceeds
    ``settings.max_bad_fraction`` or when a table has no clean rows and ``settings.allow_empty_day`` is false
    (both after writing the quarantine; the error's ``report`` holds the counts). Whatever the failure, the
    day's ``validated/`` partitions are removed and the verdict is not a pass.
    """
    check_ds(ds)
    layout: Layout = settings.layout
    write_json(layout.validation_report(ds), {"ds": ds, "ok": False, "status": "running"})
    try:
        report = _validate(ds, settings)
    except BaseException as exc:
        _record_failure(ds, settings, exc)
        raise
    write_json(layout.validation_report(ds), report)
    log.info("validate %s: %d rows, %d quarantined (%s)", ds, report["rows"], report["quarantined"],
             {t: v["reasons"] for t, v in report["tables"].items() if v["reasons"]})
    return report


def _record_failure(ds: str, settings: Settings, exc: BaseException) -> None:
    """Remove the day's clean partitions and record a verdict that is not a pass (best effort: the original
    error is what the caller sees)."""
    layout = settings.layout
    try:
        for table in RAW_TABLES:
            remove_directory(layout.validated(table, ds))
        report = getattr(exc, "report", None) if isinstance(exc, ValidationError) else None
        error = str(exc) or type(exc).__name__
        write_json(layout.validation_report(ds), {**(report or {"ds": ds}), "ok": False, "error": error})
    except OSError:
        log.exception("validate %s: could not clear the day's validated data after a failure", ds)


def _table_counts(reason: np.ndarray) -> dict:
    rows, bad = len(reason), int((reason > 0).sum())
    counts = np.bincount(reason, minlength=len(REASONS))
    return {
        "rows": rows,
        "clean": rows - bad,
        "quarantined": bad,
        "bad_fraction": bad / rows if rows else 0.0,
        "reasons": {REASONS[c]: int(counts[c]) for c in range(1, len(REASONS)) if counts[c]},
    }


def _validate(ds: str, settings: Settings) -> dict:
    """The checks of :func:`validate_day`: quarantine and clean partitions written, failures raised."""
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

    tables = {table: _table_counts(reasons[table]) for table in RAW_TABLES}
    for table in RAW_TABLES:
        write_partition(layout.quarantine(table, ds), _with_reason(raw[table], reasons[table]))
    report = {
        "ds": ds,
        "ok": True,
        "max_bad_fraction": settings.max_bad_fraction,
        "allow_empty_day": settings.allow_empty_day,
        "rows": sum(t["rows"] for t in tables.values()),
        "quarantined": sum(t["quarantined"] for t in tables.values()),
        "empty_tables": [t for t in RAW_TABLES if tables[t]["clean"] == 0],
        "tables": tables,
    }
    _check_thresholds(ds, settings, report)
    _check_empty(ds, settings, report)
    for table in RAW_TABLES:
        write_partition(layout.validated(table, ds), clean[table])
    return report


def _check_thresholds(ds: str, settings: Settings, report: dict) -> None:
    tables = report["tables"]
    limit = settings.max_bad_fraction
    failing = {t: v["bad_fraction"] for t, v in tables.items() if v["bad_fraction"] > limit}
    if not failing:
        return
    report["ok"] = False
    detail = ", ".join(
        f"{t}: {tables[t]['quarantined']}/{tables[t]['rows']} rows ({f:.2%}; {tables[t]['reasons']})"
        for t, f in failing.items()
    )
    raise ValidationError(
        f"validation of {ds} failed: bad fraction above max_bad_fraction={settings.max_bad_fraction} "
        f"in {detail}; rejected rows are in {settings.layout.quarantine_dir()}/<table>/ds={ds} "
        "(fix the raw data, or raise JOBREC_MAX_BAD_FRACTION to accept them)",
        report,
    )


def _check_empty(ds: str, settings: Settings, report: dict) -> None:
    empty = report["empty_tables"]
    if not empty or settings.allow_empty_day:
        return
    report["ok"] = False
    detail = ", ".join(
        f"{t} ({report['tables'][t]['rows']} raw rows, {report['tables'][t]['quarantined']} quarantined)"
        for t in empty
    )
    raise ValidationError(
        f"validation of {ds} failed: no clean rows in {detail} "
        f"under {settings.layout.raw_dir()}/<table>/ds={ds}; "
        "an empty table usually means its logs did not land: land them and validate again, or, if an empty "
        "day is expected, pass --allow-empty (or set JOBREC_ALLOW_EMPTY_DAY=true)",
        report,
    )
