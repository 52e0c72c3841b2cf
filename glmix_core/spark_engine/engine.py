"""``fit_spark``: the GLMix PBCD loop of ``glmix_core.fitting.fit`` with the data on Spark.

Same spec, same objective, same stopping rule, same warm-start / lock / incremental conventions and the same
``GLMixModel`` as the local engine; only where things live differs:

- home layout (the input's partitions): labels, weights, base offset (+ scores of locked coordinates), the
  fixed-effect design, and the total score of every row;
- one entity layout per random coordinate: its rows, design and coefficients (``random.py``);
- between coordinate updates only per-row scores move (``scores.py``), joined by row id.

After each sweep the local engine's subspace acceleration step runs distributed (``accelerate.py``). The
objective is evaluated once per sweep (each evaluation is a Spark job), so per-coordinate history entries
carry ``objective: None``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..data import INTERCEPT, DataError, feature_matrix, numeric_column
from ..index_map import FeatureIndexMap
from ..losses import get_loss
from ..model import FixedEffectModel, GLMixModel, RandomEffectModel
from ..sparsity import sparsify
from ..spec import GLMixSpec
from . import random as random_effects
from .accelerate import MEMORY, quadratic_terms, subspace_newton
from .blocks import arrow_partitions, entity_partitions, input_dataframe
from .fixed import DistributedFixed
from .scores import route_home, route_to_layout

log = logging.getLogger(__name__)


def check_supported(spec: GLMixSpec) -> None:
    """Refuse the spec's Photon-ML controls this engine does not implement (the local engine does), with a
    DataError naming the option. Supported here: ``max_samples`` (hash-keyed, reweighted), ``uid``,
    ``variance`` none/full and ``sparsity_threshold``."""
    hint = "use the local engine (glmix_core.fit, or glmix fit without --engine spark)"
    for c in spec.coordinates:
        where = f"coordinate {c.name!r}"
        if c.normalization != "none":
            raise DataError(f"{where}: normalization {c.normalization!r} is not supported by the Spark engine; "
                            f"set normalization: none or {hint}")
        if c.down_sampling_rate < 1:
            raise DataError(f"{where}: down_sampling_rate {c.down_sampling_rate} is not supported by the Spark "
                            f"engine; {hint}")
        if c.features_to_samples_ratio is not None:
            raise DataError(f"{where}: features_to_samples_ratio is not supported by the Spark engine; {hint}")
    if spec.variance == "simple":
        raise DataError(f"variance 'simple' is not supported by the Spark engine (it computes 'full' or 'none'); "
                        f"{hint}")


def _check_options(spec: GLMixSpec, warm_start, lock, incremental) -> tuple[list[str], set[str], float]:
    """The local engine's validation of ``lock`` and ``incremental`` (same messages)."""
    names = [c.name for c in spec.coordinates]
    lock = list(lock)
    for name in lock:
        if name not in names:
            raise DataError(f"cannot lock {name!r}: the spec has coordinates {names}")
        if warm_start is None or name not in warm_start.coordinates:
            raise DataError(f"locking {name!r} needs a warm-start model that has that coordinate")
    inc_coords: set[str] = set()
    forgetting = 1.0
    if incremental is not None:
        if warm_start is None:
            raise DataError("an incremental update needs the previous model as warm_start")
        forgetting = float(incremental.get("forgetting", 1.0))
        if not 0 < forgetting <= 1:
            raise DataError(f"forgetting must be in (0, 1]; got {forgetting}")
        default = [c.name for c in spec.coordinates if c.type == "random" and c.name not in lock]
        inc_coords = set(incremental.get("coordinates", default))
        for name in inc_coords:
            if spec.coordinate(name).type != "random" or name not in warm_start.coordinates:
                raise DataError(f"incremental coordinate {name!r} must be a random effect present in warm_start")
    return lock, inc_coords, forgetting


