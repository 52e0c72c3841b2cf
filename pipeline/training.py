"""GLMix training tasks: the daily random-effect retrain, the periodic full retrain, the gates, promotion.

Model store (under ``$JOBREC_HOME/models``)::

    full/full-<ds>/        a full GLMix fit (fixed + random effects) on the window ending at ds
    daily/ds=<ds>/         the day's model: the fixed effect copied (locked) from its parent, the random
                           effects refit on the day's data, warm-started from the parent
    current.json           {"version": "full-<ds>", "ds": ...}: the promoted full model

Every model directory holds a glmix_core model (written by ``GLMixModel.save``, read by
``glmix_core.load_model``: this module never reads glmix_core's files itself) and the jobrec lineage
``lineage.json`` = ``{ds, kind, version, parent: {kind, version}, base_full, mode, metrics, ...}``, written in
the same atomic rename as the model (the model's metadata holds it too). ``base_full`` is the full model at
the root of the warm-start chain; when a newer full model has been promoted since yesterday's daily model
was trained, today's daily model warm-starts from the full model instead (it carries the new fixed effect).
The gate's verdict (``gate.json``) and a promotion (``promoted.json``) are written next to them.

Holdout: an impression belongs to the holdout when a fixed hash of its ``impression_id`` falls below
``HOLDOUT_FRACTION``: deterministic, so reruns use the same split and two models are always compared on the
same rows. Heavy imports (numpy, pyarrow, glmix_core) stay inside functions: the DAG files reference
:class:`GateFailedError` by its import path at parse time.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.config import Settings

log = logging.getLogger(__name__)

SPEC_PATH = Path(__file__).resolve().parent / "specs" / "glmix_full.yaml"
HOLDOUT_FRACTION = 0.2
TRAIN_ROW_GROUP_ROWS = 65_536  # Spark tasks read whole row groups of the training file
DEFAULT_L2_GRID = (0.1, 1.0, 10.0)
L2_SEARCHES = ("bayesian", "grid")
# log-uniform box of the per-coordinate Bayesian L2 search, and its budget of fits
DEFAULT_L2_RANGE = (0.01, 1000.0)
DEFAULT_TUNING_TRIALS = 12
RETRAIN_MODES = ("warm_start", "incremental")


class GateFailedError(RuntimeError):
    """A quality gate stopped a model: it is not published (daily) or not promoted (full)."""


# --------------------------------------------------------------------------------------------- helpers


def load_spec(l2: float | dict[str, float] | None = None):
    """The pipeline's GLMix spec (``specs/glmix_full.yaml``), optionally with every/some ``l2`` replaced."""
    from glmix_core.spec import GLMixSpec

    spec = GLMixSpec.from_yaml(SPEC_PATH)
    if l2 is None:
        return spec
    if not isinstance(l2, dict):
        l2 = {c.name: float(l2) for c in spec.coordinates}
    return spec.with_l2(l2)


def fixed_coordinates(spec) -> list[str]:
    return [c.name for c in spec.coordinates if c.type == "fixed"]


