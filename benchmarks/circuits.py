"""IOI circuits: LRP against gradient, Wanda, activation and random, on the reference models or a
real checkpoint.

Usage::

    # the reference models (the README's figures)
    python benchmarks/circuits.py

    # a real model, IOI from the standard (ACDC) lists, evaluated on held-out templates
    python benchmarks/circuits.py --model ~/.cache/circuitcut/SmolLM2-135M-Instruct \\
        --ioi-lists ../shared/data/ioi/acdc_ioi_lists.json --levels neuron head --tag smollm2

For each model and level, runs the full circuit workflow (sweep over log-spaced kept fractions on
held-out IOI prompts, zero ablation unless ``--ablation``, ``--seeds`` reference sets per method;
the LRP circuit at 90% faithfulness with an equal-count random control) and reports, per method,
the area under the faithfulness curve, MIB's CPR and CMD, the sparsest point at >= 90%
faithfulness, the answer's probability there, and the cost of each phase. Weight-level circuits
prune the MLP weights, as in the paper. Writes ``benchmarks/results/circuits-TAG.json`` and ``.md``
(with the command) unless ``--no-write``; each run's full report goes under ``--output``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import common
from circuitcut.attribution.config import ScoringConfig
from circuitcut.circuits.config import ABLATIONS, SweepConfig
from circuitcut.workflows.circuit import discover_circuit
from circuitcut.workflows.circuit_config import DiscoveryConfig


def table(s: dict[str, Any]) -> list[str]:
    """The Markdown table of one run."""
    c = s["circuit"]
    dense = s["dense"]
    ev = s["tasks"]["evaluation"]
    phases = s.get("phases", {})
    lines = [
        f"### {s['model']}, {s['level']} level ({s['layers']})",
        "",
        f"Evaluation: {ev['examples']} prompts ({ev['name']}); full model accuracy {dense['accuracy']:.3f}, "
        f"logit difference {dense.get('logit_diff', float('nan')):.3f}, answer probability {dense['prob']:.3f}; "
        f"sweep {s['sweep_seconds']} s.",
        "",
        "| method | faithfulness area | CPR | CMD | sparsest kept share at >= 90% faithfulness | answer prob. there |",
        "|---|---|---|---|---|---|",
    ]
    for method, r in s["sweep"].items():
        sp = r.get("sparsest")
        share = "-" if not sp else f"{100 * sp['fraction']:.2f}% ({sp['count']})"
        prob = "-" if not sp or sp.get("prob") is None else f"{sp['prob']:.3f}"
        lines.append(f"| {method} | {r['faithfulness_area']:.3f} | {r.get('cpr', float('nan')):.3f} | "
                     f"{r.get('cmd', float('nan')):.3f} | {share} | {prob} |")  # fmt: skip
    for method, why in s["skipped"].items():
        lines.append(f"| {method} | skipped ({why}) | | | | |")
    lines += [
        "",
        f"LRP circuit: {c['kept']} of {c['components']} ({100 * c['kept'] / c['components']:.3f}%), faithfulness "
        f"{c['faithfulness']:.3f}; random same count faithfulness {c['random_faithfulness']:.3f}.",
        "",
    ]
    if phases:
        lines += ["Cost per phase (s): " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()), ""]
    return lines


def discovery(level: str, args: argparse.Namespace) -> DiscoveryConfig:
    """The circuit run of one level: the first method's circuit, the rest as baselines; weight-level
    circuits prune the MLP weights."""
    scoring = ScoringConfig(method=args.methods[0], aggregation=args.aggregation, seed_mode=args.seed_mode,
                            batch_size=16)  # fmt: skip
    sweep = SweepConfig(scoring=scoring, baselines=tuple(args.methods[1:]), level=level,
                        layers="mlp" if level == "weight" else "all", seeds=args.seeds, n_ref=args.n_ref,
                        ablation=args.ablation)  # fmt: skip
    return DiscoveryConfig(
        sweep, n_attribution=args.n_attribution, n_evaluation=args.n_eval, ioi_lists=args.ioi_lists
    )


def main() -> None:
    """Run, print a Markdown table per model and level, write the results."""
    p = common.parser(__doc__)
    common.add_models(p)
    p.add_argument("--levels", nargs="+", default=["weight", "neuron"], choices=["weight", "neuron", "head"])
    p.add_argument("--methods", nargs="+", default=["lrp", "gradient", "wanda", "activation", "random"],
                   help="the first is the method whose circuit is extracted")  # fmt: skip
    common.add_ioi(p, seeds=3)
    p.add_argument("--aggregation", default="abs", choices=["abs", "signed", "token_abs", "token_l2"],
                   help="LRP/gradient aggregation over tokens (default abs)")  # fmt: skip
    p.add_argument("--seed-mode", default="unit", choices=["unit", "value"], help="LRP/gradient seeds")
    p.add_argument(
        "--ablation",
        default="zero",
        choices=ABLATIONS,
        help="what a pruned component passes on (default zero)",
    )
    p.add_argument("--output", default="runs/circuits", help="where each run's report goes")
    common.add_results(p, tag="reference", text="results file name: circuits-TAG.json/.md")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = common.parse(p)
    results: list[dict[str, Any]] = []
    lines = [f"Command: `{common.command()}`", ""]
    for model in common.models(args):
        for level in args.levels:
            out = Path(args.output) / Path(model).name / level
            s = discover_circuit(model, "ioi", out, discovery(level, args), progress=False,
                                 model_id=model)  # fmt: skip
            results.append(s)
            block = table(s)
            lines += block
            print("\n".join(block), flush=True)
    if not args.no_write:
        common.write_results(args, f"circuits-{args.tag}", results, "\n".join(lines))


if __name__ == "__main__":
    main()
