"""Arrow schemas of the raw tables (docs/architecture.md, "Raw inputs"), which columns must be set, and the
range and content rules their values must meet.

The generator writes exactly these schemas and values inside these rules; validation checks every raw Parquet
file against the schemas and quarantines each row that breaks a value rule (:func:`value_violations`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

TIMESTAMP = pa.timestamp("us", tz="UTC")

RAW_SCHEMAS: dict[str, pa.Schema] = {
    "members": pa.schema([
        ("member_id", pa.int64()),
        ("title", pa.string()),
        ("skills", pa.list_(pa.string())),
        ("industry", pa.string()),
        ("function", pa.string()),
        ("seniority", pa.string()),
        ("region", pa.string()),
        ("updated_at", TIMESTAMP),
    ]),
    "jobs": pa.schema([
        ("job_id", pa.int64()),
        ("title", pa.string()),
        ("skills", pa.list_(pa.string())),
        ("industry", pa.string()),
        ("function", pa.string()),
        ("seniority", pa.string()),
        ("region", pa.string()),
        ("company_id", pa.int64()),
        ("posted_at", TIMESTAMP),
        ("expires_at", TIMESTAMP),
    ]),
    "impressions": pa.schema([
        ("impression_id", pa.int64()),
        ("member_id", pa.int64()),
        ("job_id", pa.int64()),
        ("ts", TIMESTAMP),
        ("position", pa.int32()),
        ("channel", pa.string()),
    ]),
    "applies": pa.schema([
        ("member_id", pa.int64()),
        ("job_id", pa.int64()),
        ("ts", TIMESTAMP),
    ]),
}

# Null in one of these → reason ``null_id``.
ID_COLUMNS: dict[str, tuple[str, ...]] = {
    "members": ("member_id",),
    "jobs": ("job_id", "company_id"),
    "impressions": ("impression_id", "member_id", "job_id"),
    "applies": ("member_id", "job_id"),
}

# Null in one of these → reason ``null_value``. (An empty skills list is allowed; a null one is not.)
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    table: tuple(name for name in schema.names if name not in ID_COLUMNS[table])
    for table, schema in RAW_SCHEMAS.items()
}


def type_matches(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Whether a file's column type is acceptable for the contract type.

    Accepted equivalents: ``large_string`` for ``string``, ``large_list`` for ``list`` (same value type), and
    any unit of a UTC timestamp (it is cast to microseconds on read). Everything else must match exactly.
    """
    if actual == expected:
        return True
    if pa.types.is_timestamp(expected):
        return pa.types.is_timestamp(actual) and actual.tz in ("UTC", "+00:00", "Etc/UTC")
    if pa.types.is_string(expected):
        return pa.types.is_large_string(actual)
    if pa.types.is_list(expected):
        return (pa.types.is_list(actual) or pa.types.is_large_list(actual)) and type_matches(
            actual.value_type, expected.value_type
        )
    return False


# ------------------------------------------------------------------------------------------ value rules

# Characters no raw text may hold: C0/C1 control characters (NUL, newline, escape, ...), DEL, the line and
# paragraph separators, and the bidirectional marks, embeddings, overrides and isolates (U+200E/F,
# U+202A-U+202E, U+2066-U+2069) that make text display differently from what it is.
FORBIDDEN_CHARACTERS = r"[\x{0}-\x{1f}\x{7f}-\x{9f}\x{200e}\x{200f}\x{2028}-\x{202e}\x{2066}-\x{2069}]"
# A channel is a short token such as ``jymbii-web``: 1-64 ASCII letters, digits, ``.``, ``_``, ``:`` or ``-``.
CHANNEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"


@dataclass(frozen=True)
class IntRange:
    """An integer column must lie in ``[low, high]`` (``high`` None: no upper bound); a row outside is
    quarantined with ``reason``."""

    low: int
    high: int | None
    reason: str


