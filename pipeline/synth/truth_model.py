"""The true GLMix model that generates applies, and its slow daily drift.

For impression n of job j to member m at position p::

    logit P(apply) = b0 + b_title·cos_title + b_skills·cos_skills + b_function·[function match]
                     + b_industry·[industry match] + b_region·[region match]
                     + b_gap·|seniority gap| + b_step_up·[job one level above member]
                     + b_position·(p − 1)
                     + α_m · s_j + β_j · q_m

``cos`` is the cosine of the binary term vectors of a field (title tokens, skills); ``s_j`` / ``q_m`` are the
one-hot categorical features (intercept, function, industry, seniority, region) of the job / member. Every
term is expressible by the pipeline's features (``cos:<field>``, seniority crosses, ``ctx:position``, the
``job_features``/``member_features`` bags), so a GLMix fit can approach the oracle.

Random effects have heterogeneous variances: a standard deviation per feature block, times a log-normal
per-entity scale (some members are much pickier than others). They drift as a stationary AR(1) process,
``α_t = ρ α_{t−1} + sqrt(1 − ρ²) σ ε``, so yesterday's coefficients explain today less and less: with the
default ρ = 0.985 the correlation after 20 days is ~0.74, so a model left untrained decays slowly
(the oracle with frozen day-one effects loses a few AUC points over 20 days, as in the paper's §4.2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata

from pipeline.synth.catalog import Catalog
from pipeline.synth.entities import Profiles

BLOCKS = ("intercept", "function", "industry", "seniority", "region")


@dataclass(frozen=True)
class TruthParameters:
    """Global coefficients and random-effect scales of the true model (all recorded in summary.json)."""

    title: float = 0.65
    skills: float = 1.6
    function_match: float = 0.5
    industry_match: float = 0.2
    region_match: float = 0.55
    seniority_gap: float = -0.32
    seniority_step_up: float = 0.2
    position: float = -0.05
    base_rate: float = 0.04
    member_sd: dict[str, float] = field(
        default_factory=lambda: {"intercept": 0.3, "function": 0.3, "industry": 0.15, "seniority": 0.2, "region": 0.15}
    )
    job_sd: dict[str, float] = field(
        default_factory=lambda: {"intercept": 0.5, "function": 0.35, "industry": 0.2, "seniority": 0.3, "region": 0.2}
    )
    entity_scale_sigma: float = 0.4
    daily_autocorrelation: float = 0.985


def block_sizes(catalog: Catalog) -> dict[str, int]:
    return {
        "intercept": 1,
        "function": len(catalog.functions),
        "industry": len(catalog.industries),
        "seniority": len(catalog.seniority),
        "region": len(catalog.regions),
    }


def one_hot_columns(profiles: Profiles, catalog: Catalog, rows: np.ndarray) -> np.ndarray:
    """``[len(rows), 5]`` column indices of each entity's one-hot features in the concatenated block layout."""
    sizes = block_sizes(catalog)
    offsets = np.cumsum([0] + [sizes[b] for b in BLOCKS])[:-1]
    codes = np.stack(
        [
            np.zeros(len(rows), dtype=np.int64),
            profiles.function[rows],
            profiles.industry[rows],
            profiles.seniority[rows],
            profiles.region[rows],
        ],
        axis=1,
    )
    return codes + offsets[None, :]


