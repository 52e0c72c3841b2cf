"""The logging policy: which active jobs each member is shown on a day, in which sessions and positions.

Members arrive in sessions, chosen in proportion to a heavy-tailed activity weight (log-normal: most members
see a few jobs over a month, a few see hundreds). Each slot of a session is filled from one of:

- the member's function (jobs of the same function),
- one of the member's skills (jobs listing that skill),
- the member's region,
- exploration: any active job, uniformly.

All slots are filled at once from precomputed group indices (active jobs sorted by function, by skill and
by region), never with a Python loop over members. A member sees a job at most once per day. Within a
session the policy ranks its picks by a noisy similarity score, which yields the positions 1..K.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from pipeline.synth.entities import Profiles


@dataclass(frozen=True)
class PolicyParameters:
    """Slot-source mix, session lengths and activity skew of the logging policy."""

    by_function: float = 0.45
    by_skill: float = 0.30
    by_region: float = 0.10  # the rest (0.15) explores uniformly among active jobs
    mean_session_length: float = 8.0
    max_session_length: int = 25
    activity_sigma: float = 2.5
    max_member_impressions: float = 20.0  # expected impressions/day of the most active members (no bots)
    rank_noise: float = 0.5


def activity_cdf(rng: np.random.Generator, n_members: int, sigma: float, max_share: float) -> np.ndarray:
    """Cumulative session-sampling distribution over members from log-normal activity weights.

    No member gets more than ``max(max_share, 2 / n_members)`` of the sessions (a few clip-and-renormalise
    rounds), so the most active members see hundreds of jobs over a month rather than thousands a day.
    """
    weights = np.exp(sigma * rng.standard_normal(n_members))
    weights /= weights.sum()
    cap = max(max_share, 2.0 / n_members)
    for _ in range(10):
        weights = np.minimum(weights, cap)
        weights /= weights.sum()
    cdf = np.cumsum(weights)
    cdf[-1] = 1.0
    return cdf


@dataclass(frozen=True)
class Slots:
    """The day's impressions before scoring: member row, job row, session number (in session order)."""

    member: np.ndarray
    job: np.ndarray
    session: np.ndarray
    session_start_s: np.ndarray  # per session, seconds after midnight


def _group_index(keys: np.ndarray, values: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """``(values sorted by key, bounds)``: group g is ``sorted[bounds[g]:bounds[g + 1]]``."""
    order = np.argsort(keys, kind="stable")
    return values[order], np.searchsorted(keys[order], np.arange(n_groups + 1))


def _pick_in_group(rng: np.random.Generator, pool: np.ndarray, bounds: np.ndarray, group: np.ndarray) -> np.ndarray:
    """One uniform pick from ``pool`` within each row's group; -1 where the group is empty or ``group < 0``."""
    safe = np.maximum(group, 0)
    lo, count = bounds[safe], bounds[safe + 1] - bounds[safe]
    pick = lo + np.floor(rng.random(len(group)) * count).astype(np.int64)
    return np.where((count > 0) & (group >= 0), pool[np.minimum(pick, len(pool) - 1)], -1)


def _random_nonzero_column(rng: np.random.Generator, matrix: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """A uniformly chosen nonzero column of each row (-1 for empty rows)."""
    start, count = matrix.indptr[rows], np.diff(matrix.indptr)[rows]
    pick = start + np.floor(rng.random(len(rows)) * count).astype(np.int64)
    return np.where(count > 0, matrix.indices[np.minimum(pick, max(len(matrix.indices) - 1, 0))], -1)


def sample_slots(
    rng: np.random.Generator,
    members: Profiles,
    jobs: Profiles,
    active: np.ndarray,
    member_cdf: np.ndarray,
    n_impressions: int,
    params: PolicyParameters,
) -> Slots:
    """Fill about ``n_impressions`` slots (fewer after removing same-day repeats of a member-job pair)."""
    if len(active) == 0 or n_impressions == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Slots(empty, empty, empty, empty)
    # Session lengths: 1 + geometric, capped; draw a few spare sessions then cut at n_impressions.
    n_sessions = int(np.ceil(n_impressions / params.mean_session_length * 1.3)) + 8
    lengths = np.minimum(rng.geometric(1.0 / params.mean_session_length, n_sessions), params.max_session_length)
    ends = np.cumsum(lengths)
    n_sessions = int(np.searchsorted(ends, n_impressions) + 1)
    lengths = lengths[:n_sessions]
    lengths[-1] -= max(0, int(ends[n_sessions - 1]) - n_impressions)
    session_member = np.minimum(np.searchsorted(member_cdf, rng.random(n_sessions), side="right"), len(members) - 1)
    session = np.repeat(np.arange(n_sessions), lengths)
    member = session_member[session]

    # Group counts cover member codes too: a member's function or region may have no job at all.
    n_functions = int(max(jobs.function.max(), members.function.max())) + 1
    n_regions = int(max(jobs.region.max(), members.region.max())) + 1
    by_function = _group_index(jobs.function[active], active, n_functions)
    by_region = _group_index(jobs.region[active], active, n_regions)
    active_skills = jobs.skills[active].tocoo()
    by_skill = _group_index(active_skills.col, active[active_skills.row], jobs.skills.shape[1])

    source = rng.random(len(member))
    cut_function = params.by_function
    cut_skill = cut_function + params.by_skill
    cut_region = cut_skill + params.by_region
    job = np.full(len(member), -1, dtype=np.int64)
    use = source < cut_function
    job[use] = _pick_in_group(rng, *by_function, members.function[member[use]])
    use = (source >= cut_function) & (source < cut_skill)
    job[use] = _pick_in_group(rng, *by_skill, _random_nonzero_column(rng, members.skills, member[use]))
    use = (source >= cut_skill) & (source < cut_region)
    job[use] = _pick_in_group(rng, *by_region, members.region[member[use]])
    explore = job < 0  # exploration slots and slots whose group was empty
    job[explore] = active[np.floor(rng.random(int(explore.sum())) * len(active)).astype(np.int64)]

    # A member sees a job at most once a day: keep each pair's first slot.
    pair = member.astype(np.int64) * len(jobs) + job
    _, first = np.unique(pair, return_index=True)
    keep = np.sort(first)
    start_s = rng.integers(0, 86_400, n_sessions)
    return Slots(member=member[keep], job=job[keep], session=session[keep], session_start_s=start_s)


def assign_positions(rng: np.random.Generator, session: np.ndarray, similarity: np.ndarray, noise: float) -> np.ndarray:
    """1-based positions within each session, by descending ``similarity`` plus Gumbel noise (int32)."""
    score = similarity + noise * rng.gumbel(size=len(session))
    order = np.lexsort((-score, session))
    sorted_session = session[order]
    group_start = np.flatnonzero(np.r_[True, sorted_session[1:] != sorted_session[:-1]])
    run_start = np.repeat(group_start, np.diff(np.r_[group_start, len(order)]))
    position = np.empty(len(order), dtype=np.int32)
    position[order] = (np.arange(len(order)) - run_start + 1).astype(np.int32)
    return position