def holdout_mask(impression_ids, fraction: float = HOLDOUT_FRACTION):
    """Boolean mask of holdout rows: splitmix64(impression_id) / 2**64 < ``fraction`` (vectorized)."""
    import numpy as np

    z = np.asarray(impression_ids, dtype=np.int64).view(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(2**53) < fraction


def _training_path(ds: str, settings: Settings) -> Path:
    path = settings.layout.features("training", ds)
    if not path.exists():
        raise FileNotFoundError(
            f"no training features for ds={ds} at {path}: run the features task first "
            f"(`jobrec features --ds {ds}`, or the build_features task of jobrec_daily)"
        )
    return path


def load_training_day(ds: str, settings: Settings):
    """The day's ``features/training`` partition, or ``FileNotFoundError`` saying which task to run."""
    from pipeline.storage import read_partition

    return read_partition(_training_path(ds, settings))


def _split_files(ds: str, settings: Settings, fraction: float) -> Iterator[tuple[Any, Any]]:
    """``(train, holdout)`` of each file of the day's training features in turn (:func:`split_holdout`), so
    callers hold one file's rows at a time beside what they keep; all files of one version, even when a
    rerun of the day's features replaces the folder meanwhile (:func:`pipeline.storage.open_partition`)."""
    from pipeline.storage import closing_all, open_partition

    with closing_all(open_partition(_training_path(ds, settings))) as files:
        for file in files:
            yield split_holdout(file.read(), fraction)


def load_training_split(ds: str, settings: Settings, fraction: float = HOLDOUT_FRACTION):
    """``(train, holdout)`` of the day's training features, as :func:`split_holdout` of
    :func:`load_training_day` gives them (same rows, same order), read and split one file at a time: the
    day is never held twice (at 1M members a day's rows take 2.4 GiB in Arrow)."""
    import pyarrow as pa

    trains, holdouts = [], []
    for train, holdout in _split_files(ds, settings, fraction):
        trains.append(train)
        holdouts.append(holdout)
    return (pa.concat_tables(trains, promote_options="default"),
            pa.concat_tables(holdouts, promote_options="default"))


def load_holdout(ds: str, settings: Settings, fraction: float = HOLDOUT_FRACTION):
    """The holdout half of :func:`load_training_split` without keeping the training rows (a fifth of the
    memory: the gate of a 1M-member day held both, 5.7 GiB)."""
    import pyarrow as pa

    return pa.concat_tables([holdout for _, holdout in _split_files(ds, settings, fraction)],
                            promote_options="default")


@contextlib.contextmanager
def daily_training_data(ds: str, settings: Settings, engine: str = "local") -> Iterator[tuple[Any, int, Any]]:
    """``(data, training rows, holdout)`` of the day for ``glmix_core.fit`` on ``engine``: locally the
    training table itself (:func:`load_training_split`); for Spark, the training rows streamed file by file
    into a Parquet file under ``Layout.scratch_dir()`` (removed afterwards) and never held whole here, so the
    task's own process keeps only the holdout beside Spark (see :func:`training_data`)."""
    if engine != "spark":
        train, holdout = load_training_split(ds, settings)
        yield train, train.num_rows, holdout
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    holdouts, rows = [], 0
    with _scratch_file(settings) as path:
        writer = None
        try:
            for train, holdout in _split_files(ds, settings, HOLDOUT_FRACTION):
                if writer is None:
                    writer = pq.ParquetWriter(path, train.schema)
                writer.write_table(train.cast(writer.schema), row_group_size=TRAIN_ROW_GROUP_ROWS)
                rows += train.num_rows
                holdouts.append(holdout)
                del train
        finally:
            if writer is not None:
                writer.close()
        yield str(path), rows, pa.concat_tables(holdouts, promote_options="default")


def split_holdout(table, fraction: float = HOLDOUT_FRACTION):
    """``(train, holdout)`` split of a training table by :func:`holdout_mask` on ``impression_id``."""
    import pyarrow as pa

    mask = holdout_mask(table.column("impression_id").to_numpy(), fraction)
    return table.filter(pa.array(~mask)), table.filter(pa.array(mask))


LINEAGE_FILE = "lineage.json"


def read_lineage(model_dir: Path) -> dict:
    """The jobrec lineage (ds, kind, version, parent, base_full, metrics) of a model directory.

    Read from its ``lineage.json``; a model saved before jobrec wrote that file is read with
    ``glmix_core.load_model`` and its lineage taken from the model's metadata.
    """
    model_dir = Path(model_dir)
    path = model_dir / LINEAGE_FILE
    if path.is_file():
        meta = json.loads(path.read_text())
    else:
        from glmix_core import ModelError

        try:
            meta = load_model(model_dir).metadata
        except ModelError as exc:
            raise FileNotFoundError(f"{model_dir} is not a model directory (no {LINEAGE_FILE}; {exc})") from exc
    if "kind" not in meta:
        raise ValueError(f"{model_dir} has no jobrec lineage (kind, parent, base_full): it was not written by jobrec")
    return meta


def pointer_path(settings: Settings) -> Path:
    """``models/current.json``: the promoted full model's pointer."""
    return settings.layout.model_pointer()


def current_full(settings: Settings) -> dict | None:
    """The promoted full model's pointer ``{"version", "ds", "path", ...}``, or ``None`` before any."""
    path = pointer_path(settings)
    if not path.exists():
        return None
    pointer = json.loads(path.read_text())
    pointer["path"] = str(settings.layout.model_full(pointer["version"]))
    return pointer


def full_version(ds: str) -> str:
    return f"full-{ds}"


PROMOTED_FILE = "promoted.json"


def promoted_full_models(settings: Settings) -> list[dict]:
    """Every full model that passed its gate and was promoted at some point, oldest ``ds`` first:
    ``[{"version", "ds", "path"}]``. A promotion leaves ``promoted.json`` in the model's folder (a rerun of
    that retrain replaces the folder, so it must be promoted again); the pointer ``current.json`` counts too.
    """
    root = settings.layout.full_models_dir()
    found = {}
    if root.is_dir():
        for model_dir in root.iterdir():
            if (model_dir / PROMOTED_FILE).exists():
                try:
                    lineage = read_lineage(model_dir)
                except FileNotFoundError:  # a promotion marker left in a folder without a model
                    continue
                found[lineage["version"]] = {"version": lineage["version"], "ds": lineage["ds"], "path": str(model_dir)}
    current = current_full(settings)
    if current is not None and current["version"] not in found and Path(current["path"]).exists():
        found[current["version"]] = {"version": current["version"], "ds": current["ds"], "path": current["path"]}
    return sorted(found.values(), key=lambda m: (m["ds"], m["version"]))


class MissingParentError(FileNotFoundError):
    """The daily retrain of a day has no model to start from: the day before must run first."""


def resolve_parent(ds: str, settings: Settings) -> dict:
    """The model the daily retrain of ``ds`` starts from: ``{"kind", "version", "path", "base_full"}``.

    The newest model before ``ds``: the daily model of the day before (when the gate stopped it, the model it
    was trained from, and so on up the chain), unless a promoted full model trained on a window ending
    before ``ds`` is newer than that chain's root full model; the full model alone when the day before *is*
    its window's last day. Never a model of ``ds`` or later, so a backfill of old days gives the same
    parents whatever ran since.

    Raises :class:`MissingParentError` naming the day to run first when the day before has no model (and
    no full model ends there), or when there is no model at all before ``ds``.
    """
    from pipeline.storage import check_ds, shift_ds

    check_ds(ds)
    previous_day = shift_ds(ds, -1)
    fulls = [m for m in promoted_full_models(settings) if m["ds"] < ds]
    newest_full = fulls[-1] if fulls else None
    full_parent = None
    if newest_full is not None:
        full_parent = {"kind": "full", "version": newest_full["version"], "path": newest_full["path"],
                       "base_full": newest_full["version"]}
    previous_dir = settings.layout.model_daily(previous_day)
    if previous_dir.exists():
        previous = read_lineage(previous_dir)
        # A model the gate stopped never becomes a parent: continue the chain from the model it started from.
        while _gate_failed(previous_dir) and previous["parent"] and previous["parent"]["kind"] == "daily":
            previous_dir = settings.layout.model_daily(previous["parent"]["version"].removeprefix("daily-"))
            previous = read_lineage(previous_dir)
        chain_usable = not _gate_failed(previous_dir)
        newer_full = full_parent is not None and newest_full["version"] != previous.get("base_full")
        if chain_usable and not newer_full:
            return {"kind": "daily", "version": previous["version"], "path": str(previous_dir),
                    "base_full": previous.get("base_full")}
        if full_parent is not None:
            return full_parent
    elif newest_full is not None and newest_full["ds"] == previous_day:
        return full_parent
    newest_daily = max((d for d in settings.layout.partitions(settings.layout.daily_models_dir()) if d < ds),
                       default=None)
    newest = max([d for d in (newest_daily, newest_full and newest_full["ds"]) if d], default=None)
    if newest is None:
        raise MissingParentError(
            f"no model before ds={ds} to start the daily retrain from: no daily model and no promoted full "
            f"model. Run the full retrain for a day before {ds} first (`jobrec train full --ds <date>` or the "
            "jobrec_full_retrain DAG)"
        )
    first_missing = shift_ds(newest, 1)
    raise MissingParentError(
        f"no model for ds={previous_day}, the day before ds={ds}: the newest model before it is of {newest}. "
        f"Run jobrec_daily for {first_missing} first (a backfill {first_missing}..{ds} runs the days in order)"
    )


GATE_FILE = "gate.json"


def _gate_failed(model_dir: Path) -> bool:
    """True when the gate ran on this model and stopped it (``gate.json`` written by :func:`gate`)."""
    path = Path(model_dir) / GATE_FILE
    return path.exists() and not json.loads(path.read_text()).get("passed", False)


def fit_options(settings: Settings, engine: str = "local") -> dict[str, Any]:
    """The options of ``glmix_core.fit`` for ``engine`` (``local`` or ``spark``): the engine, and for Spark the
    session of ``settings``. Both engines take the same spec and the training rows as an Arrow table and
    reach the same optimum; glmix_core validates the engine name."""
    options: dict[str, Any] = {"engine": engine}
    if engine == "spark":
        from pipeline.spark import get_spark

        options["spark"] = get_spark(settings)
    return options


def _fit(spec, data, *, settings: Settings, warm_start=None, lock=(), incremental=False, engine="local",
         metadata=None):
    """One call into ``glmix_core.fit`` on ``engine`` with ``data`` as :func:`training_data` or
    :func:`daily_training_data` give it (``incremental``: the parent's posterior is the prior, γ = 1)."""
    from glmix_core import fit

    return fit(spec, data, warm_start=warm_start, lock=list(lock),
               incremental={"forgetting": 1.0} if incremental else None, metadata=metadata or None,
               **fit_options(settings, engine))


@contextlib.contextmanager
def training_data(train, settings: Settings, engine: str = "local") -> Iterator[Any]:
    """``train`` as ``glmix_core.fit`` on ``engine`` should get it: the table itself locally; for Spark, a
    Parquet file under ``Layout.scratch_dir()`` (removed afterwards) that Spark's tasks read themselves.

    Shipped from memory, the rows travel inside Spark's task descriptions through the driver's heap: a
    1M-member day's 2.4M rows exhausted the default 4 GiB. The data folder is shared with a Spark cluster,
    as for feature generation, so the file is readable where the tasks run.
    """
    if engine != "spark":
        yield train
        return
    import pyarrow.parquet as pq

    with _scratch_file(settings) as path:
        pq.write_table(train, path, row_group_size=TRAIN_ROW_GROUP_ROWS)
        yield str(path)


@contextlib.contextmanager
def _scratch_file(settings: Settings) -> Iterator[Path]:
    """A fresh path for the Spark training file, in a folder under ``Layout.scratch_dir()`` removed on exit."""
    import tempfile

    scratch = settings.layout.scratch_dir()
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix="train-") as folder:
        yield Path(folder) / "train.parquet"


