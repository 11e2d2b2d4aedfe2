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

import statistics

import common
from circuitcut.lasso.regression import learn_structure
from circuitcut.lasso.synthetic import random_sem, structure_scores
from circuitcut.reports.lasso import report
from circuitcut.workflows.lasso import run_lasso


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
                    columns = [sem.data[:, i : i + 1] for i in range(nodes)]
                    fit = common.timed(lambda columns=columns: learn_structure(columns))
                    s = structure_scores(fit.value.adjacency() != 0, sem.graph)
                    s["seconds"] = fit.seconds
                    rows.append(s)
                mean = {k: statistics.fmean(r[k] for r in rows) for k in rows[0]}
                lines.append(f"| {'tanh' if nonlinear else 'linear'} | {nodes} | {noise} | {mean['shd']:.1f} | "
                             f"{mean['precision']:.3f} | {mean['recall']:.3f} | {mean['true_edges']:.1f} | "
                             f"{mean['seconds']:.2f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    """Run and print."""
    p = common.parser(__doc__, threads=2)
    common.add_models(p)
    p.add_argument("--synthetic-only", action="store_true")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--output", default="runs/lasso")
    args = common.parse(p)
    print("## Synthetic ground truth (2000 samples, mean over seeds)\n")
    print(synthetic(args.seeds), "\n", flush=True)
    if args.synthetic_only:
        return
    for model in common.models(args):
        s = run_lasso(model, output=f"{args.output}/{model.split('/')[-1]}", progress=False)
        print(report(s), flush=True)


if __name__ == "__main__":
    main()
