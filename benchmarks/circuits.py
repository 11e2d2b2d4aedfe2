"""IOI circuits on the reference models: LRP against gradient, Wanda, activation and random.

Usage::

    python benchmarks/circuits.py [--models circuitcut/ref-llama circuitcut/ref-opt]
        [--levels weight neuron head] [--seeds 3] [--output runs/circuits] [--threads 1]

For each model and level, runs the full circuit workflow (sweep over log-spaced kept fractions on
held-out IOI prompts, zero ablation; the LRP circuit at 90% of the logit difference with an
equal-count random control) and prints, per method, the area under the faithfulness curve and the
sparsest kept share whose mean logit difference stays >= 90% of the model's, plus the wall time of
the sweep. Weight-level circuits prune the MLP weights (fc1 + fc2 / gate, up, down), as in the paper.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from circuitcut.workflows.circuit import discover_circuit


def main() -> None:
    """Run and print a Markdown table per model and level."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["circuitcut/ref-llama", "circuitcut/ref-opt"])
    p.add_argument("--levels", nargs="+", default=["weight", "neuron"], choices=["weight", "neuron", "head"])
    p.add_argument("--seeds", type=int, default=3, help="reference sets per method (default 3)")
    p.add_argument("--n-ref", type=int, default=64, help="prompts per reference set (default 64)")
    p.add_argument("--output", default="runs/circuits", help="where each run's report goes")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for model in args.models:
        for level in args.levels:
            layers = "mlp" if level == "weight" else "all"
            out = Path(args.output) / model.split("/")[-1] / level
            s = discover_circuit(model, "ioi", out, "lrp", ("gradient", "wanda", "activation", "random"), level,
                                 layers, seeds=args.seeds, n_ref=args.n_ref, progress=False)  # fmt: skip
            results.append(s)
            c = s["circuit"]
            print(f"### {model}, {level} level ({layers}); full logit diff {s['dense']['logit_diff']:.3f}, "
                  f"sweep {s['sweep_seconds']} s\n")  # fmt: skip
            print("| method | faithfulness area | sparsest kept share at >= 90% |")
            print("|---|---|---|")
            for method, r in s["sweep"].items():
                k = r["sparsest_keep_90"]
                print(
                    f"| {method} | {r['faithfulness_area']:.3f} | {'-' if k is None else f'{100 * k:.2f}%'} |"
                )
            for method, why in s["skipped"].items():
                print(f"| {method} | skipped ({why}) | |")
            print(f"\nLRP circuit: {c['kept']} of {c['components']} ({100 * c['kept'] / c['components']:.3f}%), "
                  f"logit diff {c['circuit']['logit_diff']:.3f} (faithfulness {c['faithfulness']:.3f}); random same "
                  f"count {c['random_control']['metric']:.3f} (faithfulness {c['random_faithfulness']:.3f})\n",
                  flush=True)  # fmt: skip
    Path(args.output).mkdir(parents=True, exist_ok=True)
    (Path(args.output) / "all.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