def load_model(path: str | Path):
    """The GLMix model at ``path`` (``glmix_core.load_model``)."""
    from glmix_core import load_model as _load

    return _load(Path(path))


def holdout_auc(model, holdout) -> float:
    """AUC of ``model``'s scores on ``holdout`` against the spec's response column."""
    from glmix_core.metrics import auc

    y = holdout.column(model.spec.response).to_numpy(zero_copy_only=False).astype(float)
    return float(auc(y, model.score(holdout)))


def member_coverage(model, holdout, coordinate: str = "per_member", entity: str = "member_id") -> float:
    """Share of holdout rows whose entity has coefficients in ``model``'s random effect ``coordinate``."""
    import numpy as np

    if holdout.num_rows == 0 or coordinate not in model.coordinates:
        return 0.0
    rows = holdout.column(entity).combine_chunks().cast("string")
    return float(np.mean(model.coefficient_matrix(coordinate, [], entities=rows).found))


def _save_model(model, target: Path, lineage: dict) -> None:
    """Write the model and its ``lineage.json`` to ``target`` in one atomic rename (the lineage also goes into
    the model's metadata, so the model directory describes itself to glmix_core's tools)."""
    from pipeline.storage import atomic_directory, write_json

    metrics = {**model.metadata.get("metrics", {}), **lineage.pop("metrics", {})}
    model.metadata.update(lineage, metrics=metrics)
    with atomic_directory(target) as tmp:
        model.save(tmp)
        write_json(tmp / LINEAGE_FILE, {**lineage, "metrics": metrics})


