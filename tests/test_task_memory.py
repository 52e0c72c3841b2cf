"""Per-task peak memory (pipeline.memory.PeakMemory), as the DAG wrapper records it for the run report."""

from __future__ import annotations

import multiprocessing
import time

import numpy as np

from pipeline.memory import PeakMemory

MIB = 1024 * 1024


def _hold(mib: int, seconds: float) -> None:
    block = np.ones(mib * MIB // 8)
    time.sleep(seconds)
    del block


def _rss_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _pss_mib() -> float:
    for line in open("/proc/self/smaps_rollup"):
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no Pss")


def test_peak_rss_is_this_tasks_peak_not_the_processes():
    _hold(400, 0)  # an earlier, larger peak of the same process (the suite's process holds more besides)
    before = _rss_mib()
    with PeakMemory() as memory:
        _hold(120, 0)
    assert before + 100 <= memory.result["peak_rss_mib"] < before + 300
    assert memory.result["peak_memory_mib"] >= memory.result["peak_rss_mib"]


def test_peak_memory_counts_a_forked_workers_own_allocations():
    # The reference is this process's proportional share before the fork, not its RSS: in the suite's process
    # many pages are shared with other processes (libraries, earlier forks), so PSS sits well below RSS.
    before = _pss_mib()
    with PeakMemory(sample_seconds=0.05) as memory:
        worker = multiprocessing.get_context("fork").Process(target=_hold, args=(250, 1.0))
        worker.start()
        worker.join()
    assert worker.exitcode == 0
    assert memory.result["peak_memory_mib"] >= before + 200


def test_the_run_report_keeps_each_tasks_peak_memory(tmp_path):
    from pipeline.config import Settings
    from pipeline.report import write_run_report

    settings = Settings.from_env(home=tmp_path)
    results = {"retrieve_candidates": {"seconds": 1.0, "peak_memory_mib": 812.5, "peak_rss_mib": 700.0},
               "rescore": {"seconds": 2.0, "peak_memory_mib": 950.0}}
    report_path = write_run_report("2026-01-02", settings, results, name="full_retrain")["path"]
    import json

    report = json.loads(open(report_path).read())
    assert report["peak_memory_mib"] == {"retrieve_candidates": 812.5, "rescore": 950.0}
