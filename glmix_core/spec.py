"""The GLMix model specification: task, response columns and an ordered list of coordinates.

A spec is a frozen dataclass validated once, from a dict, YAML or JSON. Errors name the offending field and
say what is allowed, e.g. ``coordinate 'per_member': l2 must be > 0 for a random effect; got l2=0``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import SpecError

TASKS = ("logistic", "linear", "poisson", "smoothed_hinge")
FIXED_SOLVERS = ("trust-ncg", "newton-cg", "lbfgs")
# Photon-ML's NormalizationType, lower-cased: features are rescaled for fitting and the coefficients are
# reported in the original feature scale
NORMALIZATIONS = ("none", "standardization", "scale_with_standard_deviation", "scale_with_max_magnitude")
# Photon-ML's VarianceComputationType: none; simple = 1 / diag(H); full = diag(H^-1)
VARIANCES = ("none", "simple", "full")
# default KKT tolerance: default fits land within 1e-4 (max |coefficient|) of the exact joint mode on the
# reference tests (tests/test_glmix_convergence.py)
DEFAULT_TOLERANCE = 1e-6
DEFAULT_MAX_ITERATIONS = 100


@dataclass(frozen=True)
class CoordinateSpec:
    """One coordinate of the model.

    ``type`` is ``fixed`` (one coefficient vector shared by all rows) or ``random`` (one vector per value of
    the ``entity`` column). Features come from numeric columns (``features``) and from sparse feature bags
    (``feature_bags``: columns of ``list<struct<name: string, value: double>>``). ``l2`` is the prior
    precision (fixed-effect intercepts are never penalised; random-effect intercepts are, they are part of
    the entity's prior). ``l1`` (fixed effect only) adds an L1 penalty. ``min_samples``/``max_samples``
    are the active-data bounds of a random effect: entities with fewer rows get no coefficients, entities
    with more rows use a reproducible random subset of ``max_samples`` rows (seeded by ``seed``).

    Photon-ML controls: ``normalization`` (one of ``NORMALIZATIONS``; the intercept is never scaled),
    ``down_sampling_rate`` (fixed effect of a logistic model: keep every positive, keep each negative with
    this probability and weight kept negatives by 1/rate), ``features_to_samples_ratio`` (random effect: keep
    each entity's top ⌈ratio · n_samples⌉ features by absolute Pearson correlation with the response).
    """

    name: str
    type: str
    entity: str | None = None
    features: tuple[str, ...] = ()
    feature_bags: tuple[str, ...] = ()
    intercept: bool = True
    l2: float = 1.0
    l1: float = 0.0
    solver: str = "trust-ncg"
    min_samples: int = 1
    max_samples: int | None = None
    max_dense_features: int = 256
    seed: int = 0
    normalization: str = "none"
    down_sampling_rate: float = 1.0
    features_to_samples_ratio: float | None = None

    def validate(self) -> None:
        where = f"coordinate {self.name!r}"
        if not self.name or not isinstance(self.name, str):
            raise SpecError("every coordinate needs a non-empty string 'name'")
        if self.type not in ("fixed", "random"):
            raise SpecError(f"{where}: type must be 'fixed' or 'random'; got type={self.type!r}")
        if self.type == "random" and not self.entity:
            raise SpecError(f"{where}: a random coordinate needs 'entity' (the column holding entity IDs)")
        if self.type == "fixed" and self.entity:
            raise SpecError(f"{where}: a fixed coordinate takes no 'entity'; use type: random")
        if not self.features and not self.feature_bags and not self.intercept:
            raise SpecError(f"{where}: has no features, no feature_bags and no intercept")
        if not (self.l2 >= 0):
            raise SpecError(f"{where}: l2 must be >= 0; got l2={self.l2}")
        if self.type == "random" and not (self.l2 > 0):
            raise SpecError(f"{where}: l2 must be > 0 for a random effect (it is the prior precision); got l2={self.l2}")
        if not (self.l1 >= 0):
            raise SpecError(f"{where}: l1 must be >= 0; got l1={self.l1}")
        if self.l1 > 0 and self.type == "random":
            raise SpecError(f"{where}: l1 is supported for the fixed effect only")
        if self.solver not in FIXED_SOLVERS:
            raise SpecError(f"{where}: solver must be one of {FIXED_SOLVERS}; got solver={self.solver!r}")
        if self.min_samples < 1:
            raise SpecError(f"{where}: min_samples must be >= 1; got {self.min_samples}")
        if self.max_samples is not None and self.max_samples < self.min_samples:
            raise SpecError(f"{where}: max_samples must be >= min_samples; got {self.max_samples}")
        if self.max_dense_features < 1:
            raise SpecError(f"{where}: max_dense_features must be >= 1")
        if self.normalization not in NORMALIZATIONS:
            raise SpecError(f"{where}: normalization must be one of {NORMALIZATIONS}; got {self.normalization!r}")
        if not (0 < self.down_sampling_rate <= 1):
            raise SpecError(f"{where}: down_sampling_rate must be in (0, 1]; got {self.down_sampling_rate}")
        if self.down_sampling_rate < 1 and self.type != "fixed":
            raise SpecError(f"{where}: down_sampling_rate applies to the fixed effect only")
        if self.features_to_samples_ratio is not None:
            if self.type != "random":
                raise SpecError(f"{where}: features_to_samples_ratio applies to random effects only")
            if not (self.features_to_samples_ratio > 0):
                raise SpecError(f"{where}: features_to_samples_ratio must be > 0; "
                                f"got {self.features_to_samples_ratio}")


@dataclass(frozen=True)
class GLMixSpec:
    """A whole GLMix model: ``task``, the ``response`` column, optional ``weight``/``offset`` columns and the
    ordered ``coordinates`` (at most one fixed). PBCD stops when every coordinate's KKT measure (the
    curvature-scaled gradient of its objective, in coefficient units; ``glmix_core.pbcd``) is at most
    ``tolerance``, or after ``max_iterations`` sweeps with a ``ConvergenceWarning``.

    ``uid``: optional column of unique row IDs that keys deterministic sampling (down-sampling, active-data
    bounds); without it the row position is the key. ``variance``: posterior variances to compute (one of
    ``VARIANCES``). ``sparsity_threshold``: coefficients with smaller magnitude are dropped from the saved
    model. ``evaluators``: validation metrics computed after every coordinate update (the first one picks
    the best model seen), e.g. ``auc``, ``aupr``, ``rmse``, ``logistic_loss``, ``auc:member_id``,
    ``precision@10:member_id``."""

    task: str
    response: str
    coordinates: tuple[CoordinateSpec, ...]
    weight: str | None = None
    offset: str | None = None
    max_iterations: int = DEFAULT_MAX_ITERATIONS
    tolerance: float = DEFAULT_TOLERANCE
    uid: str | None = None
    variance: str = "full"
    sparsity_threshold: float = 0.0
    evaluators: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise SpecError(f"task must be one of {TASKS}; got task={self.task!r}")
        if not self.response:
            raise SpecError("spec needs 'response' (the label column)")
        if not self.coordinates:
            raise SpecError("spec needs at least one coordinate under 'coordinates'")
        names = [c.name for c in self.coordinates]
        if len(set(names)) != len(names):
            raise SpecError(f"coordinate names must be unique; got {names}")
        if sum(c.type == "fixed" for c in self.coordinates) > 1:
            raise SpecError("at most one fixed coordinate is allowed")
        for c in self.coordinates:
            c.validate()
        if self.max_iterations < 1:
            raise SpecError(f"max_iterations must be >= 1; got {self.max_iterations}")
        if not (self.tolerance > 0):
            raise SpecError(f"tolerance must be > 0; got {self.tolerance}")
        if self.variance not in VARIANCES:
            raise SpecError(f"variance must be one of {VARIANCES}; got variance={self.variance!r}")
        if not (self.sparsity_threshold >= 0):
            raise SpecError(f"sparsity_threshold must be >= 0; got {self.sparsity_threshold}")
        from .evaluators import parse_all  # local: evaluators is the heavier module (metrics, numpy)

        parse_all(self.evaluators)
        for c in self.coordinates:
            if c.down_sampling_rate < 1 and self.task != "logistic":
                raise SpecError(f"coordinate {c.name!r}: down_sampling_rate needs task logistic (it keeps every "
                                f"positive and samples negatives); got task={self.task!r}")

    def coordinate(self, name: str) -> CoordinateSpec:
        for c in self.coordinates:
            if c.name == name:
                return c
        raise SpecError(f"no coordinate named {name!r}; the spec has {[c.name for c in self.coordinates]}")

    def with_l2(self, l2: dict[str, float]) -> GLMixSpec:
        """A copy with the ``l2`` of the named coordinates replaced (used by grid search)."""
        coords = tuple(_replace(c, l2=float(l2[c.name])) if c.name in l2 else c for c in self.coordinates)
        return _replace(self, coordinates=coords)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> GLMixSpec:
        """Build and validate a spec from a plain dict (the YAML/JSON structure)."""
        if not isinstance(raw, dict):
            raise SpecError(f"a spec must be a mapping; got {type(raw).__name__}")
        known = {"task", "response", "coordinates", "weight", "offset", "max_iterations", "tolerance", "uid",
                 "variance", "sparsity_threshold", "evaluators"}
        unknown = set(raw) - known
        if "formula" in raw:
            raise SpecError("this spec holds a 'formula', which needs the data's columns: resolve it with "
                            "glmix_core.formula.spec_source(raw).resolve(table) (glmix fit and GLMix do this)")
        if unknown:
            raise SpecError(f"unknown spec fields {sorted(unknown)}; allowed: {sorted(known)}")
        coords_raw = raw.get("coordinates")
        if not isinstance(coords_raw, list) or not coords_raw:
            raise SpecError("spec needs 'coordinates': a non-empty list")
        coord_fields = set(CoordinateSpec.__dataclass_fields__)
        coords = []
        for i, c in enumerate(coords_raw):
            if not isinstance(c, dict):
                raise SpecError(f"coordinate #{i} must be a mapping")
            bad = set(c) - coord_fields
            if bad:
                raise SpecError(f"coordinate {c.get('name', i)!r}: unknown fields {sorted(bad)}; "
                                f"allowed: {sorted(coord_fields)}")
            c = dict(c)
            for key in ("features", "feature_bags"):
                value = c.get(key) or ()
                if isinstance(value, str):
                    value = (value,)
                c[key] = tuple(value)
            for key in ("l2", "l1", "down_sampling_rate", "features_to_samples_ratio"):
                if c.get(key) is not None:
                    try:
                        c[key] = float(c[key])
                    except (TypeError, ValueError):
                        raise SpecError(f"coordinate {c.get('name')!r}: {key} must be a number; "
                                        f"got {c[key]!r}") from None
            if "name" not in c or "type" not in c:
                raise SpecError(f"coordinate #{i} needs 'name' and 'type'")
            coords.append(CoordinateSpec(**c))
        if "task" not in raw or "response" not in raw:
            raise SpecError("spec needs 'task' and 'response'")
        evaluators = raw.get("evaluators") or ()
        if isinstance(evaluators, str):
            evaluators = (evaluators,)
        return cls(
            task=raw["task"], response=raw["response"], coordinates=tuple(coords),
            weight=raw.get("weight"), offset=raw.get("offset"),
            max_iterations=int(raw.get("max_iterations", DEFAULT_MAX_ITERATIONS)),
            tolerance=float(raw.get("tolerance", DEFAULT_TOLERANCE)),
            uid=raw.get("uid"), variance=str(raw.get("variance", "full")),
            sparsity_threshold=float(raw.get("sparsity_threshold", 0.0)), evaluators=tuple(evaluators),
        )

    @classmethod
    def from_yaml(cls, path_or_text: str | Path) -> GLMixSpec:
        """Read a spec from a YAML (or JSON) file path, or from YAML text."""
        return cls.from_dict(read_spec_mapping(path_or_text))

    def to_dict(self) -> dict[str, Any]:
        """The plain-dict form (round-trips through ``from_dict``)."""
        out = asdict(self)
        out.pop("extra")
        out["evaluators"] = list(self.evaluators)
        out["coordinates"] = [{**c, "features": list(c["features"]), "feature_bags": list(c["feature_bags"])}
                              for c in out["coordinates"]]
        return json.loads(json.dumps(out))


def read_spec_mapping(path_or_text: str | Path) -> Any:
    """The parsed YAML of a spec: read from a file when given a ``Path`` or a one-line string ending in
    .yaml/.yml/.json, else parsed as YAML text. Not checked to be a mapping (``from_dict`` does that)."""
    import yaml

    text = str(path_or_text)
    path = Path(text)
    if isinstance(path_or_text, Path) or ("\n" not in text and path.suffix.lower() in (".yaml", ".yml", ".json")):
        if not path.is_file():
            raise SpecError(f"spec file not found: {path}")
        text = path.read_text()
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"spec is not valid YAML: {exc}") from None


def _replace(obj, **changes):
    import dataclasses

    return dataclasses.replace(obj, **changes)