@dataclass(frozen=True)
class Text:
    """A string column (or each string of a list column) must be printable text of at most ``max_chars``
    characters (no :data:`FORBIDDEN_CHARACTERS`), match ``pattern`` when given, and a list column hold at
    most ``max_items`` strings; a row that breaks any of these is quarantined with ``reason``."""

    max_chars: int
    reason: str = "invalid_text"
    pattern: str | None = None
    max_items: int | None = None


POSITIVE_ID = IntRange(1, None, "id_not_positive")
TEXT = Text(max_chars=256)
# The profile fields members and jobs share.
PROFILE_TEXT = {
    "title": Text(max_chars=512),
    "skills": Text(max_chars=256, max_items=1000),
    "industry": TEXT, "function": TEXT, "seniority": TEXT, "region": TEXT,
}

# Rules per table and column, checked in this order; the first reason of a row is the one recorded.
VALUE_RULES: dict[str, dict[str, IntRange | Text]] = {
    "members": {
        "member_id": POSITIVE_ID,
        **PROFILE_TEXT,
    },
    "jobs": {
        "job_id": POSITIVE_ID,
        "company_id": POSITIVE_ID,
        **PROFILE_TEXT,
    },
    "impressions": {
        "impression_id": POSITIVE_ID,
        "member_id": POSITIVE_ID,
        "job_id": POSITIVE_ID,
        "position": IntRange(1, 1000, "position_out_of_range"),
        "channel": Text(max_chars=64, reason="invalid_channel", pattern=CHANNEL_PATTERN),
    },
    "applies": {
        "member_id": POSITIVE_ID,
        "job_id": POSITIVE_ID,
    },
}

# Every reason a value rule can give, in rule order (validation ranks them after the null checks).
VALUE_REASONS: tuple[str, ...] = tuple(
    dict.fromkeys(rule.reason for rules in VALUE_RULES.values() for rule in rules.values())
)


def _as_bool(mask: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A boolean Arrow mask as NumPy, null (a null value, reported by the null checks instead) as False."""
    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False).astype(bool)


def _int_range_violations(column: pa.ChunkedArray, rule: IntRange) -> np.ndarray:
    outside = pc.less(column, rule.low)
    if rule.high is not None:
        outside = pc.or_(outside, pc.greater(column, rule.high))
    return _as_bool(outside)


def _string_violations(strings: pa.ChunkedArray | pa.Array, rule: Text) -> np.ndarray:
    bad = pc.or_(pc.greater(pc.utf8_length(strings), rule.max_chars),
                 pc.match_substring_regex(strings, FORBIDDEN_CHARACTERS))
    if rule.pattern is not None:
        bad = pc.or_(bad, pc.invert(pc.match_substring_regex(strings, rule.pattern)))
    return _as_bool(bad)


def _text_violations(column: pa.ChunkedArray, rule: Text) -> np.ndarray:
    if not pa.types.is_list(column.type):
        return _string_violations(column, rule)
    rows = len(column)
    items = pc.list_flatten(column)
    bad_item = _string_violations(items, rule)
    # list_parent_indices gives each flattened string's row (offsets of chunks and slices included).
    owners = pc.list_parent_indices(column).to_numpy(zero_copy_only=False)
    bad = np.bincount(owners[bad_item], minlength=rows)[:rows] > 0
    if rule.max_items is not None:
        bad |= _as_bool(pc.greater(pc.list_value_length(column), rule.max_items))
    return bad


def value_violations(table_name: str, table: pa.Table) -> list[tuple[str, np.ndarray]]:
    """``(reason, mask)`` per rule of :data:`VALUE_RULES` for ``table_name``, in rule order.

    ``table`` has the contract schema of ``table_name``; ``mask[i]`` is True when row ``i`` breaks the rule.
    Null values never break a value rule (the null checks report them). Vectorised: one Arrow compute
    pass per rule, no loop over rows.
    """
    checks = []
    for name, rule in VALUE_RULES[table_name].items():
        column = table.column(name)
        if isinstance(rule, IntRange):
            checks.append((rule.reason, _int_range_violations(column, rule)))
        else:
            checks.append((rule.reason, _text_violations(column, rule)))
    return checks
