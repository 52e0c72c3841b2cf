"""Run report pages: ``reports/ds=<ds>/index.html`` (one day) and ``reports/index.html`` (every day).

The pages are rendered from the run reports alone (``reports/ds=*/run.json`` of the daily DAG and
``full_retrain.json`` of the periodic one, :mod:`pipeline.report`), so any day can be re-rendered without its
data. Each page is one self-contained HTML file: CSS inline, every plot an inline SVG drawn by matplotlib
(Agg, no pyplot state), no script, no network request (not even a favicon), so it opens from disk, from
``jobrec serve`` at ``/reports/``, or as a mail attachment.

Where each figure's numbers come from (task ids of ``dags/jobrec_daily.py``):

=================================  ========================================================================
day page                           source in run.json
=================================  ========================================================================
task times                         ``timings_seconds`` (each task's wall time), in ``task_order``
rows in and quarantined            ``tasks.validate_raw.tables`` (validation's verdict)
holdout AUC, parent, gate margin   ``tasks.gate`` (holdout_auc, parent_holdout_auc, margin; also gate.json)
coverage                           ``tasks.gate.coverage`` against ``min_coverage``
members on fallback                ``tasks.rescore`` (members, members_with_candidates, members_on_fallback)
candidates per member              ``tasks.retrieve_candidates.candidates_per_member``
score histogram, top jobs          ``recommendations`` (summarised from the recommendations Parquet by the
                                   run_report task)
publish version                    ``tasks.publish`` (version, pointer_moved, served_version)
=================================  ========================================================================

The across-days page plots the same numbers per day: holdout AUC (and the full retrains' AUC), rows,
task times and publish versions, and links every day's page.
"""

from __future__ import annotations

import html
import io
import json
import logging
import math
import os
import re
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from pipeline.config import Settings
from pipeline.storage import check_ds

log = logging.getLogger(__name__)

RUN_NAMES = ("run", "full_retrain")
DAILY_TASKS = (
    "validate_raw", "build_features", "retrain", "gate", "update_index", "retrieve_candidates", "rescore",
    "publish", "verify",
)
FULL_TASKS = ("prepare_window", "train_full", "gate", "promote")
# The figures of each page (the ids of their <figure> elements), in page order.
DAY_FIGURES = ("task-times", "rows", "gate", "members", "candidates", "scores", "top-jobs")
FULL_FIGURES = ("full-task-times",)
INDEX_FIGURES = ("auc-days", "rows-days", "times-days", "versions-days")

WIDTH = 9.5  # inches at 96 dpi: about the page's content width, so the plots' text is near the page's size
BLUE, ORANGE, GREEN, RED, GREY, PURPLE = "#3366cc", "#e08a1e", "#2e8b57", "#c0392b", "#8c8c8c", "#7b4fa3"
TASK_COLORS = (BLUE, ORANGE, GREEN, RED, PURPLE, "#17becf", "#bcbd22", "#8c564b", "#e377c2", GREY)


# ------------------------------------------------------------------------------------------------ files


def day_page_path(ds: str, settings: Settings) -> Path:
    """``reports/ds=<ds>/index.html``."""
    return settings.layout.report(check_ds(ds)).with_name("index.html")


def index_page_path(settings: Settings) -> Path:
    """``reports/index.html``: the page across days."""
    return settings.layout.reports_dir() / "index.html"


def load_day(ds: str, settings: Settings) -> dict[str, dict]:
    """The run reports of ``ds`` by run name (``run``, ``full_retrain``); unreadable ones are skipped."""
    reports = {}
    for name in RUN_NAMES:
        path = settings.layout.report(ds).with_name(f"{name}.json")
        if path.is_file():
            try:
                reports[name] = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                log.warning("report page: skipping unreadable %s (%s)", path, exc)
    return reports


def load_days(settings: Settings) -> dict[str, dict[str, dict]]:
    """Every day with a run report: ``{ds: {run name: report}}``, in date order."""
    days = {}
    for ds in settings.layout.partitions(settings.layout.reports_dir()):
        try:
            check_ds(ds)
        except ValueError:
            continue
        reports = load_day(ds, settings)
        if reports:
            days[ds] = reports
    return days


