"""``circuitcut compress``: score, prune, evaluate perplexity, export."""

from __future__ import annotations

import argparse

from circuitcut.attribution.methods import AGGREGATIONS, LRP_RULES, SEED_MODES
from circuitcut.cli import args as types
from circuitcut.workflows.compress_config import METHODS, SCHEMES, CompressConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the verb."""
    d = CompressConfig()
    p = sub.add_parser(
        "compress",
        help="prune the least relevant weights and report perplexity before and after",
        description=(
            "Score the model's weights on calibration text, prune the lowest-scored ones by the chosen "
            "scheme, evaluate perplexity before and after (non-overlapping windows), and write the pruned "
            "model (save_pretrained), the mask (safetensors + JSON) and a report (JSON + Markdown)."
        ),
    )
    p.add_argument("--model", required=True, help="model directory, alias (circuitcut/ref-llama) or hub id")
    p.add_argument("--method", default=d.method, choices=METHODS, help=f"scoring method (default {d.method})")
    p.add_argument(
        "--sparsity",
        type=types.fraction(zero=True),
        default=d.sparsity,
        help="share of weights to prune, in [0, 1) (default 0.5)",
    )
    p.add_argument(
        "--scheme",
        default=d.scheme,
        choices=SCHEMES,
        help="global (all layers compete), layer (same rate per layer), rowwise (same rate per output row, "
        "Wanda's protocol; default) or N:M semi-structured (2:4, 4:8: sparsity is then 0.5)",
    )
    p.add_argument(
        "--layers",
        default=d.layers,
        help="layers to prune: all (decoder linears; default), attn, mlp, or globs",
    )
    p.add_argument(
        "--calibration",
        type=types.text_source,
        required=True,
        help="calibration text: a file, or a corpus name (wikitext2, hf:PATH:CONFIG:SPLIT) with network",
    )
    p.add_argument(
        "--eval",
        type=types.text_source,
        dest="evaluation",
        default=None,
        help="perplexity corpus (default: the calibration text)",
    )
    p.add_argument(
        "--n-samples",
        type=types.positive_int,
        default=d.n_samples,
        help=f"calibration windows (default {d.n_samples})",
    )
    p.add_argument(
        "--seqlen",
        type=types.positive_int,
        default=None,
        help="tokens per calibration window (default 128, or the model's context if shorter)",
    )
    p.add_argument(
        "--eval-seqlen",
        type=types.positive_int,
        default=None,
        help="tokens per perplexity window (default: --seqlen)",
    )
    p.add_argument(
        "--eval-windows",
        type=types.positive_int,
        default=None,
        help="evaluate at most this many windows (default all)",
    )
    p.add_argument(
        "--batch-size",
        type=types.positive_int,
        default=d.batch_size,
        help=f"windows per batch (default {d.batch_size})",
    )
    p.add_argument(
        "--sequential",
        action="store_true",
        help="score each layer on the outputs of the already-pruned layers before it (Wanda's protocol)",
    )
    p.add_argument(
        "--variant", default=d.variant, choices=["attnlrp", "cp-lrp"], help="LRP variant (default attnlrp)"
    )
    p.add_argument(
        "--aggregation",
        default=d.aggregation,
        choices=list(AGGREGATIONS),
        help="lrp/gradient: how token relevance becomes a window's score: token_abs (sum of |each token's "
        f"relevance|), token_l2, abs (|sum|) or signed (default {d.aggregation})",
    )
    p.add_argument(
        "--seed-mode",
        default=d.seed_mode,
        choices=list(SEED_MODES),
        help="lrp/gradient: each explained logit starts the backward with unit relevance (unit) or with "
        f"its own value (value; closer to Wanda on SmolLM2-135M, see the README) (default {d.seed_mode})",
    )
    p.add_argument(
        "--lrp-rules",
        type=types.name_list(list(LRP_RULES)),
        default=None,
        help=f"lrp: comma-separated rules to install, among {','.join(LRP_RULES)} (default: all)",
    )
    p.add_argument(
        "--seed",
        type=types.non_negative_int,
        default=d.seed,
        help="seed of window sampling and of the random method",
    )
    p.add_argument(
        "--output",
        type=types.output_dir(),
        default=None,
        help="folder for the pruned model, mask and report (omit to only report)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the workflow and print the report."""
    from circuitcut.workflows.compress import CompressConfig, _markdown, compress

    cfg = CompressConfig(method=args.method, sparsity=args.sparsity, scheme=args.scheme, layers=args.layers,
                         n_samples=args.n_samples, seqlen=args.seqlen, eval_seqlen=args.eval_seqlen,
                         eval_windows=args.eval_windows, batch_size=args.batch_size, seed=args.seed,
                         sequential=args.sequential, variant=args.variant,
                         aggregation=args.aggregation, seed_mode=args.seed_mode,
                         lrp_rules=args.lrp_rules)  # fmt: skip
    report = compress(
        args.model, args.calibration, args.output, cfg, args.evaluation, progress=not args.no_progress
    )
    print(_markdown(report))
    return 0
