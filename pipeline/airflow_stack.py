"""A real Airflow 3 deployment on one machine: api-server, scheduler, dag-processor and triggerer.

:class:`AirflowStack` is what ``jobrec demo --ui`` runs, and what scheduler integration tests start: the four
Airflow components as separate ``python -m airflow <component>`` processes, in one new process group, with
jobrec's embedded settings (``pipeline.airflow_env``) plus what separate components need to work together:

- the task processes reach the execution API on the port the api-server listens on
  (``[core] execution_api_server_url``), not on Airflow's default ``http://localhost:8080``;
- one JWT secret for every component, generated once per Airflow home (``$AIRFLOW_HOME/jwt_secret``, 0600);
- the simple auth manager with one user ``admin`` (role admin) whose password lives in
  ``$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated`` (0600, generated once, random);
- the LocalExecutor with a parallelism that fits the machine (default ``min(cpu count, 4)``);
- the api-server bound to ``127.0.0.1`` unless told otherwise.

The same settings go into ``$AIRFLOW_HOME/airflow.cfg``, so ``AIRFLOW_HOME=… airflow …`` commands run by hand
(a backfill, a trigger) agree with the running stack. All output of the components goes to one log file
(default ``$AIRFLOW_HOME/logs/stack.log``); task logs are under ``$AIRFLOW_HOME/logs`` as usual.

    with AirflowStack(settings, port=8793) as stack:      # start() ... stop()
        headers = {"Authorization": f"Bearer {stack.token()}"}
        httpx.get(f"{stack.base_url}/api/v2/dags", headers=headers)

:meth:`AirflowStack.stop` terminates the whole process group and every descendant outside it (Airflow runs
each task in a process group of its own), then kills what is left: no process started by the stack survives.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import psutil

from pipeline.airflow_env import airflow_env, cfg_values, database_connect_args, migrate_db, write_airflow_cfg
from pipeline.config import Settings

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
# The scheduler and triggerer would each start a log server on every interface (ports 8793/8794, which also
# collide between stacks); the api-server reads the task logs from the shared local log folder instead.
COMPONENT_ARGS = {"scheduler": ["--skip-serve-logs"], "triggerer": ["--skip-serve-logs"]}
EXPECTED_DAGS = ("jobrec_daily", "jobrec_full_retrain")
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"
JWT_SECRET_FILE = "jwt_secret"
USERNAME = "admin"
# Passwords earlier jobrec versions wrote for the demo; replaced by a generated one.
_WEAK_PASSWORDS = {"", "admin"}
# Airflow's own alphabet for generated passwords (no look-alike characters).
_PASSWORD_ALPHABET = "abcdefghkmnpqrstuvwxyzABCDEFGHKMNPQRSTUVWXYZ23456789"


def default_parallelism() -> int:
    """LocalExecutor worker processes by default: the machine's cores, at most 4."""
    return max(1, min(os.cpu_count() or 1, 4))


