"""IOI circuit sweeps under LRP's open choices: aggregation over tokens and seeds, against gradient.

Usage::

    python benchmarks/circuit_variants.py --model ~/.cache/circuitcut/SmolLM2-135M-Instruct \\
        --ioi-lists ../shared/data/ioi/acdc_ioi_lists.json --level neuron \\
        --variants abs token_abs token_l2 value+token_abs --tag smollm2-neuron

For each variant (options joined by ``+``: an aggregation, ``value`` for value seeds, ``cp`` for
CP-LRP rules, ``mean`` for mean ablation instead of zeroing, ``noattn`` for LRP without its two
attention rules and ``noav`` without the rule on the attention output ``A . V``; e.g. ``abs``,
``value+token_abs``, ``cp+abs``, ``token_abs+mean``, ``abs+noattn``), sweeps ``--methods``
(default lrp and gradient) over the log-spaced kept fractions on the held-out IOI prompts
(``--seeds`` reference sets) and reports the faithfulness area (on the logit difference, and on
the answer's probability and the accuracy), MIB's CPR and CMD and the sparsest point at >= 90%
faithfulness. The sweep only: no circuit extraction. Writes
``benchmarks/results/circuit-variants-TAG.json`` and ``.md`` (with the command).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

from circuitcut.attribution.methods import AGGREGATIONS, LRP_RULES
from circuitcut.circuits import SweepConfig, sweep
from circuitcut.encoding import as_encoder
from circuitcut.models import load_model
from circuitcut.workflows.circuit import task_splits

RESULTS = Path(__file__).resolve().parent / "results"


def rules_of(opts: list[str]) -> tuple[str, ...] | None:
    """The LRP rules a variant's options ask for (None: all)."""
    dropped = {"noattn": ("attention_scores", "attention_values"), "noav": ("attention_values",)}
    out = [r for r in LRP_RULES if not any(r in dropped[o] for o in opts if o in dropped)]
    return None if len(out) == len(LRP_RULES) else tuple(out)


def main() -> None:
    """Sweep every variant, print and write the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="circuitcut/ref-llama")
    p.add_argument("--ioi-lists", default=None, help="IOI lists (ACDC layout); default: the zoo's own")
    p.add_argument("--level", default="neuron", choices=["weight", "neuron", "head"])
    p.add_argument("--methods", nargs="+", default=["lrp", "gradient"])
    p.add_argument("--variants", nargs="+", default=["abs", "token_abs"])
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--n-ref", type=int, default=64)
    p.add_argument("--n-attribution", type=int, default=128)
    p.add_argument("--n-eval", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tag", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, tok, adapter = load_model(args.model)
    enc = as_encoder(tok, model)
    attribution, evaluation = task_splits(
        "ioi", enc, args.n_attribution, args.n_eval, ioi_lists=args.ioi_lists
    )
    layers = "mlp" if args.level == "weight" else "all"
    command = "python benchmarks/circuit_variants.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    rows: list[dict[str, Any]] = []
    empties: dict[str, dict[str, float]] = {}
    lines = [f"## IOI {args.level} circuits under LRP's open choices: {args.model}", "",
             f"Command: `{command}`", "",
             f"{len(evaluation)} held-out prompts, {args.seeds} reference set(s) of {args.n_ref}; zero ablation unless the variant says mean.", "",
             "| variant | method | faithfulness area | area on answer prob. | area on accuracy | CPR | CMD | sparsest at >= 90% (answer prob.) |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for variant in args.variants:
        opts = variant.split("+")
        aggregation = next((o for o in opts if o in AGGREGATIONS), "abs")
        cfg = SweepConfig(methods=tuple(args.methods), level=args.level, layers=layers, seeds=args.seeds,
                          n_ref=args.n_ref, aggregation=aggregation, seed_mode="value" if "value" in opts else "unit",
                          variant="cp-lrp" if "cp" in opts else "attnlrp",
                          ablation="mean" if "mean" in opts else "zero", lrp_rules=rules_of(opts))  # fmt: skip
        result = sweep(model, enc, adapter, attribution, evaluation, cfg, progress=False)
        empties[cfg.ablation] = result.empty
        for method in result.curves:
            sp = result.sparsest(method)
            at = "-" if sp is None else f"{100 * sp['fraction']:.2f}% ({sp['count']})"
            row = {"variant": variant, "method": method, "area": result.area(method),
                   "area_prob": result.area(method, "prob"), "area_accuracy": result.area(method, "accuracy"),
                   "cpr": result.cpr(method), "cmd": result.cmd(method), "sparsest": sp, "phases": result.phases,
                   "points": result.point_table(method)}  # fmt: skip
            rows.append(row)
            line = (
                f"| {variant} | {method} | {row['area']:.3f} | {row['area_prob']:.3f} | {row['area_accuracy']:.3f} "
                f"| {row['cpr']:.3f} | {row['cmd']:.3f} | {at} |"
            )
            lines.append(line)
            print(line, flush=True)
    lines += ["", f"Full model: {result.dense}; empty, by ablation: {empties}.", ""]
    tag = args.tag or Path(args.model).name
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"circuit-variants-{tag}.json").write_text(json.dumps({"command": command, "rows": rows,
                                                                       "dense": result.dense, "empty": empties}, indent=2,
                                                                      default=str) + "\n")  # fmt: skip
    (RESULTS / f"circuit-variants-{tag}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
