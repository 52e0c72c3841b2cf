"""Progress of Spark work: each running stage's tasks, through :mod:`pipeline.progress`.

A step that hands its work to Spark (retrieval and re-scoring with ``engine=spark``) is one long action: the
driver's own code has nothing to count while it waits. Spark's status tracker knows each active stage's
tasks done and total, so a poller thread reports them as the local engines report members: a tqdm bar per
stage on a terminal, and in task logs a line every ~10 s or 10 % with done/total, rate and ETA::

    rescore (Spark stage 7): 0/590 tasks
    rescore (Spark stage 7): 59/590 tasks (10.0%), 0.2 tasks/s, ETA 44m
    rescore (Spark stage 7): done 590/590 tasks in 49m (0.2 tasks/s)

Progress is counted in tasks, so it is only as fine as the stage's partitions: the steps that use it cut their
work into many partitions (tens to hundreds) for that reason, among others.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

from pipeline.progress import DEFAULT_LOG_SECONDS, Progress, on_terminal

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0


class SparkStageProgress:
    """Polls ``spark``'s status tracker every ``poll_seconds`` and keeps one :class:`Progress` per active
    stage (opened when the stage is first seen, closed when it is no longer active). Every stage that runs
    while it polls is reported, so use it in a process whose Spark work is the step's (a pipeline task)."""

    def __init__(self, spark, what: str, *, logger: logging.Logger | None = None, terminal: bool | None = None,
                 poll_seconds: float = POLL_SECONDS, log_seconds: float = DEFAULT_LOG_SECONDS) -> None:
        self.tracker = spark.sparkContext.statusTracker()
        self.what = what
        self.logger = logger or log
        self.bar = on_terminal() if terminal is None else terminal
        self.poll_seconds = poll_seconds
        self.log_seconds = log_seconds
        self.stages: dict[int, Progress] = {}
        self.finished: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"spark-progress-{what}", daemon=True)

    def start(self) -> SparkStageProgress:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling; one last poll closes the stages that ended meanwhile, and any still open is closed."""
        self._stop.set()
        self._thread.join()
        self._poll_quietly()
        for stage in list(self.stages):
            self._close(stage)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self._poll_quietly()

    def _poll_quietly(self) -> None:
        """:meth:`poll`, logging a failure instead of raising it: a status query failing (the session going
        away) must neither end the step nor, in :meth:`stop`, replace the error the step itself raised."""
        try:
            self.poll()
        except Exception:
            self.logger.debug("Spark progress poll failed", exc_info=True)

    def poll(self) -> None:
        """Open a :class:`Progress` for each newly active stage, advance every open one, close ended ones."""
        active = set(self.tracker.getActiveStageIds())
        for stage in sorted(active | set(self.stages)):
            info = self.tracker.getStageInfo(stage)
            if info is None:
                continue
            if stage not in self.stages:
                if stage not in active:
                    continue
                self.stages[stage] = Progress(
                    info.numTasks, f"{self.what} (Spark stage {stage})", unit="tasks", logger=self.logger,
                    bar=self.bar, log_seconds=self.log_seconds,
                )
            self.stages[stage].advance_to(info.numCompletedTasks)
        for stage in [s for s in self.stages if s not in active]:
            self._close(stage)

    def _close(self, stage: int) -> None:
        handle = self.stages.pop(stage)
        handle.close(failed=handle.total is not None and handle.done < handle.total)
        self.finished.append(stage)


@contextlib.contextmanager
def spark_progress(spark, what: str, **options) -> Iterator[SparkStageProgress]:
    """Report the progress of the Spark stages that run while the block runs (see :class:`SparkStageProgress`;
    ``options`` go to it)."""
    reporter = SparkStageProgress(spark, what, **options).start()
    try:
        yield reporter
    finally:
        reporter.stop()
