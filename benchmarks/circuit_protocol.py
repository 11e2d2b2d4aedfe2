"""Circuits on the field's protocol: counterfactual patching, against attribution patching and IG.

Usage::

    python benchmarks/circuit_protocol.py --model circuitcut/ref-llama --level neuron
    python benchmarks/circuit_protocol.py --model ~/.cache/circuitcut/SmolLM2-135M-Instruct \\
        --ioi-lists ../shared/data/ioi/acdc_ioi_lists.json --level head --seeds 3 --tag smollm2-head
    python benchmarks/circuit_protocol.py --model ~/.cache/circuitcut/SmolLM2-135M-Instruct \\
        --task greater-than --level head --seeds 3 --tag smollm2-gt-head

The task is IOI (``--task ioi``, the default; logit difference) or greater-than (``--task
greater-than``, held-out start years; its probability difference, ``prob_diff``). The faithfulness
is of the task's metric.

Every method is swept under counterfactual patching (each pruned neuron or head passes on its
activation on the prompt's ABC counterfactual, :mod:`circuitcut.pruning.patching`) over the
log-spaced kept fractions, on the same held-out prompts and ``--seeds`` reference sets:

* ``lrp``: AttnLRP, the default; ``lrp-rules``: LRP with the rules ``activation,norm,gate`` (the
  best setting on SmolLM2 under zero ablation, docs/circuits.md);
* ``gradient-ap``: gradient against the counterfactual, i.e. attribution patching; ``lrp-cf``: LRP
  against the counterfactual; ``ig``: integrated gradients from the counterfactual (5 steps,
  EAP-IG-inputs); these three, and their ``-signed`` forms, with unit seeds (the default before
  value seeds became the default against a counterfactual: the committed tables that name them
  were made with unit seeds, so they keep them);
* ``gradient-ap-signed``, ``ig-signed``, ``lrp-cf-signed``: the same with signed scores (components
  that work against the answer rank last instead of first by their magnitude);
* ``...-value``: the counterfactual methods with value seeds, now their default: every prompt's
  metric difference explained as it is (EAP's sum over prompts) instead of scaled to 1 (unit seeds
  divide each prompt's scores by its own difference ``m - m'``, which flips the sign on prompts the
  model gets wrong and blows up where the difference is near 0);
* ``wanda``, ``activation``, ``random``.

The table gives the faithfulness area (log axis), MIB's CPR and CMD, and the sparsest evaluated
point reaching 80% and 90% faithfulness, with the time of each method. Agreement: the Jaccard index
of each method's top 10% of units with plain LRP's. Writes ``circuit-protocol-TAG.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from typing import Any

import common
from circuitcut.attribution import attribute
from circuitcut.attribution.config import ScoringConfig
from circuitcut.circuits.config import SweepConfig
from circuitcut.circuits.sweep import sweep
from circuitcut.io import read_json

#: variant -> its scoring
VARIANTS: dict[str, ScoringConfig] = {
    "lrp": ScoringConfig(),
    "lrp-rules": ScoringConfig(lrp_rules=("activation", "norm", "gate")),
    "lrp-cf": ScoringConfig(baseline="counterfactual", seed_mode="unit"),
    "gradient-ap": ScoringConfig(method="gradient", baseline="counterfactual", seed_mode="unit"),
    "ig": ScoringConfig(method="ig", seed_mode="unit"),
    "gradient-ap-signed": ScoringConfig(
        method="gradient", baseline="counterfactual", aggregation="signed", seed_mode="unit"
    ),
    "ig-signed": ScoringConfig(method="ig", aggregation="signed", seed_mode="unit"),
    "lrp-cf-signed": ScoringConfig(baseline="counterfactual", aggregation="signed", seed_mode="unit"),
    "gradient-ap-value": ScoringConfig(method="gradient", baseline="counterfactual", seed_mode="value"),
    "gradient-ap-value-signed": ScoringConfig(
        method="gradient", baseline="counterfactual", seed_mode="value", aggregation="signed"
    ),
    "ig-value": ScoringConfig(method="ig", seed_mode="value"),
    "ig-value-signed": ScoringConfig(method="ig", seed_mode="value", aggregation="signed"),
    "lrp-cf-value": ScoringConfig(baseline="counterfactual", seed_mode="value"),
    "wanda": ScoringConfig(method="wanda"),
    "activation": ScoringConfig(method="activation"),
    "random": ScoringConfig(method="random"),
}


#: the tasks this benchmark runs, as its tables title them
TASK_TITLES = {"ioi": "IOI", "greater-than": "Greater-than"}


def run_variant(name: str, loaded: common.Loaded, splits: tuple, args: argparse.Namespace) -> dict[str, Any]:
    """Sweep one variant; returns its row (areas, sizes, seconds) and its sweep."""
    scoring = VARIANTS[name].with_seed(0)
    cfg = SweepConfig(replace_batch(scoring), baselines=(), level=args.level, seeds=args.seeds, n_ref=args.n_ref,
                      ablation="patch", threshold=0.9, metric=splits[0].metric, **({"keep": tuple(args.keep)} if args.keep else {}))  # fmt: skip
    start = time.perf_counter()
    res = sweep(loaded.model, loaded.encoder, loaded.adapter, *splits, cfg, progress=False)
    method = scoring.method
    row = {
        "variant": name,
        "area": res.area(method),
        "cpr": res.cpr(method),
        "cmd": res.cmd(method),
        "at_80": res.sparsest(method, 0.8),
        "at_90": res.sparsest(method, 0.9),
        "monotone": res.summary()[method].get("monotone"),
        "seconds": round(time.perf_counter() - start, 1),
        # the mean faithfulness at each kept fraction, for the note and for plots
        "curve": [
            [round(f, 6), round(v, 4)]
            for f, v in zip(res.fractions(method), res.faithfulness_curve(method), strict=True)
        ],
    }
    return {"row": row, "dense": res.dense, "empty": res.empty, "n": res.n_components}


def replace_batch(scoring: ScoringConfig) -> ScoringConfig:
    """The workflows' attribution batch of 16."""
    return replace(scoring, batch_size=16)


