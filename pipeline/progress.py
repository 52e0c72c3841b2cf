"""Progress of long work: one helper for every step that can take more than a few seconds.

On a terminal (standard error is a TTY) it draws a ``tqdm`` bar with the rate and the ETA, and log lines of
other modules are printed above the bar instead of breaking it. Without a terminal (Airflow task logs,
``jobrec demo``'s log file, a redirected command) it writes log lines instead, at most one every
``log_seconds`` (default 10 s) and one at each ``log_fraction`` (default 10 %) of the total, whichever comes
first, plus a start and an end line::

    retrieve: 0/100,000 members
    retrieve: 12,544/100,000 members (12.5%), 1,254 members/s, ETA 1m10s
    ...
    retrieve: done 100,000/100,000 members in 1m20s (1,250 members/s)

Two ways to use it, both one line at the call site::

    for batch in track(batches, "publish", total=len(lists), unit="members", weight=len):
        ...

    with progress(len(members), "retrieve", unit="members", logger=log) as p:
        for block in blocks:
            ...
            p.update(len(block))

    with progress(len(lists), "publish", unit="members", logger=log) as p:
        publish_lists(..., on_batch=p.advance_to)      # a callback with a running total

``total`` may be ``None`` (unknown): the lines then carry the count and the rate, without a share or ETA.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

DEFAULT_LOG_SECONDS = 10.0
DEFAULT_LOG_FRACTION = 0.1


def on_terminal(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (default ``sys.stderr``) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _columns(stream: IO[str]) -> int:
    """The width of the terminal behind ``stream`` (0 when it has none or reports none)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return 0


