"""Read-only HTTP access to the run report pages, ``GET /reports/...`` of the lookup service.

The pipeline writes ``reports/index.html`` (every day) and ``reports/ds=<ds>/{index.html,run.json,…}`` under
its data folder; ``jobrec serve`` answers them from that folder. Only GET and HEAD, only regular files
inside the folder (after resolving symlinks and ``..``), never hidden files (the writers' ``.tmp-*``
temporaries); a folder answers its ``index.html``. Anything else is a 404.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse


def reports_folder(settings_or_url: Any, reports_dir: str | os.PathLike | None = None) -> Path | None:
    """The folder to serve: ``reports_dir`` when given, else ``<settings.home>/reports`` for a settings
    object (as the pipeline lays it out), else None (a bare Redis URL: no pages)."""
    if reports_dir is not None:
        return Path(reports_dir)
    home = getattr(settings_or_url, "home", None)
    return Path(home) / "reports" if home is not None else None


def resolve_report(root: Path, path: str) -> Path | None:
    """The file ``path`` (relative, as in the URL) names under the resolved folder ``root``, or None when it
    is not a regular, non-hidden file inside ``root`` (a folder means its ``index.html``)."""
    if "\x00" in path or any(part.startswith(".") for part in Path(path).parts):
        return None
    try:
        target = (root / path.lstrip("/")).resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.is_relative_to(root) or not target.is_file():
            return None
    except (OSError, ValueError):
        return None
    return target


def add_report_routes(app: FastAPI, folder: Path | None, dependencies: list | None = None) -> None:
    """Serve ``folder`` at ``/reports/`` on ``app`` (nothing when ``folder`` is None); ``dependencies`` are the
    app's guards (the bearer-token check), so the pages need the token whenever the lists do."""
    if folder is None:
        return
    root = Path(folder).resolve()

    @app.api_route("/reports/{path:path}", methods=["GET", "HEAD"], include_in_schema=False,
                   dependencies=dependencies or [])
    async def report_file(path: str):
        target = resolve_report(root, path)
        if target is None:
            return JSONResponse(status_code=404, content={"detail": f"no report page {path!r} under /reports/"})
        return FileResponse(target)
