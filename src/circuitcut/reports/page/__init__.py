"""Run reports as self-contained HTML pages: ``report.html`` per run (from the run's JSON) and the
index of ``circuitcut view``. :func:`write_report` is what the workflows call."""

from circuitcut.reports.page.index import build_index, make_server, view
from circuitcut.reports.page.runs import load_run, write_report

__all__ = ["build_index", "load_run", "make_server", "view", "write_report"]