# --------------------------------------------------------------------------------------------- daily


def train_daily(ds: str, settings: Settings, mode: str = "incremental", engine: str = "local") -> dict:
    """Refit the random effects on the day's training features with the fixed effect locked.

    Args:
        ds: the day, YYYY-MM-DD; reads ``features/training/ds=<ds>`` minus the holdout.
        settings: pipeline settings.
        mode: ``incremental`` (default: update the parent's random effects with the day's data, the parent's
            posterior as the prior, so the day's fit keeps what earlier days taught) or ``warm_start`` (refit
            the random effects on the day's rows alone with the spec's zero-mean prior, starting from the
            parent's coefficients; measured worse on the demo marketplace, see docs/architecture.md).
        engine: glmix_core engine, ``local`` or ``spark``.

    Writes ``models/daily/ds=<ds>/`` atomically (model; ``model.json`` holds metrics and parent) and
    returns ``{"rows", "holdout_rows", "parent", "holdout_auc", "parent_holdout_auc", "mode", "path"}``.
    """
    from pipeline.storage import check_ds

    check_ds(ds)
    if mode not in RETRAIN_MODES:
        raise ValueError(f"mode must be one of {RETRAIN_MODES}; got mode={mode!r}")
    _training_path(ds, settings)  # a missing day says which task to run before the parent is looked up
    parent = resolve_parent(ds, settings)
    parent_model = load_model(parent["path"])
    spec = parent_model.spec
    with daily_training_data(ds, settings, engine) as (data, rows, holdout):
        if rows == 0:
            raise ValueError(f"features/training/ds={ds} has no training rows after the holdout split")
        log.info(
            "daily retrain ds=%s: %d training rows, %d holdout rows, %s from %s (%s), engine=%s",
            ds, rows, holdout.num_rows, mode, parent["version"], parent["kind"], engine,
        )
        model = _fit(
            spec,
            data,
            warm_start=parent_model,
            lock=fixed_coordinates(spec),
            incremental=(mode == "incremental"),
            engine=engine,
            settings=settings,
        )
    metrics = {"rows": rows, "holdout_rows": holdout.num_rows}
    if holdout.num_rows:
        metrics["holdout_auc"] = holdout_auc(model, holdout)
        metrics["parent_holdout_auc"] = holdout_auc(parent_model, holdout)
    target = settings.layout.model_daily(ds)
    lineage = {
        "ds": ds,
        "kind": "daily",
        "version": f"daily-{ds}",
        "parent": {k: parent[k] for k in ("kind", "version")},
        "base_full": parent["base_full"],
        "mode": mode,
        "engine": engine,
        "metrics": metrics,
    }
    _save_model(model, target, lineage)
    log.info("daily model ds=%s written to %s: %s", ds, target, metrics)
    return {**metrics, "parent": parent["version"], "mode": mode, "path": str(target)}


