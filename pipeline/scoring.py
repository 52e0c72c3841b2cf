"""Re-scoring (``jobrec rescore --ds``): score each member's first-stage candidates with the full GLMix model.

score(m, j) = b₀ + x_mj'b + α_m0 + s_j'α_m + β_j0 + q_m'β_j, the linear predictor (log-odds for the logistic
model), computed per block of members with sparse matrices built once: x from
:func:`pipeline.features.pairs.pair_features` (the training code path; position fixed at
:data:`~pipeline.features.pairs.CANONICAL_POSITION`), s_j/q_m the job/member profiles over the vocab's term
indices, α/β the per-member/per-job coefficient matrices over the same indices. The model is read with
``glmix_core.load_model`` and laid out with ``GLMixModel.coefficient_matrix`` (this module never reads model
files); the score equals ``GLMixModel.score`` on the pairs' feature bags (tests/test_scoring_rescore.py).

Post-processing, in order: drop jobs that are not active after ``ds`` (expires_at ≤ the end of ``ds``, or
unknown), drop jobs the member applied to in the last ``applied_lookback_days`` days, keep at most
``max_per_company`` jobs per company (highest scores first), keep the top N. Ties break on job_id.

Members without coefficients score with α = 0. Members without (usable) candidates — in the day's member
snapshot but absent from ``candidates/`` — are scored against a fallback pool: the ``fallback_pool`` active
jobs with the highest member-independent part of the score (b₀ + job main effects + β_j0).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp

from glmix_core import GLMixModel, ModelError, load_model
from pipeline.config import Settings
from pipeline.features.pairs import (
    CANONICAL_POSITION,
    GlobalSpace,
    PairRows,
    ProfileBlock,
    pair_features,
    profile_feature_names,
    rowwise_dot,
)
from pipeline.features.vocab import CATEGORICAL_FIELDS, FIELDS, load_vocab
from pipeline.storage import atomic_directory, check_ds, read_partition, shift_ds

log = logging.getLogger(__name__)

DEFAULT_MAX_PER_COMPANY = 10
RECOMMENDATION_SCHEMA = pa.schema(
    [
        pa.field("member_id", pa.int64()),
        pa.field("rank", pa.int32()),
        pa.field("job_id", pa.int64()),
        pa.field("score", pa.float64()),
        pa.field("model_version", pa.string()),
    ]
)


@dataclass(frozen=True)
class ScoringModel:
    """A GLMix model laid out for block scoring over one day's feature space.

    Attributes:
        version: the model version written next to every recommendation.
        fixed: coefficient per global feature id; ``fixed_intercept`` b₀.
        member_coef: (members × vocab) sparse α rows; ``member_intercept`` α_m0 per member row.
        job_coef: (jobs × vocab) sparse β rows; ``job_intercept`` β_j0 per job row.
        members_with_coefficients: how many scored members have a per-member coefficient row.
    """

    version: str
    fixed: np.ndarray
    fixed_intercept: float
    member_coef: sp.csr_matrix
    member_intercept: np.ndarray
    job_coef: sp.csr_matrix
    job_intercept: np.ndarray
    members_with_coefficients: int


def _random_part(
    model: GLMixModel, entity: str, features: pa.Array, ids: np.ndarray
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """(rows × features coefficients, intercepts, found mask) of the entities ``ids``, summed over the model's
    random-effect coordinates keyed by ``entity`` (zeros when it has none)."""
    matrix = sp.csr_matrix((len(ids), len(features)))
    intercept, found = np.zeros(len(ids)), np.zeros(len(ids), dtype=bool)
    entity_ids = pa.array(ids, pa.int64()).cast(pa.string())  # glmix_core compares entity IDs as strings
    for coordinate in model.spec.coordinates:
        if coordinate.type == "random" and coordinate.entity == entity:
            part = model.coefficient_matrix(coordinate.name, features, entities=entity_ids)
            matrix, intercept, found = matrix + part.matrix, intercept + part.intercept, found | part.found
    return matrix.tocsr(), intercept, found


def scoring_model(
    model: GLMixModel, space: GlobalSpace, member_ids: np.ndarray, job_ids: np.ndarray, version: str
) -> ScoringModel:
    """Lay a GLMix model's coefficients out over the day's features (``GLMixModel.coefficient_matrix``).

    Fixed effects over ``space.names`` (global feature ids); the per-member (``member_id``) and per-job
    (``job_id``) random effects over the vocab's term indices (the columns of the profile matrices), one
    row per entry of the sorted ``member_ids``/``job_ids``. Features the day's feature space does not have
    contribute nothing (as for unseen features at training time).
    """
    fixed, fixed_intercept, unmapped = np.zeros(len(space.names)), 0.0, 0
    for coordinate in model.spec.coordinates:
        if coordinate.type == "fixed":
            part = model.coefficient_matrix(coordinate.name, space.names)
            fixed += part.vector
            fixed_intercept += float(part.intercept[0])
            unmapped += part.unmapped
    if unmapped:
        log.info("model %s: %d fixed-effect features are not in this day's feature space", version, unmapped)
    profile_features = profile_feature_names(space.vocab, max(space.vocab.size, 1))
    member_coef, member_intercept, member_found = _random_part(model, "member_id", profile_features, member_ids)
    job_coef, job_intercept, _ = _random_part(model, "job_id", profile_features, job_ids)
    return ScoringModel(
        version=version,
        fixed=fixed,
        fixed_intercept=fixed_intercept,
        member_coef=member_coef,
        member_intercept=member_intercept,
        job_coef=job_coef,
        job_intercept=job_intercept,
        members_with_coefficients=int(member_found.sum()),
    )


def load_scoring_model(model_dir: Path, space: GlobalSpace, member_ids: np.ndarray, job_ids: np.ndarray) -> ScoringModel:
    """Load the GLMix model at ``model_dir`` (``glmix_core.load_model``) and lay it out with :func:`scoring_model`.

    ``member_ids``/``job_ids`` are the sorted entity IDs of the rows being scored. Raises
    ``FileNotFoundError`` saying what to run when ``model_dir`` holds no readable model.
    """
    model_dir = Path(model_dir)
    try:
        model = load_model(model_dir)
    except ModelError as exc:
        raise FileNotFoundError(
            f"no GLMix model at {model_dir} ({exc}); train one first (`jobrec train`) or pass --model DIR"
        ) from exc
    version = str(model.metadata.get("version") or model_dir.name)
    return scoring_model(model, space, member_ids, job_ids, version)


def score_pairs(
    model: ScoringModel,
    space: GlobalSpace,
    members: ProfileBlock,
    member_profile_matrix: sp.csr_matrix,
    member_rows: np.ndarray,
    jobs: ProfileBlock,
    job_profile_matrix: sp.csr_matrix,
    job_rows: np.ndarray,
) -> np.ndarray:
    """The full GLMix linear predictor for the pairs (member row, job row), vectorised over the block."""
    position = np.full(len(member_rows), CANONICAL_POSITION, dtype=np.float64)
    pairs = PairRows.of(member_rows, job_rows)
    x = pair_features(members, member_rows, jobs, job_rows, position, space, pairs)
    score = x.score(model.fixed) + model.fixed_intercept
    # s_j'α_m: member coefficient rows against job profiles; q_m'β_j: member profiles against job rows.
    score += rowwise_dot(model.member_coef, job_profile_matrix, pairs)
    score += model.member_intercept[member_rows]
    score += rowwise_dot(member_profile_matrix, model.job_coef, pairs)
    score += model.job_intercept[job_rows]
    return score


def select_top(
    member_rows: np.ndarray,
    job_rows: np.ndarray,
    scores: np.ndarray,
    company: np.ndarray,
    top_n: int,
    max_per_company: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Company cap then top N per member: (member_rows, job_rows, scores, 1-based ranks), sorted by rank.

    ``company`` holds a dense company code per job row. Equal scores keep the input order, so feeding
    pairs in (member, job_id) order (as :func:`rescore` does) breaks ties on job_id. Two stable sorts
    (score, then member) instead of one multi-key lexsort: several times faster on large blocks.
    """
    order = np.argsort(-scores, kind="stable")
    order = order[np.argsort(member_rows[order], kind="stable")]
    member_rows, job_rows, scores = member_rows[order], job_rows[order], scores[order]
    if max_per_company is not None and len(order):
        # Stable sort on (member, company) keeps score order inside each group: rank = offset in group.
        key = member_rows.astype(np.int64) * (int(company.max()) + 1) + company[job_rows]
        by_group = np.argsort(key, kind="stable")
        keep = np.empty(len(order), dtype=bool)
        keep[by_group] = _rank_in_groups(key[by_group]) < max_per_company
        member_rows, job_rows, scores = member_rows[keep], job_rows[keep], scores[keep]
    rank = _rank_in_groups(member_rows)
    keep = rank < top_n
    return member_rows[keep], job_rows[keep], scores[keep], rank[keep] + 1


