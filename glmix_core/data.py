"""Reading input tables and turning columns into sparse designs.

``load_table`` reads a Parquet file, a folder of Parquet files or a CSV file. ``feature_matrix`` builds a CSR
matrix from numeric columns and ``list<struct<name, value>>`` feature bags, with feature names as column
labels (``(intercept)`` first when asked). ``encode_entities`` maps an ID column to dense codes. Every check a
user can fail raises ``DataError`` naming the column and the problem.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from .errors import DataError
from .index_map import FeatureIndexMap

INTERCEPT = "(intercept)"


def load_table(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """Read ``path`` (a ``.parquet`` file, a folder of Parquet files, or a ``.csv`` file) into one table."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise DataError(f"data path not found: {path} (give a Parquet file, a folder of Parquet files or a CSV)")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if not p.name.startswith((".", "_")))
        if not files:
            raise DataError(f"folder {path} holds no .parquet files")
        tables = [pq.read_table(f, columns=columns) for f in files]
        return pa.concat_tables(tables, promote_options="default")
    if path.suffix.lower() == ".csv":
        table = pcsv.read_csv(path)
        return table.select(columns) if columns else table
    if path.suffix.lower() in (".parquet", ".pq"):
        return pq.read_table(path, columns=columns)
    raise DataError(f"unsupported data file {path}: use .parquet, a folder of Parquet files or .csv")


def require_columns(table: pa.Table, names: list[str], what: str) -> None:
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise DataError(f"{what}: column(s) {missing} not in the data; available columns: {table.column_names}")


def numeric_column(table: pa.Table, name: str, what: str = "column") -> np.ndarray:
    """Column ``name`` as finite float64, or a DataError naming the problem."""
    require_columns(table, [name], what)
    col = table.column(name)
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type)):
        raise DataError(f"{what} {name!r} must be numeric; it has type {col.type}")
    if col.null_count:
        raise DataError(f"{what} {name!r} has {col.null_count} null values; fill or drop them")
    values = col.to_numpy().astype(np.float64, copy=False)
    bad = ~np.isfinite(values)
    if bad.any():
        raise DataError(f"{what} {name!r} has {int(bad.sum())} NaN/inf values; fill or drop them")
    return values


def _bag_parts(table: pa.Table, bag: str) -> tuple[np.ndarray, pa.Array, np.ndarray]:
    """(row index, names, values) of every entry of feature bag column ``bag``."""
    require_columns(table, [bag], "feature bag")
    col = table.column(bag).combine_chunks() if table.num_rows else pa.array([], table.column(bag).type)
    t = col.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)) or not pa.types.is_struct(t.value_type) \
            or {t.value_type.field(i).name for i in range(t.value_type.num_fields)} < {"name", "value"}:
        raise DataError(f"feature bag {bag!r} must have type list<struct<name: string, value: double>>; got {t}")
    rows = pc.list_parent_indices(col).to_numpy()
    flat = pc.list_flatten(col)
    names = pc.struct_field(flat, "name")
    values = pc.struct_field(flat, "value")
    if names.null_count or values.null_count:
        raise DataError(f"feature bag {bag!r} has entries with a null name or value")
    values = values.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    bad = ~np.isfinite(values)
    if bad.any():
        raise DataError(f"feature bag {bag!r} has {int(bad.sum())} NaN/inf values")
    return rows.astype(np.int64), names, values


