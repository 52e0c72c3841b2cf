"""The fitted model: coefficients per coordinate, scoring, and the open on-disk format.

A model directory holds ``model.json`` (format, spec, training data range, metrics, fit history, parent
model, version) and ``coefficients.parquet`` in long form: ``coordinate`` string, ``entity`` string (null for
the fixed effect), ``feature`` string (``(intercept)`` for intercepts), ``value`` double, ``variance``
double (null when not computed). Loading reads JSON and Parquet only; it never runs code.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp

from .data import INTERCEPT, entity_keys, feature_matrix, numeric_column
from .errors import ModelError
from .index_map import FeatureIndexMap
from .losses import get_loss
from .spec import CoordinateSpec, GLMixSpec

FORMAT = "glmix/1"
COEFFICIENT_SCHEMA = pa.schema([
    ("coordinate", pa.string()), ("entity", pa.string()), ("feature", pa.string()),
    ("value", pa.float64()), ("variance", pa.float64()),
])


@dataclass
class FixedEffectModel:
    """Fixed-effect coefficients ``coef`` over ``features`` (posterior ``variance`` or None).

    ``features`` is a ``FeatureIndexMap`` (a list of names or an Arrow string array is converted on
    construction), so models with tens of millions of features hold no Python string per feature.
    """

    spec: CoordinateSpec
    features: FeatureIndexMap
    coef: np.ndarray
    variance: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.features = FeatureIndexMap.coerce(self.features)

    def score(self, table: pa.Table) -> np.ndarray:
        X, _ = feature_matrix(table, self.spec.features, self.spec.feature_bags, self.spec.intercept,
                              vocabulary=self.features)
        return X @ self.coef

    def lookup(self, features: FeatureIndexMap | pa.Array | list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(values, found mask) of the named features (warm start by feature name)."""
        pos = self.features.index_of(features)
        found = pos >= 0
        return np.where(found, self.coef[np.maximum(pos, 0)], 0.0), found

    def table(self) -> pa.Table:
        n = len(self.features)
        var = self.variance if self.variance is not None else np.full(n, np.nan)
        return pa.table({
            "coordinate": pa.array([self.spec.name] * n, pa.string()), "entity": pa.nulls(n, pa.string()),
            "feature": self.features.names.cast(pa.string()), "value": pa.array(self.coef, pa.float64()),
            "variance": pa.array(var, pa.float64(), from_pandas=True),
        }, schema=COEFFICIENT_SCHEMA)


