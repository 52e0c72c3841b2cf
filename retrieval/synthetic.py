"""Synthetic job and member profiles with Zipf-distributed terms, for tests and benchmarks.

The tables follow the profile contract (docs/architecture.md): an ID column and one
``list<struct<term, weight>>`` column per field, weights L2-normalised per field. Terms of each field are
drawn from a Zipf law over a fixed vocabulary, so a few terms are in many profiles (long posting lists) and
most are rare, like real titles and skills.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from retrieval.profiles import PROFILE_TYPE
from retrieval.schema import PROFILE_FIELDS

# field → (vocabulary size, terms drawn per profile, Zipf exponent); about 25 distinct terms per profile.
FIELD_SHAPES: dict[str, tuple[int, int, float]] = {
    "title": (5000, 5, 0.9),
    "skills": (30000, 17, 0.7),
    "industry": (60, 1, 1.1),
    "function": (40, 1, 1.1),
    "seniority": (7, 1, 0.8),
    "region": (150, 1, 1.1),
}


def _zipf_field(rng: np.random.Generator, n: int, field: str) -> pa.Array:
    vocab_size, per_row, exponent = FIELD_SHAPES[field]
    probs = 1.0 / np.arange(1, vocab_size + 1) ** exponent
    draws = rng.choice(vocab_size, size=(n, per_row), p=probs / probs.sum())
    # Distinct terms per row: sort each row's codes as row*V+term, keep first occurrences.
    keys = np.unique((np.arange(n)[:, None] * vocab_size + draws).ravel())
    rows, terms = keys // vocab_size, keys % vocab_size
    raw = rng.lognormal(0.0, 0.5, size=len(keys)) if per_row > 1 else np.ones(len(keys))
    norms = np.sqrt(np.bincount(rows, weights=raw * raw, minlength=n))
    weights = raw / norms[rows]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))]).astype(np.int32)
    names = np.char.add(f"{field[:3]}", terms.astype(str))
    structs = pa.StructArray.from_arrays([pa.array(names, pa.string()), pa.array(weights)], ["term", "weight"])
    return pa.ListArray.from_arrays(pa.array(offsets), structs).cast(PROFILE_TYPE)


def member_profiles(n: int, seed: int = 0, first_id: int = 1) -> pa.Table:
    """``n`` member profiles: member_id + the six profile columns."""
    rng = np.random.default_rng(seed)
    columns = {"member_id": pa.array(np.arange(first_id, first_id + n, dtype=np.int64))}
    for field in PROFILE_FIELDS:
        columns[field] = _zipf_field(rng, n, field)
    return pa.table(columns)


def job_profiles(n: int, seed: int = 1, first_id: int = 1, ds: str = "2026-01-01") -> pa.Table:
    """``n`` job profiles (job_profiles contract): job_id, company_id, region, posted_at, expires_at + profiles.

    Jobs were posted in the 30 days before ``ds`` and expire 1 to 60 days after posting, so some have
    expired by the end of ``ds``.
    """
    rng = np.random.default_rng(seed)
    day_start = dt.datetime.fromisoformat(ds).replace(tzinfo=dt.UTC)
    start_us = int(day_start.timestamp() * 1_000_000)
    day_us = 86_400_000_000
    posted = start_us - rng.integers(0, 30 * day_us, size=n)
    expires = posted + rng.integers(1 * day_us, 60 * day_us, size=n)
    profiles = {field: _zipf_field(rng, n, field) for field in PROFILE_FIELDS}
    region = pc.struct_field(pc.list_element(profiles["region"], 0), "term")
    return pa.table(
        {
            "job_id": pa.array(np.arange(first_id, first_id + n, dtype=np.int64)),
            "company_id": pa.array(rng.integers(1, max(2, n // 20), size=n).astype(np.int64)),
            "region": region,
            "posted_at": pa.array(posted, pa.timestamp("us", tz="UTC")),
            "expires_at": pa.array(expires, pa.timestamp("us", tz="UTC")),
            **profiles,
        }
    )
