"""The full "why this job" breakdown of one (member, job) pair from a day's files (``jobrec explain``).

Unlike the parts that re-scoring keeps for the recommended pairs (:func:`pipeline.rescoring.block.pair_parts`),
this works for any pair, recommended or not, and lists every term:

- global: each global feature of the pair (:func:`pipeline.features.pairs.pair_features` at the canonical
  position, the training code path) with its value, coefficient and value × coefficient, plus the intercept;
- per member: α_m0 and α_m[k] · s_j[k] for each job profile term k the member has a coefficient on;
- per job: β_j0 and β_j[k] · q_m[k] for each member profile term k the job has a coefficient on.

The total is the sum of all terms: ``GLMixModel.score`` of the pair (tests/test_explanations.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from glmix_core import GLMixModel
from pipeline.config import Settings
from pipeline.features.pairs import (
    CANONICAL_POSITION,
    GlobalSpace,
    ProfileBlock,
    pair_features,
    profile_feature_names,
)
from pipeline.features.vocab import FIELDS, load_vocab
from pipeline.rescoring.layout import fixed_effect
from pipeline.rescoring.stream import partition_files
from pipeline.storage import check_ds


@dataclass(frozen=True)
class Term:
    """One term of the score: ``contribution = value × coefficient``."""

    name: str
    value: float
    coefficient: float
    contribution: float

    def as_dict(self) -> dict:
        return {"name": self.name, "value": self.value, "coefficient": self.coefficient,
                "contribution": self.contribution}


@dataclass(frozen=True)
class Explanation:
    """Every term of the score of (member_id, job_id) on ``ds``.

    ``global_terms`` starts with the intercept; ``member_terms``/``job_terms`` start with the entity's
    intercept (value 1) and list the remaining terms by |contribution|, largest first. ``recommended``: the
    pair's (rank, stored score) in the day's recommendations, or None when it was not recommended.
    """

    ds: str
    member_id: int
    job_id: int
    model_version: str
    global_terms: list[Term]
    member_terms: list[Term]
    job_terms: list[Term]
    recommended: tuple[int, float] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def part_global(self) -> float:
        return float(sum(t.contribution for t in self.global_terms))

    @property
    def part_member(self) -> float:
        return float(sum(t.contribution for t in self.member_terms))

    @property
    def part_job(self) -> float:
        return float(sum(t.contribution for t in self.job_terms))

    @property
    def total(self) -> float:
        """The score: the sum of every term."""
        return self.part_global + self.part_member + self.part_job

    def as_dict(self) -> dict:
        return {
            "ds": self.ds, "member_id": self.member_id, "job_id": self.job_id, "model_version": self.model_version,
            "total": self.total, "part_global": self.part_global, "part_member": self.part_member,
            "part_job": self.part_job,
            "global_terms": [t.as_dict() for t in self.global_terms],
            "member_terms": [t.as_dict() for t in self.member_terms],
            "job_terms": [t.as_dict() for t in self.job_terms],
            "recommended": None if self.recommended is None else
            {"rank": self.recommended[0], "score": self.recommended[1]},
            "notes": list(self.notes),
        }


def _entity_row(path: Path, column: str, value: int, columns: list[str]) -> pa.Table:
    """The rows of the partition at ``path`` whose ``column`` equals ``value`` (read with a filter)."""
    parts = [pq.read_table(f, columns=columns, filters=[(column, "=", value)]) for f in partition_files(path)]
    return pa.concat_tables(parts, promote_options="default")


def _profile(path: Path, column: str, value: int, kind: str, notes: list[str]) -> pa.Table:
    """One profile row of ``value`` (an empty profile, noted, when the day has none)."""
    table = _entity_row(path, column, value, [column, *FIELDS])
    if table.num_rows == 0:
        notes.append(f"no {kind} profile for {column}={value} on this day: scored with an empty profile")
        schema = pq.ParquetFile(partition_files(path)[0]).schema_arrow
        return pa.table({column: pa.array([value], pa.int64()),
                         **{f: pa.nulls(1, schema.field(f).type) for f in FIELDS}})
    return table.slice(0, 1)


def _random_terms(model: GLMixModel, entity: str, entity_id: int, features: pa.Array, other: np.ndarray,
                  label: str) -> list[Term]:
    """Intercept and per-term contributions of the random effects keyed by ``entity`` for ``entity_id``,
    against the other side's profile ``other`` (dense, one value per column of ``features``)."""
    coefficients = np.zeros(len(features))
    intercept = 0.0
    for coordinate in model.spec.coordinates:
        if coordinate.type == "random" and coordinate.entity == entity:
            part = model.coefficient_matrix(coordinate.name, features, entities=[str(entity_id)])
            coefficients += part.matrix.toarray().ravel()
            intercept += float(part.intercept[0])
    contribution = coefficients * other
    nonzero = np.flatnonzero((coefficients != 0) & (other != 0))
    order = nonzero[np.argsort(-np.abs(contribution[nonzero]), kind="stable")]
    names = features.take(pa.array(order, pa.int64())).to_pylist()
    terms = [Term(f"({label} intercept)", 1.0, intercept, intercept)]
    terms += [Term(str(n), float(other[k]), float(coefficients[k]), float(contribution[k]))
              for n, k in zip(names, order.tolist(), strict=True)]
    return terms


