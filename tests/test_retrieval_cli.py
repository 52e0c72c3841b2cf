"""``jobrec index build|update|search`` and ``jobrec retrieve`` on precomputed inputs and on the layout."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.cli import main
from pipeline.storage import read_partition, write_partition
from retrieval import batch, synthetic

WEIGHTS = {"title": 1.0, "skills": 1.0, "industry": 0.5, "function": 0.5, "seniority": 0.5, "region": 0.5}


def test_cli_builds_updates_searches_and_retrieves_from_precomputed_inputs(tmp_path, capsys):
    jobs = synthetic.job_profiles(200, seed=31)
    members = synthetic.member_profiles(12, seed=32)
    pq.write_table(jobs.slice(0, 150), tmp_path / "jobs_day1.parquet")
    pq.write_table(jobs, tmp_path / "jobs.parquet")
    pq.write_table(members, tmp_path / "members.parquet")
    (tmp_path / "weights.json").write_text(json.dumps(WEIGHTS))

    assert main(["index", "build", "--jobs", str(tmp_path / "jobs_day1.parquet"), "--index-dir", str(tmp_path / "ix1")]) == 0
    assert main([
        "index", "update", "--jobs", str(tmp_path / "jobs.parquet"), "--from-index", str(tmp_path / "ix1"),
        "--index-dir", str(tmp_path / "ix2"),
    ]) == 0
    capsys.readouterr()
    skill = members["skills"][0].as_py()[0]["term"]
    assert main(["index", "search", f"skills:{skill}", "--index-dir", str(tmp_path / "ix2"), "--k", "3"]) == 0
    assert "job_id=" in capsys.readouterr().out

    assert main([
        "retrieve", "--members", str(tmp_path / "members.parquet"), "--index-dir", str(tmp_path / "ix2"),
        "--weights", str(tmp_path / "weights.json"), "--k", "20", "--out", str(tmp_path / "cands"),
        "--processes", "1",
    ]) == 0
    got = read_partition(tmp_path / "cands")
    matrix = batch.JobMatrix.from_profiles(jobs)
    member_ids, queries = batch.member_queries(members, matrix, WEIGHTS)
    assert got.equals(pa.Table.from_batches(batch.retrieve(matrix, queries, member_ids, 20)))


def test_cli_reports_missing_inputs_with_what_to_pass(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JOBREC_HOME", str(tmp_path))
    assert main(["retrieve", "--members", str(tmp_path / "m.parquet")]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["index", "search", "python", "--ds", "2026-01-01"]) == 2
    assert "jobrec index build" in capsys.readouterr().err
    write_partition(tmp_path / "x", pa.table({"a": [1]}))
    assert main(["index", "build", "--jobs", str(tmp_path / "x"), "--index-dir", str(tmp_path / "ix")]) == 2
    assert "job_id" in capsys.readouterr().err
