"""Settings are read from the environment in one place and paths come from ``Layout``.

Source checks (``ast``, nothing imported): no ``pipeline`` module but ``pipeline/config.py`` reads a
``JOBREC_*``/``REDIS_URL`` variable from ``os.environ``, and none but ``pipeline/storage.py`` builds a path by
joining onto ``<something>.home``. Then the settings that moved into ``Settings`` are read and used.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pipeline.config import Settings

ROOT = Path(__file__).resolve().parent.parent
SETTING_VARIABLES = ("JOBREC_", "REDIS_URL")


def _sources(*packages: str) -> list[Path]:
    return [p for package in packages for p in sorted((ROOT / package).rglob("*.py")) if "__pycache__" not in p.parts]


def _dotted(node: ast.AST) -> str:
    """``os.environ`` for the expression ``os.environ`` (empty for anything that is not a dotted name)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


def _setting_name(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(SETTING_VARIABLES):
        return node.value
    return None


def environment_reads(path: Path) -> list[str]:
    """``file:line: NAME`` for each read of a settings variable from the process environment in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        name = None
        if isinstance(node, ast.Call) and node.args:
            func = _dotted(node.func)
            if func.endswith("environ.get") or func in ("os.getenv", "getenv"):
                name = _setting_name(node.args[0])
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _dotted(node.value).endswith("environ"):
            name = _setting_name(node.slice)
        elif isinstance(node, ast.Compare) and any(_dotted(c).endswith("environ") for c in node.comparators):
            name = _setting_name(node.left)
        if name:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    return found


def home_paths(path: Path) -> list[str]:
    """``file:line`` of each ``<x>.home / ...`` (or ``Path(<x>.home) / ...``) in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            left = node.left
            if isinstance(left, ast.Call) and _dotted(left.func) == "Path" and left.args:
                left = left.args[0]
            if isinstance(left, ast.Attribute) and left.attr == "home":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_only_config_reads_settings_from_the_environment() -> None:
    config = ROOT / "pipeline" / "config.py"
    assert environment_reads(config), "the scan must see config.py's own reads"
    wrong = [r for p in _sources("pipeline", "dags") if p != config for r in environment_reads(p)]
    assert not wrong, "read these through pipeline.config.Settings:\n" + "\n".join(wrong)


def test_only_the_layout_builds_paths_under_the_home() -> None:
    storage = ROOT / "pipeline" / "storage.py"
    assert home_paths(storage), "the scan must see Layout's own paths"
    wrong = [r for p in _sources("pipeline", "dags") if p != storage for r in home_paths(p)]
    assert not wrong, "add a Layout method (pipeline/storage.py) for these paths:\n" + "\n".join(wrong)


def test_settings_read_the_redis_prefix_spark_ui_and_full_retrain_cron(monkeypatch, tmp_path) -> None:
    from pipeline.publishing import serving_keys

    for name in ("JOBREC_REDIS_PREFIX", "JOBREC_SPARK_UI", "JOBREC_FULL_RETRAIN_CRON"):
        monkeypatch.delenv(name, raising=False)
    defaults = Settings.from_env(home=tmp_path)
    assert (defaults.redis_prefix, defaults.spark_ui, defaults.full_retrain_cron) == (None, False, "0 0 * * 0")
    assert serving_keys(defaults).current == serving_keys(Settings.from_env(home=tmp_path, redis_prefix="jobrec")).current

    monkeypatch.setenv("JOBREC_REDIS_PREFIX", "staging")
    monkeypatch.setenv("JOBREC_SPARK_UI", "yes")
    monkeypatch.setenv("JOBREC_FULL_RETRAIN_CRON", "0 3 * * 6")
    settings = Settings.from_env(home=tmp_path)
    assert (settings.redis_prefix, settings.spark_ui, settings.full_retrain_cron) == ("staging", True, "0 3 * * 6")
    assert serving_keys(settings).current.startswith("staging:")

    monkeypatch.setenv("JOBREC_SPARK_UI", "sometimes")
    with pytest.raises(ValueError, match="JOBREC_SPARK_UI must be true or false"):
        Settings.from_env(home=tmp_path)


def test_layout_names_the_paths_that_were_built_by_hand(tmp_path) -> None:
    layout = Settings.from_env(home=tmp_path).layout
    home = layout.home
    assert layout.validated("jobs", "2026-01-02") == home / "validated" / "jobs" / "ds=2026-01-02"
    assert layout.model_pointer() == home / "models" / "current.json"
    assert layout.model_full("full-2026-01-02").parent == layout.full_models_dir()
    assert layout.model_daily("2026-01-02").parent == layout.daily_models_dir()
    assert layout.field_weights() == home / "models" / "lr_cosine" / "weights.json"
    assert layout.truth_summary() == home / "truth" / "summary.json"
    assert layout.raw("impressions", "2026-01-02").parent == layout.raw_dir("impressions")
    assert layout.quarantine("jobs", "2026-01-02").parent.parent == layout.quarantine_dir()
    assert (layout.airflow_home(), layout.logs_dir()) == (home / "airflow", home / "logs")
