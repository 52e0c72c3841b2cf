"""What ``jobrec demo`` shows: a short progress view on the terminal, every log line in a file.

:func:`logs_to_file` points the process's stdout and stderr (file descriptors 1 and 2) at a log file, so
Airflow's console logging (structlog writes to stdout), the task logs ``dag.test()`` prints, Spark's and the
pipeline's Python logging, warnings and child processes all land there, and hands back a stream on the
terminal for the progress view. :class:`RunProgress` prints one line per task instance of a DAG run as it
finishes (on Airflow's ``[DAG TEST] end task`` record) and the ones that never ran after the run, from the
run's task instances in the metadata DB; :func:`task_log_tail` cuts a failed task's lines out of the log.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

log = logging.getLogger(__name__)

# dag.test() logs these around each task it runs (airflow.sdk.definitions.dag, Airflow 3.x).
DAG_TEST_LOGGER = "airflow.sdk.definitions.dag"
_START = "[DAG TEST] starting task_id="
_END_MSG = "[DAG TEST] end task"
_END = f"{_END_MSG} task_id="
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# States of task instances that did not run (Airflow still records a duration of 0 for some).
_NOT_RUN = {"upstream_failed", "skipped", "removed", "not run"}
# Airflow's bookkeeping around a task's own lines: left out of the tail a failure shows.
_NOISE = re.compile(r"::(?:end)?group::|Task instance state updated|\[DAG TEST\]")
# The last line of a traceback: "pipeline.training.GateFailedError: gate ds=…".
_ERROR_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt)\b(?::|$)")


def demo_log_path(logs_dir: Path, now: dt.datetime | None = None) -> Path:
    """``<logs_dir>/demo-YYYYmmdd-HHMMSS.log`` (``logs_dir``: ``Layout.logs_dir()``) for a demo started at ``now``
    (default: the current time)."""
    stamp = (now or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    return Path(logs_dir) / f"demo-{stamp}.log"


@contextlib.contextmanager
def logs_to_file(path: Path) -> Iterator[tuple[TextIO, TextIO]]:
    """Send everything written to this process's fd 1 and 2 to ``path`` (appended) while in the block.

    Yields ``(out, err)``: line-buffered text streams on the original stdout and stderr, for what the user
    should see. Python's ``sys.stdout``/``sys.stderr``, logging handlers writing to them, C code and child
    processes started in the block (they inherit fds 1 and 2) all write to the file. On exit the root
    logger's handlers are replaced by one writing to the file (so records logged later, e.g. by the Spark
    JVM's output thread as it shuts down, stay in the file) and fds 1 and 2 are restored, also on error.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = (os.dup(1), os.dup(2))
    out = os.fdopen(os.dup(saved[0]), "w", buffering=1, encoding="utf-8", errors="replace")
    err = os.fdopen(os.dup(saved[1]), "w", buffering=1, encoding="utf-8", errors="replace")
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        yield out, err
    finally:
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        file_handler = logging.FileHandler(path, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(file_handler)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, log_fd):
            os.close(fd)
        out.close()
        err.close()


@dataclass(frozen=True)
class TaskRow:
    """One task instance of a DAG run, as the progress view shows it."""

    task_id: str
    map_index: int
    state: str
    seconds: float | None
    tries: int
    start: dt.datetime | None = None

    def line(self) -> str:
        """``"    build_features          success       21.9s"`` (plus the try when retried)."""
        name = self.task_id if self.map_index < 0 else f"{self.task_id}[{self.map_index}]"
        ran = self.seconds is not None and self.state not in _NOT_RUN
        seconds = f"{self.seconds:7.1f}s" if ran else "      - "
        tries = f"  (try {self.tries})" if self.tries > 1 else ""
        return f"    {name:<24} {self.state:<15} {seconds}{tries}".rstrip()


def task_rows(dag_id: str, *, run_id: str | None = None, ds: str | None = None,
              task_id: str | None = None) -> list[TaskRow]:
    """The task instances of one run of ``dag_id`` (by ``run_id``, or by logical date ``ds``), in the order
    they started (never-started ones last), read from Airflow's metadata DB.

    Uses a session of its own (not the thread's scoped session that ``dag.test()`` is using).
    """
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import and_, select

    query = select(TaskInstance).join(
        DagRun, and_(TaskInstance.dag_id == DagRun.dag_id, TaskInstance.run_id == DagRun.run_id)
    ).where(DagRun.dag_id == dag_id)
    if run_id is not None:
        query = query.where(DagRun.run_id == run_id)
    else:
        day = dt.date.fromisoformat(str(ds))
        query = query.where(DagRun.logical_date == dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC))
    if task_id is not None:
        query = query.where(TaskInstance.task_id == task_id)
    with create_session(scoped=False) as session:
        rows = [
            TaskRow(
                task_id=ti.task_id,
                map_index=ti.map_index,
                state=_state(ti.state),
                seconds=float(ti.duration) if ti.duration is not None else None,
                tries=int(ti.try_number or 0),
                start=ti.start_date,
            )
            for ti in session.scalars(query)
        ]
    far = dt.datetime.max.replace(tzinfo=dt.UTC)
    return sorted(rows, key=lambda r: (r.start is None, _aware(r.start) if r.start else far, r.task_id, r.map_index))


