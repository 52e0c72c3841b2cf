"""`jobrec demo --ui` as a user runs it: real Airflow components, a non-default port, a clean stop.

Starts the command as a subprocess (its own ``JOBREC_HOME``, a free port), waits for its banner, and checks
what users reported broken: the api-server answers on the chosen port and on 127.0.0.1 only, the printed
login works, ``airflow.cfg`` carries the settings the processes use, and SIGTERM (then, on a restart of the
same home, SIGINT) stops every process the command started, exiting 0. Running DAG tasks through the stack
is the scheduler end-to-end test's job; here no task runs.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from pipeline.net import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parent.parent
# The `jobrec` console script is `pipeline.cli:main`; call it the same way with this interpreter.
JOBREC = [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main())"]
BANNER_END = "Ctrl-C stops Airflow."


def _clean_env(home: Path) -> dict[str, str]:
    """This process's environment without Airflow/Redis settings (other test modules export some)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") and k != "REDIS_URL"}
    env["JOBREC_HOME"] = str(home)
    return env


class Launcher:
    """``jobrec demo --ui`` in a subprocess of its own session, with its output collected by a thread."""

    def __init__(self, home: Path, port: int) -> None:
        self.proc = subprocess.Popen(
            [*JOBREC, "demo", "--ui", "--port", str(port), "--members", "200", "--jobs", "60", "--days", "3"],
            cwd=REPO,
            env=_clean_env(home),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.seen: dict[int, psutil.Process] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_banner(self, timeout: float = 420) -> str:
        deadline = time.monotonic() + timeout
        while BANNER_END not in self.lines:
            if self.proc.poll() is not None:
                self._reader.join(5)
                pytest.fail(f"jobrec demo --ui exited with {self.proc.returncode} before its banner:\n{self.output}")
            if time.monotonic() > deadline:
                pytest.fail(f"no banner after {timeout:.0f}s:\n{self.output}")
            time.sleep(0.5)
        return self.output

    def stack_processes(self) -> dict[int, psutil.Process]:
        """The launcher's descendants plus every member of their process groups (remembered across calls)."""
        launcher = psutil.Process(self.proc.pid)
        children = launcher.children(recursive=True)
        groups = {os.getpgid(child.pid) for child in children} - {os.getpgid(self.proc.pid)}
        for proc in children:
            self.seen.setdefault(proc.pid, proc)
        for proc in psutil.process_iter():
            try:
                if os.getpgid(proc.pid) in groups:
                    self.seen.setdefault(proc.pid, proc)
            except OSError:
                continue
        return self.seen

    def kill_everything(self) -> None:
        """Cleanup after a failed test: nothing this test started may outlive it."""
        if self.proc.poll() is None:
            try:
                self.stack_processes()
            except (psutil.Error, OSError):
                pass
            self.proc.kill()
        for proc in self.seen.values():
            try:
                proc.kill()
            except psutil.Error:
                pass
        self.proc.wait(10)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _banner_value(pattern: str, text: str) -> str:
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"{pattern!r} not in the banner:\n{text}"
    return match.group(1)


def _stop_and_check(launcher: Launcher, signum: int, port: int) -> None:
    """Send ``signum`` to the launcher: it must exit 0 within 30 s leaving no process and no listener behind."""
    procs = dict(launcher.stack_processes())
    assert len(procs) >= 4, f"expected the four Airflow components, found {procs}"
    started = time.monotonic()
    launcher.proc.send_signal(signum)
    try:
        code = launcher.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"jobrec demo --ui still running 30 s after {signal.Signals(signum).name}:\n{launcher.output}")
    launcher._reader.join(5)
    elapsed = time.monotonic() - started
    assert code == 0, launcher.output
    assert "Airflow stopped." in launcher.output
    survivors = {pid: " ".join(p.cmdline()[:4]) for pid, p in procs.items() if _alive(p)}
    assert not survivors, f"processes left after {signal.Signals(signum).name}: {survivors}"
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "the api-server still answers"
    print(f"{signal.Signals(signum).name}: {len(procs)} processes stopped in {elapsed:.1f}s")


