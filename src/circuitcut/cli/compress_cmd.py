"""``circuitcut compress``: score, prune, evaluate perplexity, export."""

from __future__ import annotations

import argparse

from circuitcut.cli import args as types
from circuitcut.cli.common import add_model_options, model_options
from circuitcut.cli.scoring_options import add_scoring_options, scoring_from_args
from circuitcut.workflows.compress_config import BUDGETS, METHODS, SCHEMES, CompressConfig


def _add_compression_options(p: argparse.ArgumentParser, d: CompressConfig) -> None:
    """What is pruned, on which text, and how perplexity is measured."""
    p.add_argument(
        "--sparsity",
        type=types.fraction(zero=True),
        default=d.sparsity,
        help=f"share of weights to prune, in [0, 1) (default {d.sparsity})",
    )
    p.add_argument(
        "--scheme",
        default=d.scheme,
        choices=SCHEMES,
        help="global (all layers compete), layer (same rate per layer), rowwise (same rate per output row, "
        "Wanda's protocol; default) or N:M semi-structured (2:4, 4:8: sparsity is then 0.5)",
    )
    p.add_argument(
        "--budget",
        default=d.budget,
        choices=BUDGETS,
        help=f"how the sparsity is shared among decoder layers (schemes layer and rowwise; default {d.budget}): "
        "uniform (the same rate everywhere), owl (Outlier Weighed Layerwise sparsity, Yin et al. 2024: "
        "blocks with more Wanda-score outliers, above 5x their mean, are pruned less, the rates spread "
        "over a band 0.16 wide) or relevance (blocks with more score mass per weight, LRP relevance with "
        "--method lrp, are pruned less, same band); the average rate and the total count stay exact",
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
        "--sequential",
        action="store_true",
        help="score each layer on the outputs of the already-pruned layers before it (Wanda's protocol)",
    )
    p.add_argument(
        "--output",
        type=types.output_dir("compress"),
        default=None,
        help="folder for the pruned model, mask and report (omit to only report)",
    )


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
    _add_compression_options(p, d)
    add_scoring_options(p, d.scoring, methods=METHODS)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_model_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the workflow and print the report."""
    from circuitcut.reports.compression import compression_markdown
    from circuitcut.workflows.compress import compress

    report = compress(
        args.model,
        args.calibration,
        args.output,
        compress_config(args),
        args.evaluation,
        progress=not args.no_progress,
        model_options=model_options(args),
    )
    print(compression_markdown(report))
    return 0


def compress_config(args: argparse.Namespace) -> CompressConfig:
    """The run's :class:`CompressConfig` from the parsed options (checked by the dataclass)."""
    return CompressConfig(scoring_from_args(args), sparsity=args.sparsity, scheme=args.scheme, layers=args.layers,
                          n_samples=args.n_samples, seqlen=args.seqlen, eval_seqlen=args.eval_seqlen,
                          eval_windows=args.eval_windows, sequential=args.sequential, budget=args.budget)  # fmt: skip
