"""The rescoring engine is chosen the same way everywhere: the daily DAG's ``engine`` param reaches
``pipeline.scoring.rescore``, and ``jobrec rescore --engine`` does too."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

from pipeline.cli import rescore as rescore_cli

ROOT = Path(__file__).resolve().parent.parent


def test_daily_dag_passes_its_engine_param_to_rescore():
    tree = ast.parse((ROOT / "dags" / "jobrec_daily.py").read_text())
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and node.args
             and isinstance(node.args[0], ast.Constant) and node.args[0].value == "pipeline.scoring:rescore"]
    assert len(calls) == 1
    engine = {kw.arg: ast.unparse(kw.value) for kw in calls[0].keywords}.get("engine")
    assert engine == "params['engine']"


@pytest.mark.parametrize("argv, engine, processes", [([], "local", None), (["--engine", "spark"], "spark", None),
                                                     (["--processes", "3"], "local", 3)])
def test_cli_engine_and_processes_reach_rescore(monkeypatch, tmp_path, argv, engine, processes):
    seen = {}

    def fake_rescore(ds, settings, **kwargs):
        seen.update(kwargs)
        return {"ds": ds, "engine": kwargs["engine"], "model_version": "v", "members": 0, "members_on_fallback": 0,
                "pairs_scored": 0, "recommendations": 0, "seconds": 0.0}

    monkeypatch.setattr("pipeline.scoring.rescore", fake_rescore)
    parser = argparse.ArgumentParser()
    rescore_cli.register(parser.add_subparsers())
    args = parser.parse_args(["rescore", "--ds", "2026-01-02", "--home", str(tmp_path), *argv])
    assert args.func(args) == 0
    assert seen["engine"] == engine and seen["processes"] == processes


def test_unknown_engine_is_refused(settings):
    from pipeline.scoring import rescore

    with pytest.raises(ValueError, match="engine"):
        rescore("2026-01-02", settings, engine="dask")