def format_duration(seconds: float) -> str:
    """A short duration: ``45s``, ``3m05s``, ``2h07m``; ``?`` when not finite."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _count(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.1f}"


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:,.2f}"


class Progress:
    """Counts work done toward ``total`` and reports it as a tqdm bar or as log lines (see the module doc).

    Made by :func:`progress`; call :meth:`update` with each piece of work done. Not thread-safe: update it
    from one thread.
    """

    def __init__(
        self,
        total: float | None,
        what: str,
        *,
        unit: str = "items",
        logger: logging.Logger | None = None,
        bar: bool = False,
        stream: IO[str] | None = None,
        log_seconds: float = DEFAULT_LOG_SECONDS,
        log_fraction: float = DEFAULT_LOG_FRACTION,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if total is not None and total < 0:
            raise ValueError(f"total must be >= 0 or None; got {total}")
        if log_seconds <= 0 or not 0 < log_fraction <= 1:
            raise ValueError(f"log_seconds must be > 0 and log_fraction in (0, 1]; got {log_seconds}, {log_fraction}")
        self.total = total
        self.what = what
        self.unit = unit
        self.done: float = 0
        self._logger = logger or log
        self._log_seconds = log_seconds
        self._log_fraction = log_fraction
        self._clock = clock
        self._started = clock()
        self._last_line = self._started
        self._next_mark = self._mark_after(0)
        self._bar = None
        if bar:
            from tqdm.auto import tqdm

            stream = stream or sys.stderr
            # Follow the terminal's size; one that reports none (a bare pty) gets 100 × 24, since
            # tqdm would draw nothing at width 0.
            width = {"dynamic_ncols": True} if _columns(stream) > 0 else {"ncols": 100, "nrows": 24}
            self._bar = tqdm(total=total, desc=what, unit=f" {unit}", file=stream, mininterval=0.5, **width)
        else:
            total_text = f"/{_count(total)}" if total is not None else ""
            self._logger.info("%s: 0%s %s", what, total_text, unit)

    @property
    def elapsed(self) -> float:
        """Seconds since the work started."""
        return self._clock() - self._started

    def _mark_after(self, done: float) -> float:
        """The next count at which a ``log_fraction`` step of the total is crossed (inf without a total)."""
        if not self.total:
            return math.inf
        step = self.total * self._log_fraction
        return (math.floor(done / step + 1e-9) + 1) * step

    def update(self, n: float = 1) -> None:
        """Count ``n`` more units of work done (a bar redraw or, when due, one log line)."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = self._clock()
        if now - self._last_line >= self._log_seconds or self.done >= self._next_mark:
            if self.total is None or self.done < self.total:  # the end line says the rest
                self._logger.info("%s", self.line(now))
            self._last_line = now
            self._next_mark = self._mark_after(self.done)

    def advance_to(self, done: float) -> None:
        """Set the count of work done to ``done`` (for callbacks that report a running total, such as
        ``serving_store.publisher.publish_lists``'s ``on_batch``); never moves back."""
        if done > self.done:
            self.update(done - self.done)

    def line(self, now: float | None = None) -> str:
        """The progress line: done/total, share, rate and ETA (what the log shows)."""
        elapsed = (self._clock() if now is None else now) - self._started
        rate = self.done / elapsed if elapsed > 0 else math.inf
        parts = [f"{self.what}: {_count(self.done)}"]
        if self.total is not None:
            share = self.done / self.total if self.total else 1.0
            parts[0] += f"/{_count(self.total)} {self.unit} ({share:.1%})"
        else:
            parts[0] += f" {self.unit}"
        parts.append(f"{_rate(rate)} {self.unit}/s" if math.isfinite(rate) else f"? {self.unit}/s")
        if self.total is not None:
            eta = (self.total - self.done) / rate if rate > 0 else math.inf
            parts.append(f"ETA {format_duration(eta)}")
        return ", ".join(parts)

    def close(self, failed: bool = False) -> None:
        """Finish: close the bar, or log the end line (``done … in …``, or ``stopped at …`` when ``failed``)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            return
        elapsed = self.elapsed
        total_text = f"/{_count(self.total)}" if self.total is not None else ""
        if failed:
            self._logger.info("%s: stopped at %s%s %s after %s", self.what, _count(self.done), total_text,
                              self.unit, format_duration(elapsed))
            return
        rate = f", {_rate(self.done / elapsed)} {self.unit}/s" if elapsed > 0 else ""
        self._logger.info("%s: done %s%s %s in %s%s", self.what, _count(self.done), total_text, self.unit,
                          format_duration(elapsed), rate)


@contextlib.contextmanager
def progress(
    total: float | None,
    what: str,
    *,
    unit: str = "items",
    logger: logging.Logger | None = None,
    terminal: bool | None = None,
    stream: IO[str] | None = None,
    log_seconds: float = DEFAULT_LOG_SECONDS,
    log_fraction: float = DEFAULT_LOG_FRACTION,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Progress]:
    """Report the progress of ``total`` units of work called ``what`` while the block runs.

    Args:
        total: units of work to do (``None`` when unknown).
        what: the step's name, first on every line (``retrieve``, ``rescore``, …).
        unit: what a unit is (``members``, ``days``, …).
        logger: where the lines go without a terminal (default this module's logger); pass the step's own.
        terminal: draw a tqdm bar (True) or write log lines (False); default: whether ``stream`` (default
            ``sys.stderr``) is a TTY.
        stream: where the bar is drawn (default ``sys.stderr``).
        log_seconds, log_fraction: without a terminal, a line at most every ``log_seconds`` and at every
            ``log_fraction`` of ``total``, whichever comes first.
        clock: the time source (seconds; tests pass a fake one).

    Yields the :class:`Progress`; the end line says ``done`` on success and ``stopped at`` when the block
    raises (the exception propagates).
    """
    bar = on_terminal(stream) if terminal is None else terminal
    handle = Progress(
        total, what, unit=unit, logger=logger, bar=bar, stream=stream, log_seconds=log_seconds,
        log_fraction=log_fraction, clock=clock,
    )
    redirect = contextlib.nullcontext()
    if bar:
        from tqdm.contrib.logging import logging_redirect_tqdm

        redirect = logging_redirect_tqdm()  # other log lines print above the bar, not through it
    failed = True
    try:
        with redirect:
            yield handle
        failed = False
    finally:
        handle.close(failed=failed)


def track(
    iterable: Iterable[T],
    what: str,
    *,
    total: float | None = None,
    weight: Callable[[T], float] | None = None,
    **options: object,
) -> Iterator[T]:
    """Yield the items of ``iterable`` unchanged while reporting progress (see :func:`progress`).

    Each item counts 1, or ``weight(item)`` (e.g. ``len`` for batches counted in rows or members).
    ``total`` defaults to ``len(iterable)`` when it has one. ``options`` go to :func:`progress`.
    """
    if total is None and weight is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with progress(total, what, **options) as p:  # type: ignore[arg-type]
        for item in iterable:
            yield item
            p.update(weight(item) if weight is not None else 1)