def agreement(loaded: common.Loaded, attribution: Any, args: argparse.Namespace) -> dict[str, float]:
    """Jaccard index of each variant's top 10% units (on the first reference set) with plain LRP's."""
    ref = attribution.subset(min(args.n_ref, len(attribution)), 0).samples(loaded.encoder)
    tops: dict[str, set[int]] = {}
    for name in dict.fromkeys(["lrp", *args.variants]):  # the variants run, against plain LRP
        scoring = VARIANTS[name]
        scores = attribute(loaded.model, ref, replace_batch(scoring), adapter=loaded.adapter, levels=(args.level,),
                           progress=False)  # fmt: skip
        flat = (scores.neuron_matrix() if args.level == "neuron" else scores.head_matrix()).flatten()
        k = max(1, round(0.1 * flat.numel()))
        tops[name] = set(flat.topk(k).indices.tolist())
    return {n: round(len(t & tops["lrp"]) / len(t | tops["lrp"]), 3) for n, t in tops.items()}


def markdown(payload: dict[str, Any]) -> str:
    """The results table."""
    level = payload["level"]
    size = lambda p: "-" if p is None else f"{p['count']} ({100 * p['fraction']:.3g}%)"  # noqa: E731
    lines = [
        f"## {TASK_TITLES[payload.get('task', 'ioi')]} {level} circuits under counterfactual patching: "
        f"{payload['model']}",
        "",
        *(
            [f"Command: `{payload['command']}`"]
            if "commands" not in payload
            else [
                "Commands (one process per variant, merged with `--merge`):",
                "",
                *(f"- `{c}`" for c in payload["commands"]),
            ]
        ),
        "",
        f"{payload['n_eval']} held-out prompts, {payload['seeds']} reference set(s) of {payload['n_ref']}; "
        f"{payload['n_components']} {level}s. Full model {payload['dense']}; every {level} patched (the corrupted "
        f"model) {payload['empty']}.",
        "",
        "| method | faithfulness area | CPR | CMD | sparsest at >= 80% | sparsest at >= 90% | top-10% Jaccard with lrp "
        "| monotone | time (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["rows"]:
        lines.append(f"| {r['variant']} | {r['area']:.3f} | {r['cpr']:.3f} | {r['cmd']:.3f} | {size(r['at_80'])} | "
                     f"{size(r['at_90'])} | {payload['agreement'].get(r['variant'], '-')} | {r['monotone']} | "
                     f"{r['seconds']} |")  # fmt: skip
    return "\n".join([*lines, ""])


def merged(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """One table from runs of single variants (run one process per variant so a long table survives a
    stopped session); they must share the model, level, reference sets and held-out prompts."""
    first = payloads[0]
    for key in ("model", "task", "level", "seeds", "n_ref", "n_eval", "dense", "empty"):
        if any(p.get(key, "ioi") != first.get(key, "ioi") for p in payloads):
            raise SystemExit(f"the runs differ in {key}: merge only runs of one protocol")
    commands = [c for p in payloads for c in p.get("commands", [p["command"]])]  # a merged table merges again
    return {**first, "command": " ; ".join(commands), "commands": commands,
            "rows": [r for p in payloads for r in p["rows"]],
            "agreement": {k: v for p in payloads for k, v in p["agreement"].items()}}  # fmt: skip


def main() -> None:
    """Run the variants on one model and level; write the table."""
    p = common.parser(__doc__)
    common.add_model(p)
    common.add_ioi(p)
    common.add_results(p)
    p.add_argument("--task", default="ioi", choices=list(TASK_TITLES),
                   help="task: ioi (default; --ioi-lists applies) or greater-than (held-out start years)")  # fmt: skip
    p.add_argument("--level", default="neuron", choices=["neuron", "head"], help="units (default neuron)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), help="methods")
    p.add_argument("--keep", nargs="+", type=float, default=None,
                   help="kept fractions swept (default: the sweep's log-spaced grid)")  # fmt: skip
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="only merge results JSONs of this script (one variant each) into one table, --tag's")  # fmt: skip
    args = common.parse(p)
    if args.merge:
        payload = merged([read_json(f) for f in args.merge])
        common.write_results(args, f"circuit-protocol-{args.tag or 'merged'}", payload, markdown(payload))
        print(markdown(payload))
        return
    loaded = common.load(args.model)
    splits = common.task_splits_of(loaded.encoder, args, args.task)
    runs = [run_variant(v, loaded, splits, args) for v in args.variants]
    payload = {
        "model": args.model, "command": common.command(), "task": args.task, "level": args.level, "seeds": args.seeds,
        "n_ref": args.n_ref, "n_eval": len(splits[1]), "n_components": runs[0]["n"],
        "dense": {k: round(v, 4) for k, v in runs[0]["dense"].items()},
        "empty": {k: round(v, 4) for k, v in runs[0]["empty"].items()},
        "rows": [r["row"] for r in runs], "agreement": agreement(loaded, splits[0], args),
    }  # fmt: skip
    tag = args.tag or f"{common.tag_of(args, args.model)}-{args.level}"
    common.write_results(args, f"circuit-protocol-{tag}", payload, markdown(payload))
    print(markdown(payload))


if __name__ == "__main__":
    main()
