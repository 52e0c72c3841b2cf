"""pipeline.progress: log lines without a terminal (done/total, rate, ETA; every ~10 s or 10 %), a tqdm bar on
a terminal, and the one-line wraps the steps use."""

from __future__ import annotations

import io
import logging

import pytest

from pipeline.progress import format_duration, on_terminal, progress, track


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog, name: str = "test.progress") -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == name]


def test_log_lines_without_terminal_carry_done_total_rate_and_eta(caplog):
    caplog.set_level(logging.INFO, logger="test.progress")
    clock, logger = FakeClock(), logging.getLogger("test.progress")
    with progress(1000, "retrieve", unit="members", logger=logger, terminal=False, clock=clock) as p:
        for _ in range(4):
            clock.now += 5.0
            p.update(25)  # 25 members per 5 s: 5 members/s; 10 s since the last line at 50
    lines = _lines(caplog)
    assert lines[0] == "retrieve: 0/1,000 members"
    # 10 s after the start, 50 done: rate 5/s, 950 left → ETA 190 s
    assert lines[1] == "retrieve: 50/1,000 members (5.0%), 5.00 members/s, ETA 3m10s"
    assert lines[2] == "retrieve: 100/1,000 members (10.0%), 5.00 members/s, ETA 3m00s"
    assert lines[-1] == "retrieve: done 100/1,000 members in 20s, 5.00 members/s"
    assert len(lines) == 4


def test_log_lines_every_tenth_of_the_total_when_work_is_fast(caplog):
    caplog.set_level(logging.INFO, logger="test.progress")
    clock, logger = FakeClock(), logging.getLogger("test.progress")
    with progress(200, "rescore", unit="members", logger=logger, terminal=False, clock=clock) as p:
        for _ in range(200):
            clock.now += 0.01  # 2 s in all: far below 10 s, so only the 10 % marks log
            p.update(1)
    lines = _lines(caplog)
    shares = [line.split("(")[1].split(")")[0] for line in lines[1:-1]]
    assert shares == [f"{10 * i}.0%" for i in range(1, 10)]
    assert lines[-1].startswith("rescore: done 200/200 members in 2s, 100 members/s")
    assert "ETA" in lines[5]


def test_log_lines_every_ten_seconds_when_work_is_slow(caplog):
    caplog.set_level(logging.INFO, logger="test.progress")
    clock, logger = FakeClock(), logging.getLogger("test.progress")
    with progress(10_000, "features", unit="rows", logger=logger, terminal=False, clock=clock) as p:
        for _ in range(30):
            clock.now += 2.0
            p.update(10)  # 300 rows in 60 s: never near 10 %
    middle = _lines(caplog)[1:-1]
    assert len(middle) == 6  # every 10 s of 60 s
    assert middle[0] == "features: 50/10,000 rows (0.5%), 5.00 rows/s, ETA 33m10s"


def test_unknown_total_logs_count_and_rate_without_eta(caplog):
    caplog.set_level(logging.INFO, logger="test.progress")
    clock, logger = FakeClock(), logging.getLogger("test.progress")
    with progress(None, "publish", unit="members", logger=logger, terminal=False, clock=clock) as p:
        clock.now += 10.0
        p.update(500)
    lines = _lines(caplog)
    assert lines == ["publish: 0 members", "publish: 500 members, 50 members/s",
                     "publish: done 500 members in 10s, 50 members/s"]


def test_failed_block_logs_where_it_stopped_and_reraises(caplog):
    caplog.set_level(logging.INFO, logger="test.progress")
    clock, logger = FakeClock(), logging.getLogger("test.progress")
    with pytest.raises(RuntimeError, match="boom"):
        with progress(10, "synth", unit="days", logger=logger, terminal=False, clock=clock) as p:
            p.update(3)
            clock.now += 4
            raise RuntimeError("boom")
    assert _lines(caplog)[-1] == "synth: stopped at 3/10 days after 4s"


def test_terminal_draws_a_tqdm_bar_with_rate_and_eta_and_no_log_lines(caplog):
    caplog.set_level(logging.INFO, logger="test.progress")
    stream = io.StringIO()
    with progress(10, "retrieve", unit="members", logger=logging.getLogger("test.progress"),
                  terminal=True, stream=stream) as p:
        for _ in range(5):
            p.update(1)
        p._bar.refresh()  # the bar redraws at most every 0.5 s; force one mid-way
        p.update(5)
    text = stream.getvalue()
    assert "retrieve:" in text and "5/10" in text and "10/10" in text
    assert "members/s" in text  # rate
    assert "00:00<00:00" in text  # tqdm's "[elapsed<ETA, rate]" once the rate is known
    assert _lines(caplog) == []


def test_terminal_is_detected_from_the_stream():
    assert on_terminal(io.StringIO()) is False

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert on_terminal(Tty()) is True


def test_track_yields_every_item_and_counts_by_weight(caplog):
    caplog.set_level(logging.INFO, logger="test.progress")
    batches = [[1, 2, 3], [4, 5], [6]]
    out = list(track(batches, "write", total=6, weight=len, unit="rows",
                     logger=logging.getLogger("test.progress"), terminal=False))
    assert out == batches
    assert _lines(caplog)[-1].startswith("write: done 6/6 rows in ")


def test_track_takes_the_total_from_len():
    handle_lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            handle_lines.append(record.getMessage())

    logger = logging.getLogger("test.progress.len")
    logger.addHandler(Collect())
    logger.setLevel(logging.INFO)
    assert list(track(range(4), "days", unit="days", logger=logger, terminal=False)) == [0, 1, 2, 3]
    assert handle_lines[0] == "days: 0/4 days"


def test_advance_to_takes_a_running_total_and_never_moves_back(caplog):
    caplog.set_level(logging.INFO, logger="test.progress")
    clock, logger = FakeClock(), logging.getLogger("test.progress")
    with progress(100, "publish", unit="members", logger=logger, terminal=False, clock=clock) as p:
        for total in (30, 60, 50, 100):
            clock.now += 1
            p.advance_to(total)
        assert p.done == 100
    lines = _lines(caplog)
    assert lines[1] == "publish: 30/100 members (30.0%), 30 members/s, ETA 2s"
    assert lines[-1] == "publish: done 100/100 members in 4s, 25 members/s"


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (59.4, "59s"), (185, "3m05s"), (7620, "2h07m"),
                                               (float("inf"), "?")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
