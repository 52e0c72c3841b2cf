"""The fault-injection soak (bench/soak.py, issue 15) at a few days: real Spark, a real redis-server killed
and restarted by the soak, subprocesses SIGKILLed mid-task; no invariant may break.

Runs the soak as its own process (it starts and stops its own Spark session and Redis), with a fixed seed
and a small fault set, so the test covers the soak's machinery and the pipeline's answers to those faults
in about a minute and a half; the 30-day soak over every fault kind is ``make soak``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
def test_a_short_soak_survives_its_faults_without_violations(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    faults = ["kill_rescore", "redis_kill_publish_no_persistence"]
    proc = subprocess.run(
        [
            sys.executable, str(REPO / "bench" / "soak.py"), "--days", "2", "--seed", "3",
            "--members", "300", "--jobs", "120", "--impressions", "3000",
            "--faults", ",".join(faults), "--workdir", str(tmp_path / "work"), "--out", str(out),
        ],
        capture_output=True, text=True, timeout=280, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = json.loads(out.read_text())
    assert summary["violations"] == 0, summary["violation_details"]
    assert summary["lost_rows"] == 0
    assert summary["faults_injected"] == 2 and summary["faults_survived"] == 2
    assert set(summary["faults_by_kind"]) == set(faults)
    assert summary["rows"]["quarantined"] > 0  # the bad rows the soak adds were quarantined, not dropped
    assert summary["lookups"]["end_of_day_lookups"] > 0
    assert summary["redis_kills"] == 1
    assert [f for f in summary["findings"] if f["kind"] == "soak_error"] == []
    assert "invariant violations: 0" in proc.stdout


def _soak_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("jobrec_soak", REPO / "bench" / "soak.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_soaks_content_digest_ignores_row_order_and_chunking_but_not_values() -> None:
    import pyarrow as pa

    soak = _soak_module()
    table = pa.table({"member_id": [3, 1, 2], "score": [0.5, 0.25, 0.125], "skills": [["a"], [], ["b", "c"]]})
    shuffled = pa.concat_tables([table.slice(2), table.slice(0, 2)]).replace_schema_metadata({"x": "y"})
    assert soak.table_digest(table) == soak.table_digest(shuffled)
    changed = table.set_column(1, "score", pa.array([0.5, 0.25, 0.1250001]))
    assert soak.table_digest(changed) != soak.table_digest(table)
    nested = table.set_column(2, "skills", pa.array([["a"], [], ["c", "b"]]))
    assert soak.table_digest(nested) != soak.table_digest(table)


def test_the_soaks_list_check_catches_a_cut_a_foreign_and_a_wrong_fallback_list() -> None:
    import numpy as np

    from serving_store.lookup import Recommendations
    from serving_store.publisher import RecommendationLists

    soak = _soak_module()
    lists = RecommendationLists.from_columns([1, 1, 1, 2, 2], [1, 2, 3, 1, 2], [10, 11, 12, 20, 21],
                                             [0.9, 0.8, 0.7, 0.6, 0.5])
    expected = soak.Expected("2024-01-02", lists)

    def rec(member, jobs, scores, source="member"):
        return Recommendations(member, jobs, scores, "v", "2024-01-02", "m", source)

    assert expected.mismatch(rec(1, [10, 11, 12], [0.9, 0.8, 0.7])) is None
    assert "incomplete" in expected.mismatch(rec(1, [10, 11], [0.9, 0.8]))
    assert "differs" in expected.mismatch(rec(1, [20, 21, 12], [0.9, 0.8, 0.7]))
    assert "source" in expected.mismatch(rec(1, [10, 11, 12], [0.9, 0.8, 0.7], source="fallback"))
    fb_jobs, fb_scores = expected.fallback
    assert expected.mismatch(rec(99, list(fb_jobs), list(np.asarray(fb_scores, float)), "fallback")) is None
    assert expected.mismatch(rec(99, list(fb_jobs[:1]), list(fb_scores[:1]), "fallback")) is not None
