"""``circuitcut demo``: the main job on the embedded reference model."""

from __future__ import annotations

import argparse

from circuitcut.cli import args as types
from circuitcut.cli.common import add_model_options, model_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the verb."""
    p = sub.add_parser(
        "demo",
        help="run the end-to-end demo on the embedded reference model",
        description=(
            "On the packaged reference model: attribute the IOI task with AttnLRP, discover its neuron "
            "circuit against gradient, activation and random baselines, and remove the planted toxic "
            "behaviour by contrastive relevance with random and magnitude controls; print a summary and "
            "write the report with plots."
        ),
    )
    p.add_argument(
        "--output",
        type=types.output_dir("demo"),
        default="demo-output",
        help="folder for the outputs (default demo-output)",
    )
    p.add_argument("--quick", action="store_true", help="smaller sets everywhere (a fast smoke run)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_model_options(p, default="circuitcut/ref-llama")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo and print its report."""
    from circuitcut.workflows.demo import report, run_demo

    summary = run_demo(
        args.output,
        model=args.model,
        quick=args.quick,
        progress=not args.no_progress,
        model_options=model_options(args),
    )
    print(report(summary))
    print(f"outputs in {args.output}/")
    return 0
