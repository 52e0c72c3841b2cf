"""An embedded Airflow 3 installation for jobrec: metadata DB, config and DAG folder under ``$JOBREC_HOME``.

``configure_airflow(settings)`` points Airflow at ``$JOBREC_HOME/airflow`` (SQLite metadata DB, logs,
``airflow.cfg``), at this repository's ``dags/`` folder, with the example DAGs off, and runs
``airflow db migrate`` once. It must run before ``airflow`` is first imported in the process, because
Airflow reads its configuration at import time.

The same settings are also written into ``$AIRFLOW_HOME/airflow.cfg`` (:func:`write_airflow_cfg`), so a plain
``AIRFLOW_HOME=… airflow …`` command sees the settings the jobrec processes get from the environment.

SQLite serialises writers: it is fine for ``dag.test()``, the demo and ``jobrec demo --ui`` at demo size
(a few runs at a time; jobrec's SQLite connections wait up to 60 s for the write lock). Concurrent
production use (UI/REST backfills with many runs, several schedulers) needs Postgres: see
``docker-compose.yml``.
"""

from __future__ import annotations

import configparser
import logging
import os
import subprocess
import sys
from pathlib import Path

from pipeline.config import Settings
from pipeline.memory import PeakMemory

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DAGS_FOLDER = REPO_ROOT / "dags"
# Connection arguments for Airflow's engine (``[database] sql_alchemy_connect_args`` names one of these).
# SQLite waits for the write lock instead of failing after Python's default 5 s: with sensors rescheduling,
# the UI's backfill creation otherwise answers 503 "Database is locked".
SQLITE_LOCK_WAIT_SECONDS = 60
SQLITE_CONNECT_ARGS = {"timeout": SQLITE_LOCK_WAIT_SECONDS}
NO_CONNECT_ARGS: dict = {}
_OURS = ("pipeline.airflow_env.SQLITE_CONNECT_ARGS", "pipeline.airflow_env.NO_CONNECT_ARGS")


def database_connect_args(sql_alchemy_conn: str) -> str:
    """The ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS`` for a metadata DB URL: jobrec's SQLite lock wait for
    SQLite; for another database the environment's own value, unless that is one of jobrec's (a SQLite
    setting inherited by a process that now points at PostgreSQL), then none."""
    if sql_alchemy_conn.startswith("sqlite"):
        return _OURS[0]
    inherited = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS", "")
    return inherited if inherited and inherited not in _OURS else _OURS[1]
MIGRATED_MARKER = ".jobrec-migrated"


def airflow_env(settings: Settings) -> dict[str, str]:
    """The environment variables that make Airflow use jobrec's embedded setup under ``settings.home``.

    A non-SQLite ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` already in the environment (e.g. Postgres under
    docker-compose) is kept; otherwise the metadata DB is ``$JOBREC_HOME/airflow/airflow.db``.
    """
    airflow_home = settings.layout.airflow_home()
    env = {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": os.environ.get("AIRFLOW__CORE__UNIT_TEST_MODE", "False"),
        # A day's run is long; do not let the DAG processor time out parsing on a busy 2-core box.
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(airflow_home / "logs"),
        "JOBREC_HOME": str(settings.home),
    }
    # A server database set in the environment (Postgres under docker-compose) wins; SQLite is per home.
    configured = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "")
    if configured and not configured.startswith("sqlite"):
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = configured
    else:
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{airflow_home / 'airflow.db'}"
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS"] = database_connect_args(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    if settings.redis_url:
        env["REDIS_URL"] = settings.redis_url
    return env


def configure_airflow(settings: Settings, *, migrate: bool = True, export_home: bool = True) -> Path:
    """Export the embedded Airflow environment into ``os.environ`` and migrate the metadata DB if needed.

    ``export_home=False`` leaves ``JOBREC_HOME`` alone (tests set it per test). Returns the Airflow home
    folder. Raises ``RuntimeError`` when ``airflow`` was already imported with a
    different ``AIRFLOW_HOME`` (its configuration is read once per process, so the change would be ignored).
    """
    env = airflow_env(settings)
    airflow_home = Path(env["AIRFLOW_HOME"])
    if "airflow" in sys.modules and os.environ.get("AIRFLOW_HOME") != env["AIRFLOW_HOME"]:
        raise RuntimeError(
            "airflow is already imported with AIRFLOW_HOME="
            f"{os.environ.get('AIRFLOW_HOME')!r}; call configure_airflow() before importing airflow "
            "(or run in a fresh process)"
        )
    airflow_home.mkdir(parents=True, exist_ok=True)
    if not export_home:
        env.pop("JOBREC_HOME")
    os.environ.update(env)
    if migrate:
        migrate_db(airflow_home, env)
    write_airflow_cfg(airflow_home, cfg_values(env), env)
    return airflow_home


