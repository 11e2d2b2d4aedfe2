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
after / before, and writes ``benchmarks/results/circuit-cost-TAG.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

import circuitcut.tasks.base as task_base
from circuitcut.circuits import SweepConfig, extract_circuit, sweep
from circuitcut.encoding import as_encoder
from circuitcut.models import load_model
from circuitcut.workflows.circuit import task_splits

RESULTS = Path(__file__).resolve().parent / "results"


@contextmanager
def full_forward_evaluation() -> Iterator[None]:
    """The previous evaluation path: logits at every position, then the last one picked."""
    fast = task_base.last_position_logits

    def full(model: Any, ids: torch.Tensor, mask: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        return logits[torch.arange(ids.shape[0]), last]

    task_base.last_position_logits = full
    try:
        yield
    finally:
        task_base.last_position_logits = fast


def run_once(model: Any, enc: Any, adapter: Any, attribution: Any, evaluation: Any, args: argparse.Namespace,
             before: bool) -> dict[str, Any]:  # fmt: skip
    """One sweep + extraction; seconds per phase and in all."""
    cfg = SweepConfig(methods=tuple(args.methods), level=args.level, seeds=args.seeds, n_ref=args.n_ref,
                      eval_batch_size=16 if before else 64)  # fmt: skip
    start = time.perf_counter()
    with full_forward_evaluation() if before else _nothing():
        result = sweep(model, enc, adapter, attribution, evaluation, cfg, progress=False)
        circuit = extract_circuit(model, enc, adapter, attribution, evaluation, args.methods[0], args.level,
                                  eval_batch_size=cfg.eval_batch_size, search="scan" if before else "bisection",
                                  reference=None if before else (result.dense, result.empty))  # fmt: skip
    phases = {f"sweep {k}": v for k, v in result.phases.items()}
    phases.update({f"circuit {k}": v for k, v in circuit.info["phases"].items()})
    return {
        "seconds": time.perf_counter() - start,
        "phases": phases,
        "areas": {m: round(result.area(m), 4) for m in result.curves},
        "circuit_kept": circuit.info["kept"],
    }


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def main() -> None:
    """Run both settings alternately, print and write the ratio."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="circuitcut/ref-llama")
    p.add_argument("--ioi-lists", default=None, help="IOI lists (ACDC layout); default: the zoo's own")
    p.add_argument("--level", default="neuron", choices=["weight", "neuron", "head"])
    p.add_argument("--methods", nargs="+", default=["lrp", "gradient", "wanda", "activation", "random"])
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--n-ref", type=int, default=64)
    p.add_argument("--n-attribution", type=int, default=128)
    p.add_argument("--n-eval", type=int, default=200)
    p.add_argument("--repeats", type=int, default=1, help="pairs of runs (order alternates)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tag", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, tok, adapter = load_model(args.model)
    enc = as_encoder(tok, model)
    attribution, evaluation = task_splits(
        "ioi", enc, args.n_attribution, args.n_eval, ioi_lists=args.ioi_lists
    )
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    for r in range(args.repeats):
        for name in ("before", "after") if r % 2 == 0 else ("after", "before"):
            runs[name].append(run_once(model, enc, adapter, attribution, evaluation, args, name == "before"))
            print(f"{name}: {runs[name][-1]['seconds']:.1f} s {runs[name][-1]['phases']}", flush=True)
    ratios = [a["seconds"] / b["seconds"] for a, b in zip(runs["after"], runs["before"], strict=True)]
    command = "python benchmarks/circuit_cost.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    res = {"command": command, "model": args.model, "level": args.level, "methods": args.methods,
           "seeds": args.seeds, "runs": runs, "ratio_after_over_before": statistics.median(ratios)}  # fmt: skip
    lines = [f"## Circuit run cost: {args.model}, {args.level} level, {len(args.methods)} methods x {args.seeds} "
             f"seed(s), {args.n_eval} evaluation prompts", "", f"Command: `{command}`", "",
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
    md = "\n".join(lines)
    print(md)
    tag = args.tag or Path(args.model).name
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"circuit-cost-{tag}.json").write_text(json.dumps(res, indent=2) + "\n")
    (RESULTS / f"circuit-cost-{tag}.md").write_text(md)


if __name__ == "__main__":
    main()
