"""``circuitcut circuit``: performance-versus-sparsity curves and the extracted circuit."""

from __future__ import annotations

import argparse
from typing import Any

from circuitcut.attribution.methods import LEVELS, METHODS
from circuitcut.circuits.config import ABLATIONS, SEARCHES, SweepConfig
from circuitcut.circuits.monotone import SEARCH_RULES
from circuitcut.cli import args as types
from circuitcut.cli.common import add_ioi_lists, add_model_options, load_from_args
from circuitcut.cli.scoring_options import add_scoring_options, scoring_from_args
from circuitcut.workflows.circuit_config import DiscoveryConfig


def _add_task_options(p: argparse.ArgumentParser, d: DiscoveryConfig) -> None:
    """The task, its lists and how it is split."""
    p.add_argument(
        "--task",
        type=types.task_source,
        default="ioi",
        help="ioi or greater-than (generated from templates, each prompt with its counterfactual), or a task "
        "file: .jsonl/.csv with prompt, answer[, contrast, corrupt, candidates, above, below] (docs/circuits.md, "
        "'Task files') (default ioi)",
    )
    add_ioi_lists(p)
    p.add_argument(
        "--heldout-templates",
        type=types.fraction(),
        default=d.heldout_templates,
        help=f"with --ioi-lists: share of sentence templates kept for evaluation only (default {d.heldout_templates})",
    )
    p.add_argument(
        "--eval-task",
        type=types.task_source,
        default=None,
        help="a separate evaluation task file (.jsonl/.csv, same columns as --task); then --task is used "
        "for attribution only (default: a held-out split of --task)",
    )


def _add_sweep_options(p: argparse.ArgumentParser, w: SweepConfig, d: DiscoveryConfig) -> None:
    """The scores, the methods compared, the sweep and the circuit search."""
    add_scoring_options(p, w.scoring, method_help="method whose circuit is extracted", counterfactual=True)
    p.add_argument(
        "--baselines",
        type=types.name_list(list(METHODS), empty=True),
        default=",".join(w.baselines),
        help=f"comma-separated methods compared in the sweep, or none (default {','.join(w.baselines)})",
    )
    p.add_argument("--level", default=w.level, choices=list(LEVELS), help=f"granularity (default {w.level})")
    p.add_argument(
        "--layers",
        default=w.layers,
        help=f"weight level: layers to prune (all, attn, mlp, globs like '*.mlp.fc1'; default {w.layers})",
    )
    p.add_argument(
        "--keep",
        type=types.fraction_list,
        default=",".join(f"{k:g}" for k in w.keep),
        help=f"kept fractions of the sweep, in (0, 1] (default {','.join(f'{k:g}' for k in w.keep)})",
    )
    p.add_argument(
        "--seeds",
        type=types.positive_int,
        default=w.seeds,
        help=f"reference sets per method (default {w.seeds})",
    )
    p.add_argument(
        "--n-ref",
        type=types.positive_int,
        default=w.n_ref,
        help=f"prompts per reference set (default {w.n_ref})",
    )
    p.add_argument(
        "--n-attribution",
        type=types.positive_int,
        default=d.n_attribution,
        help=f"attribution split size (default {d.n_attribution})",
    )
    p.add_argument(
        "--n-eval",
        type=types.positive_int,
        default=d.n_evaluation,
        help=f"held-out evaluation split size (default {d.n_evaluation})",
    )
    p.add_argument(
        "--threshold",
        type=types.fraction(one=True),
        default=w.threshold,
        help="faithfulness the circuit must reach, f = (m(C) - m(empty)) / (m(model) - m(empty)) "
        f"(default {w.threshold})",
    )
    p.add_argument(
        "--ablation",
        default=w.ablation,
        choices=list(ABLATIONS),
        help="what a pruned component passes on: zero (its weights zeroed; the paper's) or mean (its mean input "
        f"contribution over the attribution prompts, measured on the full model) (default {w.ablation})",
    )
    p.add_argument(
        "--search",
        default=w.search,
        choices=list(SEARCHES),
        help=f"how the circuit's grid of counts is searched: bisection ({SEARCH_RULES['bisection']}; about 12 "
        "evaluations on a 40-count grid, no monotone curve assumed) or scan (every count from the sparsest up) "
        f"(default {w.search})",
    )
    p.add_argument(
        "--random-seeds",
        type=types.non_negative_int,
        default=w.random_seeds,
        help=f"random circuits of the circuit's size measured as its control (default {w.random_seeds})",
    )
    p.add_argument(
        "--eval-batch-size",
        type=types.positive_int,
        default=w.eval_batch_size,
        help=f"prompts per evaluation forward (default {w.eval_batch_size})",
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the verb."""
    d = DiscoveryConfig()
    w = d.sweep
    p = sub.add_parser(
        "circuit",
        help="discover a task circuit: curves of all methods, the extracted circuit, plots, report",
        description=(
            "Prune by each method's scores at log-spaced kept fractions, evaluate the task on held-out prompts "
            "(pruned components take their counterfactual activation where the task has counterfactuals, else "
            "zero: --ablation), repeat over reference sets (seeds), extract the sparsest circuit of --method that "
            "reaches --threshold faithfulness, and write curves (CSV/JSON), plots (PNG/SVG), the circuit "
            "(mask + JSON) and a Markdown report."
        ),
    )
    _add_task_options(p, d)
    _add_sweep_options(p, w, d)
    p.add_argument("--output", type=types.output_dir("circuit"), required=True, help="output folder")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_model_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the workflow: the full model's held-out accuracy and metric (and a warning when the
    accuracy is low) before the sweep, then the circuit, what the search found about monotonicity,
    and where the report is."""
    from circuitcut.circuits.monotone import curve_sentences, search_sentence
    from circuitcut.reports.circuit import phase_text
    from circuitcut.workflows.circuit import discover_circuit

    model, tokenizer, _ = load_from_args(args.model, args)
    s = discover_circuit(model, args.task, args.output, discovery_config(args), eval_task=args.eval_task,
                         tokenizer=tokenizer, progress=not args.no_progress,
                         model_id=args.model, echo=print)  # fmt: skip
    print(task_line(s))
    c = s["circuit"]
    print(f"{c['method']} circuit: {c['kept']} of {c['components']} {s['level']}s, {s['metric']} "
          f"{c['circuit'][s['metric']]:.3f} (full {c['model'][s['metric']]:.3f}, random same count "
          f"{c['random_control']['metric']:.3f}); report: {args.output}/report.md")  # fmt: skip
    for line in filter(None, [search_sentence(c, s["level"]), *curve_sentences(s["sweep"], s["level"])]):
        print(line)
    for warning in s.get("warnings", []):
        print(f"warning: {warning}")
    print(f"time: {s['seconds']} s; by phase: {phase_text(s['phases'])}")
    return 0


def discovery_config(args: argparse.Namespace) -> DiscoveryConfig:
    """The run's :class:`DiscoveryConfig` from the parsed options (checked by the dataclasses)."""
    sweep = SweepConfig(scoring_from_args(args), baselines=tuple(args.baselines), level=args.level,
                        layers=args.layers, keep=tuple(args.keep), seeds=args.seeds, n_ref=args.n_ref,
                        eval_batch_size=args.eval_batch_size, threshold=args.threshold, ablation=args.ablation,
                        search=args.search, random_seeds=args.random_seeds)  # fmt: skip
    return DiscoveryConfig(sweep, args.n_attribution, args.n_eval, args.heldout_templates, args.ioi_lists)


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
