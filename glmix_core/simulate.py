"""A small GLMix data simulator: members, jobs, global features, and labels drawn from a known GLMix.

Rows have ``label``, ``member_id``, ``job_id`` (int64) and three feature bags shaped like the pipeline's
training data (``global``, ``job_features`` = z of the per-member coordinate, ``member_features`` = z of the
per-job coordinate). The truth (coefficients) is fixed by ``seed``; ``day`` draws new rows from the same truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from scipy.special import expit

MEMBER_FIELDS = (("industry", 12), ("function", 8), ("seniority", 5), ("region", 10))
JOB_FIELDS = (("industry", 12), ("function", 8), ("seniority", 5), ("region", 10))


@dataclass
class Truth:
    """The generating coefficients."""

    b: np.ndarray
    alpha: np.ndarray  # per member over [intercept, job feature vocab]
    beta: np.ndarray  # per job over [intercept, member feature vocab]
    member_attr: np.ndarray
    job_attr: np.ndarray


def _vocab(fields) -> tuple[list[str], np.ndarray]:
    names, offsets = [], [0]
    for field, size in fields:
        names += [f"{field}={v}" for v in range(size)]
        offsets.append(offsets[-1] + size)
    return names, np.array(offsets[:-1])


def make_truth(n_members: int, n_jobs: int, n_global: int = 5, seed: int = 0, member_sd: float = 0.6,
               job_sd: float = 0.6) -> Truth:
    rng = np.random.default_rng(seed)
    job_vocab, _ = _vocab(JOB_FIELDS)
    member_vocab, _ = _vocab(MEMBER_FIELDS)
    b = rng.normal(0, 0.5, n_global + 1)
    b[0] = -1.0
    alpha = rng.normal(0, member_sd, (n_members, len(job_vocab) + 1)) * np.r_[1.0, np.full(len(job_vocab), 0.5)]
    beta = rng.normal(0, job_sd, (n_jobs, len(member_vocab) + 1)) * np.r_[1.0, np.full(len(member_vocab), 0.5)]
    member_attr = np.stack([rng.integers(0, s, n_members) for _, s in MEMBER_FIELDS], axis=1)
    job_attr = np.stack([rng.integers(0, s, n_jobs) for _, s in JOB_FIELDS], axis=1)
    return Truth(b, alpha, beta, member_attr, job_attr)


def _bag(rows: int, per_row: int, names: pa.Array, values: np.ndarray) -> pa.Array:
    offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * per_row)
    struct = pa.StructArray.from_arrays([names, pa.array(values.ravel())], names=["name", "value"])
    return pa.ListArray.from_arrays(offsets, struct)


def simulate(truth: Truth, n_rows: int, *, task: str = "logistic", day: int = 0, seed: int = 0,
             member_skew: float = 0.0) -> tuple[pa.Table, np.ndarray]:
    """``n_rows`` impressions of day ``day`` and the true mean per row. ``member_skew`` > 0 makes member
    activity heavy-tailed (a Zipf-like share of rows per member)."""
    rng = np.random.default_rng((seed, day, 7919))
    n_members, n_jobs = truth.alpha.shape[0], truth.beta.shape[0]
    if member_skew > 0:
        p = rng.permutation(n_members) + 1.0
        p = p ** (-member_skew)
        member = rng.choice(n_members, n_rows, p=p / p.sum())
    else:
        member = rng.integers(0, n_members, n_rows)
    job = rng.integers(0, n_jobs, n_rows)
    n_global = truth.b.size - 1
    xg = rng.normal(0, 1, (n_rows, n_global))
    job_vocab, job_off = _vocab(JOB_FIELDS)
    member_vocab, member_off = _vocab(MEMBER_FIELDS)
    jcols = truth.job_attr[job] + job_off  # (n, fields) index into job vocab
    mcols = truth.member_attr[member] + member_off
    eta = truth.b[0] + xg @ truth.b[1:]
    eta += truth.alpha[member, 0] + np.take_along_axis(truth.alpha[member], jcols + 1, axis=1).sum(axis=1)
    eta += truth.beta[job, 0] + np.take_along_axis(truth.beta[job], mcols + 1, axis=1).sum(axis=1)
    if task == "logistic":
        mean = expit(eta)
        label = (rng.random(n_rows) < mean).astype(float)
    elif task == "linear":
        mean = eta
        label = eta + rng.normal(0, 1.0, n_rows)
    elif task == "poisson":
        eta = 0.3 * eta
        mean = np.exp(eta)
        label = rng.poisson(mean).astype(float)
    else:
        raise ValueError(f"unknown task {task!r}")
    gnames = pa.array([f"g{i}" for i in range(n_global)] * n_rows)
    table = pa.table({
        "label": label,
        "member_id": (member + 1000).astype(np.int64),
        "job_id": (job + 500_000).astype(np.int64),
        "global": _bag(n_rows, n_global, gnames, xg),
        "job_features": _bag(n_rows, jcols.shape[1], pa.array(job_vocab).take(pa.array(jcols.ravel())),
                             np.ones(jcols.size)),
        "member_features": _bag(n_rows, mcols.shape[1], pa.array(member_vocab).take(pa.array(mcols.ravel())),
                                np.ones(mcols.size)),
    })
    return table, mean


def full_spec_dict(task: str = "logistic", l2_fixed: float = 1.0, l2_member: float = 1.0, l2_job: float = 1.0,
                   tolerance: float | None = None, max_iterations: int = 100) -> dict:
    """The GLMix-Full spec for simulated data (fixed ``global``, per-member and per-job random effects);
    ``tolerance`` None keeps the spec's default."""
    return {
        "task": task, "response": "label", "max_iterations": max_iterations,
        **({"tolerance": tolerance} if tolerance is not None else {}),
        "coordinates": [
            {"name": "global", "type": "fixed", "feature_bags": ["global"], "l2": l2_fixed},
            {"name": "per_member", "type": "random", "entity": "member_id", "feature_bags": ["job_features"],
             "l2": l2_member},
            {"name": "per_job", "type": "random", "entity": "job_id", "feature_bags": ["member_features"],
             "l2": l2_job},
        ],
    }