def _pin(rdd):
    """Persist and cut lineage at the next action (states and totals are rebuilt every update)."""
    from pyspark import StorageLevel

    return rdd.persist(StorageLevel.MEMORY_AND_DISK).localCheckpoint() or rdd


def fit_spark(spec: GLMixSpec, data, *, spark=None, warm_start: GLMixModel | None = None,
              lock: list[str] | tuple[str, ...] = (), incremental: dict | None = None,
              num_partitions: int | None = None, metadata: dict | None = None) -> GLMixModel:
    """Fit the GLMix posterior mode on Spark and return the same ``GLMixModel`` the local ``fit`` returns.

    ``data``: a Spark DataFrame or a Parquet file/folder path (the local engine's input format; Spark reads
    it, so any Hadoop path works). ``spark``: the session (default ``SparkSession.builder.getOrCreate()``).
    ``warm_start``/``lock``/``incremental``/``metadata``: as in ``glmix_core.fit``. ``num_partitions``:
    partitions of the home and entity layouts (default: the input's, at least the default parallelism).
    Raises ``DataError`` for unusable data or options, with what to change.
    """
    started = time.perf_counter()
    check_supported(spec)
    if spark is None:
        from pyspark.sql import SparkSession

        spark = SparkSession.builder.getOrCreate()
    sc = spark.sparkContext
    lock, inc_coords, forgetting = _check_options(spec, warm_start, lock, incremental)
    loss = get_loss(spec.task)
    rtol = spec.tolerance * 1e-3

    columns = [spec.response] + [c for c in (spec.weight, spec.offset, spec.uid) if c]
    for c in spec.coordinates:
        columns += ([c.entity] if c.entity else []) + list(c.features) + list(c.feature_bags)
    columns = list(dict.fromkeys(columns))
    if isinstance(data, (str, Path)) or not hasattr(data, "rdd"):
        data = str(data)
    df = input_dataframe(spark, data, columns)
    parts = num_partitions or max(df.rdd.getNumPartitions(), sc.defaultParallelism)
    tables = arrow_partitions(df, parts).persist()

    fixed_spec = next((c for c in spec.coordinates if c.type == "fixed" and c.name not in lock), None)
    random_specs = [c for c in spec.coordinates if c.type == "random" and c.name not in lock]
    vocab = FeatureIndexMap.from_names([])
    if fixed_spec is not None:
        import pyarrow as pa
        import pyarrow.compute as pc

        bags = fixed_spec.feature_bags

        def bag_names(table) -> pa.Array:
            """Distinct bag feature names of one partition (Arrow, no Python string per name)."""
            parts = [pa.array([], pa.string())]
            for bag in bags:
                if bag in table.column_names and table.num_rows:
                    flat = pc.list_flatten(table.column(bag).combine_chunks())
                    parts.append(pc.unique(pc.struct_field(flat, "name")).cast(pa.string()))
            return pc.unique(pa.concat_arrays(parts))

        def union(a: pa.Array, b: pa.Array) -> pa.Array:
            return pc.unique(pa.concat_arrays([a, b]))

        fixed_names = pa.array(([INTERCEPT] if fixed_spec.intercept else []) + list(fixed_spec.features), pa.string())
        distinct = tables.map(bag_names).treeReduce(union).drop_null() if bags else pa.array([], pa.string())
        extra = distinct.filter(pc.invert(pc.is_in(distinct, value_set=fixed_names)))
        # same order as the local engine: numeric columns, then the other names sorted by code point; the
        # lookup index is built here once and shipped with the map to every partition
        vocab = FeatureIndexMap.from_names(pa.concat_arrays([fixed_names, extra.take(pc.sort_indices(extra))]))

    locked_models = {name: warm_start.coordinates[name] for name in lock}
    bc_locked = sc.broadcast(locked_models) if locked_models else None

    def home_block(table):
        """Labels, weights, base offset (+ locked scores), fixed design and entity destinations; or the
        user's data error as ``{"error": message}`` so the driver can raise it plainly."""
        try:
            y = numeric_column(table, spec.response, "response")
            loss.check_response(y, spec.response)
            w = numeric_column(table, spec.weight, "weight") if spec.weight else np.ones(table.num_rows)
            if (w < 0).any():
                raise DataError(f"weight column {spec.weight!r} has negative values")
            base = numeric_column(table, spec.offset, "offset") if spec.offset else np.zeros(table.num_rows)
            if bc_locked is not None and table.num_rows:
                for model in bc_locked.value.values():
                    base = base + model.score(table)
            X = None
            if fixed_spec is not None:
                X, _ = feature_matrix(table, fixed_spec.features, fixed_spec.feature_bags, fixed_spec.intercept,
                                      vocabulary=vocab)
            dest = {c.name: entity_partitions(table.column(c.entity), parts) for c in random_specs}
        except (DataError, ValueError) as exc:
            return {"error": str(exc)}
        return {"row_ids": table.column("_row_id").to_numpy(), "y": y, "w": w, "base": base, "X": X,
                "dest": dest}

    home = _pin(tables.map(home_block))
    checked = home.map(lambda b: (b.get("error"), b["row_ids"].size if "row_ids" in b else 0)).collect()
    errors = [e for e, _ in checked if e is not None]
    if errors:
        raise DataError(errors[0])
    n_rows = sum(n for _, n in checked)
    if n_rows == 0:
        raise DataError("the training data has no rows")
    keys = _pin(home.map(lambda b: {"row_ids": b["row_ids"], "dest": b["dest"]}))
    log.info("spark engine: %d rows in %d partitions", n_rows, parts)

    # -- coordinates ------------------------------------------------------------------------------------------
    fixed = None
    if fixed_spec is not None:
        t0 = time.perf_counter()
        prev = warm_start.coordinates.get(fixed_spec.name) if warm_start is not None else None
        coef0 = prev.lookup(vocab)[0] if isinstance(prev, FixedEffectModel) else None
        fixed = DistributedFixed(fixed_spec.name, loss, home, vocab, l2=fixed_spec.l2, l1=fixed_spec.l1,
                                 solver=fixed_spec.solver, intercept=fixed_spec.intercept, rtol=rtol, coef0=coef0)
        log.info("coordinate %s: %d features (%.2fs)", fixed_spec.name, len(vocab), time.perf_counter() - t0)
    total = home.map(lambda b: b["base"]) if fixed is None else \
        home.zip(fixed.scores()).map(lambda pair: pair[0]["base"] + pair[1])
    total = _pin(total)
    states: dict = {}
    penalties: dict[str, float] = {}
    for cspec in random_specs:
        t0 = time.perf_counter()
        prev = warm_start.coordinates.get(cspec.name) if warm_start is not None else None
        prev = prev if isinstance(prev, RandomEffectModel) else None
        state = _pin(random_effects.build_layout(tables, spec, cspec, loss, rtol, parts, prev,
                                                 cspec.name in inc_coords, forgetting))
        penalties[cspec.name] = float(state.map(lambda s: s["penalty"]).sum())
        states[cspec.name] = state
        if prev is not None:
            total = _replace(total, _add_home(total, route_home(state.map(lambda s: (s["row_ids"], s["scores"])),
                                                                keys)))
        log.info("coordinate %s: layout built (%.2fs)", cspec.name, time.perf_counter() - t0)
    tables.unpersist()

    def objective() -> float:
        data_loss = home.zip(total).map(lambda p: loss.total(p[0]["y"], p[1], p[0]["w"])).sum()
        return float(data_loss) + (fixed.penalty() if fixed is not None else 0.0) + sum(penalties.values())

    order = [c.name for c in spec.coordinates if c.name not in lock]
    value = objective()
    log.info("start objective %.10g", value)
    history = []
    converged = False
    # as in the local engine, no subspace step when a random effect may fit a reweighted sample
    accelerate = len(order) > 1 and (fixed is None or fixed.l1 == 0) and \
        all(c.max_samples is None for c in random_specs)
    fixed_past: list[np.ndarray] = []
    past_scores: list = []
    sweep = 0
    for sweep in range(1, spec.max_iterations + 1):
        before = value
        start_total = total
        fixed_start = fixed.coef.copy() if fixed is not None else None
        dropped: list = []  # RDDs replaced in this sweep, unpersisted once the sweep's results are materialised
        for name in order:
            t0 = time.perf_counter()
            if fixed is not None and name == fixed.name:
                bc = sc.broadcast(fixed.coef)
                offsets = _pin(home.zip(total).map(lambda p, bc=bc: p[1] - p[0]["X"] @ bc.value))
                fixed.fit(offsets)
                bc_new = sc.broadcast(fixed.coef)
                dropped += [total, offsets]
                total = _pin(home.zip(offsets).map(lambda p, bc=bc_new: p[1] + p[0]["X"] @ bc.value))
                inner = fixed.last_iterations
            else:
                routed = route_to_layout(keys, total, name, parts)
                state = _pin(states[name].zip(routed).map(random_effects.update))
                stats = state.map(lambda s: (s["penalty"], s["iterations"])).collect()
                dropped.append(states[name])
                states[name] = state
                penalties[name] = float(sum(s[0] for s in stats))
                inner = max((s[1] for s in stats), default=0)
                delta = route_home(state.map(lambda s: (s["row_ids"], s["delta"])), keys)
                dropped.append(total)
                total = _pin(_add_home(total, delta))
            elapsed = time.perf_counter() - t0
            # the objective is evaluated once per sweep (each evaluation is a Spark job)
            history.append({"sweep": sweep, "coordinate": name, "objective": None, "seconds": elapsed,
                            "inner_iterations": inner})
            log.info("sweep %d coordinate %s: %.3fs, %d inner iterations", sweep, name, elapsed, inner)
        if accelerate:
            t0 = time.perf_counter()
            moved = _accelerate(loss, home, start_total, total, past_scores, fixed, fixed_start, fixed_past,
                                states, penalties, dropped)
            if moved is not None:
                c, total, past_scores, fixed_past = moved
                log.info("sweep %d subspace step %s (%.3fs)", sweep, np.array2string(c, precision=3),
                         time.perf_counter() - t0)
                history.append({"sweep": sweep, "coordinate": "(acceleration)", "objective": None,
                                "seconds": time.perf_counter() - t0})
        value = objective()
        history[-1]["objective"] = value
        log.info("sweep %d: objective %.12g", sweep, value)
        for rdd in dropped:
            if rdd is not total and all(rdd is not p for p in past_scores):
                rdd.unpersist()
        change = abs(before - value) / max(abs(value), 1e-300)
        if len(order) <= 1 or change <= spec.tolerance:
            converged = True
            break
    if order and not converged:
        log.warning("PBCD stopped after %d sweeps without reaching tolerance %g", sweep, spec.tolerance)

    # -- the model ----------------------------------------------------------------------------------------------
    out: dict = {}
    for cspec in spec.coordinates:
        name = cspec.name
        if name in lock:
            out[name] = warm_start.coordinates[name]
        elif fixed is not None and name == fixed.name:
            bc = sc.broadcast(fixed.coef)
            offsets = home.zip(total).map(lambda p, bc=bc: p[1] - p[0]["X"] @ bc.value)
            variance = fixed.variances(offsets) if spec.variance != "none" else None
            out[name] = FixedEffectModel(cspec, vocab, fixed.coef.copy(), variance)
        else:
            routed = route_to_layout(keys, total, name, parts)
            pieces = states[name].zip(routed).map(
                lambda p: random_effects.finalize(p, forgetting, spec.variance)).collect()
            out[name] = random_effects.collect_model(cspec, pieces)
        if name not in lock and spec.sparsity_threshold > 0:
            out[name] = sparsify(out[name], spec.sparsity_threshold)
    for rdd in [home, keys, total, *past_scores, *states.values()]:  # total may be a view of past_scores[0]
        rdd.unpersist()
    meta = dict(metadata or {})
    meta.update({
        "fit": {"objective": value, "sweeps": sweep, "converged": converged, "seconds": time.perf_counter() - started,
                "rows": int(n_rows), "locked": lock, "incremental": incremental, "history": history,
                "engine": "spark", "partitions": parts},
        "parent": meta.get("parent", warm_start.metadata.get("version") if warm_start is not None else None),
    })
    log.info("spark fit done: objective %.12g after %d sweeps in %.2fs", value, sweep, time.perf_counter() - started)
    return GLMixModel(spec, out, meta)


