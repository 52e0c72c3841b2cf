"""Arrow schemas of the raw tables (docs/architecture.md, "Raw inputs") and which columns must be set.

The generator writes exactly these schemas; validation checks every raw Parquet file against them.
"""

from __future__ import annotations

import pyarrow as pa

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
