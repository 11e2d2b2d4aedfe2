"""Weight and generation time of the demo's HTML pages (report.html).

Usage::

    python benchmarks/report_page.py [--demo DIR] [--repeats 5]

Without ``--demo`` a quick demo (``run_demo(..., quick=True)``) is run into a temporary folder
first. For the demo's page and its two parts' pages (circuit/, correction/), prints the page
weight in bytes and the median time to build and write the page from the run's JSON
(:func:`circuitcut.reports.page.write_report`) over ``--repeats``, as seconds and as a ratio to
reading and parsing the same JSON files in the same process (the baseline). Writes
``benchmarks/results/report-page.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from circuitcut.reports.page import write_report

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = {"demo": ("", ["summary.json", "circuit/summary.json", "correction/report.json"]),
         "circuit": ("circuit", ["circuit/summary.json"]),
         "correction": ("correction", ["correction/report.json"])}  # fmt: skip


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(demo: Path, repeats: int) -> dict:
    """Page weight, build time and the JSON-reading baseline of each page."""
    out = {}
    for name, (sub, sources) in PARTS.items():
        folder = demo / sub
        build = median_seconds(lambda f=folder: write_report(f), repeats)
        read = median_seconds(lambda s=sources: [json.loads((demo / p).read_text()) for p in s], repeats)
        page = folder / "report.html"
        out[name] = {"bytes": page.stat().st_size, "build_seconds": round(build, 4),
                     "read_json_seconds": round(read, 5), "ratio_to_reading_json": round(build / read, 1)}  # fmt: skip
    return out


def main() -> None:
    """Run (or take) a demo, measure its pages, print and write the results."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--demo", type=Path, default=None, help="an existing demo output folder (default: run a quick demo)"
    )
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per page (default 5)")
    args = ap.parse_args()
    demo_seconds = None
    with tempfile.TemporaryDirectory() as tmp:
        demo = args.demo
        if demo is None:
            from circuitcut.workflows.demo import run_demo

            demo = Path(tmp) / "demo"
            t = time.perf_counter()
            run_demo(demo, quick=True, progress=False)
            demo_seconds = round(time.perf_counter() - t, 1)
        res = {"demo": str(args.demo or "quick demo"), "demo_seconds": demo_seconds,
               "pages": measure(demo, args.repeats)}  # fmt: skip
    for name, r in res["pages"].items():
        print(f"{name:<11} {r['bytes']:>9,} bytes  built in {r['build_seconds']:.3f} s "
              f"({r['ratio_to_reading_json']}x reading its JSON)")  # fmt: skip
    if demo_seconds:
        print(f"quick demo itself: {demo_seconds} s")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "report-page.json").write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
