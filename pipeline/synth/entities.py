"""Members, companies and jobs of the synthetic marketplace as column arrays, and their raw Arrow tables.

An entity population is held as integer codes into the :class:`~pipeline.synth.catalog.Catalog` plus two
binary sparse matrices (title tokens, skills), which is what both the logging policy and the true model work
on; strings are only materialised when a raw partition is written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from pipeline.synth.catalog import (
    SENIORITY_TITLE_PREFIX,
    Catalog,
    sample_categorical,
    sample_conditional,
)

MEMBER_ID_BASE = 10_000_000
JOB_ID_BASE = 20_000_000
COMPANY_ID_BASE = 30_000_000
US_PER_DAY = 86_400_000_000
TIMESTAMP = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Profiles:
    """A population (members or jobs): one row per entity.

    ``title`` indexes ``TitleVocabulary.strings`` (seniority prefix + base title); ``skills`` and
    ``title_tokens`` are binary CSR matrices with sorted column indices.
    """

    ids: np.ndarray
    function: np.ndarray
    industry: np.ndarray
    seniority: np.ndarray
    region: np.ndarray
    title: np.ndarray
    skills: sp.csr_matrix
    title_tokens: sp.csr_matrix

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class TitleVocabulary:
    """Every (seniority, base title) title string and its binary title-token row."""

    strings: tuple[str, ...]
    tokens: sp.csr_matrix  # [n_titles_with_prefix, n_tokens]

    def index(self, seniority: np.ndarray, base_title: np.ndarray, n_base_titles: int) -> np.ndarray:
        return seniority * n_base_titles + base_title


def build_title_vocabulary(catalog: Catalog) -> TitleVocabulary:
    strings = []
    for prefix in SENIORITY_TITLE_PREFIX:
        for title in catalog.titles:
            strings.append(f"{prefix} {title}".strip())
    token_index: dict[str, int] = {}
    rows, cols = [], []
    for row, text in enumerate(strings):
        for token in sorted(set(text.split())):
            rows.append(row)
            cols.append(token_index.setdefault(token, len(token_index)))
    tokens = sp.csr_matrix(
        (np.ones(len(rows)), (np.asarray(rows), np.asarray(cols))), shape=(len(strings), len(token_index))
    )
    return TitleVocabulary(strings=tuple(strings), tokens=tokens)


def _sample_skills(
    rng: np.random.Generator, catalog: Catalog, function: np.ndarray, base: int, mean_extra: float, cap: int
) -> sp.csr_matrix:
    """Binary [n, n_skills] matrix: ``base + Poisson(mean_extra)`` (≤ cap) Zipf draws per row, deduplicated."""
    n = len(function)
    counts = np.minimum(base + rng.poisson(mean_extra, n), cap)
    draws = sample_conditional(rng, catalog.skill_cdf_by_function, function, draws=cap)
    keep = np.arange(cap)[None, :] < counts[:, None]
    rows = np.broadcast_to(np.arange(n)[:, None], draws.shape)[keep]
    matrix = sp.csr_matrix(
        (np.ones(len(rows)), (rows, draws[keep])), shape=(n, len(catalog.skills))
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    matrix.sort_indices()
    return matrix


def generate_members(rng: np.random.Generator, catalog: Catalog, titles: TitleVocabulary, n: int) -> Profiles:
    """``n`` members with correlated attributes: function drives title, industry mix and skills."""
    function = sample_categorical(rng, catalog.function_cdf, n)
    base_title = _title_within_function(rng, catalog, function)
    seniority = sample_categorical(rng, catalog.seniority_cdf, n)
    industry = sample_conditional(rng, catalog.industry_cdf_by_function, function)[:, 0]
    region = sample_categorical(rng, catalog.region_cdf, n)
    title = titles.index(seniority, base_title, len(catalog.titles))
    return Profiles(
        ids=MEMBER_ID_BASE + 1 + np.arange(n, dtype=np.int64),
        function=function,
        industry=industry,
        seniority=seniority,
        region=region,
        title=title,
        skills=_sample_skills(rng, catalog, function, base=3, mean_extra=5.0, cap=20),
        title_tokens=titles.tokens[title],
    )


@dataclass(frozen=True)
class JobPostings:
    """Jobs plus their company and their posting window (microseconds since the epoch, UTC)."""

    profiles: Profiles
    company_id: np.ndarray
    posted_at_us: np.ndarray
    expires_at_us: np.ndarray

    def active_during(self, day_start_us: int) -> np.ndarray:
        """Indices of jobs active at some time during the day starting at ``day_start_us``."""
        day_end = day_start_us + US_PER_DAY
        return np.flatnonzero((self.posted_at_us < day_end) & (self.expires_at_us > day_start_us))


def generate_jobs(
    rng: np.random.Generator,
    catalog: Catalog,
    titles: TitleVocabulary,
    n: int,
    *,
    start_us: int,
    days: int,
    lookback_days: int = 30,
    lifetime_days: tuple[int, int] = (10, 45),
) -> JobPostings:
    """``n`` jobs from ``max(1, n // 8)`` companies, posted uniformly from ``lookback_days`` before the start
    to the last day and open for ``lifetime_days`` (uniform), so the active set changes every day.
    """
    n_companies = max(1, n // 8)
    company_industry = rng.integers(0, len(catalog.industries), n_companies)
    company_region = sample_categorical(rng, catalog.region_cdf, n_companies)
    company = rng.integers(0, n_companies, n)

    function = sample_categorical(rng, catalog.function_cdf, n)
    base_title = _title_within_function(rng, catalog, function)
    seniority = sample_categorical(rng, catalog.seniority_cdf, n)
    industry = np.where(
        rng.random(n) < 0.7,
        company_industry[company],
        sample_conditional(rng, catalog.industry_cdf_by_function, function)[:, 0],
    )
    region = np.where(rng.random(n) < 0.8, company_region[company], sample_categorical(rng, catalog.region_cdf, n))
    title = titles.index(seniority, base_title, len(catalog.titles))

    posted_day = rng.integers(-lookback_days, days, n)
    posted_at = start_us + posted_day * US_PER_DAY + rng.integers(0, US_PER_DAY // 1_000_000, n) * 1_000_000
    lifetime = rng.integers(lifetime_days[0], lifetime_days[1] + 1, n) * US_PER_DAY
    profiles = Profiles(
        ids=JOB_ID_BASE + 1 + np.arange(n, dtype=np.int64),
        function=function,
        industry=industry,
        seniority=seniority,
        region=region,
        title=title,
        skills=_sample_skills(rng, catalog, function, base=4, mean_extra=4.0, cap=15),
        title_tokens=titles.tokens[title],
    )
    return JobPostings(
        profiles=profiles,
        company_id=COMPANY_ID_BASE + 1 + company.astype(np.int64),
        posted_at_us=posted_at.astype(np.int64),
        expires_at_us=(posted_at + lifetime).astype(np.int64),
    )


def _title_within_function(rng: np.random.Generator, catalog: Catalog, function: np.ndarray) -> np.ndarray:
    counts = np.array([len(t) for t in catalog.function_titles])
    starts = np.array([t[0] for t in catalog.function_titles])
    return starts[function] + np.floor(rng.random(len(function)) * counts[function]).astype(np.int64)


def _skills_column(skills: sp.csr_matrix, names: pa.Array) -> pa.Array:
    values = names.take(pa.array(skills.indices.astype(np.int64)))
    return pa.ListArray.from_arrays(pa.array(skills.indptr.astype(np.int32)), values)


def _profile_columns(profiles: Profiles, catalog: Catalog, titles: TitleVocabulary, rows: np.ndarray) -> dict:
    def names(vocabulary: tuple[str, ...], codes: np.ndarray) -> pa.Array:
        return pa.array(vocabulary).take(pa.array(codes[rows].astype(np.int64)))

    return {
        "title": names(titles.strings, profiles.title),
        "skills": _skills_column(profiles.skills[rows], pa.array(catalog.skills)),
        "industry": names(catalog.industries, profiles.industry),
        "function": names(catalog.functions, profiles.function),
        "seniority": names(catalog.seniority, profiles.seniority),
        "region": names(catalog.regions, profiles.region),
    }


def members_table(members: Profiles, updated_at_us: np.ndarray, catalog: Catalog, titles: TitleVocabulary) -> pa.Table:
    """The raw ``members`` snapshot (docs/architecture.md, "Raw inputs")."""
    rows = np.arange(len(members))
    columns = {"member_id": pa.array(members.ids, pa.int64())}
    columns.update(_profile_columns(members, catalog, titles, rows))
    columns["updated_at"] = pa.array(updated_at_us, TIMESTAMP)
    return pa.table(columns)


def jobs_table(jobs: JobPostings, rows: np.ndarray, catalog: Catalog, titles: TitleVocabulary) -> pa.Table:
    """The raw ``jobs`` partition holding the jobs at ``rows`` (docs/architecture.md, "Raw inputs")."""
    columns = {"job_id": pa.array(jobs.profiles.ids[rows], pa.int64())}
    columns.update(_profile_columns(jobs.profiles, catalog, titles, rows))
    columns["company_id"] = pa.array(jobs.company_id[rows], pa.int64())
    columns["posted_at"] = pa.array(jobs.posted_at_us[rows], TIMESTAMP)
    columns["expires_at"] = pa.array(jobs.expires_at_us[rows], TIMESTAMP)
    return pa.table(columns)
