"""``circuitcut sae``: train sparse autoencoders for a model (SAELens layout), with their quality report."""

from __future__ import annotations

import argparse

from circuitcut.cli import args as types
from circuitcut.cli.common import add_model_options, model_options
from circuitcut.lasso.sae_config import ARCHITECTURES, SAETrainConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the verb and its sub-verb ``train``."""
    d = SAETrainConfig()
    p = sub.add_parser("sae", help="train sparse autoencoders on a model's activations",
                       description="Sparse autoencoders for CircuitLasso (circuitcut lasso --sae FOLDER).")  # fmt: skip
    ssub = p.add_subparsers(dest="sae_verb", metavar="SAE_VERB", required=True)
    t = ssub.add_parser(
        "train",
        help="train one SAE per hook point and measure it",
        description=(
            "Stream the model's activations at the hook points over the text (one forward pass reads every site "
            "and stops after the deepest), train one SAE per site (TopK or ReLU + L1), and write each in "
            "SAELens's layout (OUT/HOOK/cfg.json, sae_weights.safetensors) with quality.json and report.md: "
            "explained variance, L0, dead features and the next-token loss with the SAE spliced in, against "
            "the dense loss, on held-out windows. A checkpoint is written beside OUT every --checkpoint-every "
            "steps; running the same command again resumes from it to the same weights."
        ),
    )
    t.add_argument("--sites", required=True,
                   help="hook points, comma-separated, * for every layer (e.g. blocks.*.hook_resid_post or "
                        "blocks.7.hook_resid_post,blocks.14.hook_resid_post)")  # fmt: skip
    t.add_argument("--text", type=types.text_source, action="append", required=True,
                   help="training text: a file or a corpus name (wikitext2); repeat to join several")  # fmt: skip
    t.add_argument("--eval-text", type=types.text_source, default=None,
                   help="text the SAEs are measured on (default: the training text's last windows, held out)")  # fmt: skip
    t.add_argument("--eval-windows", type=types.positive_int, default=32,
                   help="windows the SAEs are measured on (default 32)")  # fmt: skip
    t.add_argument("--seqlen", type=types.positive_int, default=128, help="tokens per window (default 128)")
    t.add_argument("--output", type=types.output_dir("sae"), required=True, help="output folder")
    t.add_argument(
        "--d-sae", type=types.positive_int, default=d.d_sae, help=f"features per SAE (default {d.d_sae})"
    )
    t.add_argument("--architecture", choices=ARCHITECTURES, default=d.architecture,
                   help=f"topk (Gao et al. 2024) or standard (ReLU + L1) (default {d.architecture})")  # fmt: skip
    t.add_argument("--k", type=types.positive_int, default=d.k,
                   help=f"active features per token of a TopK SAE (default {d.k})")  # fmt: skip
    t.add_argument("--l1", type=types.non_negative_float, default=d.l1_coefficient,
                   help=f"L1 coefficient of a standard SAE (default {d.l1_coefficient})")  # fmt: skip
    t.add_argument(
        "--steps", type=types.positive_int, default=d.steps, help=f"optimiser steps (default {d.steps})"
    )
    t.add_argument("--batch-tokens", type=types.positive_int, default=d.batch_tokens,
                   help=f"activations per step (default {d.batch_tokens})")  # fmt: skip
    t.add_argument(
        "--lr", type=types.positive_float, default=d.lr, help=f"Adam learning rate (default {d.lr})"
    )
    t.add_argument("--buffer-tokens", type=types.positive_int, default=d.buffer_tokens,
                   help=f"activations held per site, shuffled together (default {d.buffer_tokens}); a buffer "
                        "as large as the text reads the text once")  # fmt: skip
    t.add_argument("--model-batch", type=types.positive_int, default=d.model_batch,
                   help=f"windows per model forward pass (default {d.model_batch})")  # fmt: skip
    t.add_argument("--seed", type=types.non_negative_int, default=d.seed, help=f"seed (default {d.seed})")
    t.add_argument("--no-resample", dest="resample_dead", action="store_false",
                   help="do not resample dead features (default: resample them in the first half)")  # fmt: skip
    t.add_argument("--dead-tokens", type=types.positive_int, default=d.dead_tokens,
                   help=f"tokens without firing after which a feature is dead (default {d.dead_tokens})")  # fmt: skip
    t.add_argument("--skip-positions", type=types.non_negative_int, default=d.skip_positions,
                   help=f"first positions of every window left out of training and left unchanged when the SAE "
                        f"is spliced in (attention sinks, whose norm can be ~100x the rest) (default {d.skip_positions})")  # fmt: skip
    t.add_argument("--checkpoint-every", type=types.positive_int, default=d.checkpoint_every,
                   help=f"steps between checkpoints (default {d.checkpoint_every})")  # fmt: skip
    t.add_argument("--checkpoint", default=None, help="checkpoint folder (default OUT.checkpoint beside OUT)")
    t.add_argument(
        "--keep-checkpoint", action="store_true", help="keep the checkpoint after the run finishes"
    )
    t.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_model_options(t)
    t.set_defaults(run=run_train)


def train_config(args: argparse.Namespace) -> SAETrainConfig:
    """The training settings the options give."""
    return SAETrainConfig(d_sae=args.d_sae, architecture=args.architecture, k=args.k, l1_coefficient=args.l1,
                          steps=args.steps, batch_tokens=args.batch_tokens, lr=args.lr,
                          buffer_tokens=args.buffer_tokens, model_batch=args.model_batch, seed=args.seed,
                          checkpoint_every=args.checkpoint_every, resample_dead=args.resample_dead,
                          dead_tokens=args.dead_tokens, skip_positions=args.skip_positions)  # fmt: skip


def run_train(args: argparse.Namespace) -> int:
    """Train, write, print the quality table."""
    from circuitcut.workflows.sae import report, train_sae_run

    s = train_sae_run(args.model, args.sites, args.text, args.output, train_config(args), args.eval_text,
                      args.seqlen, args.eval_windows, args.checkpoint, args.keep_checkpoint,
                      progress=not args.no_progress, model_options=model_options(args))  # fmt: skip
    print(report(s))
    return 0
