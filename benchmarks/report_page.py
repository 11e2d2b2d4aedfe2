"""Weight and generation time of the demo's HTML pages (report.html).

Usage::

    python benchmarks/report_page.py [--demo DIR] [--repeats 5]

Without ``--demo`` a quick demo (``run_demo(..., quick=True)``) is run into a temporary folder
first. For the demo's page and its two parts' pages (circuit/, correction/), prints the page
weight in bytes and the median time to build and write the page from the run's JSON
(:func:`circuitcut.reports.page.write_report`) over ``--repeats``, as seconds and as the median
ratio to reading and parsing the same JSON files (the baseline), the two interleaved in one
process. Writes
``benchmarks/results/report-page.json``.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path

import common
from circuitcut.reports.page import write_report

PARTS = {"demo": ("", ["summary.json", "circuit/summary.json", "correction/report.json"]),
         "circuit": ("circuit", ["circuit/summary.json"]),
         "correction": ("correction", ["correction/report.json"])}  # fmt: skip


def measure(demo: Path, repeats: int) -> dict:
    """Page weight, build time and the JSON-reading baseline of each page (interleaved, one process)."""
    out = {}
    for name, (sub, sources) in PARTS.items():
        folder = demo / sub
        runs = {"build": lambda f=folder: write_report(f),
                "read": lambda s=sources: [json.loads((demo / p).read_text()) for p in s]}  # fmt: skip
        times = {k: [t.seconds for t in v] for k, v in common.interleaved(runs, repeats).items()}
        page = folder / "report.html"
        out[name] = {"bytes": page.stat().st_size, "build_seconds": round(statistics.median(times["build"]), 4),
                     "read_json_seconds": round(statistics.median(times["read"]), 5),
                     "ratio_to_reading_json": round(common.median_ratio(times["build"], times["read"]), 1)}  # fmt: skip
    return out


def main() -> None:
    """Run (or take) a demo, measure its pages, print and write the results."""
    ap = common.parser(__doc__)
    ap.add_argument(
        "--demo", type=Path, default=None, help="an existing demo output folder (default: run a quick demo)"
    )
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per page (default 5)")
    common.add_results(ap, with_tag=False)
    args = common.parse(ap)
    demo_seconds = None
    with tempfile.TemporaryDirectory() as tmp:
        demo = args.demo
        if demo is None:
            from circuitcut.workflows.demo import run_demo

            demo = Path(tmp) / "demo"
            demo_seconds = round(common.timed(lambda: run_demo(demo, quick=True, progress=False)).seconds, 1)
        res = {"demo": str(args.demo or "quick demo"), "demo_seconds": demo_seconds,
               "pages": measure(demo, args.repeats)}  # fmt: skip
    for name, r in res["pages"].items():
        print(f"{name:<11} {r['bytes']:>9,} bytes  built in {r['build_seconds']:.3f} s "
              f"({r['ratio_to_reading_json']}x reading its JSON)")  # fmt: skip
    if demo_seconds:
        print(f"quick demo itself: {demo_seconds} s")
    common.write_results(args, "report-page", res)


if __name__ == "__main__":
    main()
