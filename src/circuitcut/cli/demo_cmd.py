"""``circuitcut demo``: the main job on the embedded reference model."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the verb."""
    p = sub.add_parser(
        "demo",
        help="run the end-to-end demo on the embedded reference model",
        description=(
            "Load the packaged reference model, measure its planted behaviours, attribute the IOI "
            "task with LRP beside baselines, and write scores, a summary and a Markdown report."
        ),
    )
    p.add_argument("--output", default="demo-output", help="folder for the outputs (default demo-output)")
    p.add_argument("--model", default="circuitcut/ref-llama", help="model (default circuitcut/ref-llama)")
    p.add_argument("--n-ref", type=int, default=64, help="IOI reference prompts for attribution (default 64)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo and print its report."""
    from circuitcut.workflows.demo import _report, run_demo

    summary = run_demo(args.output, model=args.model, n_ref=args.n_ref, progress=not args.no_progress)
    print(_report(summary))
    print(f"outputs in {args.output}/")
    return 0