def gate(ds: str, settings: Settings, margin: float = 0.01, min_coverage: float = 0.5) -> dict:
    """Stop the day's model when it is worse than its parent on the day's holdout, or covers too little.

    Recomputes both AUCs from the stored models (so a model replaced after training is still checked).
    Raises :class:`GateFailedError` when ``auc < parent_auc - margin`` or when the share of holdout rows
    whose member has a per-member effect is below ``min_coverage``. Returns the figures checked.
    """
    from pipeline.storage import check_ds, write_json

    check_ds(ds)
    if not (0 <= margin <= 1) or not (0 <= min_coverage <= 1):
        raise ValueError(f"margin and min_coverage must be in [0, 1]; got {margin}, {min_coverage}")
    model_dir = settings.layout.model_daily(ds)
    if not model_dir.exists():
        raise FileNotFoundError(f"no daily model for ds={ds} at {model_dir}: run the retrain task first")
    lineage = read_lineage(model_dir)
    parent_kind, parent_version = lineage["parent"]["kind"], lineage["parent"]["version"]
    parent_dir = (
        settings.layout.model_daily(parent_version.removeprefix("daily-"))
        if parent_kind == "daily"
        else settings.layout.model_full(parent_version)
    )
    holdout = load_holdout(ds, settings)
    if holdout.num_rows == 0:
        raise GateFailedError(f"gate ds={ds}: the holdout is empty, the model cannot be checked")
    model = load_model(model_dir)
    auc = holdout_auc(model, holdout)
    parent_auc = holdout_auc(load_model(parent_dir), holdout)
    coverage = member_coverage(model, holdout)
    result = {
        "holdout_auc": auc,
        "parent_holdout_auc": parent_auc,
        "auc_delta": auc - parent_auc,
        "coverage": coverage,
        "margin": margin,
        "min_coverage": min_coverage,
        "holdout_rows": holdout.num_rows,
        "parent": parent_version,
    }
    log.info("gate ds=%s: %s", ds, result)
    failure = None
    if auc < parent_auc - margin:
        failure = (
            f"gate ds={ds}: holdout AUC {auc:.4f} is {parent_auc - auc:.4f} below the previous model "
            f"{parent_version} ({parent_auc:.4f}), more than the margin {margin}; not publishing. "
            "Inspect the day's data and model, or rerun with a larger gate_margin if the drop is expected."
        )
    elif coverage < min_coverage:
        failure = (
            f"gate ds={ds}: only {coverage:.1%} of holdout rows have a per-member effect "
            f"(minimum {min_coverage:.0%}); not publishing. Check the day's training features."
        )
    # The verdict stays with the model, so the next day never warm-starts from a stopped model. Written
    # atomically: a failed or killed write leaves the previous verdict, never a partial file.
    write_json(model_dir / GATE_FILE, {**result, "passed": failure is None, "reason": failure})
    if failure:
        raise GateFailedError(failure)
    return result


