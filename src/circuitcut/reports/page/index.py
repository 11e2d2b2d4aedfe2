"""The index over the runs under a folder (``circuitcut view``): each run's kind, model, headline and
a link to its page, written as ``index.html``; pages missing from older runs are built from their
JSON on the way. Optionally served on localhost."""

from __future__ import annotations

import datetime as _dt
import functools
import http.server
import os
from collections.abc import Callable
from pathlib import Path

from circuitcut.errors import CircuitcutError, OutputError
from circuitcut.reports.page.base import Page, Raw, esc, is_ours, table, write_page
from circuitcut.reports.page.runs import Run, build_page, runs_in

INDEX_NAME = "index.html"


def find_runs(folder: str | os.PathLike[str]) -> list[Run]:
    """Every run under ``folder`` (itself included), in path order; hidden folders are skipped."""
    root = Path(folder)
    if not root.is_dir():
        raise CircuitcutError(f"no such folder: {root}; give the folder that holds your runs")
    found = []
    for here, dirs, _ in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += runs_in(here)
    return found


def build_index(folder: str | os.PathLike[str], rebuild: bool = False) -> tuple[Path, list[Run]]:
    """Write ``index.html`` in ``folder`` over its runs, building each run's page first when it has
    none (or always, with ``rebuild``; a file at a page's path that circuitcut did not write is kept
    and named instead); returns the index's path and the runs. A run whose JSON this
    version cannot present is listed with the reason instead of a link."""
    root = Path(folder)
    runs = find_runs(root)
    rows = []
    for run in runs:
        rel = run.page_path.relative_to(root).as_posix()
        try:
            if rebuild or not is_ours(run.page_path):  # missing, or someone else's file (refused)
                write_page(run.page_path, build_page(run))
            link: str = Raw(f'<a href="{esc(rel)}">{esc(rel)}</a>')
            line = run.headline()
        except (KeyError, TypeError, ValueError, IndexError) as exc:  # JSON of another version
            link, line = rel, f"no page: its JSON lacks {exc} (written by another circuitcut version?)"
        except OutputError as exc:  # a file there that is not circuitcut's page
            link, line = rel, f"no page: {exc}"
        when = _dt.datetime.fromtimestamp(run.source.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
        rows.append([link, run.kind, run.model, line, when])
    page = Page(f"circuitcut runs in {root.resolve().name}", esc(f"{len(runs)} run(s) under {root}"))
    body = table(["page", "kind", "model", "headline", "written"], rows, table_id="runs") if rows else (
        '<p class="muted">No runs here: a run folder holds the summary.json or report.json a circuitcut '
        "workflow wrote.</p>")  # fmt: skip
    page.add("Runs", body, "runs")
    return write_page(root / INDEX_NAME, page), runs


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """No request log on stderr."""


def make_server(
    folder: str | os.PathLike[str], port: int = 8000, host: str = "127.0.0.1"
) -> http.server.HTTPServer:
    """An HTTP server for ``folder`` on ``host:port`` (``port`` 0: any free port); call
    ``serve_forever()`` on it. Serves files only, read-only."""
    handler = functools.partial(_Quiet, directory=str(Path(folder)))
    try:
        return http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise CircuitcutError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port "
                              "(0 picks a free one)") from exc  # fmt: skip


def view(folder: str | os.PathLike[str], rebuild: bool = False, serve: bool = False, port: int = 8000,
         host: str = "127.0.0.1", announce: Callable[[str], None] = print) -> Path:  # fmt: skip
    """``circuitcut view``: write the index over the runs under ``folder`` (:func:`build_index`) and
    announce it; with ``serve``, serve the folder on ``host:port`` until interrupted (Ctrl-C ends it
    quietly). Returns the index's path."""
    if not 0 <= port <= 65535:
        raise CircuitcutError(f"port must be in 0..65535, got {port}")
    index, runs = build_index(folder, rebuild)
    announce(f"wrote {index} ({len(runs)} run(s))")
    if serve:
        server = make_server(folder, port, host)
        announce(f"serving {folder} at http://{host}:{server.server_address[1]}/{INDEX_NAME} (Ctrl-C stops)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    return index
