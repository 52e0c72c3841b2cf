"""Per-field term vocabularies: the versioned, append-only feature index map with document frequencies.

``features/vocab/ds=D/`` holds one row per (field, term): ``index`` (global across fields, unique, never
reused: a term keeps its index forever, new terms get the next free ones in (field, term) order), ``df``
(how many of the day's members and jobs carry the term in that field; 0 for terms not seen that day) and
``first_ds`` (the day the term first appeared). Day D's map extends the latest map written before D, so a
rerun of D gives the same indices.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import Settings
from pipeline.storage import read_partition

log = logging.getLogger(__name__)

FIELDS: tuple[str, ...] = ("title", "skills", "industry", "function", "seniority", "region")
CATEGORICAL_FIELDS: tuple[str, ...] = ("industry", "function", "seniority", "region")
# Title terms are maximal runs of [a-z0-9] after lower-casing (the Spark job uses the same pattern).
TITLE_TOKEN_SPLIT = "[^a-z0-9]+"
_TOKEN_SPLIT_RE = re.compile(TITLE_TOKEN_SPLIT)

VOCAB_SCHEMA = pa.schema(
    [
        pa.field("field", pa.string()),
        pa.field("term", pa.string()),
        pa.field("index", pa.int64()),
        pa.field("df", pa.int64()),
        pa.field("first_ds", pa.string()),
    ]
)


def title_tokens(title: str | None) -> list[str]:
    """The title terms of one title string (reference implementation of the Spark tokenizer)."""
    if not title:
        return []
    return [t for t in _TOKEN_SPLIT_RE.split(title.lower()) if t]


def idf(df: np.ndarray, n_docs: int) -> np.ndarray:
    """Smoothed inverse document frequency ``ln((1 + N) / (1 + df)) + 1`` (always > 0)."""
    return np.log((1.0 + n_docs) / (1.0 + np.asarray(df, dtype=np.float64))) + 1.0


def merge_vocab(previous: pa.Table | None, counts: pa.Table, ds: str) -> pa.Table:
    """Extend ``previous`` (a vocab table or None) with today's ``counts`` (field, term, df).

    Known terms keep index and first_ds and take today's df (0 when absent today); new terms are appended
    in (field, term) order with first_ds = ``ds``. Returns the vocab sorted by index.
    """
    counts = counts.select(["field", "term", "df"]).cast(
        pa.schema([("field", pa.string()), ("term", pa.string()), ("df", pa.int64())])
    )
    today = {(f, t): d for f, t, d in zip(*(counts[c].to_pylist() for c in ("field", "term", "df")), strict=True)}
    rows: dict[tuple[str, str], list] = {}
    next_index = 0
    if previous is not None and previous.num_rows:
        for f, t, i, first in zip(
            *(previous[c].to_pylist() for c in ("field", "term", "index", "first_ds")), strict=True
        ):
            rows[(f, t)] = [i, today.get((f, t), 0), first]
        next_index = max(v[0] for v in rows.values()) + 1
    for key in sorted(k for k in today if k not in rows):
        rows[key] = [next_index, today[key], ds]
        next_index += 1
    ordered = sorted(rows.items(), key=lambda kv: kv[1][0])
    return pa.table(
        {
            "field": [k[0] for k, _ in ordered],
            "term": [k[1] for k, _ in ordered],
            "index": [v[0] for _, v in ordered],
            "df": [v[1] for _, v in ordered],
            "first_ds": [v[2] for _, v in ordered],
        },
        schema=VOCAB_SCHEMA,
    )


def previous_vocab(ds: str, settings: Settings) -> pa.Table | None:
    """The latest vocab partition strictly before ``ds``, or None on the first day."""
    layout = settings.layout
    earlier = [d for d in layout.partitions(layout.features("vocab", ds).parent) if d < ds]
    if not earlier:
        return None
    return read_partition(layout.features("vocab", earlier[-1]))


def load_vocab(ds: str, settings: Settings) -> Vocab:
    """The vocab written by ``build_features`` for ``ds``; a clear error when features were not built."""
    path = settings.layout.features("vocab", ds)
    if not path.exists():
        raise FileNotFoundError(f"no feature vocab for ds={ds} at {path}; run `jobrec features --ds {ds}` first")
    return Vocab(read_partition(path))


@dataclass(frozen=True)
class Vocab:
    """A vocab table with per-field lookups (term → global index) built once.

    Attributes:
        table: the vocab rows (field, term, index, df, first_ds).
        size: one more than the largest index (the width of profile matrices).
    """

    table: pa.Table
    size: int = 0
    _terms: dict[str, pa.Array] = field(default_factory=dict, repr=False)
    _indices: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _df: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        table = self.table.sort_by([("index", "ascending")])
        object.__setattr__(self, "table", table)
        object.__setattr__(self, "size", int(pc.max(table["index"]).as_py()) + 1 if table.num_rows else 0)
        for name in FIELDS:
            rows = table.filter(pc.equal(table["field"], name))
            self._terms[name] = rows["term"].combine_chunks()
            self._indices[name] = rows["index"].to_numpy().astype(np.int64)
            self._df[name] = rows["df"].to_numpy().astype(np.int64)

    def terms(self, name: str) -> pa.Array:
        """Terms of field ``name`` in index order (position = the field-local code)."""
        return self._terms[name]

    def indices(self, name: str) -> np.ndarray:
        """Global indices of field ``name``'s terms, aligned with :meth:`terms`."""
        return self._indices[name]

    def df(self, name: str) -> np.ndarray:
        return self._df[name]

    def local_codes(self, name: str, terms: pa.Array) -> np.ndarray:
        """Field-local code of each term (-1 for terms not in the vocab or null)."""
        codes = pc.index_in(terms, value_set=self._terms[name])
        return pc.fill_null(codes, -1).to_numpy(zero_copy_only=False).astype(np.int64)