# --------------------------------------------------------------------------------------------- full


def window_dates(ds: str, days: int) -> list[str]:
    """The ``days`` dates ending at ``ds`` (inclusive), oldest first."""
    from pipeline.storage import check_ds, shift_ds

    check_ds(ds)
    if days < 1:
        raise ValueError(f"window_days must be >= 1; got {days}")
    return [shift_ds(ds, -offset) for offset in range(days - 1, -1, -1)]


def prepare_window(ds: str, settings: Settings, window_days: int = 7) -> dict:
    """Validate raw data and build features for every day of the window that has raw data but no features.

    Days without raw data are skipped (the window starts when the data does); returns the days used.
    Raises ``FileNotFoundError`` when no day of the window has raw data.
    """
    from pipeline.features import build_features
    from pipeline.validation import validate_day

    days = window_dates(ds, window_days)
    layout = settings.layout
    built, present = [], []
    for day in days:
        if layout.features("training", day).exists():
            present.append(day)
        elif layout.raw("impressions", day).exists():
            log.info("full retrain window: building features for %s", day)
            validate_day(day, settings)
            build_features(day, settings)
            built.append(day)
            present.append(day)
    if not present:
        raise FileNotFoundError(
            f"no raw data and no training features for any day of the window {days[0]}..{days[-1]} under "
            f"{settings.home}: generate or land raw data first (`jobrec synth ...`)"
        )
    return {"days": len(present), "built": len(built), "first_day": present[0], "last_day": present[-1]}


def _window_table(ds: str, settings: Settings, days: int):
    import pyarrow as pa

    present = [d for d in window_dates(ds, days) if settings.layout.features("training", d).exists()]
    if not present:
        raise FileNotFoundError(
            f"no training features in the {days}-day window ending {ds}: run prepare_window/build_features first"
        )
    return pa.concat_tables([load_training_day(d, settings) for d in present], promote_options="default"), present