def _rank_in_groups(sorted_keys: np.ndarray) -> np.ndarray:
    """0-based position of each element inside its run of equal keys (``sorted_keys`` grouped)."""
    n = len(sorted_keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    return np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))


def _applied_pairs(ds: str, settings: Settings, lookback_days: int) -> tuple[np.ndarray, np.ndarray]:
    """(member_id, job_id) of the applies of the last ``lookback_days`` days up to ``ds`` that exist."""
    from pipeline.features import load_arrow_input

    members, jobs = [], []
    for back in range(lookback_days):
        day = shift_ds(ds, -back)
        try:
            table = load_arrow_input("applies", day, settings)
        except FileNotFoundError:
            continue
        members.append(table["member_id"].to_numpy(zero_copy_only=False))
        jobs.append(table["job_id"].to_numpy(zero_copy_only=False))
    if not members:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(members).astype(np.int64), np.concatenate(jobs).astype(np.int64)


def _lookup(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Row of each id in ``sorted_ids`` (-1 when absent)."""
    if len(sorted_ids) == 0:
        return np.full(len(ids), -1, dtype=np.int64)
    pos = np.searchsorted(sorted_ids, ids)
    pos_clipped = np.minimum(pos, len(sorted_ids) - 1)
    return np.where(sorted_ids[pos_clipped] == ids, pos_clipped, -1).astype(np.int64)


def _sorted_distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (``np.unique`` without its slow hash path on large int arrays)."""
    ordered = np.sort(values)
    if len(ordered) == 0:
        return ordered
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]]