# Environment-only switches: never written into airflow.cfg.
_ENV_ONLY_KEYS = {"AIRFLOW__CORE__UNIT_TEST_MODE"}


def cfg_values(env: dict[str, str]) -> dict[tuple[str, str], str]:
    """The ``AIRFLOW__SECTION__KEY`` variables of ``env`` as ``{(section, key): value}`` for airflow.cfg."""
    values = {}
    for name, value in env.items():
        if not name.startswith("AIRFLOW__") or name in _ENV_ONLY_KEYS:
            continue
        section, sep, key = name[len("AIRFLOW__"):].partition("__")
        if sep and section and key:
            values[(section.lower(), key.lower())] = value
    return values


def write_airflow_cfg(airflow_home: Path, values: dict[tuple[str, str], str], env: dict[str, str] | None = None) -> Path:
    """Set ``values`` (``{(section, key): value}``) in ``airflow_home/airflow.cfg`` and return its path.

    The file is the one Airflow generates (with its fernet key and JWT secret): when it is missing, a
    ``python -m airflow``-equivalent subprocess with ``env`` writes it first. The file is rewritten
    atomically, readable by its owner only, and only when a value changes; the environment variables stay
    the source the jobrec processes use, this keeps hand-run ``AIRFLOW_HOME=… airflow …`` commands in line.
    """
    path = airflow_home / "airflow.cfg"
    if not path.exists():
        _generate_airflow_cfg(airflow_home, env)
    parser = configparser.RawConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # keep keys as written
    parser.read(path)
    changed = False
    for (section, key), value in values.items():
        # configparser writes "%" verbatim; Airflow's parser reads "%%" as "%".
        value = value.replace("%", "%%")
        if not parser.has_section(section):
            parser.add_section(section)
        if parser.get(section, key, fallback=None) != value:
            parser.set(section, key, value)
            changed = True
    if changed:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            parser.write(handle)
        os.replace(tmp, path)
    return path


def _generate_airflow_cfg(airflow_home: Path, env: dict[str, str] | None) -> None:
    """Let Airflow write its default ``airflow.cfg`` (what every ``airflow`` CLI command does first)."""
    full_env = {**os.environ, **(env or {}), "AIRFLOW_HOME": str(airflow_home)}
    code = "from airflow.configuration import write_default_airflow_configuration_if_needed as w; w()"
    result = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"could not create {airflow_home / 'airflow.cfg'}:\n{result.stderr[-3000:]}")


def migrate_db(airflow_home: Path, env: dict[str, str] | None = None) -> None:
    """Run ``airflow db migrate`` in a subprocess unless this home's database was already migrated by this version.

    The marker under ``airflow_home`` records the Airflow version, (a hash of) the database URL and the jobrec
    pools, so pointing the same home at another database (e.g. a fresh Postgres) migrates that one too, and a
    pool added by an upgrade of jobrec is created.
    """
    import hashlib
    from importlib.metadata import version

    marker = airflow_home / MIGRATED_MARKER
    full_env = {**os.environ, **(env or {})}
    conn = full_env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "")
    airflow_version = version("apache-airflow")
    from pipeline.pools import POOLS

    # the pools are in the stamp so that a home migrated before a pool was added gets it
    pools = ",".join(name for name, _, _ in POOLS)
    stamp = f"{airflow_version} {hashlib.sha256(conn.encode()).hexdigest()[:16]} {pools}"
    if marker.exists() and marker.read_text().strip() == stamp:
        return
    log.info("migrating the Airflow metadata DB under %s (airflow %s)", airflow_home, airflow_version)
    _airflow_cli(["db", "migrate"], full_env, f" for AIRFLOW_HOME={airflow_home}")
    ensure_pools(full_env)
    marker.write_text(stamp + "\n")


