"""The run report pages: ``reports/ds=<ds>/index.html`` and ``reports/index.html``, written by the run_report
task from the run reports, rendered in headless Chromium with every plot present and no console error, and
served read-only by ``jobrec serve`` at ``/reports/``.

The task results below have the shapes the pipeline's tasks return (validate_day, gate, retrieve_candidates,
rescore, publish); the recommendations partition is a small Parquet file like rescore's.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipeline.config import Settings
from pipeline.report import summarize_recommendations, write_run_report
from pipeline.report_page import DAY_FIGURES, FULL_FIGURES, INDEX_FIGURES, render_day_page, render_index_page
from pipeline.retrieval_tasks import candidates_per_member
from pipeline.storage import write_partition

DAYS = ("2024-03-01", "2024-03-02", "2024-03-03")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def daily_results(ds: str, day: int) -> dict:
    """Task results of one daily run, as the pipeline's tasks return them (``seconds`` added by the DAG)."""
    auc = 0.71 + 0.01 * day
    return {
        "validate_raw": {
            "ds": ds, "ok": True, "max_bad_fraction": 0.01, "rows": 5400 + day, "quarantined": 3 + day,
            "tables": {
                "members": {"rows": 300, "clean": 300, "quarantined": 0, "bad_fraction": 0.0, "reasons": {}},
                "jobs": {"rows": 100, "clean": 99, "quarantined": 1, "bad_fraction": 0.01,
                         "reasons": {"expired before posted": 1}},
                "impressions": {"rows": 4000 + day, "clean": 3998, "quarantined": 2 + day,
                                "bad_fraction": 0.0005, "reasons": {"unknown member": 2 + day}},
                "applies": {"rows": 1000, "clean": 1000, "quarantined": 0, "bad_fraction": 0.0, "reasons": {}},
            },
            "seconds": 3.2,
        },
        "build_features": {"ds": ds, "members": 300, "jobs": 99, "training_rows": 3998, "positives": 120,
                           "seconds": 21.5},
        "retrain": {"rows": 3600, "holdout_rows": 398, "holdout_auc": auc, "parent_holdout_auc": auc - 0.004,
                    "parent": "full-2024-02-29", "mode": "incremental", "seconds": 6.1},
        "gate": {"holdout_auc": auc, "parent_holdout_auc": auc - 0.004, "auc_delta": 0.004, "coverage": 0.93,
                 "margin": 0.05, "min_coverage": 0.5, "holdout_rows": 398, "parent": "full-2024-02-29",
                 "seconds": 1.2},
        "update_index": {"ds": ds, "mode": "rebuild", "documents": 99, "seconds": 0.8},
        "retrieve_candidates": {
            "ds": ds, "k": 50, "members": 300, "open_jobs": 90, "candidates": 14_000,
            "candidates_per_member": candidates_per_member(
                np.r_[0, np.full(20, 290), np.full(30, 270)].astype(np.int64), 300),
            "engine": "processes", "seconds": 2.4,
        },
        "rescore": {"ds": ds, "model_version": f"daily-{ds}", "members": 300, "members_with_candidates": 290,
                    "members_on_fallback": 10, "members_with_coefficients": 280, "pairs_scored": 14_000,
                    "recommendations": 3000, "seconds": 4.0},
        "publish": {"version": f"{ds.replace('-', '')}-{day + 1}-3fa9c2d{day}", "ds": ds, "members": 300,
                    "pointer_moved": day != 1, "served_version": "x", "served_ds": ds, "message": "ok",
                    "seconds": 1.1},
        "verify": {"ds": ds, "checked": 21, "mismatches": [], "seconds": 0.3},
    }