@dataclass
class RandomEffectModel:
    """Random-effect coefficients in sparse form: one row per (entity, feature) pair, sorted by key.

    ``entity_ids``: string array of the entities; ``features``: feature names (a ``FeatureIndexMap``; lists
    and Arrow arrays are converted); ``pair_entity``/``pair_feature`` index into them; ``value``/``variance``
    (NaN = not computed) per pair.
    """

    spec: CoordinateSpec
    entity_ids: pa.Array
    features: FeatureIndexMap
    pair_entity: np.ndarray
    pair_feature: np.ndarray
    value: np.ndarray
    variance: np.ndarray
    keys: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.features = FeatureIndexMap.coerce(self.features)
        self.keys = self.pair_entity * max(len(self.features), 1) + self.pair_feature
        if self.keys.size and np.any(np.diff(self.keys) <= 0):
            order = np.argsort(self.keys, kind="stable")
            self.keys, self.pair_entity, self.pair_feature = self.keys[order], self.pair_entity[order], \
                self.pair_feature[order]
            self.value, self.variance = self.value[order], self.variance[order]

    @classmethod
    def from_pairs(cls, spec: CoordinateSpec, entity: pa.Array, feature: pa.Array, value: np.ndarray,
                   variance: np.ndarray) -> RandomEffectModel:
        """Build from long-form string columns (one entry per pair)."""
        ee = entity.cast(pa.string()).dictionary_encode()
        ff = feature.cast(pa.string()).dictionary_encode()
        return cls(spec, ee.dictionary, FeatureIndexMap.from_names(ff.dictionary, unique=True),
                   ee.indices.to_numpy(zero_copy_only=False).astype(np.int64),
                   ff.indices.to_numpy(zero_copy_only=False).astype(np.int64),
                   np.asarray(value, float), np.asarray(variance, float))

    @property
    def n_entities(self) -> int:
        return len(self.entity_ids)

    def lookup(self, entity_ids: pa.Array, features: FeatureIndexMap | pa.Array | list[str], pair_entity: np.ndarray,
               pair_feature: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Values, variances and found mask of pairs given as (index into ``entity_ids``, index into
        ``features``): the warm-start match by entity ID and feature name."""
        ent_map = pc.index_in(entity_ids.cast(pa.string()), value_set=self.entity_ids)
        ent_map = ent_map.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        feat_map = self.features.index_of(features)
        pe = ent_map[pair_entity] if pair_entity.size else pair_entity
        pf = feat_map[pair_feature] if pair_feature.size else pair_feature
        return self._find(pe, pf)

    def _find(self, pe: np.ndarray, pf: np.ndarray):
        ok = (pe >= 0) & (pf >= 0)
        keys = pe * max(len(self.features), 1) + pf
        pos = np.minimum(np.searchsorted(self.keys, keys), max(self.keys.size - 1, 0))
        found = ok & (self.keys[pos] == keys) if self.keys.size else np.zeros(keys.size, bool)
        value = np.where(found, self.value[pos] if self.keys.size else 0.0, 0.0)
        variance = np.where(found, self.variance[pos] if self.keys.size else np.nan, np.nan)
        return value, variance, found

    def score(self, table: pa.Table) -> np.ndarray:
        Z, _ = feature_matrix(table, self.spec.features, self.spec.feature_bags, self.spec.intercept,
                              vocabulary=self.features)
        keys = entity_keys(table, self.spec.entity)
        ent = pc.index_in(keys, value_set=self.entity_ids).fill_null(-1).to_numpy(zero_copy_only=False)
        Zc = Z.tocoo()
        value, _, _ = self._find(ent.astype(np.int64)[Zc.row], Zc.col.astype(np.int64))
        return np.bincount(Zc.row, weights=Zc.data * value, minlength=table.num_rows)

    def table(self) -> pa.Table:
        n = self.value.size
        return pa.table({
            "coordinate": pa.array([self.spec.name] * n, pa.string()),
            "entity": self.entity_ids.take(pa.array(self.pair_entity)),
            "feature": self.features.name_of(self.pair_feature).cast(pa.string()),
            "value": pa.array(self.value, pa.float64()),
            "variance": pa.array(self.variance, pa.float64(), from_pandas=True),
        }, schema=COEFFICIENT_SCHEMA)


CoordinateModel = FixedEffectModel | RandomEffectModel


@dataclass(frozen=True)
class CoefficientMatrix:
    """One coordinate's coefficients laid out over a caller's feature order (``GLMixModel.coefficient_matrix``).

    Attributes:
        coordinate: the coordinate's name.
        entity: the coordinate's entity column (``None`` for a fixed effect).
        entity_ids: string ID of each row (``None`` for a fixed effect, which has exactly one row).
        features: the requested feature order: column ``k`` of ``matrix`` is feature ``features[k]``.
        matrix: CSR ``rows × len(features)``; a (row, feature) pair without a coefficient is 0.
        intercept: the intercept of each row (0 where the row has none).
        found: per row, whether the model has coefficients for that row's entity (always true for a fixed
            effect).
        unmapped: how many of the coordinate's features (the intercept aside) have no column in ``features``.
    """

    coordinate: str
    entity: str | None
    entity_ids: pa.Array | None
    features: pa.Array
    matrix: sp.csr_matrix
    intercept: np.ndarray
    found: np.ndarray
    unmapped: int

    @property
    def vector(self) -> np.ndarray:
        """The only row as a dense vector over ``features`` (a fixed effect's coefficients)."""
        if self.matrix.shape[0] != 1:
            raise ValueError(f"coordinate {self.coordinate!r} has {self.matrix.shape[0]} rows; .vector needs one")
        return self.matrix.toarray().ravel()


def _strings(values: Sequence[str] | pa.Array | pa.ChunkedArray) -> pa.Array:
    """``values`` as one Arrow string array."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        values = pa.array(list(values), pa.string())
    return values.cast(pa.string())


def _columns_of(names: pa.Array, features: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(column in ``features`` of each of ``names`` (-1: none), mask of the intercept among ``names``)."""
    column = pc.index_in(names, value_set=features, skip_nulls=True)
    column = column.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    is_intercept = pc.fill_null(pc.equal(names, INTERCEPT), False).to_numpy(zero_copy_only=False)
    column[is_intercept] = -1
    return column, is_intercept


@dataclass
class GLMixModel:
    """A fitted GLMix model: the spec, one coefficient set per coordinate, and metadata (fit history, metrics,
    training data range, parent model, version)."""

    spec: GLMixSpec
    coordinates: dict[str, CoordinateModel]
    metadata: dict = field(default_factory=dict)

    def contributions(self, table: pa.Table) -> dict[str, np.ndarray]:
        """Per-coordinate score contributions (linear predictor parts) for each row of ``table``."""
        return {name: coord.score(table) for name, coord in self.coordinates.items()}

    def score(self, table: pa.Table) -> np.ndarray:
        """Total linear predictor per row: offset column (if the spec names one and ``table`` has it) plus
        every coordinate's contribution. Unknown entities and unknown features contribute 0."""
        total = np.zeros(table.num_rows)
        if self.spec.offset and self.spec.offset in table.column_names:
            total += numeric_column(table, self.spec.offset, "offset")
        for part in self.contributions(table).values():
            total += part
        return total

    def predict(self, table: pa.Table) -> np.ndarray:
        """The predicted mean (probability for logistic, rate for Poisson) per row."""
        return get_loss(self.spec.task).mean(self.score(table))

    def coefficients(self) -> pa.Table:
        """All coefficients in the long form stored in ``coefficients.parquet``."""
        return pa.concat_tables([c.table() for c in self.coordinates.values()])

    def coefficient_matrix(self, coordinate: str, features: Sequence[str] | pa.Array | pa.ChunkedArray,
                           entities: Sequence[str] | pa.Array | pa.ChunkedArray | None = None) -> CoefficientMatrix:
        """The coefficients of ``coordinate`` as a sparse matrix over the caller's feature order.

        ``features``: feature names, one per column (a null entry is a column no coefficient maps to; a name
        listed twice gets its coefficient in its first column only). The intercept is never a column: it is
        returned per row in ``intercept``. Features of the model that ``features`` does not list are left
        out (counted in ``unmapped``), as unknown features contribute 0 to ``score``.

        A fixed effect gives one row. A random effect gives one row per entity: the model's entities in
        their stored order, or, with ``entities`` (IDs, compared as strings; repeats allowed), one row per
        given ID in that order, all-zero (``found`` false) for IDs the model has no coefficients for.

        Vectorised: ``matrix @ x`` for feature values ``x`` in the same order, plus ``intercept``, is the
        coordinate's contribution to ``score`` for each row's entity.
        """
        if coordinate not in self.coordinates:
            raise ModelError(f"model has no coordinate {coordinate!r}; it has {sorted(self.coordinates)}")
        coord = self.coordinates[coordinate]
        features = _strings(features)
        width = len(features)
        if isinstance(coord, FixedEffectModel):
            column, is_intercept = _columns_of(coord.features.names.cast(pa.string()), features)
            keep = column >= 0
            matrix = sp.csr_matrix((coord.coef[keep], (np.zeros(int(keep.sum()), np.int64), column[keep])),
                                   shape=(1, width))
            return CoefficientMatrix(coordinate, None, None, features, matrix,
                                     np.array([float(coord.coef[is_intercept].sum())]), np.ones(1, bool),
                                     int(np.count_nonzero(~keep & ~is_intercept)))
        feature_column, feature_is_intercept = _columns_of(coord.features.names.cast(pa.string()), features)
        column, is_intercept = feature_column[coord.pair_feature], feature_is_intercept[coord.pair_feature]
        keep = column >= 0
        n_model = coord.n_entities
        by_entity = sp.csr_matrix((coord.value[keep], (coord.pair_entity[keep], column[keep])), shape=(n_model, width))
        intercept = np.bincount(coord.pair_entity[is_intercept], weights=coord.value[is_intercept], minlength=n_model)
        unmapped = int(np.count_nonzero((feature_column < 0) & ~feature_is_intercept))
        if entities is None:
            return CoefficientMatrix(coordinate, coord.spec.entity, coord.entity_ids, features, by_entity,
                                     intercept, np.ones(n_model, bool), unmapped)
        entities = _strings(entities)
        position = pc.index_in(entities, value_set=coord.entity_ids, skip_nulls=True)
        position = position.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        found = position >= 0
        rows = np.flatnonzero(found)
        select = sp.csr_matrix((np.ones(rows.size), (rows, position[found])), shape=(len(entities), n_model))
        return CoefficientMatrix(coordinate, coord.spec.entity, entities, features, (select @ by_entity).tocsr(),
                                 np.where(found, intercept[np.maximum(position, 0)] if n_model else 0.0, 0.0),
                                 found, unmapped)

    def save(self, directory: str | Path) -> Path:
        """Write the model directory atomically (a reader sees the old or the new model, never a mix)."""
        target = Path(directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".tmp-{target.name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            pq.write_table(self.coefficients(), tmp / "coefficients.parquet", compression="zstd")
            meta = {"format": FORMAT, "spec": self.spec.to_dict(), **self.metadata,
                    "coordinates": {name: _summary(c) for name, c in self.coordinates.items()}}
            (tmp / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        trash = None
        if target.exists():
            trash = target.parent / f".trash-{target.name}-{uuid.uuid4().hex[:8]}"
            os.replace(target, trash)
        os.replace(tmp, target)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        return target


def _summary(coord: CoordinateModel) -> dict:
    if isinstance(coord, FixedEffectModel):
        return {"type": "fixed", "n_features": len(coord.features)}
    return {"type": "random", "entity": coord.spec.entity, "n_entities": coord.n_entities,
            "n_coefficients": int(coord.value.size)}


def load_model(directory: str | Path) -> GLMixModel:
    """Read a model directory written by ``GLMixModel.save`` (JSON + Parquet only)."""
    directory = Path(directory)
    meta_path, coef_path = directory / "model.json", directory / "coefficients.parquet"
    if not meta_path.is_file() or not coef_path.is_file():
        raise ModelError(f"{directory} is not a GLMix model directory (needs model.json and coefficients.parquet)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ModelError(f"{meta_path}: unsupported model format {meta.get('format')!r}; expected {FORMAT!r}")
    spec = GLMixSpec.from_dict(meta["spec"])
    table = pq.read_table(coef_path)
    coords: dict[str, CoordinateModel] = {}
    for cspec in spec.coordinates:
        part = table.filter(pc.equal(table.column("coordinate"), cspec.name))
        value = part.column("value").to_numpy()
        variance = part.column("variance").to_numpy(zero_copy_only=False).astype(float)
        if cspec.type == "fixed":
            var = None if np.isnan(variance).all() else variance
            coords[cspec.name] = FixedEffectModel(cspec, FeatureIndexMap.from_names(part.column("feature")), value,
                                                  var)
        else:
            coords[cspec.name] = RandomEffectModel.from_pairs(
                cspec, part.column("entity").combine_chunks(), part.column("feature").combine_chunks(),
                value, variance)
    metadata = {k: v for k, v in meta.items() if k not in ("format", "spec", "coordinates")}
    return GLMixModel(spec, coords, metadata)
