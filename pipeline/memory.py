"""Peak memory of one pipeline task: this process and the worker processes it starts.

A task's memory is not only its own process: re-scoring and retrieval fork workers, and Spark tasks start a
JVM. :class:`PeakMemory` measures, while the task runs:

- ``peak_rss_mib``: this process's peak resident set, exact (the kernel's high-water mark ``VmHWM``, reset
  when the task starts by writing 5 to ``/proc/self/clear_refs``; when that is refused, the peak since the
  process started);
- ``peak_memory_mib``: the peak of this process plus its descendant processes running the same interpreter
  (forked workers; not e.g. an embedded redis-server), sampled every :data:`SAMPLE_SECONDS` as the sum of
  their proportional set sizes (PSS: pages shared by a fork are counted once, not once per process), and
  never below ``peak_rss_mib``;
- ``spark_jvm_peak_mib``: the sampled peak of descendant JVMs (a local Spark driver: its resident set plus
  its Python workers' PSS), when any.

Linux only (``/proc``); elsewhere the figures are None. Sampling reads ``/proc/<pid>/smaps_rollup``, which
costs well under a millisecond per process at this rate.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 0.25
_PROC = Path("/proc")


def _status_kib(pid: int | str, field: str) -> int | None:
    try:
        for line in (_PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _pss_kib(pid: int) -> int | None:
    try:
        for line in (_PROC / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from ``/proc/<pid>/task/*/children``)."""
    found: list[int] = []
    try:
        for task in (_PROC / str(pid) / "task").iterdir():
            try:
                found.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                continue
    except OSError:
        pass
    return found


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid``."""
    out: list[int] = []
    frontier = [pid]
    while frontier:
        kids = _children(frontier.pop())
        out.extend(kids)
        frontier.extend(kids)
    return out


def _executable(pid: int | str) -> str | None:
    try:
        return os.readlink(_PROC / str(pid) / "exe")
    except OSError:
        return None


def _is_jvm(pid: int) -> bool:
    try:
        return (_PROC / str(pid) / "comm").read_text().strip() == "java"
    except OSError:
        return False


class PeakMemory:
    """Context manager measuring the peak memory of the code it wraps (see the module docstring).

    After the block, :attr:`result` holds ``peak_rss_mib``, ``peak_memory_mib`` and, when a JVM descendant
    was seen, ``spark_jvm_peak_mib`` (MiB, rounded to 0.1); empty when ``/proc`` is not available.
    """

    def __init__(self, sample_seconds: float = SAMPLE_SECONDS) -> None:
        self.sample_seconds = sample_seconds
        self.result: dict[str, float] = {}
        self._pid = os.getpid()
        self._executable = _executable("self")
        self._tree_peak_kib = 0
        self._jvm_peak_kib = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if not (_PROC / "self" / "status").exists():
            return self
        try:  # reset VmHWM so that it is this task's peak, not the process's
            (_PROC / "self" / "clear_refs").write_text("5")
        except OSError:
            log.debug("cannot reset the peak RSS (clear_refs refused); it covers the process's lifetime")
        self._sample()
        self._thread = threading.Thread(target=self._run, name="jobrec-peak-memory", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.sample_seconds):
            self._sample()

    def _sample(self) -> None:
        python_kib, jvm_kib = _pss_kib(self._pid) or 0, 0
        frontier = _children(self._pid)
        while frontier:
            pid = frontier.pop()
            if _is_jvm(pid):  # the JVM and its Python workers: Spark's share
                jvm_kib += _status_kib(pid, "VmRSS") or 0
                jvm_kib += sum(_pss_kib(worker) or 0 for worker in descendants(pid))
                continue
            if _executable(pid) == self._executable:  # a forked worker (not e.g. an embedded redis-server)
                python_kib += _pss_kib(pid) or 0
            frontier.extend(_children(pid))
        self._tree_peak_kib = max(self._tree_peak_kib, python_kib)
        self._jvm_peak_kib = max(self._jvm_peak_kib, jvm_kib)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._sample()
        own = _status_kib("self", "VmHWM") or 0
        self.result = {
            "peak_rss_mib": round(own / 1024, 1),
            "peak_memory_mib": round(max(own, self._tree_peak_kib) / 1024, 1),
        }
        if self._jvm_peak_kib:
            self.result["spark_jvm_peak_mib"] = round(self._jvm_peak_kib / 1024, 1)
