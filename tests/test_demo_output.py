"""``jobrec demo`` output: logs go to a file, the terminal gets one line per task, a failure shows its log tail."""

from __future__ import annotations

import datetime as dt
import io
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

from pipeline.cli.demo_output import (
    DAG_TEST_LOGGER,
    RunProgress,
    TaskRow,
    demo_log_path,
    error_message,
    task_log_tail,
)

ROUTING = textwrap.dedent(
    """
    import logging, os, subprocess, sys
    from pathlib import Path
    from pipeline.cli.demo_output import logs_to_file

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")  # as `jobrec` does
    path = Path(sys.argv[1])
    with logs_to_file(path) as (out, err):
        print("to-terminal", file=out)
        print("to-terminal-err", file=err)
        print("python-print")
        print("python-stderr", file=sys.stderr)
        logging.getLogger("airflow.task").warning("a-log-record")
        os.write(1, b"fd1-write\\n")
        os.write(2, b"fd2-write\\n")
        subprocess.run([sys.executable, "-c", "import sys; print('child-out'); print('child-err', file=sys.stderr)"])
    logging.getLogger("jobrec.spark.jvm").warning("late-record")  # after the block: still the file
    print("after-block")
    """
)


def test_logs_to_file_sends_everything_but_the_progress_view_to_the_file(tmp_path: Path):
    path = tmp_path / "logs" / "demo.log"
    result = subprocess.run([sys.executable, "-c", ROUTING, str(path)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["to-terminal", "after-block"]
    assert result.stderr.splitlines() == ["to-terminal-err"]
    logged = path.read_text()
    for line in ("python-print", "python-stderr", "WARNING airflow.task: a-log-record", "fd1-write", "fd2-write",
                 "child-out", "child-err", "late-record"):
        assert line in logged
    assert "to-terminal" not in logged


def test_demo_log_path():
    assert demo_log_path(Path("/data/logs"), dt.datetime(2026, 3, 1, 6, 5, 4)) == Path("/data/logs/demo-20260301-060504.log")


def _row(task_id: str, state: str, seconds: float | None, tries: int = 1) -> TaskRow:
    return TaskRow(task_id=task_id, map_index=-1, state=state, seconds=seconds, tries=tries)


def test_run_progress_prints_each_task_as_it_ends_then_the_ones_that_never_ran():
    # What the metadata DB holds at the end of a run whose gate failed (the lookup dag.test() would query).
    final = [_row("wait_for_raw_data", "success", 0.05), _row("build_features", "success", 21.94),
             _row("gate", "failed", 0.7, tries=2), _row("publish", "upstream_failed", None)]
    lookups = []

    def lookup(dag_id, *, run_id=None, ds=None, task_id=None):
        lookups.append((dag_id, run_id, ds, task_id))
        return [r for r in final if task_id is None or r.task_id == task_id]

    out = io.StringIO()
    dag_log = logging.getLogger(DAG_TEST_LOGGER)
    with RunProgress(out, "jobrec_daily", "2024-01-02", lookup=lookup) as progress:
        for task_id in ("wait_for_raw_data", "build_features", "gate"):  # the records dag.test() logs
            dag_log.info("[DAG TEST] starting task_id=%s map_index=%s", task_id, -1)
            dag_log.info("[DAG TEST] end task task_id=%s map_index=%s", task_id, -1)
    dag_log.info("[DAG TEST] end task task_id=%s map_index=%s", "publish", -1)  # handler removed: no line
    rows = progress.finish("manual__1")
    assert [r.task_id for r in rows] == ["wait_for_raw_data", "build_features", "gate", "publish"]
    assert out.getvalue().splitlines() == [
        "jobrec_daily  ds=2024-01-02",
        "    wait_for_raw_data        success             0.1s",
        "    build_features           success            21.9s",
        "    gate                     failed              0.7s  (try 2)",
        "    publish                  upstream_failed       -",
    ]
    assert lookups[0] == ("jobrec_daily", None, "2024-01-02", "wait_for_raw_data")
    assert lookups[-1] == ("jobrec_daily", "manual__1", None, None)


LOG = """\
2026-12-02T06:10:14Z [info     ] [DAG TEST] starting task_id=gate map_index=-1 [airflow.sdk.definitions.dag]
first try of gate
2026-12-02T06:10:15Z [info     ] [DAG TEST] end task task_id=gate map_index=-1 [airflow.sdk.definitions.dag]
2026-12-02T06:10:16Z [info     ] [DAG TEST] starting task_id=gate_extra map_index=-1 [airflow.sdk.definitions.dag]
not gate
2026-12-02T06:10:17Z [info     ] [DAG TEST] end task task_id=gate_extra map_index=-1 [airflow.sdk.definitions.dag]
2026-12-02T06:10:18Z [info     ] [DAG TEST] starting task_id=gate map_index=-1 [airflow.sdk.definitions.dag]
\x1b[31mTraceback (most recent call last):\x1b[0m
pipeline.training.GateFailedError: holdout AUC 0.41 is more than 0.05 below 0.52
2026-12-02T06:10:19Z [error    ] Task failed with exception [task] """ + "x" * 400 + """
2026-12-02T06:10:19Z [info     ] [DAG TEST] end task task_id=gate map_index=-1 [airflow.sdk.definitions.dag]
2026-12-02T06:10:20Z [info     ] after the task
"""


def test_task_log_tail_is_the_last_try_of_that_task_without_airflow_bookkeeping(tmp_path: Path):
    path = tmp_path / "demo.log"
    path.write_text("an earlier run\n" + LOG)
    tail = task_log_tail(path, "gate", since=len("an earlier run\n"), lines=3, width=80)
    assert tail[0] == "Traceback (most recent call last):"  # colour codes stripped
    assert tail[1].startswith("pipeline.training.GateFailedError: holdout AUC 0.41")
    assert tail[2].startswith("2026-12-02T06:10:19Z [error    ] Task failed") and tail[2].endswith("…")
    assert len(tail[2]) == 80
    assert task_log_tail(path, "gate", lines=None, width=80) == tail  # the markers are left out
    assert error_message(tail) == "pipeline.training.GateFailedError: holdout AUC 0.41 is more than 0.05 below 0.52"
    assert error_message(["nothing went wrong"]) is None
    # An unknown task (no markers): the end of the file.
    assert task_log_tail(path, "no_such_task", lines=1) == ["2026-12-02T06:10:20Z [info     ] after the task"]
