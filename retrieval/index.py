"""Build, update and open the Whoosh job index (one document per active job).

A document holds the stored job facts (job_id, company_id, job_region, posted/expiry times in µs) and the
six weighted-term profile fields. ``build_index`` writes a fresh index; ``update_index`` brings a copy of
yesterday's index to today's set of jobs (delete closed/expired or changed jobs, add new/changed ones,
optimise when segments pile up), so that its documents equal those of a full rebuild.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from whoosh import index as windex

from retrieval.profiles import check_profile_table, profile_column, region_strings, timestamps_us
from retrieval.schema import PROFILE_FIELDS, job_schema

log = logging.getLogger(__name__)

#: Merge everything into one segment once an update leaves more segments than this.
MAX_SEGMENTS = 8
_WRITER_MB = 1024  # Whoosh's in-memory posting pool; smaller spills sorted runs to disk


@dataclass(frozen=True)
class IndexStats:
    documents: int
    added: int
    deleted: int
    segments: int
    optimised: bool
    size_bytes: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def index_size_bytes(index_dir: Path) -> int:
    return sum(p.stat().st_size for p in Path(index_dir).rglob("*") if p.is_file())


def _active_rows(jobs: pa.Table, active_from_us: int | None) -> pa.Table:
    """Jobs to index: all rows, minus those already expired at ``active_from_us``; sorted by job_id."""
    check_profile_table(jobs, "job_id", "jobs")
    if active_from_us is not None and "expires_at" in jobs.column_names:
        expires = timestamps_us(jobs["expires_at"])
        jobs = jobs.filter(pa.array(expires > active_from_us))
    ids = jobs["job_id"].to_numpy()
    if len(np.unique(ids)) != len(ids):
        raise ValueError("jobs table has duplicate job_id values; deduplicate the job profiles first")
    return jobs.take(pa.array(np.argsort(ids, kind="stable")))


def _documents(jobs: pa.Table) -> list[dict]:
    """Whoosh documents of the rows of ``jobs`` (profile fields as lists of term/weight dicts)."""
    n = jobs.num_rows

    def ints(name: str) -> list[int]:
        if name not in jobs.column_names:
            return [0] * n
        column = jobs[name]
        return timestamps_us(pc.fill_null(column, pa.scalar(0, column.type))).tolist()

    job_ids, companies = ints("job_id"), ints("company_id")
    posted, expires = ints("posted_at"), ints("expires_at")
    regions = region_strings(jobs).tolist()
    profiles = {field: profile_column(jobs, field).to_pylist() for field in PROFILE_FIELDS}
    docs = []
    for i in range(n):
        doc = {
            "job_id": job_ids[i],
            "company_id": companies[i],
            "job_region": regions[i] or "",
            "posted_at_us": posted[i],
            "expires_at_us": expires[i],
            **{field: profiles[field][i] or [] for field in PROFILE_FIELDS},
        }
        # Fingerprint of everything indexed or stored: a job whose profile or dates changed is re-indexed.
        doc["profile_hash"] = hashlib.blake2b(json.dumps(doc, sort_keys=True).encode(), digest_size=12).hexdigest()
        docs.append(doc)
    return docs


def _add(writer, docs: list[dict]) -> None:
    for i, doc in enumerate(docs):
        writer.add_document(**doc)
        if (i + 1) % 20000 == 0:
            log.info("indexed %d/%d jobs", i + 1, len(docs))


def build_index(index_dir: Path | str, jobs: pa.Table, *, active_from_us: int | None = None) -> IndexStats:
    """Write a fresh Whoosh index of ``jobs`` into the empty or new folder ``index_dir``.

    ``jobs`` follows the job_profiles contract (job_id, company_id, region, posted_at, expires_at + the six
    profile columns); jobs whose ``expires_at`` <= ``active_from_us`` are left out. Documents are added in
    job_id order, so a rebuilt index is deterministic.
    """
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    rows = _active_rows(jobs, active_from_us)
    ix = windex.create_in(str(index_dir), job_schema())
    writer = ix.writer(limitmb=_WRITER_MB)
    _add(writer, _documents(rows))
    writer.commit(optimize=True)
    stats = IndexStats(rows.num_rows, rows.num_rows, 0, _segment_count(ix), True, index_size_bytes(index_dir))
    log.info("built job index in %s: %s", index_dir, stats)
    return stats


def _segment_count(ix) -> int:
    with ix.reader() as reader:
        return len(reader.leaf_readers())


def update_index(
    previous_dir: Path | str, index_dir: Path | str, jobs: pa.Table, *, active_from_us: int | None = None
) -> IndexStats:
    """Copy the index at ``previous_dir`` into ``index_dir`` and bring it to today's ``jobs``.

    Deletes documents of jobs absent from ``jobs`` (closed), expired at ``active_from_us``, or whose profile
    changed; adds new and changed jobs; merges segments when there are more than :data:`MAX_SEGMENTS`.
    ``previous_dir`` is never modified, so a failed update leaves it intact.
    """
    previous_dir, index_dir = Path(previous_dir), Path(index_dir)
    if not windex.exists_in(str(previous_dir)):
        raise FileNotFoundError(f"no Whoosh index in {previous_dir}; run `jobrec index build` first")
    shutil.copytree(previous_dir, index_dir, dirs_exist_ok=True)
    rows = _active_rows(jobs, active_from_us)
    wanted_ids = rows["job_id"].to_numpy()
    docs = _documents(rows)
    wanted_hash = {doc["job_id"]: doc["profile_hash"] for doc in docs}

    ix = windex.open_dir(str(index_dir))
    writer = ix.writer(limitmb=_WRITER_MB)
    kept: set[int] = set()
    deleted = 0
    with ix.reader() as reader:
        for docnum, stored in reader.iter_docs():
            job_id = stored["job_id"]
            if wanted_hash.get(job_id) == stored.get("profile_hash") and job_id not in kept:
                kept.add(job_id)
            else:
                writer.delete_document(docnum)
                deleted += 1
    new_docs = [doc for doc, job_id in zip(docs, wanted_ids.tolist(), strict=True) if job_id not in kept]
    _add(writer, new_docs)
    writer.commit()
    segments = _segment_count(ix)
    optimised = segments > MAX_SEGMENTS
    if optimised:
        log.info("job index has %d segments (> %d): optimising", segments, MAX_SEGMENTS)
        ix.optimize()
        segments = _segment_count(ix)
    stats = IndexStats(len(docs), len(new_docs), deleted, segments, optimised, index_size_bytes(index_dir))
    log.info("updated job index %s -> %s: %s", previous_dir, index_dir, stats)
    return stats


def open_index(index_dir: Path | str):
    """Open the Whoosh index at ``index_dir``; ``FileNotFoundError`` saying how to build one if absent."""
    if not Path(index_dir).is_dir() or not windex.exists_in(str(index_dir)):
        raise FileNotFoundError(f"no Whoosh job index in {index_dir}; run `jobrec index build --ds DS` first")
    return windex.open_dir(str(index_dir))


def index_exists(index_dir: Path | str) -> bool:
    """True when ``index_dir`` holds a Whoosh index."""
    return Path(index_dir).is_dir() and windex.exists_in(str(index_dir))
