"""A notebook-friendly front end: one object holding the spec (or formula) and the fitted model.

    from glmix_core import GLMix
    m = GLMix("y ~ x1 + x2 + (1 + genre_* | user)", task="logistic", l2={"user": 10})
    m.fit(train_df)                     # pandas DataFrame, pyarrow Table, or a Parquet/CSV path
    m.score(test_df)                    # linear predictor per row (np.ndarray); m.predict(...) the mean
    m.evaluate(test_df)                 # {"auc": ..., "log_loss": ..., ...}
    m.coefficients("per_user")          # pandas DataFrame: coordinate, entity, feature, value, variance
    m.save("models/m1");  GLMix.load("models/m1")

It has the ``glmix fit`` semantics: ``warm_start`` (a GLMix, a GLMixModel or a model directory), ``lock``
and ``incremental`` are passed to ``glmix_core.fit``; the fitted ``GLMixModel`` is ``.model_`` and the
resolved ``GLMixSpec`` is ``.spec_``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .data import DataError, load_table
from .formula import FormulaSpec, spec_source
from .model import GLMixModel, ModelError, load_model
from .spec import GLMixSpec

if TYPE_CHECKING:
    import pandas as pd

DataLike = Any  # pandas.DataFrame | pyarrow.Table | pyarrow.RecordBatch | str | Path


def to_table(data: DataLike, what: str = "data") -> pa.Table:
    """``data`` as a pyarrow Table: a Table as is, a RecordBatch wrapped, a pandas DataFrame converted with
    ``pa.Table.from_pandas(preserve_index=False)``, a str/Path read with ``load_table``."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, str | Path):
        return load_table(data)
    if type(data).__module__.startswith("pandas") and hasattr(data, "columns"):
        try:
            return pa.Table.from_pandas(data, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise DataError(f"{what}: cannot convert the DataFrame to Arrow: {exc}") from None
    raise DataError(f"{what} must be a pandas DataFrame, a pyarrow Table or a Parquet/CSV path; "
                    f"got {type(data).__name__}")


class GLMix:
    """A GLMix model to fit, score, evaluate, inspect and save.

    ``spec_or_formula``: a ``GLMixSpec``, a spec dict, a YAML/JSON spec path, or a formula string such as
    ``"y ~ x1 + (1 + genre_* | user)"`` (see ``glmix_core.formula``; it is resolved against the training
    data's columns at ``fit``). ``options``: ``task``, ``l2`` (a number, or a dict keyed by coordinate name
    or entity column), ``coordinate_options`` and GLMixSpec fields (``max_iterations``, ``tolerance``,
    ``weight``, ``offset``, ...), applied on top of the spec. Spec and formula syntax errors raise
    ``SpecError`` here; column problems at ``fit``.
    """

    def __init__(self, spec_or_formula: GLMixSpec | Mapping[str, Any] | str | Path, **options: Any):
        self._source: GLMixSpec | FormulaSpec = spec_source(spec_or_formula, **options)
        self.spec_: GLMixSpec | None = self._source if isinstance(self._source, GLMixSpec) else None
        self.model_: GLMixModel | None = None

    # ------------------------------------------------------------------------------------------ fitting

    def fit(self, data: DataLike, validation: DataLike | None = None,
            warm_start: GLMix | GLMixModel | str | Path | None = None, lock: Iterable[str] = (),
            incremental: Mapping[str, Any] | float | bool | None = None,
            metadata: Mapping[str, Any] | None = None) -> GLMix:
        """Fit on ``data`` and return ``self`` (``.model_`` and ``.spec_`` set).

        ``validation``: data evaluated after the fit (metrics in ``model_.metadata["metrics"]["validation"]``).
        ``warm_start``: start from a fitted GLMix, a GLMixModel or a model directory. ``lock``: coordinates
        kept as in ``warm_start``. ``incremental``: ``{"forgetting": γ, "coordinates": [...]}`` as in
        ``glmix_core.fit``; ``True`` means ``{}`` (γ = 1) and a number means ``{"forgetting": number}``.
        """
        from .fitting import fit

        table = to_table(data)
        spec = self._source.resolve(table) if isinstance(self._source, FormulaSpec) else self._source
        valid = to_table(validation, "validation") if validation is not None else None
        warm = self._warm_model(warm_start)
        if incremental is True:
            incremental = {}
        elif incremental is False:
            incremental = None
        elif isinstance(incremental, int | float):
            incremental = {"forgetting": float(incremental)}
        meta: dict[str, Any] = {"rows": table.num_rows}
        if isinstance(data, str | Path):
            meta["training_data"] = str(Path(data).resolve())
        if isinstance(self._source, FormulaSpec):
            meta["formula"] = self._source.formula.text
        meta.update(metadata or {})
        self.model_ = fit(spec, table, validation=valid, warm_start=warm, lock=list(lock),
                          incremental=dict(incremental) if incremental is not None else None, metadata=meta)
        self.spec_ = spec
        return self

    @staticmethod
    def _warm_model(warm_start: GLMix | GLMixModel | str | Path | None) -> GLMixModel | None:
        if warm_start is None or isinstance(warm_start, GLMixModel):
            return warm_start
        if isinstance(warm_start, GLMix):
            return warm_start._fitted("be used as warm_start")
        if isinstance(warm_start, str | Path):
            return load_model(warm_start)
        raise ModelError(f"warm_start must be a GLMix, a GLMixModel or a model directory; "
                         f"got {type(warm_start).__name__}")

    def _fitted(self, action: str) -> GLMixModel:
        if self.model_ is None:
            raise ModelError(f"this GLMix is not fitted yet and cannot {action}: call .fit(data) first "
                             f"(or GLMix.load(directory))")
        return self.model_

    # ------------------------------------------------------------------------------------------ using

    def score(self, data: DataLike) -> np.ndarray:
        """Linear predictor per row of ``data`` (offset column if any + every coordinate); unknown entities
        and features contribute 0."""
        return self._fitted("score").score(to_table(data))

    def predict(self, data: DataLike) -> np.ndarray:
        """Predicted mean per row (probability for logistic, rate for Poisson)."""
        return self._fitted("predict").predict(to_table(data))

    def contributions(self, data: DataLike) -> dict[str, np.ndarray]:
        """Per-coordinate score contributions per row."""
        return self._fitted("compute contributions").contributions(to_table(data))

    def evaluate(self, data: DataLike, **kwargs: Any) -> dict:
        """Metrics on ``data`` (which must hold the response): ``glmix_core.evaluate(model, table, **kwargs)``."""
        from .evaluation import evaluate

        return evaluate(self._fitted("evaluate"), to_table(data), **kwargs)

    def coefficients(self, coordinate: str | None = None) -> pd.DataFrame:
        """Coefficients in long form as a pandas DataFrame with columns ``coordinate``, ``entity`` (None for
        the fixed effect), ``feature`` (``(intercept)`` for intercepts), ``value``, ``variance`` (NaN when
        not computed); only ``coordinate``'s rows when given."""
        model = self._fitted("give coefficients")
        if coordinate is not None and coordinate not in model.coordinates:
            raise ModelError(f"no coordinate named {coordinate!r}; the model has {list(model.coordinates)}")
        coords = [model.coordinates[coordinate]] if coordinate is not None else model.coordinates.values()
        table = pa.concat_tables([c.table() for c in coords])
        return table.to_pandas()

    def save(self, directory: str | Path) -> Path:
        """Write the model directory (``model.json`` + ``coefficients.parquet``); returns its path."""
        return self._fitted("be saved").save(directory)

    @classmethod
    def load(cls, directory: str | Path) -> GLMix:
        """A fitted GLMix from a model directory (written by ``save`` or ``glmix fit``)."""
        model = load_model(directory)
        out = cls(model.spec)
        out.model_ = model
        return out

    @classmethod
    def from_model(cls, model: GLMixModel) -> GLMix:
        """Wrap an already fitted GLMixModel."""
        out = cls(model.spec)
        out.model_ = model
        return out

    # ------------------------------------------------------------------------------------------ display

    def __repr__(self) -> str:
        if self.spec_ is None:
            assert isinstance(self._source, FormulaSpec)
            return f"GLMix({self._source.describe()}, not fitted)"
        spec = self.spec_
        parts = []
        for c in spec.coordinates:
            what = []
            if c.intercept:
                what.append("1")
            what += list(c.features) + [f"bag:{b}" for b in c.feature_bags]
            head = f"{c.name}: {' + '.join(what)}" + (f" | {c.entity}" if c.type == "random" else "")
            parts.append(f"{head} (l2={c.l2:g})")
        state = "not fitted"
        if self.model_ is not None:
            fit = self.model_.metadata.get("fit", {})
            state = "fitted" + (f", {fit['sweeps']} sweeps, converged={fit['converged']}" if "sweeps" in fit else "")
        formula = self.model_.metadata.get("formula") if self.model_ is not None else None
        if formula is None and isinstance(self._source, FormulaSpec):
            formula = self._source.formula.text
        head = f"{formula!r}, " if formula else ""
        return (f"GLMix({head}task={spec.task!r}, response={spec.response!r}, coordinates=["
                + "; ".join(parts) + f"], {state})")