def _write_text(target: Path, text: str) -> Path:
    """Atomically replace the file ``target`` with ``text`` (temporary sibling, then rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def write_pages(ds: str, settings: Settings) -> dict[str, str]:
    """Render and atomically write the day page of ``ds`` and the across-days page from the run reports on
    disk. Returns ``{"day_page", "index_page"}`` (paths)."""
    check_ds(ds)
    days = load_days(settings)
    day = days.get(ds) or load_day(ds, settings)
    day_page = _write_text(day_page_path(ds, settings), render_day_page(ds, day))
    index_page = _write_text(index_page_path(settings), render_index_page(days))
    log.info("report pages: %s, %s", day_page, index_page)
    return {"day_page": str(day_page), "index_page": str(index_page)}


# ----------------------------------------------------------------------------------------------- helpers


def _num(value: object) -> float | None:
    """``value`` as a finite float, else None (missing, text, NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _fmt(value: object, digits: int = 0, *, percent: bool = False) -> str:
    number = _num(value)
    if number is None:
        return "–"
    if percent:
        return f"{number:.{digits}%}"
    return f"{number:,.{digits}f}"


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _task_order(report: dict, known: tuple[str, ...]) -> list[str]:
    """Task ids of a report in run order: ``task_order`` when recorded, else the DAG's order, then the rest."""
    tasks = list(report.get("tasks") or {})
    order = [t for t in report.get("task_order") or [] if t in tasks]
    order += [t for t in known if t in tasks and t not in order]
    return order + sorted(t for t in tasks if t not in order)


def _figure(fig_id: str, title: str, draw: Callable | None, *, size: tuple[float, float] = (WIDTH, 3.4),
            caption: str = "") -> str:
    """A ``<figure id="fig-<fig_id>">`` holding the SVG that ``draw(fig)`` makes, or a "not recorded" note when
    ``draw`` is None (the run did not record the figure's numbers)."""
    head = f'<figure id="fig-{_esc(fig_id)}" class="plot"><h3>{_esc(title)}</h3>'
    tail = f"<figcaption>{caption}</figcaption></figure>" if caption else "</figure>"
    if draw is None:
        return f'{head}<p class="missing">not recorded for this run</p>{tail}'
    return f"{head}{_svg(fig_id, title, draw, size)}{tail}"


def _svg(fig_id: str, title: str, draw: Callable, size: tuple[float, float]) -> str:
    """Inline SVG of a matplotlib figure (no XML prolog; text kept as text; ids salted per figure)."""
    import matplotlib
    from matplotlib.figure import Figure

    rc = {
        "svg.fonttype": "none", "svg.hashsalt": f"jobrec-{fig_id}", "text.parse_math": False,
        "font.size": 9, "axes.spines.top": False, "axes.spines.right": False, "axes.titlesize": 9,
        "font.family": ["DejaVu Sans", "sans-serif"],
    }
    with matplotlib.rc_context(rc):
        fig = Figure(figsize=size, dpi=96, layout="constrained")
        draw(fig)
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    # matplotlib numbers its element ids per figure (figure_1, axes_1, …): prefix them, and the references
    # to them, so several figures make one page without duplicate ids.
    text = _SVG_ID.sub(lambda m: f'{m.group(1)}{fig_id}-{m.group(2)}', text)
    return text.replace("<svg ", f'<svg role="img" aria-label="{_esc(title)}" ', 1)


_SVG_ID = re.compile(r'(\bid="|href="#|url\(#)([^"\)]+)')


def _bar_labels(ax, bars, values: Iterable[float], fmt: Callable[[float], str]) -> None:
    for bar, value in zip(bars, values, strict=True):
        ax.annotate(fmt(value), (bar.get_width(), bar.get_y() + bar.get_height() / 2), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=8)


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


# ---------------------------------------------------------------------------------------------- day page


def _draw_task_times(report: dict, known: tuple[str, ...]) -> Callable | None:
    timings = report.get("timings_seconds") or {}
    tasks = [t for t in _task_order(report, known) if _num(timings.get(t)) is not None]
    if not tasks:
        return None

    def draw(fig):
        ax = fig.add_subplot()
        values = [float(timings[t]) for t in tasks]
        bars = ax.barh(tasks, values, color=BLUE)
        ax.invert_yaxis()
        ax.set_xlabel("seconds")
        ax.set_xlim(0, max(values) * 1.2 or 1)
        _bar_labels(ax, bars, values, _seconds)

    return draw


def _draw_rows(validation: dict) -> Callable | None:
    tables = validation.get("tables") or {}
    names = [t for t in tables if _num(tables[t].get("rows")) is not None]
    if not names:
        return None

    def draw(fig):
        left, right = fig.subplots(1, 2, sharey=True)
        rows = [float(tables[t]["rows"]) for t in names]
        bad = [float(tables[t].get("quarantined") or 0) for t in names]
        bars = left.barh(names, rows, color=BLUE)
        left.invert_yaxis()
        left.set_xlim(0, max(max(rows), 1) * 1.3)
        left.set_xlabel("rows in")
        _bar_labels(left, bars, rows, lambda v: f"{v:,.0f}")
        bars = right.barh(names, bad, color=RED)
        right.set_xlim(0, max(max(bad), 1) * 1.6)
        right.set_xlabel("rows quarantined")
        _bar_labels(right, bars, [b / r if r else 0.0 for b, r in zip(bad, rows, strict=True)],
                    lambda share: f"{share:.2%}")
        for bar, value in zip(bars, bad, strict=True):  # the count inside the label's left
            right.annotate(f"{value:,.0f}", (0, bar.get_y() + bar.get_height() / 2), xytext=(-3, 0),
                           textcoords="offset points", va="center", ha="right", fontsize=8, color=RED)
        right.tick_params(axis="y", left=False, labelleft=False)

    return draw


def _draw_gate(gate: dict) -> Callable | None:
    auc, parent = _num(gate.get("holdout_auc")), _num(gate.get("parent_holdout_auc"))
    if auc is None:
        return None
    margin = _num(gate.get("margin"))
    coverage, min_coverage = _num(gate.get("coverage")), _num(gate.get("min_coverage"))

    def draw(fig):
        left, right = fig.subplots(1, 2, width_ratios=[2, 1])
        labels = [f"parent\n{gate.get('parent', '')}", "this day's model"] if parent is not None else ["model"]
        values = [parent, auc] if parent is not None else [auc]
        passed = parent is None or margin is None or auc >= parent - margin
        bars = left.bar(labels, values, color=[GREY, GREEN if passed else RED][-len(values):], width=0.5)
        for bar, value in zip(bars, values, strict=True):
            left.annotate(f"{value:.4f}", (bar.get_x() + bar.get_width() / 2, value), xytext=(0, 3),
                          textcoords="offset points", ha="center", fontsize=8)
        low = min(values + ([parent - margin] if parent is not None and margin is not None else []))
        left.set_ylim(max(0.0, low - 0.05), min(1.0, max(values) + 0.03))
        if parent is not None and margin is not None:
            left.axhline(parent - margin, color=RED, linestyle="--", linewidth=1,
                         label=f"gate: parent − margin {margin:g} = {parent - margin:.4f}")
            left.legend(fontsize=8, frameon=False, loc="upper left")
            left.set_ylim(top=min(1.0, max(values) + 0.06))
        left.set_ylabel("holdout AUC")
        if coverage is not None:
            right.bar(["coverage"], [coverage], color=GREEN if min_coverage is None or coverage >= min_coverage
                      else RED, width=0.4)
            right.annotate(f"{coverage:.1%}", (0, coverage), xytext=(0, 3), textcoords="offset points",
                           ha="center", fontsize=8)
            if min_coverage is not None:
                right.axhline(min_coverage, color=RED, linestyle="--", linewidth=1,
                              label=f"minimum {min_coverage:.0%}")
                right.legend(fontsize=8, frameon=False, loc="upper left")
            right.set_ylim(0, 1.2)
            right.set_ylabel("holdout rows with a member effect")
        else:
            right.set_axis_off()

    return draw


def _draw_members(rescore: dict) -> Callable | None:
    members = _num(rescore.get("members"))
    if members is None:
        return None
    rows = [("members scored", members, BLUE),
            ("with candidates", _num(rescore.get("members_with_candidates")), GREEN),
            ("on the fallback pool", _num(rescore.get("members_on_fallback")), ORANGE),
            ("with own coefficients", _num(rescore.get("members_with_coefficients")), PURPLE)]
    rows = [r for r in rows if r[1] is not None]

    def draw(fig):
        ax = fig.add_subplot()
        bars = ax.barh([r[0] for r in rows], [r[1] for r in rows], color=[r[2] for r in rows])
        ax.invert_yaxis()
        ax.set_xlim(0, members * 1.35 or 1)
        ax.set_xlabel("members")
        _bar_labels(ax, bars, [r[1] for r in rows],
                    lambda v: f"{v:,.0f} ({v / members:.1%})" if members else f"{v:,.0f}")

    return draw


def _draw_candidates(retrieve: dict) -> Callable | None:
    per_member = retrieve.get("candidates_per_member")
    if not isinstance(per_member, dict) or not per_member:
        return None
    import numpy as np

    counts = np.array([int(c) for c in per_member], dtype=np.int64)
    members = np.array([int(n) for n in per_member.values()], dtype=np.int64)
    k = _num(retrieve.get("k"))

    def draw(fig):
        ax = fig.add_subplot()
        if len(counts) <= 30:
            ax.bar([str(c) for c in counts], members, color=BLUE)
            ax.set_xlabel("candidates per member")
        else:
            width = -(-(int(counts.max()) + 1 - int(counts.min())) // 40)  # whole candidates per bin
            edges = np.arange(counts.min(), counts.max() + width + 1, width)
            ax.hist(counts, bins=edges, weights=members, color=BLUE, edgecolor="white", linewidth=0.4)
            ax.set_xlabel("candidates per member" + (f" (k = {k:,.0f})" if k else ""))
        ax.set_ylabel("members")
        mean = float((counts * members).sum() / members.sum())
        ax.set_title(f"{members.sum():,} members, mean {mean:,.1f} candidates" + (f", k = {k:,.0f}" if k else ""))

    return draw


def _draw_scores(recs: dict) -> Callable | None:
    hist = recs.get("score_histogram") or {}
    edges, counts = hist.get("edges") or [], hist.get("counts") or []
    if len(edges) != len(counts) + 1 or not counts:
        return None

    def draw(fig):
        ax = fig.add_subplot()
        widths = [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]
        ax.bar(edges[:-1], counts, width=widths, align="edge", color=BLUE, edgecolor="white", linewidth=0.4)
        ax.set_xlabel("re-scored GLMix score (log-odds) of recommended jobs")
        ax.set_ylabel("recommendations")
        mean = _num(recs.get("score_mean"))
        if mean is not None:
            ax.axvline(mean, color=ORANGE, linestyle="--", linewidth=1)
            ax.annotate(f"mean {mean:.2f}", (mean, max(counts)), xytext=(3, -8), textcoords="offset points",
                        fontsize=8, color=ORANGE)

    return draw


def _draw_top_jobs(recs: dict) -> Callable | None:
    top = [j for j in recs.get("top_jobs") or [] if _num(j.get("recommended")) is not None][:15]
    if not top:
        return None
    members = _num(recs.get("members"))

    def draw(fig):
        ax = fig.add_subplot()
        labels = [f"{j.get('job_id')} · {str(j.get('title') or '')[:40]}".rstrip(" ·") for j in top]
        values = [float(j["recommended"]) for j in top]
        bars = ax.barh(labels, values, color=GREEN)
        ax.invert_yaxis()
        ax.set_xlim(0, max(values) * 1.3)
        ax.set_xlabel("members it is recommended to")
        _bar_labels(ax, bars, values, lambda v: f"{v:,.0f} ({v / members:.1%})" if members else f"{v:,.0f}")

    return draw


def _cards(items: list[tuple[str, str, str]]) -> str:
    """Summary cards: (label, value, note)."""
    cells = "".join(
        f'<div class="card"><div class="label">{_esc(label)}</div><div class="value">{_esc(value)}</div>'
        f'<div class="note">{_esc(note)}</div></div>'
        for label, value, note in items
    )
    return f'<div class="cards">{cells}</div>'


def _table(head: list[str], rows: list[list[object]], *, numeric: Iterable[int] = ()) -> str:
    """An HTML table; cells are HTML already (escape text first); ``numeric`` columns align right."""
    numeric = set(numeric)
    cells = "".join(f"<th>{_esc(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def _gate_cards(gate: dict, rescore: dict, retrieve: dict, recs: dict, publish: dict, run: dict) -> str:
    auc, parent, margin = _num(gate.get("holdout_auc")), _num(gate.get("parent_holdout_auc")), _num(gate.get("margin"))
    delta = None if auc is None or parent is None else auc - parent
    verdict = "–"
    if delta is not None and margin is not None:
        verdict = "passed" if delta >= -margin else "stopped"
    members, fallback = _num(rescore.get("members")), _num(rescore.get("members_on_fallback"))
    per_member = retrieve.get("candidates_per_member") or {}
    total_members = sum(per_member.values()) if isinstance(per_member, dict) else 0
    mean_candidates = (sum(int(c) * n for c, n in per_member.items()) / total_members) if total_members else None
    if publish.get("skipped"):
        served = "skipped"
    else:
        served = "served" if publish.get("pointer_moved") else (f"not served (serving {publish.get('served_version')})"
                                                                 if publish.get("version") else "")
    return _cards([
        ("holdout AUC", _fmt(auc, 4), f"parent {_fmt(parent, 4)} ({'+' if (delta or 0) >= 0 else ''}"
                                      f"{_fmt(delta, 4)})" if parent is not None else ""),
        ("gate", verdict, f"margin {_fmt(margin, 3)}" if margin is not None else "no gate recorded"),
        ("coverage", _fmt(gate.get("coverage"), 1, percent=True),
         f"minimum {_fmt(gate.get('min_coverage'), 0, percent=True)}" if gate.get("min_coverage") is not None else ""),
        ("members on fallback", _fmt(fallback),
         f"of {_fmt(members)} ({_fmt(fallback / members if members and fallback is not None else None, 1, percent=True)})"),
        ("candidates / member", _fmt(mean_candidates, 1), f"k = {_fmt(retrieve.get('k'))}"),
        ("recommendations", _fmt(recs.get("rows") if recs else rescore.get("recommendations")),
         f"{_fmt(recs.get('jobs_recommended'))} distinct jobs" if recs else ""),
        ("published version", str(publish.get("version") or ("skipped" if publish.get("skipped") else "–")), served),
        ("task time", _seconds(float(run.get("total_task_seconds") or 0)), f"{len(run.get('tasks') or {})} tasks"),
    ])


def _validation_table(validation: dict) -> str:
    tables = validation.get("tables") or {}
    if not tables:
        return ""
    rows = []
    for name, t in tables.items():
        reasons = ", ".join(f"{_esc(r)}: {int(n):,}" for r, n in (t.get("reasons") or {}).items()) or "–"
        rows.append([_esc(name), _fmt(t.get("rows")), _fmt(t.get("clean")), _fmt(t.get("quarantined")),
                     _fmt(t.get("bad_fraction"), 2, percent=True), reasons])
    return _table(["table", "rows", "clean", "quarantined", "share", "reasons"], rows, numeric=range(1, 5))


def _tasks_table(report: dict, known: tuple[str, ...]) -> str:
    tasks, timings = report.get("tasks") or {}, report.get("timings_seconds") or {}
    memory = report.get("peak_memory_mib") or {}
    rows = []
    for task in _task_order(report, known):
        result = tasks.get(task) or {}
        facts = ", ".join(
            f"{_esc(k)} {_esc(_fmt(v, 4) if isinstance(v, float) else _fmt(v))}"
            for k, v in result.items()
            if k not in ("seconds", "peak_memory_mib", "peak_rss_mib") and _num(v) is not None
        )[:300]
        seconds, peak = _num(timings.get(task)), _num(memory.get(task))
        rows.append([_esc(task), _seconds(seconds) if seconds is not None else "–",
                     f"{peak:,.0f} MiB" if peak is not None else "–", facts or "–"])
    return _table(["task", "time", "peak memory", "figures it returned"], rows, numeric=[1, 2])


def render_day_page(ds: str, reports: dict[str, dict]) -> str:
    """The HTML page of one day from its run reports (``{"run": …, "full_retrain": …}``, either may be
    missing): summary cards, then :data:`DAY_FIGURES` (and :data:`FULL_FIGURES` with a full retrain), each an
    inline SVG or a "not recorded" note."""
    check_ds(ds)
    run, full = reports.get("run"), reports.get("full_retrain")
    sections = []
    if run is not None:
        tasks = run.get("tasks") or {}
        gate, rescore = tasks.get("gate") or {}, tasks.get("rescore") or {}
        retrieve, publish = tasks.get("retrieve_candidates") or {}, tasks.get("publish") or {}
        validation = tasks.get("validate_raw") or {}
        recs = run.get("recommendations") or {}
        sections.append(_gate_cards(gate, rescore, retrieve, recs, publish, run))
        sections.append("<h2>Tasks</h2>" + _figure("task-times", "Task times", _draw_task_times(run, DAILY_TASKS),
                                                   size=(WIDTH, 0.28 * len(tasks) + 1.0))
                        + _tasks_table(run, DAILY_TASKS))
        sections.append("<h2>Input</h2>" + _figure(
            "rows", "Raw rows in and quarantined, per table", _draw_rows(validation),
            caption="Rows that fail a check go to <code>quarantine/&lt;table&gt;/ds=…</code> with a reason; "
            "the day fails validation when a table's share is above the limit "
            f"({_fmt(validation.get('max_bad_fraction'), 1, percent=True)}).") + _validation_table(validation))
        sections.append("<h2>Model</h2>" + _figure(
            "gate", "Holdout AUC against the parent model, and coverage", _draw_gate(gate), size=(WIDTH, 3.2),
            caption="The gate stops the model (nothing is published) when its holdout AUC is more than the margin "
            "below its parent's on the same holdout rows, or when coverage is below the minimum."))
        sections.append("<h2>Retrieval and re-scoring</h2>"
                        + _figure("members", "Members: candidates, fallback pool and own coefficients",
                                  _draw_members(rescore), size=(WIDTH, 2.1),
                                  caption="Members with no usable first-stage candidate are scored against the "
                                  "fallback pool (active jobs by their member-independent score).")
                        + _figure("candidates", "First-stage candidates per member", _draw_candidates(retrieve))
                        + _figure("scores", "Scores of the recommended jobs", _draw_scores(recs)))
        sections.append("<h2>What members see</h2>"
                        + _figure("top-jobs", "Jobs recommended most often", _draw_top_jobs(recs),
                                  size=(WIDTH, 0.26 * min(len(recs.get("top_jobs") or []), 15) + 1.0))
                        + _publish_note(publish))
    if full is not None:
        sections.append(_full_section(full))
    if not sections:
        sections.append('<p class="missing">No run report for this day.</p>')
    kinds = " and ".join(n.replace("_", " ") for n in RUN_NAMES if n in reports) or "no run"
    links = " · ".join(f'<a href="{n}.json">{n}.json</a>' for n in RUN_NAMES if n in reports)
    home = (run or full or {}).get("home", "")
    nav = f'<nav><a href="../index.html">← all days</a> · {links}</nav>'
    body = (f"{nav}<h1>jobrec run report · {_esc(ds)}</h1>"
            f'<p class="sub">{_esc(kinds)} of {_esc(ds)} · data under <code>{_esc(home)}</code></p>'
            + "".join(sections))
    return _page(f"jobrec run report {ds}", body)


def _publish_note(publish: dict) -> str:
    if not publish:
        return ""
    if publish.get("skipped"):
        return "<p>Publishing was skipped for this run (<code>skip_publish</code>).</p>"
    message = publish.get("message") or ""
    return (f"<p>Published as version <code>{_esc(publish.get('version', '–'))}</code> "
            f"({_fmt(publish.get('members'))} members); served version <code>{_esc(publish.get('served_version', '–'))}"
            f"</code> (ds {_esc(publish.get('served_ds', '–'))}). {_esc(message)}</p>")


def _full_section(full: dict) -> str:
    tasks = full.get("tasks") or {}
    train, gate, promote = tasks.get("train_full") or {}, tasks.get("gate") or {}, tasks.get("promote") or {}
    l2 = train.get("l2") if isinstance(train.get("l2"), dict) else {}
    cards = _cards([
        ("full model", str(train.get("version") or "–"), f"{_fmt(train.get('days'))} days, {_fmt(train.get('rows'))} rows"),
        ("holdout AUC", _fmt(train.get("holdout_auc"), 4),
         f"promoted {_fmt(gate.get('current_holdout_auc'), 4)}" if gate.get("current_holdout_auc") is not None else ""),
        ("L2", ", ".join(f"{k} {v:g}" for k, v in l2.items() if _num(v) is not None) or "–",
         str(train.get("l2_search") or "")),
        ("promoted", "yes" if promote.get("promoted") else ("no" if promote else "–"),
         f"current {promote.get('current')}" if promote.get("current") else ""),
    ])
    return ("<h2>Full retrain</h2>" + cards
            + _figure("full-task-times", "Full retrain task times", _draw_task_times(full, FULL_TASKS),
                      size=(WIDTH, 0.28 * len(tasks) + 1.0))
            + _tasks_table(full, FULL_TASKS))


# ------------------------------------------------------------------------------------------ across days


_VERSION = re.compile(r"^\d{8}-(\d+)-")
MAX_DAY_LABELS = 16


def _day_ticks(ax, order: list[str]) -> None:
    """Label the x axis (one position per day of ``order``) with at most :data:`MAX_DAY_LABELS` dates."""
    step = -(-len(order) // MAX_DAY_LABELS) if order else 1
    ticks = list(range(0, len(order), step))
    slanted = len(ticks) > 6
    ax.set_xticks(ticks, [order[i] for i in ticks], rotation=30 if slanted else 0, ha="right" if slanted else "center")


def _draw_auc_days(days: dict[str, dict[str, dict]]) -> Callable | None:
    daily = {ds: (r.get("run", {}).get("tasks") or {}).get("gate") or {} for ds, r in days.items()}
    daily = {ds: g for ds, g in daily.items() if _num(g.get("holdout_auc")) is not None}
    full = {ds: ((r.get("full_retrain", {}).get("tasks") or {}).get("train_full") or {}).get("holdout_auc")
            for ds, r in days.items()}
    full = {ds: v for ds, v in full.items() if _num(v) is not None}
    if not daily and not full:
        return None
    order = list(days)

    def draw(fig):
        ax = fig.add_subplot()
        x = {ds: i for i, ds in enumerate(order)}
        if daily:
            ds_list = list(daily)
            ax.plot([x[d] for d in ds_list], [daily[d]["holdout_auc"] for d in ds_list], "o-", color=GREEN,
                    label="daily model")
            with_parent = [d for d in ds_list if _num(daily[d].get("parent_holdout_auc")) is not None]
            ax.plot([x[d] for d in with_parent], [daily[d]["parent_holdout_auc"] for d in with_parent], "s--",
                    color=GREY, markersize=4, label="parent, same holdout")
            gated = [d for d in with_parent if _num(daily[d].get("margin")) is not None]
            if gated:
                ax.plot([x[d] for d in gated], [daily[d]["parent_holdout_auc"] - daily[d]["margin"] for d in gated],
                        "_", color=RED, markersize=14, markeredgewidth=2, linestyle="none",
                        label="gate threshold (parent − margin)")
        if full:
            ax.plot([x[d] for d in full], list(full.values()), "D", color=PURPLE, label="full retrain")
        _day_ticks(ax, order)
        ax.set_ylabel("holdout AUC")
        ax.legend(fontsize=8, frameon=False, loc="best")

    return draw


def _draw_rows_days(days: dict[str, dict[str, dict]]) -> Callable | None:
    series: dict[str, list[tuple[int, float]]] = {"raw rows": [], "training rows": [], "quarantined": []}
    order = list(days)
    for i, ds in enumerate(order):
        tasks = days[ds].get("run", {}).get("tasks") or {}
        validation, features = tasks.get("validate_raw") or {}, tasks.get("build_features") or {}
        for name, value in (("raw rows", validation.get("rows")), ("quarantined", validation.get("quarantined")),
                            ("training rows", features.get("training_rows"))):
            if _num(value) is not None:
                series[name].append((i, float(value)))
    if not any(series.values()):
        return None

    def draw(fig):
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
        for name, color in (("raw rows", BLUE), ("training rows", GREEN)):
            if series[name]:
                top.plot(*zip(*series[name], strict=True), "o-", color=color, label=name)
        top.set_ylabel("rows")
        top.legend(fontsize=8, frameon=False)
        if series["quarantined"]:
            xs, ys = zip(*series["quarantined"], strict=True)
            bars = bottom.bar(xs, ys, color=RED, width=0.5)
            bottom.bar_label(bars, fmt="{:,.0f}", fontsize=8)
            bottom.set_ylim(0, max(max(ys), 1) * 1.4)
        bottom.set_ylabel("quarantined")
        _day_ticks(bottom, order)

    return draw


def _draw_times_days(days: dict[str, dict[str, dict]]) -> Callable | None:
    import numpy as np

    order = list(days)
    timings = [(days[ds].get("run") or {}).get("timings_seconds") or {} for ds in order]
    full = [(days[ds].get("full_retrain") or {}).get("timings_seconds") or {} for ds in order]
    tasks = [t for t in DAILY_TASKS if any(_num(t_.get(t)) is not None for t_ in timings)]
    tasks += sorted({t for t_ in timings for t in t_} - set(tasks))
    if not tasks and not any(full):
        return None

    def draw(fig):
        ax = fig.add_subplot()
        bottom = np.zeros(len(order))
        for n, task in enumerate(tasks):
            values = np.array([_num(t_.get(task)) or 0.0 for t_ in timings])
            ax.bar(range(len(order)), values, bottom=bottom, color=TASK_COLORS[n % len(TASK_COLORS)], label=task,
                   width=0.6)
            bottom += values
        full_total = np.array([sum(_num(v) or 0.0 for v in f.values()) for f in full])
        if full_total.any():
            ax.bar(range(len(order)), full_total, bottom=bottom, color="white", edgecolor=PURPLE, hatch="//",
                   label="full retrain (all tasks)", width=0.6)
        _day_ticks(ax, order)
        ax.set_ylabel("seconds")
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))

    return draw


def _draw_versions_days(days: dict[str, dict[str, dict]]) -> Callable | None:
    points = []
    for i, ds in enumerate(days):
        publish = ((days[ds].get("run") or {}).get("tasks") or {}).get("publish") or {}
        version = publish.get("version")
        if not version:
            continue
        match = _VERSION.match(str(version))
        points.append((i, int(match.group(1)) if match else None, str(version), bool(publish.get("pointer_moved"))))
    if not points:
        return None
    order = list(days)
    from matplotlib.ticker import MaxNLocator

    def draw(fig):
        ax = fig.add_subplot()
        for n, (i, seq, version, moved) in enumerate(points):
            y = seq if seq is not None else n + 1
            ax.plot([i], [y], "o", color=GREEN if moved else "white", markeredgecolor=GREEN if moved else ORANGE,
                    markersize=8, markeredgewidth=2)
            if len(points) <= 20 or n == len(points) - 1:  # many days: name the newest version only
                ax.annotate(version, (i, y), xytext=(6, 4), textcoords="offset points", fontsize=7)
        ax.plot([], [], "o", color=GREEN, label="served (pointer moved)")
        ax.plot([], [], "o", color="white", markeredgecolor=ORANGE, markeredgewidth=2,
                label="published for inspection only (older day)")
        _day_ticks(ax, order)
        ax.set_xlim(-0.5, len(order) - 0.2)
        ax.set_ylabel("version sequence number")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.margins(y=0.25)
        ax.legend(fontsize=8, frameon=False, loc="upper left")

    return draw


def render_index_page(days: dict[str, dict[str, dict]]) -> str:
    """The HTML page across days (``{ds: {run name: report}}`` in date order): :data:`INDEX_FIGURES` and a
    table linking every day's page."""
    rows = []
    for ds, reports in reversed(days.items()):
        run, full = reports.get("run") or {}, reports.get("full_retrain") or {}
        tasks = run.get("tasks") or {}
        gate, publish, rescore = tasks.get("gate") or {}, tasks.get("publish") or {}, tasks.get("rescore") or {}
        validation = tasks.get("validate_raw") or {}
        auc, parent = _num(gate.get("holdout_auc")), _num(gate.get("parent_holdout_auc"))
        kinds = ", ".join(n.replace("_", " ") for n in RUN_NAMES if n in reports)
        rows.append([
            f'<a href="ds={_esc(ds)}/index.html">{_esc(ds)}</a>', _esc(kinds),
            _fmt(auc, 4) if auc is not None else _fmt(((full.get("tasks") or {}).get("train_full") or {})
                                                       .get("holdout_auc"), 4),
            _fmt(auc - parent, 4) if auc is not None and parent is not None else "–",
            _fmt(validation.get("rows")), _fmt(validation.get("quarantined")),
            _fmt(rescore.get("members_on_fallback")),
            f"<code>{_esc(publish['version'])}</code>{'' if publish.get('pointer_moved') else ' (not served)'}"
            if publish.get("version") else "–",
            _seconds(float(run.get("total_task_seconds") or 0) + float(full.get("total_task_seconds") or 0)),
        ])
    table = _table(["day", "runs", "holdout AUC", "Δ parent", "raw rows", "quarantined", "on fallback",
                    "published version", "task time"], rows, numeric=[2, 3, 4, 5, 6, 8])
    figures = (
        _figure("auc-days", "Holdout AUC per day", _draw_auc_days(days),
                caption="Each day's model and its parent are measured on the same day's holdout rows.")
        + _figure("rows-days", "Rows per day", _draw_rows_days(days), size=(WIDTH, 3.8))
        + _figure("times-days", "Task times per day", _draw_times_days(days), size=(WIDTH, 3.6))
        + _figure("versions-days", "Published serving-store versions", _draw_versions_days(days), size=(WIDTH, 3.0),
                  caption="A backfilled (older) day is published for inspection; the served pointer only moves "
                  "forward.")
    )
    first_last = f"{next(iter(days))} to {next(reversed(days))}" if days else "no days yet"
    body = (f"<h1>jobrec run reports</h1><p class=\"sub\">{len(days)} days, {_esc(first_last)}</p>"
            + (figures + "<h2>Days</h2>" + table if days else '<p class="missing">No run reports yet.</p>'))
    return _page("jobrec run reports", body)


# ----------------------------------------------------------------------------------------------- page


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1d1d1f;
margin:0 auto;max-width:1060px;padding:16px 24px 48px;background:#fafafa}
h1{font-size:22px;margin:8px 0 2px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;
padding-bottom:4px}h3{font-size:13px;margin:0 0 4px;color:#444}
.sub{color:#666;margin:0 0 12px}nav{font-size:13px}a{color:#2a5db0}code{font-size:12px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:10px;margin:14px 0}
.card{background:#fff;border:1px solid #e2e2e2;border-radius:8px;padding:10px 12px}
.card .label{font-size:12px;color:#666}.card .value{font-size:20px;font-weight:600;margin:2px 0;
overflow-wrap:anywhere}.card .note{font-size:12px;color:#666}
figure.plot{background:#fff;border:1px solid #e2e2e2;border-radius:8px;margin:12px 0;padding:10px 12px}
figure.plot svg{width:100%;height:auto;display:block}figcaption{font-size:12px;color:#555;margin-top:4px}
.missing{color:#999;font-style:italic}
table{border-collapse:collapse;background:#fff;margin:10px 0;font-size:13px;width:100%}
th,td{border:1px solid #e2e2e2;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f2f2f2}
td.num{text-align:right;font-variant-numeric:tabular-nums}
"""


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
        '<link rel="icon" href="data:,">'  # no favicon request: the page makes no request at all
        f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>{body}</body></html>\n"
    )