def _state(state: object) -> str:
    if state is None:
        return "not run"
    return str(getattr(state, "value", state))


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


class TaskEndHandler(logging.Handler):
    """Calls ``on_end(task_id, map_index)`` for each ``[DAG TEST] end task`` record ``dag.test()`` logs."""

    def __init__(self, on_end: Callable[[str, int], None]) -> None:
        super().__init__(logging.INFO)
        self.on_end = on_end

    def emit(self, record: logging.LogRecord) -> None:
        """Pass the task of an end-task record to ``on_end``; ignore other records, never raise."""
        try:
            if not str(record.msg).startswith(_END_MSG):
                return
            args = record.args if isinstance(record.args, tuple) else ()
            if len(args) >= 2:
                task_id, map_index = str(args[0]), int(args[1])
            else:  # an already formatted message
                found = re.search(r"task_id=(\S+) map_index=(-?\d+)", record.getMessage())
                if not found:
                    return
                task_id, map_index = found.group(1), int(found.group(2))
            self.on_end(task_id, map_index)
        except Exception:  # noqa: BLE001 - the progress view must never break a run
            log.debug("progress line failed", exc_info=True)


class RunProgress:
    """The progress view of one DAG run: a header, then one line per task instance.

    Use as a context manager around ``run_dag``: lines are printed as tasks finish (looked up in the
    metadata DB when ``dag.test()`` logs the end of a task); :meth:`finish` prints the task instances not
    printed yet (never run, skipped, upstream failed), so every task of the run gets its line even if the
    live hook never fires. Task ids come from the run itself, not from a list.
    """

    def __init__(self, out: TextIO, dag_id: str, ds: str,
                 lookup: Callable[..., list[TaskRow]] = task_rows) -> None:
        self.out, self.dag_id, self.ds, self.lookup = out, dag_id, ds, lookup
        self.printed: dict[tuple[str, int], str] = {}
        self._handler = TaskEndHandler(self.task_ended)
        self._level = logging.NOTSET

    def __enter__(self) -> RunProgress:
        print(f"{self.dag_id}  ds={self.ds}", file=self.out)
        logger = logging.getLogger(DAG_TEST_LOGGER)
        self._level = logger.level
        if logger.getEffectiveLevel() > logging.INFO:  # the end-task records are INFO
            logger.setLevel(logging.INFO)
        logger.addHandler(self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        logger = logging.getLogger(DAG_TEST_LOGGER)
        logger.removeHandler(self._handler)
        logger.setLevel(self._level)

    def task_ended(self, task_id: str, map_index: int) -> None:
        """Print the line of a task instance that just finished (a retried try prints again)."""
        rows = [r for r in self.lookup(self.dag_id, ds=self.ds, task_id=task_id) if r.map_index == map_index]
        if rows:
            self._print(rows[-1])

    def finish(self, run_id: str | None = None) -> list[TaskRow]:
        """Print the lines not printed yet, from the run's task instances; return all of them."""
        rows = self.lookup(self.dag_id, run_id=run_id) if run_id else self.lookup(self.dag_id, ds=self.ds)
        for row in rows:
            if self.printed.get((row.task_id, row.map_index)) != row.state:
                self._print(row)
        return rows

    def _print(self, row: TaskRow) -> None:
        self.printed[(row.task_id, row.map_index)] = row.state
        print(row.line(), file=self.out)


def log_offset(path: Path) -> int:
    """The current size of the log file (where the next run's lines start); 0 when it does not exist."""
    try:
        return Path(path).stat().st_size
    except FileNotFoundError:
        return 0


def task_log_tail(path: Path, task_id: str, *, since: int = 0, lines: int | None = 20,
                  width: int = 300) -> list[str]:
    """The last ``lines`` lines (all with ``None``) ``task_id`` logged in ``path`` after byte ``since``.

    A task's lines are those of its last try: between ``dag.test()``'s ``starting task_id=<task>`` and ``end
    task task_id=<task>`` records, without Airflow's bookkeeping lines (log groups, state updates); when the
    markers are missing, the lines of the file after ``since``. Lines are cut to ``width`` characters and
    stripped of colour codes.
    """
    with open(path, "rb") as stream:
        stream.seek(since)
        text = stream.read().decode("utf-8", "replace")
    all_lines = [_ANSI.sub("", line) for line in text.splitlines()]
    start_marker, end_marker = f"{_START}{task_id} ", f"{_END}{task_id} "
    starts = [i for i, line in enumerate(all_lines) if start_marker in line]
    if starts:
        begin = starts[-1]
        ends = [i for i, line in enumerate(all_lines) if i > begin and end_marker in line]
        segment = all_lines[begin: ends[0] + 1 if ends else len(all_lines)]
    else:
        segment = all_lines
    segment = [line for line in segment if line.strip() and not _NOISE.search(line)]
    if lines is not None:
        segment = segment[-lines:] if lines > 0 else []
    return [line if len(line) <= width else line[: width - 1] + "…" for line in segment]


def error_message(lines: list[str]) -> str | None:
    """The last exception line (``SomeError: message``) among ``lines``, or ``None``."""
    for line in reversed(lines):
        if _ERROR_LINE.match(line.strip()):
            return line.strip()
    return None