def _airflow_cli(args: list[str], env: dict[str, str], context: str = "") -> str:
    """Run ``airflow <args>`` with this interpreter in a subprocess; its stdout, or RuntimeError with its stderr."""
    result = subprocess.run([sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise RuntimeError(f"`airflow {' '.join(args[:2])}` failed (exit {result.returncode}){context}:\n"
                           f"{result.stderr[-3000:]}")
    return result.stdout


def ensure_pools(env: dict[str, str]) -> None:
    """Create the pools the jobrec DAGs use (``pipeline.pools.POOLS``) that the metadata DB lacks.

    Existing pools keep their slots: an operator who gave ``jobrec_compute`` more slots (steps on a Spark
    cluster) keeps them across upgrades. A task whose pool does not exist is never scheduled, so this runs
    with every migration (``docker-compose.yml``'s ``airflow-init`` calls it too)."""
    import json

    from pipeline.pools import POOLS

    existing = {pool["pool"] for pool in json.loads(_airflow_cli(["pools", "list", "--output", "json"], env) or "[]")}
    for name, slots, description in POOLS:
        if name not in existing:
            _airflow_cli(["pools", "set", name, str(slots), description], env)


def call_pipeline(target: str, ds: str | None, params: dict | None = None, **kwargs) -> dict:
    """Run one pipeline task function for an Airflow task and return its result with its wall time.

    ``target`` is ``"module:function"`` with the contract ``f(ds, settings, **kwargs) -> dict``. The result
    also gets the task's peak memory (``peak_rss_mib``, ``peak_memory_mib``, ``spark_jvm_peak_mib``: see
    :mod:`pipeline.memory`). Settings come from the environment, with the run's ``top_n``/``candidates_k``
    params (trigger form) applied, so each task calls its function with explicit values and never reads
    "latest" or ``now()``.
    """
    import importlib
    import time

    if not ds:
        raise ValueError(
            "this run has no logical date, so there is no ds to process: trigger it with a logical date "
            "(the trigger form's 'Logical date' field, or `airflow dags trigger -l YYYY-MM-DD`)"
        )
    params = dict(params or {})
    overrides = {key: params[key] for key in ("top_n", "candidates_k") if params.get(key) is not None}
    settings = Settings.from_env(**overrides)
    module_name, _, function_name = target.partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    log.info("%s(ds=%s, home=%s, %s)", target, ds, settings.home, kwargs if kwargs else "")
    started = time.perf_counter()
    with PeakMemory() as memory:
        result = function(ds, settings, **kwargs)
    seconds = round(time.perf_counter() - started, 3)
    result = dict(result or {})
    result.setdefault("seconds", seconds)
    for key, value in memory.result.items():
        result.setdefault(key, value)
    log.info("%s done in %.1fs (peak memory %s MiB): %s", target, seconds, memory.result.get("peak_memory_mib"),
             {k: v for k, v in result.items() if k != "results"})
    return result


def load_dag(dag_id: str):
    """Parse the repository's ``dags/`` folder and return the DAG ``dag_id`` (``ValueError`` if absent)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    dag = bag.get_dag(dag_id)
    if dag is None:
        raise ValueError(f"no DAG {dag_id!r} in {DAGS_FOLDER}; found {sorted(bag.dag_ids)}")
    return dag


def _logical_date(ds: str):
    import datetime as dt

    from pipeline.storage import check_ds

    day = dt.date.fromisoformat(check_ds(ds))
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def _summary(dag_run) -> dict:
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    ds = dag_run.logical_date.date().isoformat() if dag_run.logical_date else None
    return {
        "state": str(dag_run.state),
        "tasks": states,
        "run_id": dag_run.run_id,
        "run_type": str(dag_run.run_type),
        "ds": ds,
    }


def run_dag(dag_id: str, ds: str, conf: dict | None = None, *, mark_success_pattern: str | None = None) -> dict:
    """Run one DAG run of ``dag_id`` for the logical date ``ds`` in this process with ``dag.test()``.

    Call :func:`configure_airflow` first. ``mark_success_pattern`` (a regex of task ids) marks those tasks
    successful without running them. Returns ``{"state", "tasks": {task_id: state}, "run_id", "ds"}``; a
    failed task does not raise here, the states say what happened (the task logs say why).
    """
    dag = load_dag(dag_id)
    log.info("running %s for ds=%s with dag.test() (conf=%s)", dag_id, ds, conf or {})
    dag_run = dag.test(logical_date=_logical_date(ds), run_conf=conf or None, mark_success_pattern=mark_success_pattern)
    return _summary(dag_run)


def sync_dags_to_db() -> None:
    """Parse the configured DAG bundles and write the DAGs to the metadata DB (what the DAG processor does)."""
    from airflow import settings as airflow_settings
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db

    manager = DagBundlesManager()
    session = airflow_settings.Session()
    manager.sync_bundles_to_db(session=session)
    session.commit()
    for bundle in manager.get_all_dag_bundles():
        if not bundle.is_initialized:
            bundle.initialize()
        bag = BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name)
        sync_bag_to_db(bag, bundle.name, bundle.version)


def create_backfill(dag_id: str, start: str, end: str, conf: dict | None = None, *, reprocess: str = "none"):
    """Create an Airflow backfill of ``dag_id`` for ``start``..``end`` (inclusive), as the UI does.

    The same call as ``airflow backfill create`` and ``POST /api/v2/backfills``: Airflow creates one
    backfill run per day with ``conf``, run one at a time in date order (the backfill's ``max_active_runs``
    is 1, the UI dialog's default). ``reprocess`` is the dialog's choice: ``none`` ("Missing Runs", the
    default), ``failed`` ("Missing and Errored Runs") or ``completed`` ("All Runs").
    The DAG folder is synced to the metadata DB first (as a running DAG processor would have).
    """
    from airflow.models.backfill import ReprocessBehavior, _create_backfill

    sync_dags_to_db()
    return _create_backfill(
        dag_id=dag_id,
        from_date=_logical_date(start),
        to_date=_logical_date(end),
        max_active_runs=1,
        reverse=False,
        dag_run_conf=conf or {},
        triggering_user_name="jobrec",
        reprocess_behavior=ReprocessBehavior(reprocess),
    )


def run_backfill(
    dag_id: str, start: str, end: str, conf: dict | None = None, *, reprocess: str = "none"
) -> list[dict]:
    """Create a backfill (:func:`create_backfill`) and execute its runs here, one at a time in date order.

    This is what the scheduler does with a backfill of a ``max_active_runs=1`` DAG, minus the separate
    scheduler/api-server processes: each run is set running only after the previous one finished, and its
    tasks run in this process exactly as ``dag.test()`` runs them. A failed day stops the backfill here;
    later days stay queued (not run). (The scheduler would go on with them, and their retrain would fail
    naming the day to run first.) Tests of the real scheduler are in ``tests/test_airflow_scheduler.py``.
    Returns one summary per executed run (see :func:`run_dag`).
    """
    from airflow import settings as airflow_settings
    from airflow.models.backfill import Backfill, BackfillDagRun
    from airflow.models.dagrun import DagRun
    from airflow.sdk import timezone
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    dag = load_dag(dag_id)
    backfill = create_backfill(dag_id, start, end, conf, reprocess=reprocess)
    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    session = airflow_settings.Session()
    run_ids = session.scalars(
        select(DagRun.id)
        .join(BackfillDagRun, BackfillDagRun.dag_run_id == DagRun.id)
        .where(BackfillDagRun.backfill_id == backfill.id)
        .order_by(BackfillDagRun.sort_ordinal)
    ).all()
    log.info("backfill %s of %s: %d runs %s..%s", backfill.id, dag_id, len(run_ids), start, end)
    summaries = []
    for run_id in run_ids:
        dag_run = session.get(DagRun, run_id)
        summary = _execute_run(dag, scheduler_dag, dag_run, session)
        summaries.append(summary)
        if summary["state"] != DagRunState.SUCCESS:
            log.error("backfill stopped: %s for ds=%s", summary["state"], summary["ds"])
            break
    # What the scheduler does once a backfill has no runs left: close it, so a new one can be created.
    record = session.get(Backfill, backfill.id)
    record.completed_at = timezone.utcnow()
    session.commit()
    session.close()
    return summaries


def _execute_run(dag, scheduler_dag, dag_run, session) -> dict:
    """Drive one existing DAG run to completion in this process (the loop of ``dag.test()``)."""
    import time

    from airflow.sdk.definitions.dag import _run_task
    from airflow.utils.state import DagRunState, State, TaskInstanceState

    dag_run.dag = scheduler_dag
    dag_run.state = DagRunState.RUNNING
    session.commit()
    while dag_run.state == DagRunState.RUNNING:
        session.expire_all()
        schedulable, _ = dag_run.update_state(session=session)
        for ti in schedulable:
            ti.try_number += 1
            ti.state = TaskInstanceState.SCHEDULED
        session.commit()
        scheduled = [ti for ti in dag_run.get_task_instances(session=session) if ti.state == TaskInstanceState.SCHEDULED]
        if not scheduled:
            unfinished = [ti for ti in dag_run.get_task_instances(session=session) if ti.state not in State.finished]
            if unfinished:
                time.sleep(1)  # waiting for a retry delay (or for the run to be marked failed)
            continue
        for ti in scheduled:
            try:
                _run_task(ti=ti, task=dag.task_dict[ti.task_id])
            except Exception:  # the task's state (failed / up for retry) records it
                log.exception("task %s failed", ti.task_id)
    return _summary(dag_run)