def _shared_l2_grid(spec, train, holdout, grid: list[float], options: dict[str, Any]):
    """``glmix_core.tuning.grid_search`` over L2 values shared by every coordinate: one fit per value of
    ``grid`` (not the cross product of per-coordinate lists), each warm-started from the previous one; the
    best holdout AUC wins (the first on ties). Returns a ``TuningResult`` over all the trials."""
    import dataclasses
    import math

    from glmix_core.tuning import grid_search

    results = []
    for value in grid:
        # one point of the shared grid: every coordinate at ``value``
        results.append(grid_search(spec, train, holdout, {c.name: [value] for c in spec.coordinates}, metric="auc",
                                   warm_start=results[-1].best if results else None, fit_options=options))
    values = [r.best_trial["value"] for r in results]
    # the first of the highest AUCs (an undefined AUC never wins unless every one is)
    index = max(range(len(values)), key=lambda i: (values[i] is not None and math.isfinite(values[i]),
                                                   values[i] if values[i] is not None else 0.0, -i))
    trials = [{**r.best_trial, "trial": number} for number, r in enumerate(results, start=1)]
    best = results[index]
    best.best.metadata.setdefault("tuning", {}).update(trial=index + 1, n_trials=len(results), shared_l2=True)
    return dataclasses.replace(best, best_trial=trials[index], trials=trials)


def train_full(
    ds: str,
    settings: Settings,
    window_days: int = 7,
    l2_grid: tuple[float, ...] | list[float] = DEFAULT_L2_GRID,
    engine: str = "local",
    l2_search: str = "grid",
    tuning_trials: int = DEFAULT_TUNING_TRIALS,
    l2_range: tuple[float, float] | list[float] = DEFAULT_L2_RANGE,
    seed: int = 0,
) -> dict:
    """Fit the full GLMix on the window ending at ``ds``, choosing the L2 by holdout AUC.

    ``l2_search="grid"`` (default) tries every value of ``l2_grid`` for all coordinates at once (one fit per
    value, by ``glmix_core.tuning.grid_search``). ``l2_search="bayesian"`` picks one L2 per coordinate by Bayesian search (``glmix_core.tuning``)
    over ``tuning_trials`` fits in the log-uniform box ``l2_range``, seeded by ``seed``, starting from the grid
    values, so on the holdout it is never worse than the grid. It costs ``tuning_trials`` fits; on the
    synthetic marketplace it found nothing better than the shared grid (bench/bench_l2_search.py), so it is
    for data whose coordinates want clearly different priors. Every fit warm-starts from the previous one and
    runs on ``engine``.

    Writes ``models/full/full-<ds>/`` atomically and returns ``{"version", "l2" (per coordinate), "l2.<coordinate>",
    "holdout_auc", "trials", "l2_search", "rows", "holdout_rows", "days"}``. The holdout is the same
    impression-hash split as the daily runs.
    """
    if l2_search not in L2_SEARCHES:
        raise ValueError(f"l2_search must be one of {L2_SEARCHES}; got {l2_search!r}")
    grid = [float(v) for v in l2_grid]
    if l2_search == "grid" and (not grid or any(not (v > 0) for v in grid)):
        raise ValueError(f"l2_grid must be a non-empty list of positive numbers; got {list(l2_grid)}")
    low, high = (float(v) for v in l2_range)
    if l2_search == "bayesian" and (not 0 < low <= high or tuning_trials < 1):
        raise ValueError(f"l2_range must be 0 < low <= high and tuning_trials >= 1; got l2_range={list(l2_range)}, "
                         f"tuning_trials={tuning_trials}")
    table, present = _window_table(ds, settings, window_days)
    train, holdout = split_holdout(table)
    if train.num_rows == 0 or holdout.num_rows == 0:
        raise ValueError(f"the window ending {ds} has too few rows to train and evaluate ({table.num_rows})")
    options = fit_options(settings, engine)
    spec = load_spec()
    with training_data(train, settings, engine) as data:
        if l2_search == "grid":
            result = _shared_l2_grid(spec, data, holdout, grid, options)
        else:
            from glmix_core.tuning import bayesian_search

            # the shared grid values start the search, so it keeps the grid's best unless it finds better
            starts = [{c.name: v for c in spec.coordinates} for v in grid if low <= v <= high]
            result = bayesian_search(spec, data, holdout, {c.name: (low, high) for c in spec.coordinates},
                                     trials=tuning_trials, seed=seed, metric="auc", fit_options=options,
                                     start_points=starts)
    model, l2, auc = result.best, result.best_trial["l2"], result.best_trial["value"]
    trials = [{"l2": t["l2"], "holdout_auc": t["value"]} for t in result.trials]
    for trial in trials:
        log.info("full retrain ds=%s (%s): l2 %s holdout AUC %.4f", ds, l2_search, trial["l2"], trial["holdout_auc"])
    version = full_version(ds)
    metrics = {"rows": train.num_rows, "holdout_rows": holdout.num_rows, "holdout_auc": auc, "l2": l2}
    lineage = {
        "ds": ds,
        "kind": "full",
        "version": version,
        "parent": None,
        "base_full": version,
        "window": present,
        "l2_search": l2_search,
        "trials": trials,
        "engine": engine,
        "metrics": metrics,
    }
    _save_model(model, settings.layout.model_full(version), lineage)
    # per-coordinate numbers too, so the run report's flat metrics keep the chosen L2 (``train_full.l2.global``)
    per_coordinate = {f"l2.{name}": value for name, value in l2.items()}
    return {**metrics, **per_coordinate, "version": version, "days": len(present), "l2_search": l2_search,
            "trials": trials}