def _accelerate(loss, home, start_total, total, past_scores, fixed, fixed_start, fixed_past, states, penalties,
                dropped):
    """The subspace step over this sweep's and the last ``MEMORY`` steps (``accelerate.py``).

    Returns ``(c, new total, new past score steps, new past fixed steps)``, or None when the sweep did not
    move; random-effect states are replaced in ``states`` and their penalties in ``penalties``; replaced RDDs
    are appended to ``dropped`` (unpersisted by the caller after the next action).
    """
    sc = home.context

    def stack(parts):
        # parts: start total, end total, then the (score step, total) pairs of past acceleration steps
        base, t = parts[0], parts[1]
        return np.column_stack([t - base, *(p[0] for p in parts[2:])]) if t.size else \
            np.zeros((0, len(parts) - 1))

    zipped = start_total
    for rdd in [total, *past_scores]:
        zipped = zipped.zip(rdd)
    depth = 1 + len(past_scores)
    rows = _pin(home.zip(start_total).zip(zipped.map(lambda z: _unzip(z, depth)).map(stack))
                .map(lambda p: (p[0][0]["y"], p[0][0]["w"], p[0][1], p[1])))
    dropped.append(rows)
    m = 1 + len(past_scores)
    A, b = np.zeros((m, m)), np.zeros(m)
    if fixed is not None:
        fa, fb = quadratic_terms([fixed.coef - fixed_start, *fixed_past], fixed_start, 0.0, fixed.l2)
        A, b = A + fa, b + fb
    if states:
        terms = sc.union([s.map(random_effects.subspace_terms) for s in states.values()]).filter(
            lambda t: t is not None).collect()
        for ta, tb in terms:
            A, b = A + ta, b + tb
    c = subspace_newton(loss, rows, A, b)
    if c is None:
        return None
    if fixed is not None:
        dirs = [fixed.coef - fixed_start, *fixed_past]
        fixed.coef = fixed_start + sum(ci * d for ci, d in zip(c, dirs, strict=True))
        fixed_past = [fixed.coef - fixed_start, *fixed_past][:MEMORY]
    names = list(states)
    for name in names:
        dropped.append(states[name])
        states[name] = _pin(states[name].map(lambda s, c=c: random_effects.apply_subspace(s, c)))
    if names:
        sums = sc.union([states[n].map(lambda s, i=i: (i, s["penalty"])) for i, n in enumerate(names)]) \
            .reduceByKey(lambda x, y: x + y).collectAsMap()
        for i, name in enumerate(names):
            penalties[name] = float(sums.get(i, 0.0))
    after = _pin(rows.map(lambda r, c=c: (r[3] @ c, r[2] + r[3] @ c)))
    dropped += [total, *past_scores[MEMORY - 1:]]
    return c, after.map(lambda x: x[1]), [after, *past_scores][:MEMORY], fixed_past


def _unzip(nested, depth: int) -> list:
    """((a, b), c) → [a, b, c] for an element of ``depth`` nested ``zip``s."""
    out = []
    for _ in range(depth):
        nested, last = nested
        out.append(last)
    out.append(nested)
    return out[::-1]


def _add_home(total, delta):
    return total.zip(delta).map(lambda p: p[0] + p[1])


def _replace(old, new):
    """Pin ``new``, materialise it, then drop ``old`` (which ``new`` was computed from)."""
    new = _pin(new)
    new.count()
    old.unpersist()
    return new
