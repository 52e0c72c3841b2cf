"""The jobrec DAGs' sensors, which wait without holding a worker slot: until a day's raw data landed (both
DAGs' first task), and until the daily retrain's parent model exists (the day before's run finished).

Kept free of heavy imports: DAG files import it at parse time.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import BaseSensorOperator

from pipeline.config import Settings
from pipeline.dag_defaults import WAIT_PARAMS


class RawDataLandedSensor(BaseSensorOperator):
    """Succeeds once every raw table's partition of the run's ``ds`` has its ``_SUCCESS`` marker.

    Runs in ``reschedule`` mode: between pokes the task is ``up_for_reschedule`` and holds no worker slot, so
    a run waiting for late data shows as running (not failed) and other runs proceed. The poke interval and
    the timeout come from the run's params ``raw_poke_interval_seconds`` and ``raw_wait_timeout_seconds``
    (trigger form, DAG defaults from the environment). On timeout the task fails, without retries, with a
    message that names every table and path still missing.
    """

    template_fields = ()

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("poke_interval", Settings.raw_poke_interval_seconds)  # the params override both
        kwargs.setdefault("timeout", Settings.raw_wait_timeout_seconds)
        super().__init__(**kwargs)
        self._missing: list[str] = []

    def execute(self, context: Any) -> Any:
        from airflow.sdk.exceptions import AirflowSensorTimeout

        params = context["params"]
        poke_key, timeout_key = WAIT_PARAMS
        self.poke_interval = float(params.get(poke_key, self.poke_interval))
        self.timeout = float(params.get(timeout_key, self.timeout))
        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            missing = "; ".join(self._missing) or "unknown"
            raise AirflowSensorTimeout(
                f"raw data for ds={context['ds']} did not land within {dt.timedelta(seconds=self.timeout)}: "
                f"missing {missing}. Land those files and their _SUCCESS marker (or `jobrec land --ds "
                f"{context['ds']}` when the files are complete), then clear this task."
            ) from exc

    def poke(self, context: Any) -> bool:
        from pipeline.landing import missing_raw_partitions

        settings = Settings.from_env()
        missing = missing_raw_partitions(context["ds"], settings)
        self._missing = [str(m) for m in missing]
        if missing:
            self.log.info("ds=%s: waiting for raw data: %s", context["ds"], "; ".join(self._missing))
            return False
        self.log.info("ds=%s: raw data landed under %s", context["ds"], settings.layout.raw_dir())
        return True


class ParentModelSensor(BaseSensorOperator):
    """Succeeds once the daily retrain of the run's ``ds`` has its parent: the model of the day before (or a
    promoted full model trained up to it), by :func:`pipeline.training.resolve_parent`.

    While a run of the day before is still queued or running in this DAG (days of a backfill, or a scheduled
    run whose data landed while the backfill of earlier days was going on), it waits in ``reschedule`` mode,
    looking every 30 s, so days run their validation and features in parallel but retrain strictly in date
    order, whatever the backfill's max active runs. When no such run is pending, it fails at once (no
    retries) with the message naming the day to run first. Gives up after ``raw_wait_timeout_seconds``.
    """

    template_fields = ()
    PARENT_POKE_INTERVAL_SECONDS = 30

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("poke_interval", self.PARENT_POKE_INTERVAL_SECONDS)
        kwargs.setdefault("timeout", Settings.raw_wait_timeout_seconds)  # the param overrides it
        super().__init__(**kwargs)

    def execute(self, context: Any) -> Any:
        self.timeout = float(context["params"].get(WAIT_PARAMS[1], self.timeout))
        return super().execute(context)

    def poke(self, context: Any) -> bool:
        from pipeline.storage import shift_ds
        from pipeline.training import MissingParentError, resolve_parent

        ds = context["ds"]
        try:
            parent = resolve_parent(ds, Settings.from_env())
        except MissingParentError:
            previous = dt.datetime.fromisoformat(shift_ds(ds, -1)).replace(tzinfo=dt.UTC)
            pending = context["ti"].get_dr_count(dag_id=context["dag"].dag_id, logical_dates=[previous],
                                                 states=["queued", "running"])
            if pending:
                self.log.info("ds=%s: waiting for the run of %s to train the parent model", ds, previous.date())
                return False
            raise
        self.log.info("ds=%s: the daily retrain starts from %s", ds, parent["version"])
        return True
