"""Screenshots of the run report pages (issue 17): the day page and the page across days, in headless Chromium.

By default it runs a small synthetic run first, through the real DAGs (Airflow ``dag.test()``, local Spark,
the embedded Redis, like ``make demo`` but smaller): a marketplace of ``--members`` members and ``--jobs``
jobs over ``--days`` days under ``--work`` (a fresh folder), the full retrain on day 1 and the daily DAG on
each following day; the run_report task of each run writes the pages. With ``--home DIR`` it only
re-renders the pages of an existing ``JOBREC_HOME`` (e.g. ``./data`` after ``make demo``) and takes the
screenshots. ``--work DIR`` keeps the synthetic run (its embedded Redis keeps running: ``make clean
JOBREC_HOME=DIR`` stops it); the default temporary folder is removed, its Redis stopped.

    .venv/bin/python bench/report_screenshots.py                      # ~5 min on 2 cores
    .venv/bin/python bench/report_screenshots.py --home data          # pages of an existing run

Writes ``<out>/report_day.png`` (the newest day's page) and ``<out>/report_days.png`` (``reports/index.html``),
full-page, 1100 px wide, and prints any console error the pages raised (there should be none). Needs Debian's
``chromium`` (``apt-get install -y chromium``) and the ``playwright`` package (test extras; no browser
download: Playwright drives the system Chromium over the DevTools protocol).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def synthetic_run(home: Path, *, members: int, jobs: int, days: int, start: str, seed: int) -> None:
    """Generate a marketplace under ``home`` and run the full retrain (day 1) and the daily DAG (the rest)."""
    os.environ["JOBREC_HOME"] = str(home)
    os.environ.setdefault("JOBREC_SPARK_MASTER", "local[2]")
    os.environ.setdefault("JOBREC_SPARK_SHUFFLE_PARTITIONS", "4")
    from pipeline.airflow_env import configure_airflow, run_dag
    from pipeline.config import Settings
    from pipeline.storage import shift_ds
    from pipeline.synth import generate_marketplace

    settings = Settings.from_env()
    generate_marketplace(home, members=members, jobs=jobs, days=days, start=start, seed=seed,
                         impressions_per_day=12 * members)
    configure_airflow(settings)
    runs = [("jobrec_full_retrain", start, {"window_days": 1, "l2_grid": [1.0, 10.0]})]
    runs += [("jobrec_daily", shift_ds(start, d), {"top_n": 20, "candidates_k": 200, "gate_margin": 0.05})
             for d in range(1, days)]
    for dag_id, ds, conf in runs:
        started = time.perf_counter()
        result = run_dag(dag_id, ds, conf)
        print(f"{dag_id} {ds}: {result['state']} in {time.perf_counter() - started:.0f}s", flush=True)
        if result["state"] != "success":
            raise SystemExit(f"{dag_id} {ds} failed: {result}")


def screenshot(page_path: Path, png: Path, chromium: str) -> list[str]:
    """Full-page PNG of ``page_path`` (a file); returns the console errors, page errors and failed requests."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.goto(page_path.as_uri(), wait_until="load")
            png.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(png), full_page=True)
        finally:
            browser.close()
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, help="an existing JOBREC_HOME with run reports: only re-render and shoot")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the synthetic run (default: a new temporary folder, removed afterwards)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="where the PNGs go")
    parser.add_argument("--members", type=int, default=400)
    parser.add_argument("--jobs", type=int, default=150)
    parser.add_argument("--days", type=int, default=5, help="day 1 trains the full model, the rest run daily")
    parser.add_argument("--start", default="2024-05-01")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("Debian's chromium is needed: apt-get install -y chromium", file=sys.stderr)
        return 2

    scratch = None
    if args.home is not None:
        home = args.home.resolve()
    else:
        home = args.work.resolve() if args.work else Path(scratch := tempfile.mkdtemp(prefix="jobrec-report-"))
        synthetic_run(home, members=args.members, jobs=args.jobs, days=args.days, start=args.start, seed=args.seed)
    try:
        from pipeline.config import Settings
        from pipeline.report_page import day_page_path, index_page_path, load_days, write_pages

        settings = Settings.from_env(home=home)
        days = load_days(settings)
        if not days:
            print(f"no run reports under {settings.layout.reports_dir()}", file=sys.stderr)
            return 2
        newest = next(d for d in reversed(days) if "run" in days[d]) if any("run" in r for r in days.values()) \
            else next(reversed(days))
        write_pages(newest, settings)  # the pages as this version of the code draws them
        failures = 0
        for page, png in ((day_page_path(newest, settings), args.out / "report_day.png"),
                          (index_page_path(settings), args.out / "report_days.png")):
            errors = screenshot(page, png, chromium)
            failures += len(errors)
            print(f"{png}  ({page}; {len(errors)} console errors)")
            for error in errors:
                print(f"  {error}")
        return 1 if failures else 0
    finally:
        if scratch is not None:  # the run's embedded Redis lives in the scratch folder: stop it first
            from serving_store.connection import stop_embedded

            stop_embedded(Path(scratch) / "redis", save=False)
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
