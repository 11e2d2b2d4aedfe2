"""IOI circuits: LRP against gradient, Wanda, activation and random, on the reference models or a
real checkpoint.

Usage::

    # the reference models (the README's figures)
    python benchmarks/circuits.py

    # a real model, IOI from the standard (ACDC) lists, evaluated on held-out templates
    python benchmarks/circuits.py --model ~/.cache/circuitcut/SmolLM2-135M-Instruct \\
        --ioi-lists ../shared/data/ioi/acdc_ioi_lists.json --levels neuron head --tag smollm2

For each model and level, runs the full circuit workflow (sweep over log-spaced kept fractions on
held-out IOI prompts, zero ablation, ``--seeds`` reference sets per method; the LRP circuit at 90%
faithfulness with an equal-count random control) and reports, per method, the area under the
faithfulness curve, MIB's CPR and CMD, the sparsest point at >= 90% faithfulness, the answer's
probability there, and the cost of each phase. Weight-level circuits prune the MLP weights, as in
the paper. Writes ``benchmarks/results/circuits-TAG.json`` and ``.md`` (with the command) unless
``--no-write``; each run's full report goes under ``--output``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

from circuitcut.workflows.circuit import discover_circuit

RESULTS = Path(__file__).resolve().parent / "results"


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


def main() -> None:
    """Run, print a Markdown table per model and level, write the results."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", default=None,
                   help="model (folder, .gguf, alias); repeat for several (default: both reference models)")  # fmt: skip
    p.add_argument("--levels", nargs="+", default=["weight", "neuron"], choices=["weight", "neuron", "head"])
    p.add_argument("--methods", nargs="+", default=["lrp", "gradient", "wanda", "activation", "random"],
                   help="the first is the method whose circuit is extracted")  # fmt: skip
    p.add_argument(
        "--ioi-lists", default=None, help="IOI name/template lists (ACDC layout); default: the zoo's"
    )
    p.add_argument("--seeds", type=int, default=3, help="reference sets per method (default 3)")
    p.add_argument("--aggregation", default="abs", choices=["abs", "signed", "token_abs", "token_l2"],
                   help="LRP/gradient aggregation over tokens (default abs)")  # fmt: skip
    p.add_argument("--seed-mode", default="unit", choices=["unit", "value"], help="LRP/gradient seeds")
    p.add_argument("--n-ref", type=int, default=64, help="prompts per reference set (default 64)")
    p.add_argument("--n-attribution", type=int, default=128, help="attribution split (default 128)")
    p.add_argument("--n-eval", type=int, default=200, help="evaluation prompts (default 200)")
    p.add_argument("--output", default="runs/circuits", help="where each run's report goes")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--tag", default="reference", help="results file name: circuits-TAG.json/.md")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    command = "python benchmarks/circuits.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    results, lines = [], [f"Command: `{command}`", ""]
    for model in args.model or ["circuitcut/ref-llama", "circuitcut/ref-opt"]:
        for level in args.levels:
            layers = "mlp" if level == "weight" else "all"
            out = Path(args.output) / Path(model).name / level
            s = discover_circuit(model, "ioi", out, args.methods[0], tuple(args.methods[1:]), level, layers,
                                 seeds=args.seeds, n_ref=args.n_ref, n_attribution=args.n_attribution,
                                 n_evaluation=args.n_eval, progress=False, ioi_lists=args.ioi_lists,
                                 model_id=model, aggregation=args.aggregation, seed_mode=args.seed_mode)  # fmt: skip
            results.append(s)
            block = table(s)
            lines += block
            print("\n".join(block), flush=True)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"circuits-{args.tag}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        (RESULTS / f"circuits-{args.tag}.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