def feature_matrix(table: pa.Table, features: tuple[str, ...] | list[str], bags: tuple[str, ...] | list[str],
                   intercept: bool, vocabulary: FeatureIndexMap | pa.Array | list[str] | None = None,
                   ) -> tuple[sp.csr_matrix, FeatureIndexMap]:
    """CSR design (rows of ``table`` × features) and its column names as a ``FeatureIndexMap``.

    Without ``vocabulary`` the columns are ``(intercept)`` (if asked), the numeric ``features`` in order,
    then the sorted (by code point) distinct bag feature names. With ``vocabulary`` (scoring; a
    FeatureIndexMap, an Arrow string array or a list), columns follow it and names it does not hold are
    dropped. Repeated names in a row are summed. Bag names are handled as Arrow arrays and hashed lookups
    (``glmix_core.index_map``): no Python object per feature name, so 20M+ names stay cheap.
    """
    n = table.num_rows
    row_parts, col_names, val_parts = [], [], []
    fixed_names: list[str] = ([INTERCEPT] if intercept else []) + list(features)
    if len(set(fixed_names)) != len(fixed_names):
        raise DataError(f"numeric features {list(features)} name a column twice (or name {INTERCEPT!r})")
    if intercept:
        row_parts.append(np.arange(n, dtype=np.int64))
        val_parts.append(np.ones(n))
        col_names.append(np.zeros(n, dtype=np.int64))
    for j, name in enumerate(features):
        row_parts.append(np.arange(n, dtype=np.int64))
        val_parts.append(numeric_column(table, name, "feature"))
        col_names.append(np.full(n, j + int(intercept), dtype=np.int64))
    bag_rows, bag_names, bag_vals = [], [], []
    for bag in bags:
        r, names, v = _bag_parts(table, bag)
        bag_rows.append(r)
        bag_names.append(names)
        bag_vals.append(v)
    if bag_rows:
        names = pa.chunked_array([b.cast(pa.string()) for b in bag_names], type=pa.string()).combine_chunks()
        encoded = names.dictionary_encode()
        codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        distinct = encoded.dictionary  # distinct bag names (Arrow), code c ↔ distinct[c]
    fixed_arr = pa.array(fixed_names, pa.string())
    if vocabulary is None:
        if bag_rows:
            # bag names equal to a numeric column share its column; the others follow in sorted order
            fixed_pos = pc.index_in(distinct, value_set=fixed_arr).fill_null(-1)
            fixed_pos = fixed_pos.to_numpy(zero_copy_only=False).astype(np.int64)
            extra = np.flatnonzero(fixed_pos < 0)
            extra_names = distinct.take(pa.array(extra))
            ranked = pc.sort_indices(extra_names).to_numpy(zero_copy_only=False).astype(np.int64)
            lookup = fixed_pos.copy()
            lookup[extra[ranked]] = len(fixed_names) + np.arange(extra.size, dtype=np.int64)
            vocab = FeatureIndexMap.from_names(
                pa.concat_arrays([fixed_arr, extra_names.take(pa.array(ranked))]), unique=True)
        else:
            vocab = FeatureIndexMap.from_names(fixed_arr, unique=True)
    else:
        vocab = FeatureIndexMap.coerce(vocabulary)
        # numeric columns map to their vocabulary positions; ones the vocabulary lacks are dropped
        position = vocab.index_of(fixed_arr)
        for k in range(len(fixed_names)):
            col_names[k] = np.full(n, position[k], dtype=np.int64)
        for k in range(len(fixed_names)):
            keep = col_names[k] >= 0
            row_parts[k], col_names[k], val_parts[k] = row_parts[k][keep], col_names[k][keep], val_parts[k][keep]
        if bag_rows:
            lookup = vocab.index_of(distinct)
    if bag_rows:
        cols = lookup[codes] if len(codes) else codes
        rows = np.concatenate(bag_rows)
        vals = np.concatenate(bag_vals)
        keep = cols >= 0
        row_parts.append(rows[keep])
        col_names.append(cols[keep])
        val_parts.append(vals[keep])
    if row_parts:
        rows = np.concatenate(row_parts)
        cols = np.concatenate(col_names)
        vals = np.concatenate(val_parts)
    else:
        rows = cols = np.zeros(0, dtype=np.int64)
        vals = np.zeros(0)
    X = sp.csr_matrix((vals, (rows, cols)), shape=(n, len(vocab)))
    X.sum_duplicates()
    return X, vocab


def encode_entities(table: pa.Table, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Dense codes (int64 per row) and the distinct entity IDs as strings, for ID column ``column``.

    IDs may be integers or strings; null or empty IDs raise DataError.
    """
    require_columns(table, [column], "entity")
    col = table.column(column)
    if not (pa.types.is_integer(col.type) or pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
            or pa.types.is_dictionary(col.type)):
        raise DataError(f"entity column {column!r} must hold integer or string IDs; it has type {col.type}")
    if col.null_count:
        raise DataError(f"entity column {column!r} has {col.null_count} empty (null) IDs; drop those rows")
    col = col.combine_chunks() if table.num_rows else pa.array([], col.type)
    encoded = col if pa.types.is_dictionary(col.type) else col.dictionary_encode()
    ids = encoded.dictionary.cast(pa.string())
    if pc.any(pc.equal(pc.utf8_length(ids), 0)).as_py():
        raise DataError(f"entity column {column!r} has empty-string IDs; drop those rows")
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, np.asarray(ids.to_pylist(), dtype=object)


def entity_keys(table: pa.Table, column: str) -> pa.Array:
    """The entity column as strings (for lookups against a model's entity IDs)."""
    require_columns(table, [column], "entity")
    col = table.column(column)
    if col.null_count:
        raise DataError(f"entity column {column!r} has {col.null_count} empty (null) IDs")
    return col.combine_chunks().cast(pa.string()) if table.num_rows else pa.array([], pa.string())
