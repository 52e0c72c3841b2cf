"""A random effect on Spark: rows partitioned by entity, coefficients and scores on the driver.

Each entity partition holds the local engine's ``RandomCoordinate`` for the entities hashed there, built by
``glmix_core.building.random_coordinate`` exactly as the local backend builds its one coordinate (the
vocabulary, normalization and row keys are global), plus the global positions of its rows. The partitions
are shuffled into place once per fit and then only read (persisted, never rewritten). Each is cached as a
``blocks.Resident``: a Python worker unpickles a partition's state once per fit and keeps it (with the dense
blocks it builds on first use) for later jobs.

The driver holds what the PBCD driver touches: the pair values (in partition order), their prior, the
per-row score vector and the ``PairIndex``. An update ships the offset and the values (``share``), runs the batched
Newton solve in every partition (one Spark job) and collects the new values and scores; no shuffle per
update. ``SparkRandomCoordinate`` offers the interface of ``glmix_core.coordinates``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..coordinates import PairIndex, RandomCoordinate
from ..design import PairScaling
from ..index_map import FeatureIndexMap
from ..model import RandomEffectModel
from .blocks import entity_partitions, share, split_by


def split_model(prev: RandomEffectModel, num_parts: int) -> list[RandomEffectModel | None]:
    """The warm-start model cut into the per-partition pieces holding the entities hashed to each partition."""
    out: list[RandomEffectModel | None] = [None] * num_parts
    pair_dest = entity_partitions(prev.entity_ids, num_parts)[prev.pair_entity] if prev.value.size else \
        np.zeros(0, np.int64)
    for d, sel in split_by(pair_dest, num_parts):
        used, local = np.unique(prev.pair_entity[sel], return_inverse=True)
        out[d] = RandomEffectModel(prev.spec, prev.entity_ids.take(pa.array(used)), prev.features, local,
                                   prev.pair_feature[sel], prev.value[sel], prev.variance[sel])
    return out


def partition_summary(index: int, state: dict) -> dict:
    """What the driver collects from a freshly built partition (everything but the design)."""
    coord: RandomCoordinate | None = state["coord"]
    if coord is None:
        return {"index": index, "rows": state["rows"], "error": state.get("error")}
    d = coord.design
    return {"index": index, "rows": state["rows"], "error": None, "entity_ids": coord.pairs.entity_ids,
            "pair_entity": d.pair_entity, "pair_col": d.pair_col, "scaling": d.scaling,
            "values": coord.values, "prior_mean": coord.prior_mean, "prior_prec": coord.prior_prec,
            "scores": coord.score(), "reweighted": coord.reweighted}


class SparkRandomCoordinate:
    """One random effect over ``states`` (RDD, one ``Resident`` ``{"rows", "coord"}`` per entity partition,
    persisted),
    built from the partitions' ``partition_summary`` dicts (in partition order)."""

    def __init__(self, name: str, states, summaries: list[dict], features: FeatureIndexMap, n_rows: int):
        self.name, self.states, self.n_rows = name, states, n_rows
        self.sc = states.context
        built = [s for s in summaries if "values" in s]
        self.parts = [s["index"] for s in built]
        self.rows = {s["index"]: s["rows"] for s in built}
        sizes = [s["values"].size for s in built]
        bounds = np.cumsum([0, *sizes])
        self.slices = {s["index"]: (int(bounds[i]), int(bounds[i + 1])) for i, s in enumerate(built)}
        self.values = np.concatenate([s["values"] for s in built] + [np.zeros(0)])
        self.prior_mean = np.concatenate([s["prior_mean"] for s in built] + [np.zeros(0)])
        self.prior_prec = np.concatenate([s["prior_prec"] for s in built] + [np.zeros(0)])
        entity_offsets = np.cumsum([0] + [len(s["entity_ids"]) for s in built])
        self.pairs = PairIndex(
            pa.concat_arrays([s["entity_ids"] for s in built] + [pa.array([], pa.string())]), features,
            np.concatenate([s["pair_entity"] + o for s, o in zip(built, entity_offsets, strict=False)]
                           + [np.zeros(0, np.int64)]).astype(np.int64),
            np.concatenate([s["pair_col"] for s in built] + [np.zeros(0, np.int64)]).astype(np.int64))
        self.scaling = PairScaling.concat([s["scaling"] for s in built])
        self.reweighted = any(s["reweighted"] for s in built)
        self._scores = self._scatter([(s["index"], s["scores"]) for s in built])
        self._stale = False
        self.last_iterations = 0
        self.last_kkt = float("inf")

    # -- the coordinate interface -----------------------------------------------------------------------
    @property
    def params(self) -> np.ndarray:
        return self.values

    @params.setter
    def params(self, value: np.ndarray) -> None:
        self.values = np.asarray(value, float)
        self._stale = True

    def fit(self, offset: np.ndarray) -> np.ndarray:
        results = self._run(offset, _fit_partition)
        for index, values, _, _, _ in results:
            lo, hi = self.slices[index]
            self.values[lo:hi] = values
        self._scores = self._scatter([(r[0], r[2]) for r in results])
        self._stale = False
        self.last_iterations = max((r[3] for r in results), default=0)
        self.last_kkt = max((r[4] for r in results), default=0.0)
        return self.values

    def score(self) -> np.ndarray:
        if self._stale:
            self._scores = self._scatter(self._run(None, _score_partition))
            self._stale = False
        return self._scores

    def prior(self) -> tuple[np.ndarray, np.ndarray]:
        return self.prior_mean, self.prior_prec

    def penalty(self) -> float:
        diff = self.values - self.prior_mean
        return 0.5 * float(np.sum(self.prior_prec * diff * diff))

    def variances(self, offset: np.ndarray, kind: str = "full") -> np.ndarray:
        out = np.full(self.values.size, np.nan)
        for index, variance in self._run(offset, _variance_partition, kind):
            lo, hi = self.slices[index]
            out[lo:hi] = variance
        return out

    def to_original(self, params: np.ndarray) -> np.ndarray:
        return np.array(self.scaling.to_original(params), float, copy=True)

    # -- plumbing -----------------------------------------------------------------------------------------
    def _scatter(self, pieces) -> np.ndarray:
        out = np.zeros(self.n_rows)
        for index, scores in pieces:
            out[self.rows[index]] = scores
        return out

    def _run(self, offset: np.ndarray | None, task, *args) -> list:
        """One Spark job: ``task(index, coord with this partition's current values, its rows' offset, *args)``
        on every partition that has coefficients; the results in partition order."""
        bc = share(self.sc, (offset, self.values, self.slices),
                   self.values.nbytes + (0 if offset is None else offset.nbytes))

        def run(index, states):
            offset, values, slices = bc.value
            for cached in states:
                state = cached.open(index)
                coord = state["coord"]
                if coord is None or index not in slices:
                    continue
                lo, hi = slices[index]
                coord.values = values[lo:hi].copy()
                yield task(index, coord, None if offset is None else offset[state["rows"]], *args)

        results = self.states.mapPartitionsWithIndex(run).collect()
        bc.unpersist()
        return results


def _fit_partition(index: int, coord: RandomCoordinate, offset: np.ndarray):
    coord.fit(offset)
    return index, coord.values, coord.score(), coord.last_iterations, coord.last_kkt


def _score_partition(index: int, coord: RandomCoordinate, offset: None):
    return index, coord.score()


def _variance_partition(index: int, coord: RandomCoordinate, offset: np.ndarray, kind: str):
    return index, coord.variances(offset, kind)
