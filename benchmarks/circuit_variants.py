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
from typing import Any

import common
from circuitcut.attribution.config import ScoringConfig
from circuitcut.attribution.methods import AGGREGATIONS, LRP_RULES
from circuitcut.circuits.config import SweepConfig
from circuitcut.circuits.sweep import SweepResult, sweep


def rules_of(opts: list[str]) -> tuple[str, ...] | None:
    """The LRP rules a variant's options ask for (None: all)."""
    dropped = {"noattn": ("attention_scores", "attention_values"), "noav": ("attention_values",)}
    out = [r for r in LRP_RULES if not any(r in dropped[o] for o in opts if o in dropped)]
    return None if len(out) == len(LRP_RULES) else tuple(out)


def variant_config(variant: str, args: argparse.Namespace) -> SweepConfig:
    """The sweep of one variant (options joined by ``+``, see the module docstring)."""
    opts = variant.split("+")
    scoring = ScoringConfig(method=args.methods[0], aggregation=next((o for o in opts if o in AGGREGATIONS), "abs"),
                            seed_mode="value" if "value" in opts else "unit",
                            variant="cp-lrp" if "cp" in opts else "attnlrp",
                            lrp_rules=rules_of(opts) if args.methods[0] == "lrp" else None, batch_size=16)  # fmt: skip
    return SweepConfig(scoring=scoring, baselines=tuple(args.methods[1:]), level=args.level,
                       layers="mlp" if args.level == "weight" else "all", seeds=args.seeds, n_ref=args.n_ref,
                       ablation="mean" if "mean" in opts else "zero")  # fmt: skip


def rows_of(variant: str, result: SweepResult) -> list[dict[str, Any]]:
    """Per method: the areas (logit difference, answer probability, accuracy), CPR, CMD, the sparsest
    point and every point."""
    rows = []
    for method in result.curves:
        rows.append({"variant": variant, "method": method, "area": result.area(method),
                     "area_prob": result.area(method, "prob"), "area_accuracy": result.area(method, "accuracy"),
                     "cpr": result.cpr(method), "cmd": result.cmd(method), "sparsest": result.sparsest(method),
                     "phases": result.phases, "points": result.point_table(method)})  # fmt: skip
    return rows


def line_of(row: dict[str, Any]) -> str:
    """A table line of one variant and method."""
    sp = row["sparsest"]
    at = "-" if sp is None else f"{100 * sp['fraction']:.2f}% ({sp['count']})"
    return (f"| {row['variant']} | {row['method']} | {row['area']:.3f} | {row['area_prob']:.3f} | "
            f"{row['area_accuracy']:.3f} | {row['cpr']:.3f} | {row['cmd']:.3f} | {at} |")  # fmt: skip


def main() -> None:
    """Sweep every variant, print and write the table."""
    p = common.parser(__doc__)
    common.add_model(p)
    common.add_ioi(p)
    p.add_argument("--level", default="neuron", choices=["weight", "neuron", "head"])
    p.add_argument("--methods", nargs="+", default=["lrp", "gradient"])
    p.add_argument("--variants", nargs="+", default=["abs", "token_abs"])
    common.add_results(p)
    args = common.parse(p)
    model, _, adapter, enc = common.load(args.model)
    attribution, evaluation = common.ioi_splits(enc, args)
    command = common.command()
    rows: list[dict[str, Any]] = []
    empties: dict[str, dict[str, float]] = {}
    lines = [f"## IOI {args.level} circuits under LRP's open choices: {args.model}", "",
             f"Command: `{command}`", "",
             f"{len(evaluation)} held-out prompts, {args.seeds} reference set(s) of {args.n_ref}; zero ablation unless the variant says mean.", "",
             "| variant | method | faithfulness area | area on answer prob. | area on accuracy | CPR | CMD | sparsest at >= 90% (answer prob.) |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for variant in args.variants:
        cfg = variant_config(variant, args)
        result = sweep(model, enc, adapter, attribution, evaluation, cfg, progress=False)
        empties[cfg.ablation] = result.empty
        for row in rows_of(variant, result):
            rows.append(row)
            lines.append(line_of(row))
            print(lines[-1], flush=True)
    lines += ["", f"Full model: {result.dense}; empty, by ablation: {empties}.", ""]
    payload = {"command": command, "rows": rows, "dense": result.dense, "empty": empties}
    common.write_results(
        args, f"circuit-variants-{common.tag_of(args, args.model)}", payload, "\n".join(lines)
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
