"""``circuitcut inspect``: print a model's architecture summary."""

from __future__ import annotations

import argparse
import json

from circuitcut.cli.common import add_model_options, load_from_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the verb."""
    p = sub.add_parser(
        "inspect",
        help="print a model's architecture: layers, heads, neurons, parameters per group",
        description=(
            "Load a model and print where its parts are and how many of each there are: layers, "
            "attention heads and key/value heads, MLP neurons, linear layers with their readable "
            "names and shapes, and parameter counts per component group."
        ),
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_model_options(p, positional=True)
    p.set_defaults(run=run)


def format_summary(s: dict) -> str:
    """The summary as a human-readable table."""
    lines = [
        f"{s['class']}  (model_type {s['model_type']})",
        f"  layers            {s['layers']}   (at {s['layers_path']})",
        f"  hidden size       {s['hidden_size']}",
        f"  attention heads   {s['heads']} per layer, {s['kv_heads']} key/value heads, head dim {s['head_dim']}",
        f"  MLP neurons       {s['neurons_per_layer']} per layer ({'gated' if s['gated_mlp'] else 'plain'}, {s['activation']})",
        f"  norm              {s['norm']}",
        f"  vocabulary        {s['vocab_size']}  (embeddings {'tied' if s['tied_embeddings'] else 'untied'})",
        "",
        "  linear layers of each decoder layer (out x in):",
    ]
    for lin in s["linears_per_layer"]:
        lines.append(f"    layers.N.{lin['name']:<24} {lin['role']:<8} {lin['shape'][0]} x {lin['shape'][1]}")
    lines += ["", "  component counts:"]
    for key, value in s["counts"].items():
        lines.append(f"    {key:<32} {value:>14,}")
    lines += ["", "  parameters:"]
    for key, value in s["parameters"].items():
        lines.append(f"    {key:<32} {value:>14,}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Load the model and print its summary."""
    _, _, adapter = load_from_args(args.model, args)
    summary = adapter.summary()
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0
