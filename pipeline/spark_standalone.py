"""A Spark standalone master and worker on this machine, started from pyspark's own jars.

What the tests and benchmarks use to run the Spark steps the way a cluster runs them (a separate master,
executors in a worker's JVM, Python workers forked by that executor), without a Spark installation::

    with StandaloneCluster(cores=2, memory="2g") as url:   # "spark://127.0.0.1:PORT"
        ...  # JOBREC_SPARK_MASTER=url for the steps

The worker runs on this machine, so it sees the data folder at the same paths, as a cluster's workers must
(a shared file system). Not for production: a real cluster has its own master and workers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from .net import free_port


class StandaloneCluster:
    """A master and one worker (``cores`` cores, ``memory`` for executors) as child processes.

    Entering starts both and waits until the master lists the worker as alive (``RuntimeError`` with the
    daemons' last log lines after ``timeout`` seconds); it returns the master URL. Leaving stops both and removes
    their work folder. Python workers run ``python`` (default this interpreter).
    """

    def __init__(self, cores: int = 2, memory: str = "6g", *, python: str | None = None, timeout: float = 90.0):
        import pyspark

        self.spark_home = Path(pyspark.__file__).parent
        self.cores, self.memory, self.timeout = cores, memory, timeout
        self.python = python or sys.executable
        self.port, self.ui_port = free_port(), free_port()
        self.work = Path(tempfile.mkdtemp(prefix="jobrec-spark-standalone-"))
        self.procs: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def _start(self, name: str, args: list[str]) -> None:
        env = {**os.environ, "SPARK_HOME": str(self.spark_home), "SPARK_LOG_DIR": str(self.work),
               "SPARK_WORKER_DIR": str(self.work), "PYSPARK_PYTHON": self.python}
        log = open(self.work / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process's end)
        self.procs.append(subprocess.Popen([str(self.spark_home / "bin" / "spark-class"), *args], env=env,
                                           stdout=log, stderr=subprocess.STDOUT))
        log.close()

    def alive_workers(self) -> int:
        """Workers the master lists as ALIVE (0 while the master's web UI is not up)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=2) as answer:
                state = json.load(answer)
        except OSError:
            return 0
        return sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE")

    def __enter__(self) -> str:
        self._start("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(self.port), "--webui-port", str(self.ui_port)])
        self._start("worker", ["org.apache.spark.deploy.worker.Worker", self.url, "--cores", str(self.cores),
                               "--memory", self.memory, "--work-dir", str(self.work),
                               "--webui-port", str(free_port())])
        deadline = time.monotonic() + self.timeout
        while self.alive_workers() < 1:
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                tails = self._log_tails()
                self.__exit__(None, None, None)
                raise RuntimeError(f"the standalone Spark master/worker did not come up in {self.timeout:.0f} s; "
                                   f"their last log lines:\n{tails}")
            time.sleep(0.5)
        return self.url

    def _log_tails(self, lines: int = 15) -> str:
        out = []
        for name in ("master", "worker"):
            path = self.work / f"{name}.log"
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
            out.append(f"--- {name}\n" + "\n".join(text))
        return "\n".join(out)

    def __exit__(self, *exc) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        shutil.rmtree(self.work, ignore_errors=True)