def _contains(sorted_values: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Whether each of ``values`` is in ``sorted_values`` (binary search)."""
    if len(sorted_values) == 0:
        return np.zeros(len(values), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_values, values), len(sorted_values) - 1)
    return sorted_values[pos] == values


def _with_members(profiles: pa.Table, extra_ids: np.ndarray) -> pa.Table:
    """``profiles`` plus empty-profile rows for ``extra_ids``, sorted by member_id."""
    profiles = profiles.select(["member_id", *FIELDS])
    if len(extra_ids):
        empty = pa.table(
            {"member_id": pa.array(extra_ids, pa.int64()), **{f: pa.array([[]] * len(extra_ids)) for f in FIELDS}}
        )
        empty = empty.cast(profiles.schema)
        profiles = pa.concat_tables([profiles, empty])
    return profiles.sort_by("member_id")


def rescore(
    ds: str,
    settings: Settings,
    top_n: int | None = None,
    model_dir: str | Path | None = None,
    max_per_company: int | None = DEFAULT_MAX_PER_COMPANY,
    *,
    pairs_per_block: int = 250_000,
    fallback_pool: int | None = None,
    applied_lookback_days: int = 60,
) -> dict:
    """Write ``recommendations/ds=`` (member_id, rank, job_id, score, model_version) for every member.

    Reads ``candidates/ds=``, the day's features (vocab, member and job profiles) and the GLMix model at
    ``model_dir`` (default ``settings.layout.model_daily(ds)``). Returns counts and timings.
    """
    check_ds(ds)
    started = time.time()
    layout = settings.layout
    top_n = settings.top_n if top_n is None else int(top_n)
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1; got {top_n}")
    if max_per_company is not None and max_per_company < 1:
        raise ValueError(f"max_per_company must be >= 1 (or None for no cap); got {max_per_company}")
    fallback_pool = fallback_pool or 5 * top_n
    model_dir = Path(model_dir) if model_dir is not None else layout.model_daily(ds)
    cand_path = layout.candidates(ds)
    if not cand_path.exists():
        raise FileNotFoundError(f"no candidates for ds={ds} at {cand_path}; run `jobrec retrieve --ds {ds}` first")
    for kind in ("member_profiles", "job_profiles"):
        if not layout.features(kind, ds).exists():
            raise FileNotFoundError(f"no {kind} for ds={ds}; run `jobrec features --ds {ds}` first")

    space = GlobalSpace.from_vocab(load_vocab(ds, settings))
    candidates = read_partition(cand_path, columns=["member_id", "job_id"])
    cand_members = candidates["member_id"].to_numpy(zero_copy_only=False).astype(np.int64)
    cand_jobs = candidates["job_id"].to_numpy(zero_copy_only=False).astype(np.int64)

    job_table = read_partition(layout.features("job_profiles", ds)).sort_by("job_id")
    job_ids = job_table["job_id"].to_numpy(zero_copy_only=False).astype(np.int64)
    _, company = np.unique(job_table["company_id"].to_numpy(zero_copy_only=False), return_inverse=True)
    end_of_day = dt.datetime.fromisoformat(shift_ds(ds, 1)).replace(tzinfo=dt.UTC)
    expires = pc.cast(job_table["expires_at"], pa.timestamp("us", tz="UTC"))
    active = pc.fill_null(pc.greater(expires, pa.scalar(end_of_day, pa.timestamp("us", tz="UTC"))), False)
    active = active.to_numpy(zero_copy_only=False)

    member_profiles = read_partition(layout.features("member_profiles", ds))
    known = member_profiles["member_id"].to_numpy(zero_copy_only=False).astype(np.int64)
    distinct_candidates = _sorted_distinct(cand_members)
    extra = distinct_candidates[~_contains(np.sort(known), distinct_candidates)]
    member_table = _with_members(member_profiles, extra)
    member_ids = member_table["member_id"].to_numpy(zero_copy_only=False).astype(np.int64)

    members = ProfileBlock.from_table(member_table, space.vocab)
    jobs = ProfileBlock.from_table(job_table, space.vocab)
    member_matrix, job_matrix = members.combined(), jobs.combined()
    model = load_scoring_model(model_dir, space, member_ids, job_ids)
    log.info("rescore %s: model %s, %d members, %d jobs (%d active), %d candidates",
             ds, model.version, len(member_ids), len(job_ids), int(active.sum()), len(cand_members))

    # Candidate pairs that survive the filters: known active job, not applied to already.
    m_rows, j_rows = _lookup(member_ids, cand_members), _lookup(job_ids, cand_jobs)
    usable = (j_rows >= 0) & (m_rows >= 0)
    usable[usable] &= active[j_rows[usable]]
    applied_m, applied_j = _applied_pairs(ds, settings, applied_lookback_days)
    am, aj = _lookup(member_ids, applied_m), _lookup(job_ids, applied_j)
    applied_keys = _sorted_distinct(am[(am >= 0) & (aj >= 0)] * len(job_ids) + aj[(am >= 0) & (aj >= 0)])
    usable &= ~_contains(applied_keys, m_rows * len(job_ids) + j_rows)
    m_rows, j_rows = m_rows[usable], j_rows[usable]

    # Members with nothing usable get the fallback pool: active jobs by their member-independent score.
    has_candidates = np.zeros(len(member_ids), dtype=bool)
    has_candidates[m_rows] = True
    without = np.flatnonzero(~has_candidates)
    if len(without):
        prior = model.fixed_intercept + model.job_intercept.copy()
        for f in CATEGORICAL_FIELDS:
            code = jobs.codes[f]
            has = code >= 0
            prior[has] += model.fixed[space.job_base[f] + code[has]]
        pool = np.flatnonzero(active)
        pool = pool[np.lexsort((job_ids[pool], -prior[pool]))][:fallback_pool]
        fm = np.repeat(without, len(pool))
        fj = np.tile(pool, len(without))
        keep = ~_contains(applied_keys, fm * len(job_ids) + fj)
        m_rows, j_rows = np.concatenate([m_rows, fm[keep]]), np.concatenate([j_rows, fj[keep]])

    # Distinct pairs in (member, job_id) order: job rows follow job_id, so score ties break on job_id.
    pair_keys = _sorted_distinct(m_rows.astype(np.int64) * len(job_ids) + j_rows)
    m_rows, j_rows = pair_keys // len(job_ids), pair_keys % len(job_ids)
    target = layout.recommendations(ds)
    written = 0
    member_starts = np.flatnonzero(np.r_[True, m_rows[1:] != m_rows[:-1]]) if len(m_rows) else np.zeros(0, int)
    with atomic_directory(target) as tmp:
        writer = pq.ParquetWriter(tmp / "part-00000.parquet", RECOMMENDATION_SCHEMA, compression="zstd")
        try:
            start = 0
            while start < len(m_rows):
                # Block boundary on a member boundary, about pairs_per_block pairs per block.
                cut = np.searchsorted(member_starts, start + pairs_per_block, side="left")
                stop = int(member_starts[cut]) if cut < len(member_starts) else len(m_rows)
                bm, bj = m_rows[start:stop], j_rows[start:stop]
                scores = score_pairs(model, space, members, member_matrix, bm, jobs, job_matrix, bj)
                rm, rj, rs, rank = select_top(bm, bj, scores, company, top_n, max_per_company)
                writer.write_table(
                    pa.table(
                        {
                            "member_id": pa.array(member_ids[rm], pa.int64()),
                            "rank": pa.array(rank, pa.int32()),
                            "job_id": pa.array(job_ids[rj], pa.int64()),
                            "score": pa.array(rs, pa.float64()),
                            "model_version": pa.array([model.version] * len(rm), pa.string()),
                        },
                        schema=RECOMMENDATION_SCHEMA,
                    )
                )
                written += len(rm)
                log.debug("rescore %s: scored pairs %d..%d", ds, start, stop)
                start = stop
        finally:
            writer.close()
    seconds = time.time() - started
    scored_members = len(member_ids)
    log.info("rescore %s: %d members, %d pairs scored, %d recommendations in %.1fs",
             ds, scored_members, len(m_rows), written, seconds)
    return {
        "ds": ds,
        "model_version": model.version,
        "members": scored_members,
        "members_with_candidates": int(scored_members - len(without)),
        "members_on_fallback": int(len(without)),
        "members_with_coefficients": model.members_with_coefficients,
        "pairs_scored": int(len(m_rows)),
        "recommendations": written,
        "seconds": round(seconds, 3),
        "members_per_second": round(scored_members / seconds, 1) if seconds > 0 else None,
    }
