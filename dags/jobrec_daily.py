"""
# jobrec_daily

One day of the job recommendation pipeline for the run's logical date `ds`:

validate raw → build features → retrain the random effects (fixed effect locked; by default the incremental
update: the day's rows with the previous model's posterior as the prior — the previous day's model, or the
promoted full model after a full retrain; or `retrain_mode=warm_start`: refit on the day's rows from the
previous coefficients with the spec's prior) → gate on
the day's holdout (fails, and nothing is published, when AUC drops more than `gate_margin` below the previous
model or coverage is too low) → update the Whoosh job index → retrieve the top `candidates_k` jobs per member →
GLMix re-score to the top `top_n` → publish to Redis → verify with sample lookups → write
`reports/ds=<ds>/run.json`.

Every task is one call into `pipeline` with the run's `ds`, and writes only that day's partitions, so a
rerun of a day replaces that day's outputs and nothing else. `max_active_runs=1` and `depends_on_past` on
the retrain task make backfills run in date order (each day warm-starts from the day before). The serving
store's pointer only moves forward in `ds`: a backfill of past days never replaces the lists members see.

Bad input (a missing raw partition, a failed validation) and a failed gate fail the task at once without
retries; other errors (e.g. Redis or Spark hiccups) are retried with exponential backoff.

Trigger-form params: `top_n`, `candidates_k`, `skip_publish`, `engine` (local|spark: retrieval and, where available, training on Spark), `retrain_mode`
(incremental|warm_start), `gate_margin`, `min_coverage`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param, task

from pipeline.dag_defaults import default_args, run_step

DEFAULT_ARGS = default_args(
    retry_delay=dt.timedelta(minutes=1), max_retry_delay=dt.timedelta(minutes=15), gate_outcome="the model is not published"
)

with DAG(
    dag_id="jobrec_daily",
    description="validate → features → retrain → gate → index → retrieve → re-score → publish → verify",
    doc_md=__doc__,
    schedule="@daily",
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["jobrec", "daily"],
    params={
        "top_n": Param(100, type="integer", minimum=1, maximum=1000, description="jobs kept per member"),
        "candidates_k": Param(
            1000, type="integer", minimum=1, maximum=10000, description="first-stage candidates per member"
        ),
        "skip_publish": Param(False, type="boolean", description="compute everything, publish nothing"),
        "engine": Param(
            "local",
            enum=["local", "spark"],
            description="local: this machine's processes; spark: first-stage retrieval (and GLMix training "
            "where glmix_core has a Spark engine) on the Spark cluster of JOBREC_SPARK_MASTER",
        ),
        "retrain_mode": Param(
            "incremental",
            enum=["incremental", "warm_start"],
            description="incremental: update the random effects with today's rows, yesterday's posterior as the "
            "prior; warm_start: refit them on today's rows alone, starting from yesterday's coefficients",
        ),
        "gate_margin": Param(
            0.01, type="number", minimum=0, maximum=1, description="max holdout AUC drop vs previous model"
        ),
        "min_coverage": Param(
            0.5, type="number", minimum=0, maximum=1, description="min share of holdout rows with a member effect"
        ),
    },
) as dag:

    @task
    def validate_raw(ds=None, params=None) -> dict:
        return run_step("pipeline.validation:validate_day", ds, params)

    @task
    def build_features(ds=None, params=None) -> dict:
        return run_step("pipeline.features:build_features", ds, params)

    @task(depends_on_past=True)
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

    @task
    def retrieve_candidates(ds=None, params=None) -> dict:
        engine = "spark" if params["engine"] == "spark" else "processes"
        return run_step("pipeline.retrieval_tasks:retrieve_candidates", ds, params, engine=engine)

    @task
    def rescore(ds=None, params=None) -> dict:
        return run_step("pipeline.scoring:rescore", ds, params)

    @task
    def publish(ds=None, params=None) -> dict:
        if params["skip_publish"]:
            return {"skipped": True}
        return run_step("pipeline.publishing:publish", ds, params)

    @task
    def verify(ds=None, params=None) -> dict:
        if params["skip_publish"]:
            return {"skipped": True}
        return run_step("pipeline.publishing:verify", ds, params)

    @task
    def run_report(results: dict, ds=None, params=None) -> dict:
        return run_step("pipeline.report:write_run_report", ds, params, results=results)

    validated = validate_raw()
    features = build_features()
    trained = retrain()
    gated = gate()
    indexed = update_index()
    candidates = retrieve_candidates()
    scored = rescore()
    published = publish()
    verified = verify()

    validated >> features >> trained >> gated >> scored
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
