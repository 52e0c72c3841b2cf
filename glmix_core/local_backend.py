"""The in-memory backend of the PBCD driver: every coordinate built from one ``pyarrow.Table``."""

from __future__ import annotations

import logging
import time

import pyarrow as pa

from .building import normalized_fixed_design, random_coordinate, row_arrays
from .coordinates import FixedCoordinate, LocalFixedData
from .data import feature_matrix
from .errors import DataError
from .losses import get_loss
from .model import FixedEffectModel, GLMixModel, RandomEffectModel
from .normalization import make_normalization
from .pbcd import FitOptions
from .sampling import down_sample, row_keys
from .spec import GLMixSpec

log = logging.getLogger(__name__)


def row_inputs(spec: GLMixSpec, data: pa.Table):
    """(loss, response, weight, offset) of ``data``, checked (``DataError`` naming the column)."""
    if data.num_rows == 0:
        raise DataError("the training data has no rows")
    loss = get_loss(spec.task)
    return (loss, *row_arrays(spec, loss, data))


class LocalBackend:
    """Coordinates over ``data`` in memory (see ``glmix_core.pbcd.Backend``)."""

    def __init__(self, spec: GLMixSpec, data: pa.Table, options: FitOptions, warm_start: GLMixModel | None,
                 rtol: float):
        self.loss, self.y, self.weight, base = row_inputs(spec, data)
        self.coordinates: dict = {}
        self.sampled = False
        self.info = {"engine": "local"}
        keys = None  # row keys of deterministic sampling (uid column or row position), built when first needed
        for cspec in spec.coordinates:
            t0 = time.perf_counter()
            prev = warm_start.coordinates.get(cspec.name) if warm_start is not None else None
            if cspec.name in options.lock:
                base = base + prev.score(data)
                log.info("coordinate %s: locked (scored from the warm-start model)", cspec.name)
                continue
            if keys is None and (cspec.down_sampling_rate < 1 or cspec.max_samples is not None):
                keys = row_keys(data, spec.uid)
            if cspec.type == "fixed":
                coord = self._fixed(cspec, data, keys, prev, rtol)
            else:
                coord = random_coordinate(cspec, self.loss, data, self.y, self.weight, rtol=rtol, keys=keys,
                                          previous=prev if isinstance(prev, RandomEffectModel) else None,
                                          incremental=cspec.name in options.incremental,
                                          forgetting=options.forgetting)
                self.sampled |= coord.reweighted
            self.coordinates[cspec.name] = coord
            log.info("coordinate %s: design built in %.2fs", cspec.name, time.perf_counter() - t0)
        self.base_offset = base

    def _fixed(self, cspec, data, keys, prev, rtol) -> FixedCoordinate:
        X, feats = feature_matrix(data, cspec.features, cspec.feature_bags, cspec.intercept)
        normalization = make_normalization(cspec.normalization, X, cspec.intercept)
        fit_rows = fit_weight = None
        if cspec.down_sampling_rate < 1:
            fit_rows, fit_weight = down_sample(self.y, self.weight, keys, cspec.down_sampling_rate, cspec.seed)
            self.sampled = True
            log.info("coordinate %s: down-sampled to %d of %d rows", cspec.name, fit_rows.size, self.y.size)
        source = LocalFixedData(self.loss, normalized_fixed_design(X, normalization), self.y, self.weight, fit_rows,
                                fit_weight)
        return FixedCoordinate(cspec.name, source, feats, l2=cspec.l2, l1=cspec.l1, solver=cspec.solver,
                               intercept=cspec.intercept, rtol=rtol,
                               coef0=prev.lookup(feats)[0] if isinstance(prev, FixedEffectModel) else None,
                               factor=None if normalization is None else normalization.factor)

    def close(self) -> None:
        """Nothing to release: the arrays go with the backend."""
