"""CircuitLasso: structure recovery on synthetic ground truth, and feature circuits on the reference models.

Usage::

    python benchmarks/lasso.py [--synthetic-only] [--models circuitcut/ref-llama circuitcut/ref-opt]
        [--output runs/lasso] [--threads 2]

Synthetic: random sparse structural models (``circuitcut.lasso.synthetic``) with 10, 20 and 50
nodes, noise 0.5 and 1.0, linear and tanh variants, 2000 samples, 3 seeds; CircuitLasso's defaults
(all earlier nodes, BIC penalty, threshold 0.05); SHD, precision, recall and fit time (mean over seeds).
Reference models: the full workflow (SAEs trained on every layer's residual stream; IOI feature
circuit against attribution patching at matched sizes; ablation of the planted toxic behaviour).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from circuitcut.lasso.regression import learn_structure
from circuitcut.lasso.synthetic import random_sem, structure_scores
from circuitcut.workflows.lasso import report, run_lasso


def synthetic(seeds: int = 3) -> str:
    """The ground-truth table."""
    lines = [
        "| model | nodes | noise | SHD | precision | recall | true edges | fit s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for nonlinear in (False, True):
        for nodes in (10, 20, 50):
            for noise in (0.5, 1.0):
                rows = []
                for seed in range(seeds):
                    sem = random_sem(nodes, 2000, noise=noise, nonlinear=nonlinear, seed=seed)
                    t = time.perf_counter()
                    st = learn_structure([sem.data[:, i : i + 1] for i in range(nodes)])
                    s = structure_scores(st.adjacency() != 0, sem.graph)
                    s["seconds"] = time.perf_counter() - t
                    rows.append(s)
                mean = {k: statistics.fmean(r[k] for r in rows) for k in rows[0]}
                lines.append(f"| {'tanh' if nonlinear else 'linear'} | {nodes} | {noise} | {mean['shd']:.1f} | "
                             f"{mean['precision']:.3f} | {mean['recall']:.3f} | {mean['true_edges']:.1f} | "
                             f"{mean['seconds']:.2f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    """Run and print."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["circuitcut/ref-llama", "circuitcut/ref-opt"])
    p.add_argument("--synthetic-only", action="store_true")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--output", default="runs/lasso")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print("## Synthetic ground truth (2000 samples, mean over seeds)\n")
    print(synthetic(args.seeds), "\n", flush=True)
    if args.synthetic_only:
        return
    for model in args.models:
        s = run_lasso(model, output=f"{args.output}/{model.split('/')[-1]}", progress=False)
        print(report(s), flush=True)


if __name__ == "__main__":
    main()
