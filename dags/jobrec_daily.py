"""
# jobrec_daily

One finished day of the job recommendation pipeline. The run's logical date is the day `ds` it processes, in
every kind of run: the scheduled run created just after midnight UTC processes the day that just ended
(the run of 2026-12-02 00:00 has ds=2026-12-01); a manual trigger processes the day of its logical date; a
backfill "from 2024-01-02 to 2024-01-04" processes exactly those three days, one run each.

wait for the day's raw data to land → validate raw → build features → retrain the random effects (fixed
effect locked; by default the incremental update: the day's rows with the parent model's posterior as the
prior; or `retrain_mode=warm_start`: refit on the day's rows from the parent's coefficients) → gate on the
day's holdout (fails, and nothing is published, when AUC drops more than `gate_margin` below the parent or
coverage is too low) → update the Whoosh job index → retrieve the top `candidates_k` jobs per member →
GLMix re-score to the top `top_n` → publish to Redis → verify with sample lookups → write
`reports/ds=<ds>/run.json` and the run's report page.

**Run report pages**: [all days](http://127.0.0.1:8000/reports/) and each day's page
(`/reports/ds=<ds>/`) with tasks and times, rows in and quarantined, holdout AUC against the parent and the
gate margin, coverage, members on fallback, candidates per member, the score histogram and the jobs
recommended most often; served by `jobrec serve` (the link assumes its default address, 127.0.0.1:8000),
and on disk as `$JOBREC_HOME/reports/index.html`.

**Late data waits.** The first task waits (reschedule mode: no worker slot held) until every raw table's
partition of `ds` has its `_SUCCESS` marker, looking every `raw_poke_interval_seconds`; after
`raw_wait_timeout_seconds` the run fails naming the missing tables and paths. A waiting run does not block
others: up to two non-backfill runs (a scheduled one waiting for data and a manual one) run at a time, and
backfills count on their own.

**Order and parents.** Each day's random effects start from the newest model before that day: the previous
day's daily model, or a promoted full model trained on a window ending before the day, whichever is newer
(a model the gate stopped is skipped); never a model of a later day. The parent is recorded in the model
and the run report. `wait_for_parent_model` waits (reschedule mode) while the run of the day before is
still queued or running, so backfilled days retrain in date order whatever the backfill's max active runs
(the Backfill dialog's default is 1: one day at a time); when the day before has no model and no run is
pending, it fails naming the day to run first. All three of the dialog's reprocess choices ("Missing
Runs", "Missing and Errored Runs", "All Runs") work.

**One heavy step at a time.** `retrain`, `retrieve_candidates` and `rescore` share the pool `jobrec_compute`
(1 slot) with the weekly `jobrec_full_retrain`'s `train_full`: at scale each takes most of the machine's
memory, so the retrieval branch waits for the retrain (about a minute of wall time on a 1M-member day), two
runs never train or score at once, and on a weekly night these steps wait for the full fit. With the steps on
a Spark cluster, give the pool more slots (Admin → Pools).

Every task is one call into `pipeline` with the run's `ds` and writes only that day's partitions, so a
rerun of a day replaces that day's outputs and nothing else. The serving store's pointer only moves forward
in `ds`: a backfill of past days is published for inspection and never replaces the lists members see, nor
evicts the versions rollback needs.

Bad input (a failed validation, bad params, a missing parent) and a failed gate fail the task at once
without retries; other errors (e.g. Redis or Spark hiccups) are retried with exponential backoff.

Trigger-form params: `top_n` and `candidates_k` (defaults from `JOBREC_TOP_N`, `JOBREC_CANDIDATES_K`),
`skip_publish`, `publish_explanations` (default from `JOBREC_PUBLISH_EXPLANATIONS`), `engine` (local|spark: training, retrieval and re-scoring on Spark), `retrain_mode`
(incremental|warm_start), `gate_margin` (default from `JOBREC_GATE_MARGIN`), `min_coverage`, `raw_poke_interval_seconds` and
`raw_wait_timeout_seconds` (defaults from `JOBREC_RAW_POKE_INTERVAL_SECONDS`, `JOBREC_RAW_WAIT_TIMEOUT_SECONDS`).
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param, task

from pipeline.dag_defaults import (
    daily_schedule,
    default_args,
    run_step,
    settings_defaults,
    wait_params,
)
from pipeline.dag_sensors import ParentModelSensor, RawDataLandedSensor
from pipeline.pools import COMPUTE_POOL, FEATURES_POOL

SETTINGS = settings_defaults()
DEFAULT_ARGS = default_args(
    retry_delay=dt.timedelta(minutes=1), max_retry_delay=dt.timedelta(minutes=15), gate_outcome="the model is not published"
)

with DAG(
    dag_id="jobrec_daily",
    description="validate → features → retrain → gate → index → retrieve → re-score → publish → verify",
    doc_md=__doc__,
    schedule=daily_schedule(),
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    # A scheduled run may wait hours for late data; a second slot lets a manual run proceed meanwhile.
    # Backfills are limited by their own max_active_runs (1 in the UI's dialog), so they run in date order.
    max_active_runs=2,
    default_args=DEFAULT_ARGS,
    tags=["jobrec", "daily"],
    params={
        "top_n": Param(
            SETTINGS.top_n, type="integer", minimum=1, maximum=1000, description="jobs kept per member (JOBREC_TOP_N)"
        ),
        "candidates_k": Param(
            SETTINGS.candidates_k, type="integer", minimum=1, maximum=10000,
            description="first-stage candidates per member (JOBREC_CANDIDATES_K)",
        ),
        "skip_publish": Param(False, type="boolean", description="compute everything, publish nothing"),
        "publish_explanations": Param(
            SETTINGS.publish_explanations, type="boolean",
            description="also publish each recommendation's score parts (why this job; JOBREC_PUBLISH_EXPLANATIONS)",
        ),
        "engine": Param(
            "local",
            enum=["local", "spark"],
            description="local: this machine's processes; spark: GLMix training, first-stage retrieval and "
            "GLMix re-scoring on the Spark cluster of JOBREC_SPARK_MASTER",
        ),
        "retrain_mode": Param(
            "incremental",
            enum=["incremental", "warm_start"],
            description="incremental: update the random effects with today's rows, yesterday's posterior as the "
            "prior; warm_start: refit them on today's rows alone, starting from yesterday's coefficients",
        ),
        "gate_margin": Param(
            SETTINGS.gate_margin, type="number", minimum=0, maximum=1,
            description="max holdout AUC drop vs the parent model (JOBREC_GATE_MARGIN)",
        ),
        "min_coverage": Param(
            0.5, type="number", minimum=0, maximum=1, description="min share of holdout rows with a member effect"
        ),
        **wait_params(SETTINGS),
    },
) as dag:

    @task(pool=FEATURES_POOL)
    def validate_raw(ds=None, params=None) -> dict:
        return run_step("pipeline.validation:validate_day", ds, params)

    @task(pool=FEATURES_POOL)
    def build_features(ds=None, params=None) -> dict:
        return run_step("pipeline.features:build_features", ds, params)

    @task(pool=COMPUTE_POOL)
    def retrain(ds=None, params=None) -> dict:
        return run_step(
            "pipeline.training:train_daily", ds, params, mode=params["retrain_mode"], engine=params["engine"]
        )

    @task
    def gate(ds=None, params=None) -> dict:
        return run_step(
            "pipeline.training:gate", ds, params, margin=params["gate_margin"], min_coverage=params["min_coverage"]
        )

    @task
    def update_index(ds=None, params=None) -> dict:
        return run_step("pipeline.retrieval_tasks:update_index", ds, params)

    @task(pool=COMPUTE_POOL)
    def retrieve_candidates(ds=None, params=None) -> dict:
        engine = "spark" if params["engine"] == "spark" else "processes"
        return run_step("pipeline.retrieval_tasks:retrieve_candidates", ds, params, engine=engine)

    @task(pool=COMPUTE_POOL)
    def rescore(ds=None, params=None) -> dict:
        return run_step("pipeline.scoring:rescore", ds, params, engine=params["engine"])

    @task
    def publish(ds=None, params=None) -> dict:
        if params["skip_publish"]:
            return {"skipped": True}
        return run_step("pipeline.publishing:publish", ds, params, explanations=params.get("publish_explanations"))

    @task
    def verify(ds=None, params=None) -> dict:
        if params["skip_publish"]:
            return {"skipped": True}
        return run_step("pipeline.publishing:verify", ds, params)

    @task
    def run_report(results: dict, ds=None, params=None) -> dict:
        return run_step("pipeline.report:write_run_report", ds, params, results=results)

    landed = RawDataLandedSensor(task_id="wait_for_raw_data")
    parent_ready = ParentModelSensor(task_id="wait_for_parent_model")
    validated = validate_raw()
    features = build_features()
    trained = retrain()
    gated = gate()
    indexed = update_index()
    candidates = retrieve_candidates()
    scored = rescore()
    published = publish()
    verified = verify()

    landed >> validated >> features >> parent_ready >> trained >> gated >> scored
    features >> indexed >> candidates >> scored
    scored >> published >> verified
    run_report(
        {
            "validate_raw": validated,
            "build_features": features,
            "retrain": trained,
            "gate": gated,
            "update_index": indexed,
            "retrieve_candidates": candidates,
            "rescore": scored,
            "publish": published,
            "verify": verified,
        }
    )