def gate_full(ds: str, settings: Settings, margin: float = 0.01, window_days: int = 7) -> dict:
    """Stop the new full model when its holdout AUC is more than ``margin`` below the promoted one's.

    Both are evaluated on the holdout of the new model's window. Passes when nothing is promoted yet.
    """
    version = full_version(ds)
    model_dir = settings.layout.model_full(version)
    if not model_dir.exists():
        raise FileNotFoundError(f"no full model {version} at {model_dir}: run train_full for ds={ds} first")
    lineage = read_lineage(model_dir)
    current = current_full(settings)
    days = len(lineage.get("window") or []) or window_days
    table, _ = _window_table(ds, settings, max(days, 1))
    _, holdout = split_holdout(table)
    auc = holdout_auc(load_model(model_dir), holdout)
    result = {"version": version, "holdout_auc": auc, "margin": margin, "current": None}
    if current is None or current["version"] == version:
        return result
    current_auc = holdout_auc(load_model(current["path"]), holdout)
    result.update(current=current["version"], current_holdout_auc=current_auc, auc_delta=auc - current_auc)
    if auc < current_auc - margin:
        raise GateFailedError(
            f"gate {version}: holdout AUC {auc:.4f} is {current_auc - auc:.4f} below the promoted model "
            f"{current['version']} ({current_auc:.4f}), more than the margin {margin}; not promoting."
        )
    return result


def promote(ds: str, settings: Settings, version: str | None = None, force: bool = False) -> dict:
    """Point ``models/current.json`` at the full model of ``ds`` (or ``version``).

    The pointer only moves forward in ``ds`` unless ``force``: promoting an older retrain (a backfill of the
    periodic DAG) leaves the newer promoted model in place and says so in the result.
    """
    from pipeline.storage import write_json

    version = version or full_version(ds)
    model_dir = settings.layout.model_full(version)
    if not model_dir.exists():
        raise FileNotFoundError(f"no full model {version} at {model_dir}: train it before promoting")
    lineage = read_lineage(model_dir)
    current = current_full(settings)
    # Passed its gate: a parent candidate for the days after its window, even when not the newest.
    write_json(model_dir / PROMOTED_FILE, {"version": version, "ds": lineage["ds"]})
    if current is not None and current["ds"] > lineage["ds"] and not force:
        log.warning("not promoting %s: the promoted model %s is newer", version, current["version"])
        return {"promoted": False, "version": version, "current": current["version"]}
    pointer = {"version": version, "ds": lineage["ds"], "holdout_auc": lineage["metrics"].get("holdout_auc")}
    write_json(pointer_path(settings), pointer)
    log.info("promoted %s", version)
    return {"promoted": True, "version": version, "previous": current["version"] if current else None}
