"""The gate's verdict (``gate.json``) is written atomically (issue 15, item 9).

The probe: the gate rewrites the verdict of a model that already has one, and the write fails part-way (disk
full; here a real file-size limit, ``RLIMIT_FSIZE``, in the gate's own process). The previous verdict must
stay whole and readable (the daily chain reads it to skip stopped models), with no temporary file left.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

from test_training import DAYS, training_day

from pipeline import training
from pipeline.storage import write_partition

GATE = (
    "import sys; from pipeline import training; from pipeline.config import Settings; "
    "training.gate(sys.argv[1], Settings.from_env(home=sys.argv[2]), margin=0.05)"
)


def _limit_file_size() -> None:
    """In the child: files may not grow past 64 bytes (Python ignores SIGXFSZ, so writes fail with EFBIG)."""
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, hard))


def test_a_gate_verdict_write_that_fails_part_way_leaves_the_previous_verdict_whole(settings) -> None:
    for index, ds in enumerate(DAYS[:2]):
        write_partition(settings.layout.features("training", ds), training_day(index))
    training.train_full(DAYS[0], settings, window_days=1, l2_search="grid", l2_grid=[1.0])
    training.promote(DAYS[0], settings)
    training.train_daily(DAYS[1], settings)
    training.gate(DAYS[1], settings, margin=0.05)
    verdict_path = settings.layout.model_daily(DAYS[1]) / training.GATE_FILE
    before = verdict_path.read_text()
    assert len(before) > 64 and json.loads(before)["passed"] is True

    result = subprocess.run(
        [sys.executable, "-c", GATE, DAYS[1], str(settings.home)],
        preexec_fn=_limit_file_size, capture_output=True, text=True, timeout=300,
    )

    assert result.returncode != 0 and "File too large" in result.stderr, result.stderr
    assert "in gate" in result.stderr  # it failed writing the verdict, not earlier
    assert verdict_path.read_text() == before
    assert not training._gate_failed(verdict_path.parent)
    assert sorted(p.name for p in verdict_path.parent.iterdir() if p.name.startswith(".")) == []
