"""The LR-Cosine model as a Whoosh weighting model, and queries built from member profiles.

Score of a job d for a member query q:  Σ_field w_field · Σ_term q_term · d_term.
A query is an ``Or`` of ``Term(field, term, boost=q_term)``; Whoosh multiplies each term's scorer output
by its boost and sums over the matching terms, and :class:`CosineScorer` returns ``w_field · d_term``.
"""

from __future__ import annotations

from collections.abc import Mapping

from whoosh import query as wq
from whoosh.scoring import BaseScorer, WeightingModel

from retrieval.schema import PROFILE_FIELDS, _pairs, check_field_weights, decode_term_weight


class CosineScorer(BaseScorer):
    """Scores the current posting as ``field_weight · d_term`` (the exact float64 weight of the posting)."""

    def __init__(self, field_weight: float):
        self.field_weight = field_weight

    def supports_block_quality(self) -> bool:
        # Whoosh's block-max skipping would use the float32 posting weights, which can round below the exact
        # float64 weight and skip a document wrongly; this scorer is the exact oracle, so it never skips.
        return False

    def score(self, matcher) -> float:
        return self.field_weight * decode_term_weight(matcher.value())

    def max_quality(self) -> float:
        # Whoosh's union matchers ask for an upper bound once the top-k heap is full, to drop sub-matchers
        # that cannot reach the current minimum score. An infinite bound keeps every term: exact, not fast.
        return float("inf")


class CosineWeighting(WeightingModel):
    """Whoosh weighting model of the LR-Cosine first stage with the given per-field weights."""

    def __init__(self, field_weights: Mapping[str, float]):
        self.field_weights = check_field_weights(field_weights)

    def scorer(self, searcher, fieldname, text, qf=1):
        return CosineScorer(self.field_weights.get(fieldname, 0.0))


def profile_query(profile: Mapping[str, object], field_weights: Mapping[str, float] | None = None) -> wq.Query:
    """An ``Or`` query of one boosted term per (field, term) of a member profile.

    ``profile`` maps field → weighted terms (``[(term, weight)]``, ``[{"term", "weight"}]`` or a dict).
    Fields with weight 0 in ``field_weights`` and terms with weight <= 0 are left out.
    """
    subqueries = []
    for field in PROFILE_FIELDS:
        if field_weights is not None and not field_weights.get(field, 0.0) > 0.0:
            continue
        for term, weight in _pairs(profile.get(field)):
            if float(weight) > 0.0:
                subqueries.append(wq.Term(field, str(term), boost=float(weight)))
    return wq.Or(subqueries) if subqueries else wq.NullQuery


def parse_debug_query(text: str) -> dict[str, list[tuple[str, float]]]:
    """Parse a debugging query ``"title:data skills:python^2 region:us-ca"`` into a profile.

    Each token is ``field:term`` with an optional ``^weight`` (default 1); a bare word goes to ``title``.
    Weights are L2-normalised per field, as in the stored profiles.
    """
    profile: dict[str, dict[str, float]] = {}
    for token in text.split():
        field, sep, rest = token.partition(":")
        if not sep:
            field, rest = "title", token
        if field not in PROFILE_FIELDS:
            raise ValueError(f"unknown field {field!r} in query token {token!r}; fields: {list(PROFILE_FIELDS)}")
        term, _, raw_weight = rest.partition("^")
        try:
            weight = float(raw_weight) if raw_weight else 1.0
        except ValueError as exc:
            raise ValueError(f"bad weight in query token {token!r}; write field:term^0.5") from exc
        profile.setdefault(field, {})[term.lower()] = weight
    normalised = {}
    for field, terms in profile.items():
        norm = sum(w * w for w in terms.values()) ** 0.5 or 1.0
        normalised[field] = [(term, w / norm) for term, w in terms.items()]
    return normalised