def write_recommendations(settings: Settings, ds: str, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    members = np.repeat(np.arange(10_000_001, 10_000_301), 10)
    popularity = 1.0 / np.arange(1, 100) ** 0.8
    popularity /= popularity.sum()
    table = pa.table({
        "member_id": pa.array(members, pa.int64()),
        "rank": pa.array(np.tile(np.arange(1, 11), 300), pa.int32()),
        "job_id": pa.array(np.concatenate([rng.choice(99, 10, replace=False, p=popularity) for _ in range(300)])
                           + 5_000_000, pa.int64()),
        "score": pa.array(rng.normal(-2.0, 0.7, len(members)), pa.float64()),
        "model_version": pa.array([f"daily-{ds}"] * len(members)),
    })
    write_partition(settings.layout.recommendations(ds), table)
    jobs = pa.table({"job_id": pa.array(np.arange(5_000_000, 5_000_099), pa.int64()),
                     "title": pa.array([f"<b>engineer</b> #{i}" for i in range(99)])})
    write_partition(settings.layout.validated("jobs", ds), jobs)
    return table


@pytest.fixture
def reports(tmp_path) -> Settings:
    """Three daily run reports (and one full retrain), written through the run_report task's function."""
    settings = Settings(home=tmp_path / "home")
    write_run_report(DAYS[0], settings, {
        "prepare_window": {"days": 1, "built": 1, "seconds": 30.0},
        "train_full": {"version": f"full-{DAYS[0]}", "holdout_auc": 0.705, "rows": 3000, "days": 1,
                       "l2": {"global": 1.0, "per_member": 10.0}, "l2_search": "grid", "seconds": 40.0},
        "gate": {"version": f"full-{DAYS[0]}", "holdout_auc": 0.705, "margin": 0.05, "current": None,
                 "seconds": 2.0},
        "promote": {"promoted": True, "version": f"full-{DAYS[0]}", "seconds": 0.1},
    }, name="full_retrain")
    for day, ds in enumerate(DAYS):
        write_recommendations(settings, ds, seed=day)
        result = write_run_report(ds, settings, daily_results(ds, day))
        assert "page_error" not in result, result
    return settings


def test_run_report_writes_a_day_page_and_a_page_across_days_with_every_figure(reports):
    layout = reports.layout
    day = (layout.report(DAYS[1]).with_name("index.html")).read_text()
    for figure in DAY_FIGURES:
        section = day.split(f'<figure id="fig-{figure}"', 1)[1].split("</figure>", 1)[0]
        assert "<svg" in section and "not recorded" not in section, figure
    assert 'href="../index.html"' in day
    assert not any(ref in day for ref in ('src="http', 'href="http', "url(http", "<script")), "self-contained"
    assert len(re.findall(r'\bid="([^"]+)"', day)) == len(set(re.findall(r'\bid="([^"]+)"', day)))
    assert "&lt;b&gt;engineer" in day and "<b>engineer" not in day  # job titles are escaped
    full_day = layout.report(DAYS[0]).with_name("index.html").read_text()
    assert all(f'id="fig-{f}"' in full_day for f in FULL_FIGURES) and "full-2024-03-01" in full_day
    index = (layout.reports_dir() / "index.html").read_text()
    for figure in INDEX_FIGURES:
        section = index.split(f'<figure id="fig-{figure}"', 1)[1].split("</figure>", 1)[0]
        assert "<svg" in section, figure
    assert all(f'href="ds={ds}/index.html"' in index for ds in DAYS)


def test_run_json_records_the_task_order_and_the_recommendations_summary(reports):
    report = json.loads(reports.layout.report(DAYS[2]).read_text())
    assert report["task_order"][:2] == ["validate_raw", "build_features"]
    recs = report["recommendations"]
    assert recs["rows"] == 3000 and recs["members"] == 300
    assert sum(recs["score_histogram"]["counts"]) == 3000
    assert len(recs["score_histogram"]["edges"]) == len(recs["score_histogram"]["counts"]) + 1
    counts = [j["recommended"] for j in recs["top_jobs"]]
    assert counts == sorted(counts, reverse=True) and recs["top_jobs"][0]["title"].startswith("<b>engineer")


def test_recommendation_summary_counts_each_job_across_batches(tmp_path):
    settings = Settings(home=tmp_path)
    table = write_recommendations(settings, DAYS[0], seed=3)
    summary = summarize_recommendations(DAYS[0], settings, top=5)
    ids, counts = np.unique(table["job_id"].to_numpy(), return_counts=True)
    order = np.lexsort((ids, -counts))[:5]
    assert [(j["job_id"], j["recommended"]) for j in summary["top_jobs"]] == list(
        zip(ids[order].tolist(), counts[order].tolist(), strict=True))
    assert summary["jobs_recommended"] == len(ids)
    assert summary["score_mean"] == pytest.approx(float(np.mean(table["score"].to_numpy())))
    assert summarize_recommendations(DAYS[1], settings) is None


def test_candidates_per_member_is_read_off_the_rank_counts():
    # 3 members with 2 candidates, 1 with 1, 2 scored members without any: ranks 1 x4, 2 x3
    assert candidates_per_member(np.array([0, 4, 3]), members=6) == {"0": 2, "1": 1, "2": 3}


def test_a_run_with_little_recorded_still_renders_with_not_recorded_notes(tmp_path):
    settings = Settings(home=tmp_path)
    result = write_run_report("2024-01-02", settings, {"x": {"rows": 1, "seconds": 0.5}})
    page = Path(result["day_page"]).read_text()
    assert "page_error" not in result and page.count("not recorded for this run") >= 5
    assert '<figure id="fig-task-times"' in page
    assert "<svg" in Path(result["index_page"]).read_text() or "No run reports" not in page


def test_the_page_across_many_days_labels_at_most_sixteen_dates_per_plot():
    import datetime as dt

    days = {}
    for day in range(90):
        ds = (dt.date(2024, 1, 1) + dt.timedelta(days=day)).isoformat()
        results = daily_results(ds, day % 3)
        tasks = dict(results)
        days[ds] = {"run": {"ds": ds, "tasks": tasks, "task_order": list(tasks),
                            "timings_seconds": {t: r["seconds"] for t, r in tasks.items()}}}
    page = render_index_page(days)
    for figure in INDEX_FIGURES:
        section = page.split(f'<figure id="fig-{figure}"', 1)[1].split("</figure>", 1)[0]
        labels = re.findall(r">(2024-\d\d-\d\d)<", section)
        assert 2 <= len(labels) <= 16, (figure, labels)
    assert page.count('href="ds=2024-') == 90


def test_day_page_without_any_report_says_so():
    assert "No run report for this day." in render_day_page("2024-01-02", {})


# ---------------------------------------------------------------------------------------- in Chromium


def _chromium_console(url: str) -> tuple[dict, list[str]]:
    """Open ``url`` in headless Chromium (Debian's, driven by Playwright over the DevTools protocol, no
    network): per figure id the number of drawn SVG shapes and its size, and every console error / page
    error / failed request."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.on("request", lambda r: None if r.url.startswith((url.rsplit("/", 1)[0], "data:"))
                    else errors.append(f"unexpected request: {r.url}"))
            page.goto(url, wait_until="load")
            figures = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('figure.plot')].map(f => {
                const svg = f.querySelector('svg'); const box = svg ? svg.getBoundingClientRect() : null;
                return [f.id, svg ? {shapes: svg.querySelectorAll('path, use, rect').length,
                                     width: box.width, height: box.height} : null];
            }))""")
        finally:
            browser.close()
    return figures, errors


needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium; .ci/run does)"
)


@needs_chromium
@pytest.mark.slow
def test_pages_render_in_headless_chromium_with_every_plot_and_no_console_error(reports):
    layout = reports.layout
    for path, expected in ((layout.report(DAYS[1]).with_name("index.html"), DAY_FIGURES),
                           (layout.reports_dir() / "index.html", INDEX_FIGURES)):
        figures, errors = _chromium_console(path.as_uri())
        assert errors == [], (path, errors)
        for figure in expected:
            drawn = figures.get(f"fig-{figure}")
            assert drawn and drawn["shapes"] >= 5 and drawn["width"] > 300 and drawn["height"] > 80, (figure, drawn)


@needs_chromium
@pytest.mark.slow
def test_chromium_headless_dumps_the_page_dom_with_the_inline_plots(reports):
    """The plain command line a reader can run too: ``chromium --headless --dump-dom file://…``."""
    page = reports.layout.reports_dir() / "index.html"
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert result.stdout.count("<svg") == len(INDEX_FIGURES)


def _serve(app):
    import socket

    import uvicorn

    from serving_store.http_protocol import HTTP_PROTOCOL

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(  # with the HTTP protocol jobrec serve runs
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", http=HTTP_PROTOCOL)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    return server, thread, port


def test_serve_answers_the_pages_read_only_at_reports_and_never_outside_the_folder(reports, tmp_path):
    import httpx

    from serving_store.api import create_app

    (reports.home / "secret.txt").write_text("not a report")
    server, thread, port = _serve(create_app(reports, reports_dir=reports.layout.reports_dir()))
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as client:
            for _ in range(100):
                try:
                    client.get("/reports/")
                    break
                except httpx.TransportError:
                    threading.Event().wait(0.05)
            index = client.get("/reports/")
            assert index.status_code == 200 and "text/html" in index.headers["content-type"]
            assert 'id="fig-auc-days"' in index.text
            assert client.get("/reports", follow_redirects=True).status_code == 200
            day = client.get(f"/reports/ds={DAYS[1]}/index.html")
            assert day.status_code == 200 and 'id="fig-scores"' in day.text
            assert client.get(f"/reports/ds={DAYS[1]}/").text == day.text
            assert client.get(f"/reports/ds={DAYS[1]}/run.json").json()["ds"] == DAYS[1]
            for escape in ("/reports/../secret.txt", "/reports/%2e%2e/secret.txt", "/reports/..%2fsecret.txt",
                           "/reports/%2Fetc%2Fpasswd", "/reports/ds=x/%00", "/reports/nothing.html"):
                answer = client.get(escape)
                assert answer.status_code == 404 and "not a report" not in answer.text, escape
            assert client.post("/reports/index.html").status_code == 405
    finally:
        server.should_exit = True
        thread.join(timeout=10)
