"""Random effects on Spark: rows partitioned by entity, each partition solves its entities locally.

A coordinate's layout is an RDD with one state per partition holding the rows of the entities hashed there
(``blocks.entity_partitions``), their ``RandomDesign`` and a local ``RandomCoordinate`` (current coefficients,
prior) built exactly as the local engine builds them, so the per-partition solve *is* the local batched
Newton solver. An update ships in the current total score of the partition's rows (joined by row id),
solves with offset ``total − own score`` and ships back only the change of its per-row scores; the
coefficients never leave the partition until the final model is collected. Each new state RDD is
persisted and locally checkpointed so lineage does not grow with the sweeps.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..coordinates import RandomCoordinate
from ..data import encode_entities, feature_matrix, numeric_column
from ..design import RandomDesign
from ..fitting import active_rows, pc_index
from ..losses import Loss
from ..model import RandomEffectModel
from ..sampling import entity_reweighting, row_keys
from ..spec import CoordinateSpec, GLMixSpec
from .accelerate import MEMORY, quadratic_terms
from .blocks import entity_partitions, split_by
from .scores import align

NEWTON_STEPS_PER_UPDATE = 25


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


def _concat_tables(pieces) -> pa.Table | None:
    tables = [t for _, t in pieces]
    return pa.concat_tables(tables, promote_options="default") if tables else None


def build_layout(tables, spec: GLMixSpec, cspec: CoordinateSpec, loss: Loss, rtol: float, num_parts: int,
                 prev: RandomEffectModel | None, incremental: bool, forgetting: float):
    """The coordinate's layout: RDD (``num_parts`` partitions) of one state dict per partition.

    ``tables``: home RDD of Arrow tables with ``_row_id``. ``prev``: warm-start coefficients (matched by
    entity ID and feature name); with ``incremental`` they are also the prior (precision = γ / variance).
    """
    columns = ["_row_id", spec.response, cspec.entity, *cspec.features, *cspec.feature_bags]
    columns += [c for c in (spec.weight, spec.uid) if c]
    columns = list(dict.fromkeys(columns))

    def split(table):
        table = table.select(columns)
        for d, sel in split_by(entity_partitions(table.column(cspec.entity), num_parts), num_parts):
            yield d, table.take(pa.array(sel))

    routed = tables.flatMap(split).partitionBy(num_parts, lambda d: d).mapPartitions(
        lambda it: [_concat_tables(it)], preservesPartitioning=True)
    sc = tables.context
    subs = sc.parallelize(split_model(prev, num_parts) if prev is not None else [None] * num_parts, num_parts)

    def build(pair):
        table, sub = pair
        state = {"row_ids": np.zeros(0, np.int64), "coord": None, "scores": np.zeros(0),
                 "prev": sub if incremental else None, "penalty": 0.0, "iterations": 0}
        if table is None or table.num_rows == 0:
            return state
        y = numeric_column(table, spec.response, "response")
        weight = numeric_column(table, spec.weight, "weight") if spec.weight else np.ones(table.num_rows)
        codes, ids = encode_entities(table, cspec.entity)
        Z, feats = feature_matrix(table, cspec.features, cspec.feature_bags, cspec.intercept)
        # active-data bound keyed by the uid column, else by the row id (partition << 32 | position)
        keys = None
        if cspec.max_samples is not None:
            keys = row_keys(table, spec.uid) if spec.uid else table.column("_row_id").to_numpy().view(np.uint64)
        fit_rows = active_rows(codes, len(ids), cspec, keys)
        weight = weight * entity_reweighting(codes, len(ids), fit_rows)
        design = RandomDesign(Z, codes, len(ids), fit_rows, cspec.max_dense_features, intercept=cspec.intercept)
        entity_ids = pa.array(ids, pa.string())
        coef0 = prior_mean = prior_prec = None
        if sub is not None:
            value, variance, found = sub.lookup(entity_ids, feats, design.pair_entity, design.pair_col)
            coef0 = value
            if incremental:
                prior_mean = value
                usable = found & np.isfinite(variance) & (variance > 0)
                prior_prec = np.where(usable, forgetting / np.where(usable, variance, 1.0), cspec.l2)
        coord = RandomCoordinate(cspec.name, loss, design, y, weight, l2=cspec.l2, rtol=rtol, coef0=coef0,
                                 prior_mean=prior_mean, prior_prec=prior_prec)
        for chunk in design.chunks:  # cache the compact nonzeros, not the padded dense arrays
            chunk.dense = None
        state.update(row_ids=table.column("_row_id").to_numpy(), coord=_coordinate_state(coord),
                     entity_ids=entity_ids, features=feats, scores=coord.score(), penalty=coord.penalty(),
                     start_values=coord.values.copy(), past_steps=[])
        return state

    return routed.zip(subs).map(build)


def _coordinate_state(coord: RandomCoordinate) -> dict:
    """What a partition keeps between updates: the design and the per-pair arrays, not the solver object
    (its private caches are keyed by object identity and do not survive pickling into Spark's cache)."""
    return {"name": coord.name, "loss": coord.loss, "design": coord.design, "y": coord.y, "weight": coord.weight,
            "l2": coord.l2, "rtol": coord.rtol, "values": coord.values, "prior_mean": coord.prior_mean,
            "prior_prec": coord.prior_prec}


def _coordinate(kept: dict) -> RandomCoordinate:
    """The local engine's coordinate object rebuilt around the kept design and coefficients.

    Unlike the local engine (one Newton step per entity per sweep), a partition solves its entities to the
    tolerance: extra steps cost CPU inside the same task, whereas extra sweeps cost Spark jobs.
    """
    coord = RandomCoordinate(kept["name"], kept["loss"], kept["design"], kept["y"], kept["weight"], l2=kept["l2"],
                             rtol=kept["rtol"], coef0=kept["values"], prior_mean=kept["prior_mean"],
                             prior_prec=kept["prior_prec"])
    if hasattr(coord, "newton_steps"):
        coord.newton_steps = NEWTON_STEPS_PER_UPDATE
    return coord


def update(state_and_total):
    """One partition's coordinate update: solve its entities with offset ``total − own score``."""
    state, (ids, total) = state_and_total
    state = dict(state)
    coord = state["coord"]
    if coord is None:
        state["delta"] = np.zeros(0)
        return state
    coord = _coordinate(coord)
    # this coordinate's values at the start of the sweep (its own update is the only one that moves them)
    state["start_values"] = coord.values.copy()
    offset = align(state["row_ids"], ids, total) - state["scores"]
    coord.fit(offset)
    new_scores = coord.score()
    state.update(coord=_coordinate_state(coord), delta=new_scores - state["scores"], scores=new_scores,
                 penalty=coord.penalty(), iterations=coord.last_iterations)
    return state


def _directions(state) -> list[np.ndarray]:
    return [state["coord"]["values"] - state["start_values"], *state["past_steps"]]


def subspace_terms(state) -> tuple[np.ndarray, np.ndarray] | None:
    """The partition's (A, b) of the acceleration step (None for an empty partition)."""
    kept = state["coord"]
    if kept is None:
        return None
    return quadratic_terms(_directions(state), state["start_values"], kept["prior_mean"], kept["prior_prec"])


def apply_subspace(state, c: np.ndarray):
    """Move the partition's coefficients to start + D c and rescore its rows."""
    kept = state["coord"]
    if kept is None:
        return state
    dirs = _directions(state)
    values = state["start_values"] + sum(ci * d for ci, d in zip(c, dirs, strict=True))
    kept = dict(kept, values=values)
    diff = values - kept["prior_mean"]
    return dict(state, coord=kept, scores=kept["design"].score(values),
                penalty=0.5 * float(np.sum(kept["prior_prec"] * diff * diff)), start_values=values.copy(),
                past_steps=[values - state["start_values"], *state["past_steps"]][:MEMORY])


def finalize(state_and_total, forgetting: float, variance_kind: str = "full") -> pa.Table | None:
    """The partition's coefficients in long form (entity, feature, value, variance), with posterior
    variances at the solution; an incremental update appends the previous pairs not refit (variance / γ)."""
    state, (ids, total) = state_and_total
    coord, prev = state["coord"], state["prev"]
    parts = []
    if coord is not None:
        coord = _coordinate(coord)
        d = coord.design
        variance = coord.variances(align(state["row_ids"], ids, total) - state["scores"], variance_kind)
        ent = state["entity_ids"].take(pa.array(d.pair_entity, pa.int64()))
        feat = pa.array(state["features"], pa.string()).take(pa.array(d.pair_col, pa.int64()))
        parts.append(pa.table({"entity": ent, "feature": feat, "value": coord.values, "variance": variance}))
    if prev is not None and prev.value.size:
        keep = np.ones(prev.value.size, bool)
        if coord is not None:
            d = coord.design
            _, _, found = prev.lookup(state["entity_ids"], state["features"], d.pair_entity, d.pair_col)
            mask = pa.array(found)
            pe = pc_index(prev.entity_ids, parts[0].column("entity").combine_chunks().filter(mask))
            pf = pc_index(pa.array(prev.features, pa.string()), parts[0].column("feature").combine_chunks().filter(mask))
            keep[np.searchsorted(prev.keys, pe * max(len(prev.features), 1) + pf)] = False
        parts.append(pa.table({
            "entity": prev.entity_ids.take(pa.array(prev.pair_entity[keep])),
            "feature": pa.array(prev.features, pa.string()).take(pa.array(prev.pair_feature[keep])),
            "value": prev.value[keep], "variance": prev.variance[keep] / forgetting}))
    return pa.concat_tables(parts) if parts else None


def collect_model(cspec: CoordinateSpec, tables: list[pa.Table | None]) -> RandomEffectModel:
    """One ``RandomEffectModel`` from the partitions' long-form coefficient tables."""
    tables = [t for t in tables if t is not None and t.num_rows]
    if not tables:
        empty = pa.array([], pa.string())
        return RandomEffectModel.from_pairs(cspec, empty, empty, np.zeros(0), np.zeros(0))
    table = pa.concat_tables(tables)
    return RandomEffectModel.from_pairs(cspec, table.column("entity").combine_chunks(),
                                        table.column("feature").combine_chunks(),
                                        table.column("value").to_numpy(),
                                        table.column("variance").to_numpy(zero_copy_only=False).astype(float))