def _random_coefficients(rng: np.random.Generator, n: int, sd: dict[str, float], sizes: dict[str, int],
                         scale_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """``(coefficients [n, dim], sd [n, dim])`` with block-wise sd times a log-normal per-entity scale."""
    sd_row = np.concatenate([np.full(sizes[b], sd[b]) for b in BLOCKS])
    entity_scale = np.exp(scale_sigma * rng.standard_normal(n) - scale_sigma**2 / 2)
    sds = (entity_scale[:, None] * sd_row[None, :]).astype(np.float32)
    return (sds * rng.standard_normal(sds.shape, dtype=np.float32)), sds


def binary_cosine(a: sp.csr_matrix, b: sp.csr_matrix) -> np.ndarray:
    """Row-wise cosine of two equally shaped binary matrices: |A∩B| / sqrt(|A|·|B|) (0 for empty rows)."""
    overlap = np.asarray(a.multiply(b).sum(axis=1)).ravel()
    norms = np.sqrt(np.diff(a.indptr) * np.diff(b.indptr).astype(np.float64))
    return np.divide(overlap, norms, out=np.zeros_like(overlap, dtype=np.float64), where=norms > 0)


class TruthModel:
    """Holds the current random effects of every member and job and scores impressions.

    ``alpha[m]`` are member m's coefficients on job one-hots, ``beta[j]`` job j's on member one-hots; both
    are float32 (100k × 107 members fit in ~43 MB). ``intercept`` is calibrated once, on the first day,
    so the average apply probability is ``params.base_rate``.
    """

    def __init__(self, rng: np.random.Generator, catalog: Catalog, members: Profiles, jobs: Profiles,
                 params: TruthParameters | None = None) -> None:
        self.params = params or TruthParameters()
        self.catalog = catalog
        sizes = block_sizes(catalog)
        self.alpha, self._alpha_sd = _random_coefficients(
            rng, len(members), self.params.member_sd, sizes, self.params.entity_scale_sigma
        )
        self.beta, self._beta_sd = _random_coefficients(
            rng, len(jobs), self.params.job_sd, sizes, self.params.entity_scale_sigma
        )
        self.intercept: float | None = None

    def drift(self, rng: np.random.Generator) -> None:
        """Advance the random effects one day (stationary AR(1): the marginal variances do not change)."""
        rho = np.float32(self.params.daily_autocorrelation)
        innovation = np.float32(np.sqrt(1.0 - rho**2))
        for coef, sd in ((self.alpha, self._alpha_sd), (self.beta, self._beta_sd)):
            coef *= rho
            coef += innovation * sd * rng.standard_normal(coef.shape, dtype=np.float32)

    def global_score(self, members: Profiles, jobs: Profiles, m: np.ndarray, j: np.ndarray,
                     position: np.ndarray, *, cos_title: np.ndarray | None = None,
                     cos_skills: np.ndarray | None = None) -> np.ndarray:
        """The fixed-effect part without the intercept, for impressions (member row m, job row j).

        ``cos_title``/``cos_skills`` may be passed when already computed (the logging policy needs them too).
        """
        p = self.params
        if cos_title is None:
            cos_title = binary_cosine(members.title_tokens[m], jobs.title_tokens[j])
        if cos_skills is None:
            cos_skills = binary_cosine(members.skills[m], jobs.skills[j])
        gap = jobs.seniority[j] - members.seniority[m]
        return (
            p.title * cos_title
            + p.skills * cos_skills
            + p.function_match * (members.function[m] == jobs.function[j])
            + p.industry_match * (members.industry[m] == jobs.industry[j])
            + p.region_match * (members.region[m] == jobs.region[j])
            + p.seniority_gap * np.abs(gap)
            + p.seniority_step_up * (gap == 1)
            + p.position * (position - 1)
        )

    def random_score(self, member_columns: np.ndarray, job_columns: np.ndarray, m: np.ndarray, j: np.ndarray,
                     alpha: np.ndarray | None = None, beta: np.ndarray | None = None) -> np.ndarray:
        """α_m·s_j + β_j·q_m; ``job_columns``/``member_columns`` are the one-hot columns of each impression's
        job / member (from :func:`one_hot_columns`). ``alpha``/``beta`` default to the current coefficients.
        """
        alpha = self.alpha if alpha is None else alpha
        beta = self.beta if beta is None else beta
        # Gather only the 5 used coefficients per impression from the flat arrays (not whole rows).
        member_part = alpha.ravel()[m[:, None] * alpha.shape[1] + job_columns].sum(axis=1, dtype=np.float64)
        job_part = beta.ravel()[j[:, None] * beta.shape[1] + member_columns].sum(axis=1, dtype=np.float64)
        return member_part + job_part

    def calibrate_intercept(self, logits_without_intercept: np.ndarray) -> float:
        """Set the intercept so the mean apply probability of these impressions is ``base_rate`` (bisection)."""
        lo, hi = -20.0, 20.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if sigmoid(mid + logits_without_intercept).mean() > self.params.base_rate:
                hi = mid
            else:
                lo = mid
        self.intercept = (lo + hi) / 2
        return self.intercept


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN when only one class is present."""
    labels = np.asarray(labels, dtype=bool)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
