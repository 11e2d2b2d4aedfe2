"""``circuitcut view``: an index page over the runs under a folder, optionally served on localhost."""

from __future__ import annotations

import argparse

from circuitcut.cli import args as types


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the verb."""
    p = sub.add_parser(
        "view",
        help="an index page (index.html) over the runs under a folder, optionally served on localhost",
        description=(
            "Find every circuitcut run under DIR (circuit, correct, compress, lasso, explain, demo: "
            "the summary.json / report.json each writes), write DIR/index.html with each run's "
            "headline and a link to its report.html, and build the report.html of runs that have "
            "none (runs from before pages existed). Pages are self-contained: open them offline."
        ),
    )
    p.add_argument("folder", metavar="DIR", help="the folder holding the runs (searched recursively)")
    p.add_argument("--rebuild", action="store_true",
                   help="rebuild every run's report.html from its JSON (default: only missing pages)")  # fmt: skip
    p.add_argument("--serve", action="store_true",
                   help="then serve DIR over HTTP on localhost until Ctrl-C (default: only write the files)")  # fmt: skip
    p.add_argument("--port", type=types.non_negative_int, default=8000,
                   help="port for --serve (default 8000; 0 picks a free port)")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1",
                   help="address for --serve (default 127.0.0.1: this machine only)")  # fmt: skip
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Write the index (and serve)."""
    from circuitcut.reports.page import view

    view(args.folder, rebuild=args.rebuild, serve=args.serve, port=args.port, host=args.host)
    return 0