def _login(base_url: str, password: str) -> str:
    response = httpx.post(f"{base_url}/auth/token", json={"username": "admin", "password": password}, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()["access_token"]


def test_demo_ui_runs_on_the_chosen_port_locally_and_stops_on_sigterm_and_sigint(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = free_port()
    launcher = Launcher(home, port)
    try:
        banner = launcher.wait_banner()
        base_url = _banner_value(r"Airflow is ready: (http://\S+)", banner)
        assert base_url == f"http://127.0.0.1:{port}"
        password = _banner_value(r"^\s+login\s+admin / (\S+)", banner)
        assert password != "admin"
        # A working backfill command: the marketplace's second day .. last day in date order, no placeholder.
        backfill = _banner_value(r"^\s+(AIRFLOW_HOME=\S+ \S+ backfill create .*)$", banner)
        assert "--dag-id jobrec_daily --max-active-runs 1 " in backfill, backfill
        assert backfill.endswith("--from-date 2024-01-02 --to-date 2024-01-03"), backfill
        assert f"AIRFLOW_HOME={home / 'airflow'} " in backfill
        assert "--logical-date 2024-01-01" in banner

        health = httpx.get(f"{base_url}/api/v2/monitor/health", timeout=10).json()
        for component in ("metadatabase", "scheduler", "dag_processor", "triggerer"):
            assert health[component]["status"] == "healthy", health

        # Bound to the loopback interface only.
        procs = launcher.stack_processes()
        listening = set()
        for proc in procs.values():
            try:
                listening |= {c.laddr for c in proc.net_connections("inet") if c.status == psutil.CONN_LISTEN}
            except psutil.Error:
                continue
        on_port = {addr.ip for addr in listening if addr.port == port}
        assert on_port == {"127.0.0.1"}, listening
        # ... and nothing else of the stack listens on another interface (log servers are off).
        assert all(addr.ip in ("127.0.0.1", "::1") for addr in listening), listening
        other_ips = [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                     if a.family == socket.AF_INET and not a.address.startswith("127.")]
        for ip in other_ips:
            with socket.socket() as sock:
                sock.settimeout(3)
                assert sock.connect_ex((ip, port)) != 0, f"the api-server answers on {ip}"

        # LocalExecutor with a small parallelism: at most min(cores, 4) worker processes.
        workers = [p for p in procs.values() if _alive(p) and "LocalExecutor" in " ".join(p.cmdline())]
        assert len(workers) <= min(os.cpu_count() or 1, 4), [p.cmdline() for p in workers]

        # airflow.cfg agrees with the processes: a plain `airflow` command sees the repo's DAGs.
        cfg_env = {**_clean_env(home), "AIRFLOW_HOME": str(home / "airflow")}
        airflow = str(Path(sys.executable).parent / "airflow")
        for key, expected in ((("core", "dags_folder"), str(REPO / "dags")), (("core", "load_examples"), "False"),
                              (("api", "port"), str(port)),
                              (("core", "execution_api_server_url"), f"{base_url}/execution/")):
            got = subprocess.run([airflow, "config", "get-value", *key], env=cfg_env, capture_output=True,
                                 text=True, check=True, timeout=120).stdout.strip().splitlines()[-1]
            assert got == expected, (key, got)

        # The printed login works; a wrong one does not; the token lists both DAGs.
        token = _login(base_url, password)
        bad = httpx.post(f"{base_url}/auth/token", json={"username": "admin", "password": "admin"}, timeout=10)
        assert bad.status_code == 401
        dags = httpx.get(f"{base_url}/api/v2/dags", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert {"jobrec_daily", "jobrec_full_retrain"} <= {d["dag_id"] for d in dags.json()["dags"]}

        _stop_and_check(launcher, signal.SIGTERM, port)

        # Restart on the same home (marketplace and DB reused, same login), then Ctrl-C.
        launcher = Launcher(home, port)
        banner = launcher.wait_banner()
        assert "generating a marketplace" not in banner
        assert _banner_value(r"^\s+login\s+admin / (\S+)", banner) == password
        _login(base_url, password)
        _stop_and_check(launcher, signal.SIGINT, port)
    finally:
        if launcher.proc.poll() is None or any(_alive(p) for p in launcher.seen.values()):
            launcher.kill_everything()