def _client_host(host: str) -> str:
    """The address a client on this machine uses to reach a server bound to ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable and writable by the owner only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _tail(path: Path, lines: int = 60) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64_000))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _describe(procs: dict[int, psutil.Process]) -> str:
    """``pid (process title)`` of each process, for log messages."""
    names = []
    for pid, proc in sorted(procs.items()):
        try:
            names.append(f"{pid} ({' '.join(proc.cmdline())[:60].strip()})")
        except psutil.Error:
            names.append(str(pid))
    return ", ".join(names)


def describe_exit(code: int) -> str:
    """``"exited with code 1"`` or ``"was killed by SIGKILL"`` for a ``Popen.returncode``."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class AirflowStack:
    """Airflow's api-server, scheduler, dag-processor and triggerer for ``settings.home``, as subprocesses.

    Args:
        settings: jobrec settings; the Airflow home is ``settings.layout.airflow_home()``.
        port: the api-server's port (UI, REST API and the execution API the tasks call).
        host: the address the api-server binds (``127.0.0.1``: this machine only; ``0.0.0.0``: every
            interface).
        parallelism: LocalExecutor worker processes (``[core] parallelism``); default
            ``min(os.cpu_count(), 4)``.
        log_file: where the components' stdout/stderr go (appended); default
            ``$JOBREC_HOME/airflow/logs/stack.log``.
        extra_env: more environment variables for the components, applied last (they win). A
            non-SQLite ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` here or in the environment is used as the
            metadata database (e.g. PostgreSQL); set the API host/port with the arguments, not here.

    Attributes:
        base_url: e.g. ``http://127.0.0.1:8793``.
        username, password: the login of the simple auth manager (UI and ``/auth/token``).
        airflow_home: ``settings.layout.airflow_home()``.
        processes: ``{component: subprocess.Popen}`` once started.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        port: int = 8080,
        host: str = "127.0.0.1",
        parallelism: int | None = None,
        log_file: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        if parallelism is not None and parallelism < 1:
            raise ValueError(f"parallelism must be at least 1; got {parallelism}")
        if not 0 < port < 65536:
            raise ValueError(f"port must be in 1..65535; got {port}")
        self.settings = settings
        self.port = port
        self.host = host
        self.parallelism = parallelism or default_parallelism()
        self.airflow_home = settings.layout.airflow_home()
        self.log_file = Path(log_file) if log_file else self.airflow_home / "logs" / "stack.log"
        self.extra_env = dict(extra_env or {})
        self.base_url = f"http://{_client_host(host)}:{port}"
        self.username = USERNAME
        self.processes: dict[str, subprocess.Popen] = {}
        self.pgid: int | None = None
        self._tracked: dict[int, psutil.Process] = {}
        # Once the process group is empty its id may be reused by an unrelated group: stop using it then.
        self._group_gone = False
        self._started_at: dt.datetime | None = None

    # -- configuration ---------------------------------------------------------------------------------

    @property
    def password_file(self) -> Path:
        """The simple auth manager's password file (JSON ``{user: password}``)."""
        return self.airflow_home / PASSWORDS_FILE

    @property
    def password(self) -> str:
        """The password of :attr:`username`, generated (random) into :attr:`password_file` if it has none."""
        self.airflow_home.mkdir(parents=True, exist_ok=True)
        try:
            passwords = json.loads(self.password_file.read_text() or "{}")
        except FileNotFoundError:
            passwords = {}
        except json.JSONDecodeError as exc:
            raise RuntimeError(f"{self.password_file} is not valid JSON ({exc}); delete it to regenerate") from exc
        password = passwords.get(self.username, "")
        if password in _WEAK_PASSWORDS:
            password = "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(16))
            passwords[self.username] = password
            _write_private(self.password_file, json.dumps(passwords) + "\n")
        return password

    def _jwt_secret(self) -> str:
        """The JWT secret shared by every component of this Airflow home (generated once, mode 0600)."""
        path = self.airflow_home / JWT_SECRET_FILE
        if path.exists():
            secret = path.read_text().strip()
            if secret:
                return secret
        secret = secrets.token_urlsafe(48)
        _write_private(path, secret + "\n")
        return secret

    def airflow_settings(self) -> dict[str, str]:
        """The ``AIRFLOW_*``/``JOBREC_*`` variables of the components (without the rest of the environment)."""
        env = airflow_env(self.settings)
        env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__API__HOST": self.host,
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.username}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.password_file),
                "AIRFLOW__API_AUTH__JWT_SECRET": self._jwt_secret(),
            }
        )
        env.update(self.extra_env)
        if "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS" not in self.extra_env:  # follow the final database
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS"] = database_connect_args(
                env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        return env

    def environment(self) -> dict[str, str]:
        """The full environment of the component processes."""
        env = {**os.environ, **self.airflow_settings()}
        # Anything that shells out to `airflow` finds this interpreter's installation first.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def prepare(self) -> dict[str, str]:
        """Migrate the metadata DB, write ``airflow.cfg`` and the password file; return the components' env."""
        self.airflow_home.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        _ = self.password  # generated before any api-server worker starts
        env = self.environment()
        migrate_db(self.airflow_home, env)
        airflow_keys = {k: v for k, v in self.airflow_settings().items() if k.startswith("AIRFLOW__")}
        write_airflow_cfg(self.airflow_home, cfg_values(airflow_keys), env)
        return env

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self, timeout: float = 240) -> None:
        """Start the four components and wait until they are healthy and the jobrec DAGs are parsed.

        Raises ``RuntimeError`` (with the tail of :attr:`log_file`) when a component exits or the stack is
        not ready within ``timeout`` seconds; the components already started are stopped first.
        """
        if self.processes:
            raise RuntimeError("this AirflowStack was already started")
        self._check_port_free()
        env = self.prepare()
        self._started_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        with open(self.log_file, "ab", buffering=0) as out:
            out.write(
                f"\n===== jobrec AirflowStack {self._started_at:%Y-%m-%d %H:%M:%S}Z: {self.base_url} "
                f"(host {self.host}), parallelism {self.parallelism}, AIRFLOW_HOME={self.airflow_home}\n".encode()
            )
            try:
                for name in COMPONENTS:
                    # One new process group (in this session: setpgid cannot join a group of another
                    # session), led by the first component; the terminal's Ctrl-C does not reach it.
                    group = 0 if self.pgid is None else self.pgid
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "airflow", name, *COMPONENT_ARGS.get(name, [])],
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        process_group=group,
                        preexec_fn=_die_with_parent,
                    )
                    self.processes[name] = proc
                    if self.pgid is None:
                        self.pgid = proc.pid
                    self._tracked[proc.pid] = psutil.Process(proc.pid)
                    log.info("started airflow %s (pid %d)", name, proc.pid)
            except Exception as exc:
                self.stop()
                raise RuntimeError(f"could not start the Airflow components: {exc}\n{_tail(self.log_file)}") from exc
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _check_port_free(self) -> None:
        """Fail at once, with a message, when something already listens on the api-server's address."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            try:
                sock.bind((self.host, self.port))
            except OSError as exc:
                raise RuntimeError(
                    f"cannot serve on {self.host}:{self.port}: {exc.strerror}; choose another port"
                ) from exc

    def _wait_ready(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        state = "nothing yet"
        with httpx.Client(base_url=self.base_url, timeout=10) as client:
            while True:
                dead = self.exited()
                if dead:
                    name, code = next(iter(dead.items()))
                    raise RuntimeError(
                        f"airflow {name} {describe_exit(code)} while starting; its output is in "
                        f"{self.log_file}:\n{_tail(self.log_file)}"
                    )
                try:
                    state = self._readiness(client)
                except httpx.HTTPError as exc:
                    state = f"api-server not answering yet ({type(exc).__name__})"
                if state == "ready":
                    log.info("Airflow is ready at %s", self.base_url)
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"Airflow at {self.base_url} was not ready after {timeout:.0f}s: {state}. "
                        f"Log {self.log_file}:\n{_tail(self.log_file)}"
                    )
                time.sleep(1)

    def _readiness(self, client: httpx.Client) -> str:
        """``"ready"``, or what is still missing."""
        health = client.get("/api/v2/monitor/health")
        if health.status_code != 200:
            return f"health endpoint answered {health.status_code}"
        body = health.json()
        waiting = []
        for component, heartbeat_key in (
            ("scheduler", "latest_scheduler_heartbeat"),
            ("dag_processor", "latest_dag_processor_heartbeat"),
            ("triggerer", "latest_triggerer_heartbeat"),
        ):
            info = body.get(component) or {}
            heartbeat = info.get(heartbeat_key)
            # A component of an earlier stack on this database may still look healthy: require our heartbeat.
            fresh = heartbeat is not None and dt.datetime.fromisoformat(heartbeat) >= self._started_at
            if info.get("status") != "healthy" or not fresh:
                waiting.append(component)
        if waiting:
            return f"waiting for {', '.join(waiting)} to report healthy"
        headers = {"Authorization": f"Bearer {self.token(client)}"}
        dags = client.get("/api/v2/dags", params={"limit": 100}, headers=headers)
        dags.raise_for_status()
        found = {dag["dag_id"] for dag in dags.json().get("dags", [])}
        missing = sorted(set(EXPECTED_DAGS) - found)
        if missing:
            errors = client.get("/api/v2/importErrors", headers=headers)
            detail = ""
            if errors.status_code == 200 and errors.json().get("total_entries"):
                detail = "; import errors: " + "; ".join(
                    f"{e.get('filename')}: {e.get('stack_trace', '')[-500:]}" for e in errors.json()["import_errors"]
                )
            return f"waiting for the DAG processor to parse {', '.join(missing)}{detail}"
        return "ready"

    def token(self, client: httpx.Client | None = None) -> str:
        """A JWT for the REST API: ``POST {base_url}/auth/token`` with :attr:`username`/:attr:`password`.

        Raises ``RuntimeError`` when the login is refused (HTTP 4xx), ``httpx.HTTPError`` when the server
        cannot answer.
        """
        import httpx

        body = {"username": self.username, "password": self.password}
        if client is None:
            response = httpx.post(f"{self.base_url}/auth/token", json=body, timeout=10)
        else:
            response = client.post("/auth/token", json=body)
        if response.status_code >= 500:
            response.raise_for_status()  # httpx.HTTPStatusError: the server's trouble, maybe passing
        if response.status_code >= 400:
            raise RuntimeError(
                f"login as {self.username} (password from {self.password_file}) failed: "
                f"HTTP {response.status_code} {response.text[:300]}"
            )
        return response.json()["access_token"]

    def exited(self) -> dict[str, int]:
        """The components that have exited, with their exit codes (empty while all run)."""
        return {name: proc.returncode for name, proc in self.processes.items() if proc.poll() is not None}

    def pids(self) -> list[int]:
        """Every live process the stack started: the components, their descendants (task processes run in
        process groups of their own) and any member of the stack's process group whose parent is gone."""
        return sorted(self._refresh())

    def _refresh(self) -> dict[int, psutil.Process]:
        for proc in self.processes.values():
            proc.poll()  # reap exited components so they do not linger as zombies
        found: dict[int, psutil.Process] = {}
        for proc in list(self._tracked.values()):
            if not _alive(proc):
                continue
            found[proc.pid] = proc
            try:
                children = proc.children(recursive=True)
            except psutil.Error:
                children = []
            for child in children:
                found.setdefault(child.pid, self._tracked.get(child.pid, child))
        if self.pgid is not None and not self._group_gone:
            in_group = 0
            for proc in psutil.process_iter():
                try:
                    if os.getpgid(proc.pid) == self.pgid:
                        in_group += 1
                        found.setdefault(proc.pid, proc)
                except OSError:
                    continue
            self._group_gone = in_group == 0
        self._tracked = {pid: proc for pid, proc in found.items() if _alive(proc)}
        return self._tracked

    def stop(self, timeout: float = 20) -> None:
        """Stop everything the stack started, within about ``timeout`` seconds (then nothing of it survives).

        1. SIGTERM to the scheduler, dag-processor and triggerer, which stop their own children the way
           Airflow expects (the scheduler its executor workers), and to the running task processes (Airflow
           runs each in a process group of its own), which then report their end through the execution API,
           so the api-server keeps running meanwhile;
        2. once only the api-server and the triggerer are left, or after half of ``timeout``: SIGTERM to the
           stack's process group and whatever is left outside it. The api-server stops; the triggerer, at its
           second signal, kills its trigger runner at once (at the first it may wait 10 s for it).
        3. at ``timeout``: SIGKILL to what is still alive.
        """
        if self.pgid is None:
            return
        started = time.monotonic()
        api = self.processes.get("api-server")
        api_pid = api.pid if api is not None else None
        components = {proc.pid for proc in self.processes.values()}
        live = self._refresh()
        first = {pid: proc for pid, proc in live.items()
                 if pid != api_pid and (pid in components or not self._in_group(pid))}
        keep = {api_pid}
        triggerer = self.processes.get("triggerer")
        if triggerer is not None and triggerer.pid in live:
            keep.add(triggerer.pid)
            try:
                keep |= {child.pid for child in live[triggerer.pid].children(recursive=True)}
            except psutil.Error:
                pass
        self._signal(first, signal.SIGTERM, group=False)
        live = self._wait_gone(started + timeout / 2, keep=keep)
        if live:
            log.info("SIGTERM to the Airflow processes still alive: %s", _describe(live))
            self._signal(live, signal.SIGTERM)
            live = self._wait_gone(started + timeout)
        if live:
            log.warning("killing the Airflow processes still alive after %.0fs: %s", timeout, _describe(live))
            self._signal(live, signal.SIGKILL)
            psutil.wait_procs(list(live.values()), timeout=5)
        for proc in self.processes.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.error("airflow process %d did not exit after SIGKILL", proc.pid)
        leftover = self._refresh()
        if leftover:
            log.error("processes of the Airflow stack still alive: %s", _describe(leftover))

    def _in_group(self, pid: int) -> bool:
        try:
            return not self._group_gone and os.getpgid(pid) == self.pgid
        except OSError:
            return False

    def _wait_gone(self, deadline: float, keep: set[int | None] = frozenset()) -> dict[int, psutil.Process]:
        """Poll until the processes of the stack other than ``keep`` are gone, or ``deadline`` (monotonic).

        Task processes that appear meanwhile (outside the stack's group) get a SIGTERM too. Returns the
        live processes.
        """
        seen = set(self._tracked)
        live = self._refresh()
        while set(live) - keep and time.monotonic() < deadline:
            time.sleep(0.2)
            live = self._refresh()
            new = {pid: proc for pid, proc in live.items() if pid not in seen and not self._in_group(pid)}
            self._signal(new, signal.SIGTERM, group=False)
            seen |= set(live)
        return live

    def _signal(self, procs: dict[int, psutil.Process], signum: int, *, group: bool = True) -> None:
        """Send ``signum`` once to each process: to the stack's group with ``killpg``, to the others (task
        processes, which Airflow runs in process groups of their own) one by one; ``group=False``: to each of
        ``procs``. A second SIGTERM would make the scheduler and triggerer skip their graceful shutdown."""
        if not group:
            for proc in procs.values():
                try:
                    proc.send_signal(signum)
                except psutil.Error:
                    pass
            return
        if not self._group_gone:
            try:
                os.killpg(self.pgid, signum)
            except (ProcessLookupError, PermissionError):
                pass
        for proc in procs.values():
            try:
                if self._group_gone or os.getpgid(proc.pid) != self.pgid:
                    proc.send_signal(signum)
            except (OSError, psutil.Error):
                pass

    def __enter__(self) -> AirflowStack:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the starting thread dies (Linux ``PR_SET_PDEATHSIG``), so a
    crashed or SIGKILLed launcher does not leave Airflow components running."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _load_libc():
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True)  # loaded here: no imports between fork and exec
    except OSError:
        return None


_LIBC = _load_libc()
