"""
# jobrec_full_retrain

The periodic (weekly) full GLMix retrain on the `window_days` days ending at the run's logical date `ds`.
The scheduled run is created on Sundays at 00:00 UTC for the Saturday that just ended (the run of
2026-11-29 00:00 has ds=2026-11-28 and, with the default 7 days, the window 2026-11-22..2026-11-28): the
window always ends on the last finished day. A manual trigger trains on the window ending at its logical
date; a backfill creates one run per Saturday in its range.

wait for the raw data of `ds` to land (as in `jobrec_daily`: `raw_poke_interval_seconds`,
`raw_wait_timeout_seconds`) → prepare the training window (validate raw and build features for any of the
`window_days` days ending at `ds` that have none yet) → choose the L2 by holdout AUC and fit the full GLMix (fixed effect and both random
effects) on the window, holding out an impression-hash split → gate against the currently promoted full
model on the same holdout → promote it (`models/current.json`), so the next daily runs warm-start from it →
write `reports/ds=<ds>/full_retrain.json` and the day's report page.

**Run report pages**: [all days](http://127.0.0.1:8000/reports/) (holdout AUC of the full retrains and the
daily models, rows, task times, published versions) and each day's page (`/reports/ds=<ds>/`), served by
`jobrec serve` (the link assumes its default address, 127.0.0.1:8000), and on disk as
`$JOBREC_HOME/reports/index.html`.

**Pools.** `prepare_window` shares the pool `jobrec_features` with the daily DAG's feature tasks (one writer
of a day's features at a time); `train_full` shares `jobrec_compute` with the daily DAG's heavy steps, so a
full retrain and the same night's daily retrain, retrieval or re-scoring never take the machine's memory at
once. `train_full` reads the window when it starts; a day's features replaced meanwhile are read whole, from
one version or the other.

Each task is one call into `pipeline`; the model is written atomically to `models/full/full-<ds>/`, so
rerunning the same `ds` replaces that version only. A failed gate fails the run without retries and the
previously promoted model stays in place.

Trigger-form params: `window_days`, `l2_search` (`grid`: every value of `l2_grid` for all coordinates at
once; `bayesian`: one L2 per coordinate by Bayesian search over `tuning_trials` fits, starting from the grid
values), `tuning_trials`, `l2_grid`, `engine` (local|spark), `gate_margin` (default from `JOBREC_GATE_MARGIN`), and the sensor's
`raw_poke_interval_seconds`, `raw_wait_timeout_seconds`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param, task

from pipeline.dag_defaults import (
    default_args,
    run_step,
    settings_defaults,
    wait_params,
    weekly_schedule,
)
from pipeline.dag_sensors import RawDataLandedSensor
from pipeline.pools import COMPUTE_POOL, FEATURES_POOL

SETTINGS = settings_defaults()
DEFAULT_ARGS = default_args(
    retry_delay=dt.timedelta(minutes=2), max_retry_delay=dt.timedelta(minutes=30), gate_outcome="the model is not promoted"
)

with DAG(
    dag_id="jobrec_full_retrain",
    description="training window → L2 search → full GLMix fit → gate → promote",
    doc_md=__doc__,
    schedule=weekly_schedule(),
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=2,  # a scheduled run waiting for late data must not block a manual run
    default_args=DEFAULT_ARGS,
    tags=["jobrec", "periodic"],
    params={
        "window_days": Param(7, type="integer", minimum=1, maximum=90, description="days of training data"),
        "l2_search": Param(
            "grid",
            enum=["grid", "bayesian"],
            description="grid: each l2_grid value for all coordinates; bayesian: one L2 per coordinate, "
            "searched from the grid values on (tuning_trials fits)",
        ),
        "tuning_trials": Param(
            12, type="integer", minimum=1, maximum=200, description="l2_search=bayesian: fits the search may run"
        ),
        "l2_grid": Param(
            [0.1, 1.0, 10.0],
            type="array",
            items={"type": "number", "exclusiveMinimum": 0},
            description="L2 values tried for every coordinate (best holdout AUC wins); with l2_search=bayesian "
            "the search's start points",
        ),
        "engine": Param("local", enum=["local", "spark"], description="GLMix training engine"),
        "gate_margin": Param(
            SETTINGS.gate_margin, type="number", minimum=0, maximum=1,
            description="max holdout AUC drop vs the current model (JOBREC_GATE_MARGIN)",
        ),
        **wait_params(SETTINGS),
    },
) as dag:

    @task(pool=FEATURES_POOL)
    def prepare_window(ds=None, params=None) -> dict:
        return run_step("pipeline.training:prepare_window", ds, params, window_days=params["window_days"])

    @task(pool=COMPUTE_POOL)
    def train_full(ds=None, params=None) -> dict:
        return run_step(
            "pipeline.training:train_full",
            ds,
            params,
            window_days=params["window_days"],
            l2_search=params["l2_search"],
            tuning_trials=params["tuning_trials"],
            l2_grid=[float(v) for v in params["l2_grid"]],
            engine=params["engine"],
        )

    @task
    def gate(ds=None, params=None) -> dict:
        return run_step("pipeline.training:gate_full", ds, params, margin=params["gate_margin"])

    @task
    def promote(ds=None, params=None) -> dict:
        return run_step("pipeline.training:promote", ds, params)

    @task
    def run_report(results: dict, ds=None, params=None) -> dict:
        return run_step("pipeline.report:write_run_report", ds, params, results=results, name="full_retrain")

    landed = RawDataLandedSensor(task_id="wait_for_raw_data")
    window = prepare_window()
    trained = train_full()
    gated = gate()
    promoted = promote()
    landed >> window >> trained >> gated >> promoted
    run_report({"prepare_window": window, "train_full": trained, "gate": gated, "promote": promoted})
