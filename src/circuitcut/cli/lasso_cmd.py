"""``circuitcut lasso``: CircuitLasso feature circuits over sparse-autoencoder features."""

from __future__ import annotations

import argparse

from circuitcut.cli import args as types
from circuitcut.cli.common import add_ioi_lists, add_model_options, model_options
from circuitcut.validation import FEATURE_NODES


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the verb."""
    p = sub.add_parser(
        "lasso",
        help="learn a feature circuit over SAE features by sparse regression (CircuitLasso)",
        description=(
            "Load SAEs (SAELens layout: a folder with one sub-folder per hook point) or train them, collect the "
            "features of the task's prompts, regress the output on the last site's features and each site on the "
            "earlier ones (L1, BIC-selected penalties), trace the circuit back from the output, and compare its "
            "faithfulness and cost with attribution patching at matched sizes. Writes the graph (JSON, PNG/SVG), "
            "plots and a Markdown report; on the reference models also ablates the features tied to the planted "
            "toxic behaviour."
        ),
    )
    p.add_argument("--sae", default="train", help="SAE folder (SAELens layout) or 'train' (default)")
    p.add_argument(
        "--sae-text",
        type=types.text_source,
        default=None,
        help="text to train SAEs on, in the model's language: a file or a corpus name such as wikitext2 "
        "(required with --sae train, except on the reference models, whose synthetic language is the default)",
    )
    p.add_argument(
        "--d-sae", type=types.positive_int, default=256, help="features per trained SAE (default 256)"
    )
    p.add_argument(
        "--k",
        type=types.positive_int,
        default=12,
        help="active features per token of a trained TopK SAE (default 12)",
    )
    p.add_argument(
        "--sae-steps", type=types.positive_int, default=1500, help="training steps per SAE (default 1500)"
    )
    p.add_argument(
        "--task",
        type=types.task_source,
        default="ioi",
        help="ioi or a task file (.jsonl/.csv: prompt, answer[, contrast])",
    )
    add_ioi_lists(p)
    p.add_argument(
        "--sites",
        default="blocks.*.hook_resid_post",
        help="hook points, comma-separated, * for every layer (default blocks.*.hook_resid_post)",
    )
    p.add_argument(
        "--n-attribution",
        type=types.positive_int,
        default=400,
        help="prompts the regressions learn from (default 400)",
    )
    p.add_argument(
        "--n-eval",
        type=types.positive_int,
        default=200,
        help="held-out prompts for faithfulness (default 200)",
    )
    p.add_argument(
        "--graph-size",
        type=types.positive_int,
        default=32,
        help="features drawn in the circuit graph (default 32)",
    )
    p.add_argument(
        "--ig-steps",
        type=types.positive_int,
        default=5,
        help="integrated-gradients steps from the counterfactual prompt, for tasks that have one (default 5)",
    )
    p.add_argument(
        "--no-toxic", action="store_true", help="skip the planted-behaviour ablation on reference models"
    )
    p.add_argument(
        "--importance",
        default="activation",
        choices=["activation", "coef"],
        help="feature ranking: mean per-prompt |coef x activation| (default; where the task has counterfactual "
        "prompts, the activation's change against them) or the bare |coef|",
    )
    p.add_argument(
        "--nodes",
        default="last",
        choices=list(FEATURE_NODES),
        help="where a circuit's features are ablated when its faithfulness is measured, and scored by the "
        "gradient baselines: 'last' (default), at the explained last position, the data CircuitLasso "
        "regresses on; 'all', at every position of the prompt",
    )
    p.add_argument(
        "--site-norm",
        default="on",
        choices=["on", "off"],
        help="'on' (default): each site's CircuitLasso scores sum to one before the circuit takes the top "
        "features of all sites; 'off': every site's features compete on one scale",
    )
    p.add_argument("--output", type=types.output_dir("lasso"), required=True, help="output folder")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_model_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the workflow and print the report."""
    from circuitcut.reports.lasso import report
    from circuitcut.workflows.lasso import run_lasso

    s = run_lasso(args.model, args.task, args.sae, args.sites, args.output, args.sae_text, args.d_sae, args.k,
                  args.sae_steps, args.n_attribution, args.n_eval, graph_size=args.graph_size, ig_steps=args.ig_steps, ioi_lists=args.ioi_lists,
                  toxic=not args.no_toxic, progress=not args.no_progress, importance=args.importance,
                  model_options=model_options(args), nodes=args.nodes,
                  normalise_sites=args.site_norm == "on")  # fmt: skip
    print(report(s))
    return 0
