"""``circuitcut circuit``: performance-versus-sparsity curves and the extracted circuit."""

from __future__ import annotations

import argparse
from typing import Any

from circuitcut.attribution.methods import AGGREGATIONS, LRP_RULES, METHODS, SEED_MODES
from circuitcut.cli import args as types
from circuitcut.cli.common import add_model_options, load_from_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the verb."""
    p = sub.add_parser(
        "circuit",
        help="discover a task circuit: curves of all methods, the extracted circuit, plots, report",
        description=(
            "Prune by each method's scores at log-spaced kept fractions, evaluate the task on held-out prompts "
            "(zero ablation), repeat over reference sets (seeds), extract the sparsest circuit of --method that "
            "reaches --threshold faithfulness, and write curves (CSV/JSON), plots (PNG/SVG), the circuit "
            "(mask + JSON) and a Markdown report."
        ),
    )
    p.add_argument("--model", required=True, help="model directory, alias (circuitcut/ref-llama) or hub id")
    p.add_argument(
        "--task",
        type=types.task_source,
        default="ioi",
        help="ioi (generated from templates) or a task file: .jsonl/.csv with prompt, answer[, contrast]",
    )
    p.add_argument(
        "--ioi-lists",
        type=types.data_file((".json",), "IOI lists"),
        default=None,
        help="with --task ioi: generate IOI from these name/template/place/object lists (JSON in the ACDC "
        "lists' layout: NAMES, BABA_TEMPLATES, ABBA_TEMPLATES, PLACES, OBJECTS) instead of the reference "
        "models' own; names that are not one token for this tokenizer are dropped and reported; "
        "evaluation uses held-out templates (default: circuitcut's reference-model lists)",
    )
    p.add_argument(
        "--heldout-templates",
        type=types.fraction(),
        default=0.3,
        help="with --ioi-lists: share of sentence templates kept for evaluation only (default 0.3)",
    )
    p.add_argument(
        "--eval-task",
        type=types.task_source,
        default=None,
        help="a separate evaluation task file (.jsonl/.csv, same columns as --task); then --task is used "
        "for attribution only (default: a held-out split of --task)",
    )
    p.add_argument(
        "--method",
        default="lrp",
        choices=list(METHODS),
        help="method whose circuit is extracted (default lrp)",
    )
    p.add_argument(
        "--baselines",
        type=types.name_list(list(METHODS)),
        default="gradient,wanda,activation,random",
        help="comma-separated methods compared in the sweep (default gradient,wanda,activation,random)",
    )
    p.add_argument(
        "--level", default="weight", choices=["weight", "neuron", "head"], help="granularity (default weight)"
    )
    p.add_argument(
        "--layers",
        default="all",
        help="weight level: layers to prune (all, attn, mlp, globs like '*.mlp.fc1'; default all)",
    )
    p.add_argument(
        "--seeds", type=types.positive_int, default=3, help="reference sets per method (default 3)"
    )
    p.add_argument(
        "--n-ref", type=types.positive_int, default=64, help="prompts per reference set (default 64)"
    )
    p.add_argument(
        "--n-attribution",
        type=types.positive_int,
        default=128,
        help="attribution split size for ioi (default 128)",
    )
    p.add_argument(
        "--n-eval",
        type=types.positive_int,
        default=200,
        help="held-out evaluation split size for ioi (default 200)",
    )
    p.add_argument(
        "--threshold",
        type=types.fraction(one=True),
        default=0.9,
        help="faithfulness the circuit must reach, f = (m(C) - m(empty)) / (m(model) - m(empty)) (default 0.9)",
    )
    p.add_argument(
        "--ablation",
        default="zero",
        choices=["zero", "mean"],
        help="what a pruned component passes on: zero (its weights zeroed, default; the paper's) or mean "
        "(its mean input contribution over the attribution prompts, measured on the full model)",
    )
    p.add_argument(
        "--aggregation",
        default="abs",
        choices=list(AGGREGATIONS),
        help="lrp/gradient: how token relevance becomes a prompt's score: abs (|sum over tokens|, default abs), "
        "token_abs (sum of |each token's relevance|), token_l2 or signed (keep first what raises the metric)",
    )
    p.add_argument(
        "--seed-mode",
        default="unit",
        choices=list(SEED_MODES),
        help="lrp/gradient: each explained output starts the backward with unit relevance (unit, default unit) "
        "or with its own value (value)",
    )
    p.add_argument(
        "--lrp-rules",
        type=types.name_list(list(LRP_RULES)),
        default=None,
        help=f"comma-separated LRP rules to install for method lrp, among {','.join(LRP_RULES)} (default: all, "
        "AttnLRP). Leaving out attention_scores,attention_values lets attention keep its gradient: on "
        "SmolLM2-135M's IOI neurons that puts LRP ahead of gradient x input (README, 'Circuits')",
    )
    p.add_argument("--output", type=types.output_dir(), required=True, help="output folder")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_model_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the workflow and print where the report is."""
    from circuitcut.workflows.circuit import discover_circuit, phase_text

    baselines = tuple(args.baselines)  # parsed and checked by types.name_list
    model, tokenizer, _ = load_from_args(args.model, args)
    s = discover_circuit(model, args.task, args.output, args.method, baselines, args.level, args.layers,
                         args.seeds, args.n_ref, args.n_attribution, args.n_eval, args.threshold,
                         tokenizer=tokenizer, progress=not args.no_progress, eval_task=args.eval_task,
                         ioi_lists=args.ioi_lists, heldout_templates=args.heldout_templates,
                         model_id=args.model, ablation=args.ablation, lrp_rules=args.lrp_rules,
                         aggregation=args.aggregation, seed_mode=args.seed_mode)  # fmt: skip
    print(task_line(s))
    c = s["circuit"]
    print(f"{c['method']} circuit: {c['kept']} of {c['components']} {s['level']}s, {s['metric']} "
          f"{c['circuit'][s['metric']]:.3f} (full {c['model'][s['metric']]:.3f}, random same count "
          f"{c['random_control']['metric']:.3f}); report: {args.output}/report.md")  # fmt: skip
    print(f"time: {s['seconds']} s; by phase: {phase_text(s['phases'])}")
    return 0


def task_line(s: dict[str, Any]) -> str:
    """One line on the tasks used: held-out size and the full model's metrics there."""
    ev = s["tasks"]["evaluation"]
    meta, dense = ev["meta"], s["dense"]
    parts = [f"evaluation: {ev['examples']} prompts ({ev['name']})"]
    if "heldout_frames" in meta:
        parts.append(f"{meta['heldout_frames']} of {meta['frames']} sentence templates held out")
    if meta.get("dropped_names"):
        parts.append(
            f"{len(meta['dropped_names'])} names dropped (not one token: {', '.join(meta['dropped_names'][:5])}...)"
        )
    metrics = f"full model accuracy {dense['accuracy']:.3f}"
    if "logit_diff" in dense:
        metrics += f", logit difference {dense['logit_diff']:.3f}"
    return "; ".join(parts) + "; " + metrics
