"""Cost of a circuit run, by phase, against the previous implementation in the same process.

Usage::

    python benchmarks/circuit_cost.py --model ~/.cache/circuitcut/SmolLM2-135M-Instruct \\
        --ioi-lists ../shared/data/ioi/acdc_ioi_lists.json --level neuron --seeds 1

Runs the sweep of every method and the extraction of the LRP circuit twice on the same prompts,
alternating the order over ``--repeats``:

* ``before``: what the workflow did until now: evaluation through the full forward (the LM head at
  every position), 16 prompts per evaluation forward, the full and empty model measured again by
  the extraction, and the extraction scanning the count grid from the sparsest point up;
* ``after``: the defaults: the LM head on the last position only, 64 prompts per forward, the
  sweep's full/empty figures reused, bisection over the count grid.

Prints the time of each phase (attribution, mask building, evaluation) and the median ratio
after / before (paired runs of one process), and writes ``benchmarks/results/circuit-cost-TAG.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch

import circuitcut.tasks.base as task_base
import common
from circuitcut.attribution.config import ScoringConfig
from circuitcut.circuits.circuit import extract_circuit
from circuitcut.circuits.config import ABLATIONS, SweepConfig
from circuitcut.circuits.sweep import sweep


@contextmanager
def full_forward_evaluation() -> Iterator[None]:
    """The previous evaluation path: logits at every position, then the last one picked."""
    fast = task_base.last_position_logits

    def full(model: Any, ids: torch.Tensor, mask: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """The full forward's logits at each row's last position."""
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        return logits[torch.arange(ids.shape[0]), last]

    task_base.last_position_logits = full
    try:
        yield
    finally:
        task_base.last_position_logits = fast


def run_once(loaded: common.Loaded, attribution: Any, evaluation: Any, args: argparse.Namespace,
             before: bool) -> dict[str, Any]:  # fmt: skip
    """One sweep + extraction; seconds per phase."""
    model, _, adapter, enc = loaded
    cfg = SweepConfig(scoring=ScoringConfig(method=args.methods[0], batch_size=16), baselines=tuple(args.methods[1:]),
                      level=args.level, seeds=args.seeds, n_ref=args.n_ref, eval_batch_size=16 if before else 64,
                      search="scan" if before else "bisection", ablation=args.ablation)  # fmt: skip
    with full_forward_evaluation() if before else nullcontext():
        result = sweep(model, enc, adapter, attribution, evaluation, cfg, progress=False)
        circuit = extract_circuit(model, enc, adapter, attribution, evaluation, cfg,
                                  reference=None if before else (result.dense, result.empty))  # fmt: skip
    phases = {f"sweep {k}": v for k, v in result.phases.items()}
    phases.update({f"circuit {k}": v for k, v in circuit.info["phases"].items()})
    print(f"{'before' if before else 'after'}: {phases}", flush=True)
    return {
        "phases": phases,
        "areas": {m: round(result.area(m), 4) for m in result.curves},
        "circuit_kept": circuit.info["kept"],
    }


def markdown(res: dict[str, Any], args: argparse.Namespace) -> str:
    """The table of phases, before and after (medians over repeats), and the ratio."""
    runs = res["runs"]
    lines = [f"## Circuit run cost: {args.model}, {args.level} level, {len(args.methods)} methods x {args.seeds} "
             f"seed(s), {args.n_eval} evaluation prompts", "", f"Command: `{res['command']}`", "",
             "| phase | before (s) | after (s) |", "|---|---|---|"]  # fmt: skip
    keys = list(dict.fromkeys(k for name in runs for run in runs[name] for k in run["phases"]))
    for k in keys:
        b = statistics.median(run["phases"].get(k, 0.0) for run in runs["before"])
        a = statistics.median(run["phases"].get(k, 0.0) for run in runs["after"])
        lines.append(f"| {k} | {b:.1f} | {a:.1f} |")
    tb = statistics.median(run["seconds"] for run in runs["before"])
    ta = statistics.median(run["seconds"] for run in runs["after"])
    lines += [f"| **total** | **{tb:.1f}** | **{ta:.1f}** |", "",
              f"Median ratio after / before: **{res['ratio_after_over_before']:.2f}**. Areas (after): "
              f"{runs['after'][0]['areas']}; before: {runs['before'][0]['areas']}; LRP circuit kept "
              f"{runs['after'][0]['circuit_kept']} (after) vs {runs['before'][0]['circuit_kept']} (before).", ""]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    """Run both settings alternately, print and write the ratio."""
    p = common.parser(__doc__)
    common.add_model(p)
    common.add_ioi(p)
    p.add_argument("--level", default="neuron", choices=["weight", "neuron", "head"])
    p.add_argument("--methods", nargs="+", default=["lrp", "gradient", "wanda", "activation", "random"])
    p.add_argument(
        "--ablation",
        default="zero",
        choices=ABLATIONS,
        help="what a pruned component passes on (default zero)",
    )
    p.add_argument("--repeats", type=int, default=1, help="pairs of runs (order alternates)")
    common.add_results(p)
    args = common.parse(p)
    loaded = common.load(args.model)
    attribution, evaluation = common.ioi_splits(loaded.encoder, args)
    settings = {name: (lambda b=name == "before": run_once(loaded, attribution, evaluation, args, b))
                for name in ("before", "after")}  # fmt: skip
    timings = common.interleaved(settings, args.repeats, alternate=True)
    runs = {name: [{"seconds": t.seconds, **t.value} for t in timed] for name, timed in timings.items()}
    res = {"command": common.command(), "model": args.model, "level": args.level, "methods": args.methods,
           "seeds": args.seeds, "runs": runs,
           "ratio_after_over_before": common.median_ratio([r["seconds"] for r in runs["after"]],
                                                          [r["seconds"] for r in runs["before"]])}  # fmt: skip
    md = markdown(res, args)
    print(md)
    common.write_results(args, f"circuit-cost-{common.tag_of(args, args.model)}", res, md)


if __name__ == "__main__":
    main()
