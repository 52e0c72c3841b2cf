"""The Whoosh schema of the job index: one weighted-terms field per feature domain plus stored job facts.

A profile field holds the job's L2-normalised TF-IDF weights exactly: each posting carries the weight twice,
as Whoosh's posting weight (float32, which is all Whoosh's codec keeps there) and as the posting value
(8-byte little-endian float64), which the cosine scorer and the batch engine read so that both reproduce
a float64 brute-force product bit for bit.

Whoosh stores the schema in its table of contents by pickling it, so the classes below must stay importable
under ``retrieval.schema``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

from whoosh import fields, formats

#: Profile fields, in this order everywhere (docs/architecture.md, "Features").
PROFILE_FIELDS: tuple[str, ...] = ("title", "skills", "industry", "function", "seniority", "region")

#: Field weights used when no LR-Cosine model has been trained yet: every field counts the same.
DEFAULT_FIELD_WEIGHTS: dict[str, float] = {name: 1.0 for name in PROFILE_FIELDS}

_FLOAT64 = struct.Struct("<d")


def _pairs(value: object) -> Iterable[tuple[str, float]]:
    """(term, weight) pairs from a profile value: a mapping, or a sequence of pairs or of Arrow-style dicts."""
    if isinstance(value, Mapping):
        return value.items()
    pairs = []
    for item in value or ():
        if isinstance(item, Mapping):
            pairs.append((item["term"], item["weight"]))
        else:
            term, weight = item
            pairs.append((term, weight))
    return pairs


class TermWeights(formats.Format):
    """Posting format of one weighted term per posting: frequency 1, weight = the given float.

    The value bytes are the weight as float64, so the exact weight survives Whoosh's float32 weight arrays.
    Terms with a weight of zero or less are not indexed (they can never contribute to a cosine).
    """

    posting_size = _FLOAT64.size

    def word_values(self, value, analyzer, **kwargs):
        merged: dict[str, float] = {}
        for term, weight in _pairs(value):
            merged[str(term)] = merged.get(str(term), 0.0) + float(weight)
        return ((term, 1, weight, _FLOAT64.pack(weight)) for term, weight in merged.items() if weight > 0.0)

    def decode_frequency(self, valuestring: bytes) -> int:
        return 1

    def decode_weight(self, valuestring: bytes) -> float:
        return _FLOAT64.unpack(valuestring)[0]

    def supports(self, name: str) -> bool:
        return name in ("frequency", "weight")


def decode_term_weight(valuestring: bytes) -> float:
    """The exact float64 weight stored in a posting value of a :class:`TermWeights` field."""
    return _FLOAT64.unpack(valuestring)[0]


class WeightedTerms(fields.FieldType):
    """A field whose value is a weighted bag of terms (``[(term, weight), ...]`` or ``{term: weight}``)."""

    def __init__(self):
        super().__init__(format=TermWeights(), analyzer=None, scorable=False, stored=False)

    def index(self, value, **kwargs):
        for term, freq, weight, vbytes in self.format.word_values(value, None):
            yield term.encode("utf-8"), freq, weight, vbytes

    def process_text(self, qstring, mode="", **kwargs):
        return iter([qstring])


def job_schema() -> fields.Schema:
    """The job index schema: stored job facts (dates as µs since the epoch, UTC) + one field per profile."""
    stored = {
        "job_id": fields.NUMERIC(numtype=int, bits=64, signed=True, stored=True, unique=True),
        "company_id": fields.NUMERIC(numtype=int, bits=64, signed=True, stored=True),
        "job_region": fields.ID(stored=True),
        "posted_at_us": fields.NUMERIC(numtype=int, bits=64, signed=True, stored=True),
        "expires_at_us": fields.NUMERIC(numtype=int, bits=64, signed=True, stored=True),
        # Fingerprint of the profile, so the daily update re-indexes a job whose weights changed.
        "profile_hash": fields.STORED(),
    }
    return fields.Schema(**stored, **{name: WeightedTerms() for name in PROFILE_FIELDS})


def check_field_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Validate LR-Cosine field weights: known fields, finite, non-negative; missing fields weigh 0.

    Negative weights are rejected because the first stage keeps only jobs that match at least one term,
    which is the same as keeping positive scores only when every weight is >= 0.
    """
    unknown = sorted(set(weights) - set(PROFILE_FIELDS))
    if unknown:
        raise ValueError(f"field weights name unknown fields {unknown}; expected some of {list(PROFILE_FIELDS)}")
    clean = {}
    for name in PROFILE_FIELDS:
        value = float(weights.get(name, 0.0))
        if not value >= 0.0 or value == float("inf"):
            raise ValueError(f"field weight {name} must be a finite number >= 0; got {value!r}")
        clean[name] = value
    if not any(clean.values()):
        raise ValueError("at least one field weight must be > 0")
    return clean


def load_field_weights(path: Path | str | None) -> dict[str, float]:
    """Field weights from a JSON file ``{"title": w, ...}``; :data:`DEFAULT_FIELD_WEIGHTS` when ``path`` is
    None or does not exist."""
    if path is None or not Path(path).exists():
        return dict(DEFAULT_FIELD_WEIGHTS)
    try:
        payload = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"field weights file {path} is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise ValueError(f"field weights file {path} must hold a JSON object {{field: weight}}")
    return check_field_weights(payload)
