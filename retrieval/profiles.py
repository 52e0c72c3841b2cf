"""Weighted-term profile tables (Arrow) ↔ sparse matrices over a term vocabulary.

A profile table has an ID column and one ``list<struct<term: string, weight: double>>`` column per field of
:data:`retrieval.schema.PROFILE_FIELDS` (docs/architecture.md). Everything here is vectorised with Arrow
compute and NumPy: no Python loop over rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from retrieval.schema import PROFILE_FIELDS

PROFILE_TYPE = pa.list_(pa.struct([("term", pa.string()), ("weight", pa.float64())]))


def profile_column(table: pa.Table, field: str) -> pa.ChunkedArray | None:
    """The list-typed column named ``field`` (the job table may also carry a plain ``region`` string)."""
    for i, schema_field in enumerate(table.schema):
        if schema_field.name == field and pa.types.is_list(schema_field.type):
            return table.column(i)
    return None


def region_strings(table: pa.Table) -> np.ndarray:
    """Each row's region: the ``region`` string column when there is one, else the first term of the
    ``region`` profile (a categorical field holds one term); ``""`` when unknown."""
    for i, schema_field in enumerate(table.schema):
        if schema_field.name == "region" and pa.types.is_string(schema_field.type):
            return np.asarray(pc.fill_null(table.column(i), "").to_pylist(), dtype=object)
    out = np.full(table.num_rows, "", dtype=object)
    column = profile_column(table, "region")
    if column is not None:
        rows, terms, _ = _flat_field(column)
        first_rows, first = np.unique(rows, return_index=True)
        out[first_rows] = np.asarray(terms.take(pa.array(first)).to_pylist(), dtype=object)
    return out


def check_profile_table(table: pa.Table, id_column: str, what: str) -> None:
    """Raise ``ValueError`` saying what is missing when ``table`` lacks the ID or a profile column."""
    missing = [id_column] if id_column not in table.column_names else []
    missing += [c for c in PROFILE_FIELDS if profile_column(table, c) is None]
    if missing:
        raise ValueError(
            f"{what} table lacks columns {missing}; it needs {id_column} and one "
            f"list<struct<term: string, weight: double>> column per field {list(PROFILE_FIELDS)}"
        )


@dataclass(frozen=True)
class Vocabulary:
    """Term strings per field, laid out one field after another in the rows of a term×item matrix."""

    terms: dict[str, pa.Array]  # field → string array, in row order

    @property
    def offsets(self) -> dict[str, int]:
        out, start = {}, 0
        for field in PROFILE_FIELDS:
            out[field] = start
            start += len(self.terms.get(field, ()))
        return out

    @property
    def size(self) -> int:
        return sum(len(self.terms.get(field, ())) for field in PROFILE_FIELDS)

    @classmethod
    def from_tables(cls, *tables: pa.Table) -> Vocabulary:
        """The sorted distinct terms of each field over the given profile tables."""
        terms = {}
        for field in PROFILE_FIELDS:
            chunks = [_flat_field(profile_column(t, field))[1] for t in tables if profile_column(t, field)]
            merged = pa.chunked_array(chunks, type=pa.string()).combine_chunks()
            terms[field] = pc.unique(merged).sort()
        return cls(terms)


def _flat_field(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array, np.ndarray]:
    """(row of each entry, term strings, weights) of one list<struct> column."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if array.null_count:
        array = pc.fill_null(array, pa.scalar([], type=array.type))
    lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
    rows = np.repeat(np.arange(len(array), dtype=np.int64), lengths)
    flat = pc.list_flatten(array)
    terms = pc.struct_field(flat, "term")
    weights = pc.struct_field(flat, "weight").to_numpy(zero_copy_only=False).astype(np.float64)
    return rows, terms, weights


def profiles_to_csr(
    table: pa.Table, vocab: Vocabulary, field_weights: Mapping[str, float] | None = None
) -> sp.csr_matrix:
    """Rows of ``table`` as a CSR matrix (rows × vocabulary terms) of ``field_weight · term_weight``.

    Terms outside the vocabulary, non-positive weights and fields of weight 0 are dropped; a term repeated
    within one row's field has its weights summed (as the index does).
    """
    offsets = vocab.offsets
    rows_all, cols_all, vals_all = [], [], []
    for field in PROFILE_FIELDS:
        scale = 1.0 if field_weights is None else float(field_weights.get(field, 0.0))
        column = profile_column(table, field)
        if scale <= 0.0 or column is None:
            continue
        rows, terms, weights = _flat_field(column)
        if len(rows) == 0:
            continue
        index = pc.index_in(terms, value_set=vocab.terms[field]).to_numpy(zero_copy_only=False)
        keep = ~np.isnan(index.astype(np.float64)) & (weights > 0.0)
        rows_all.append(rows[keep])
        cols_all.append(index[keep].astype(np.int64) + offsets[field])
        vals_all.append(weights[keep] * scale)
    if rows_all:
        rows, cols, vals = np.concatenate(rows_all), np.concatenate(cols_all), np.concatenate(vals_all)
    else:
        rows = cols = np.zeros(0, np.int64)
        vals = np.zeros(0, np.float64)
    matrix = sp.csr_matrix((vals, (rows, cols)), shape=(table.num_rows, vocab.size))
    matrix.sum_duplicates()
    matrix.sort_indices()
    return matrix


def timestamps_us(column: pa.ChunkedArray) -> np.ndarray:
    """A timestamp (any unit/zone) or integer column as int64 microseconds since the epoch, UTC."""
    if pa.types.is_timestamp(column.type):
        column = pc.cast(column, pa.timestamp("us", tz=column.type.tz))
        return pc.cast(column, pa.int64()).to_numpy(zero_copy_only=False)
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64)