def explain_pair(ds: str, settings: Settings, member_id: int, job_id: int,
                 model_dir: str | Path | None = None) -> Explanation:
    """The full breakdown of the score of (``member_id``, ``job_id``) on ``ds`` from the day's vocab, member
    and job profiles and model (default ``models/daily/ds=``), whether or not the pair was recommended.

    Raises ``FileNotFoundError`` naming what to run when a file is missing.
    """
    from pipeline.scoring import load_glmix_model

    check_ds(ds)
    layout = settings.layout
    notes: list[str] = []
    for kind in ("member_profiles", "job_profiles"):
        if not layout.features(kind, ds).exists():
            raise FileNotFoundError(f"no {kind} for ds={ds}; run `jobrec features --ds {ds}` first")
    vocab = load_vocab(ds, settings)
    space = GlobalSpace.from_vocab(vocab)
    model, version = load_glmix_model(Path(model_dir) if model_dir is not None else layout.model_daily(ds))
    member_row = _profile(layout.features("member_profiles", ds), "member_id", int(member_id), "member", notes)
    job_row = _profile(layout.features("job_profiles", ds), "job_id", int(job_id), "job", notes)
    members = ProfileBlock.from_table(member_row, vocab)
    jobs = ProfileBlock.from_table(job_row, vocab)
    zero = np.zeros(1, dtype=np.int64)
    features = pair_features(members, zero, jobs, zero, np.full(1, CANONICAL_POSITION), space)
    _, ids, values = features.coordinates()
    fixed, intercept = fixed_effect(model, space, version)
    names = space.names.take(pa.array(ids, pa.int64())).to_pylist()
    global_terms = [Term("(intercept)", 1.0, intercept, intercept)]
    global_terms += [Term(str(n), float(v), float(fixed[i]), float(v * fixed[i]))
                     for n, i, v in zip(names, ids.tolist(), values.tolist(), strict=True)]
    width = max(vocab.size, 1)
    profile_names = profile_feature_names(vocab, width)
    q_m = members.combined().toarray().ravel()
    s_j = jobs.combined().toarray().ravel()
    member_terms = _random_terms(model, "member_id", member_id, profile_names, s_j, "member")
    job_terms = _random_terms(model, "job_id", job_id, profile_names, q_m, "job")
    return Explanation(ds, int(member_id), int(job_id), version, global_terms, member_terms, job_terms,
                       _recommended(settings, ds, int(member_id), int(job_id)), notes)


def _recommended(settings: Settings, ds: str, member_id: int, job_id: int) -> tuple[int, float] | None:
    """(rank, score) of the pair in the day's recommendations (None when absent or not written)."""
    path = settings.layout.recommendations(ds)
    if not path.exists():
        return None
    rows = _entity_row(path, "member_id", member_id, ["member_id", "rank", "job_id", "score"])
    hit = rows.filter(pc.equal(rows["job_id"], job_id))
    if hit.num_rows == 0:
        return None
    return int(hit["rank"][0].as_py()), float(hit["score"][0].as_py())
