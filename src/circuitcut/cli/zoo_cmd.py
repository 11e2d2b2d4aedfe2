"""``circuitcut zoo``: train and measure the reference models."""

from __future__ import annotations

import argparse

from circuitcut.cli import args as types
from circuitcut.cli.common import add_model_options, load_from_args
from circuitcut.zoo.config import ARCHS, TrainConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the verb and its sub-verbs."""
    d = TrainConfig()
    p = sub.add_parser(
        "zoo",
        help="train or measure the reference models of the synthetic language",
        description="Reference models: small LMs with planted IOI, toxic and repetitive behaviours.",
    )
    zsub = p.add_subparsers(dest="zoo_verb", metavar="ZOO_VERB", required=True)
    t = zsub.add_parser(
        "train",
        help="train a reference model and write it with its card",
        description="Train a reference model on the synthetic language (seeded, CPU).",
    )
    t.add_argument("--arch", choices=ARCHS, default="llama", help="model family (default llama)")
    t.add_argument(
        "--output",
        type=types.output_dir("zoo train"),
        required=True,
        help="folder to write the model, tokenizer and card to",
    )
    t.add_argument(
        "--steps", type=types.positive_int, default=d.steps, help=f"optimiser steps (default {d.steps})"
    )
    t.add_argument(
        "--hidden", type=types.positive_int, default=d.hidden, help=f"hidden size (default {d.hidden})"
    )
    t.add_argument(
        "--layers", type=types.positive_int, default=d.layers, help=f"decoder layers (default {d.layers})"
    )
    t.add_argument(
        "--heads", type=types.positive_int, default=d.heads, help=f"attention heads (default {d.heads})"
    )
    t.add_argument(
        "--kv-heads", type=types.positive_int, default=d.kv_heads, help="key/value heads (llama only)"
    )
    t.add_argument(
        "--intermediate",
        type=types.positive_int,
        default=None,
        help="MLP width (default 384 for llama, 512 for opt)",
    )
    t.add_argument(
        "--batch-size",
        type=types.positive_int,
        default=d.batch_size,
        help=f"sequences per step (default {d.batch_size})",
    )
    t.add_argument(
        "--seq-len",
        type=types.positive_int,
        default=d.seq_len,
        help=f"tokens per sequence (default {d.seq_len})",
    )
    t.add_argument(
        "--lr", type=types.positive_float, default=d.lr, help=f"peak learning rate (default {d.lr})"
    )
    t.add_argument("--seed", type=types.non_negative_int, default=d.seed, help="seed (default 0)")
    t.add_argument(
        "--threads", type=types.positive_int, default=d.threads, help="torch CPU threads (default 1)"
    )
    t.add_argument("--init-from", default=None, help="continue training a saved reference model (folder)")
    t.add_argument("--no-card", action="store_true", help="skip measuring the model and writing its card")
    t.set_defaults(run=run_train)
    c = zsub.add_parser(
        "card",
        help="measure a reference model and (re)write its card",
        description="Measure IOI, toxic, perplexity and repetition; write card.json and README.md.",
    )
    add_model_options(c)
    c.set_defaults(run=run_card)
    ls = zsub.add_parser("list", help="list the packaged reference models and their aliases")
    ls.set_defaults(run=run_list)


def run_train(args: argparse.Namespace) -> int:
    """Train, save, and write the card."""
    from circuitcut.zoo.card import measure, write_card
    from circuitcut.zoo.train import TrainConfig, train_reference_model

    inter = args.intermediate or (384 if args.arch == "llama" else 512)
    cfg = TrainConfig(
        arch=args.arch,
        hidden=args.hidden,
        layers=args.layers,
        heads=args.heads,
        kv_heads=args.kv_heads if args.arch == "llama" else args.heads,
        intermediate=inter,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        steps=args.steps,
        lr=args.lr,
        seed=args.seed,
        threads=args.threads,
        init_from=args.init_from,
    )
    model, tokenizer, log = train_reference_model(cfg, args.output)
    if not args.no_card:
        write_card(args.output, measure(model, tokenizer), log)
    print(f"wrote {args.output}")
    return 0


def run_card(args: argparse.Namespace) -> int:
    """Measure and write the card of an existing model."""
    from circuitcut.models import resolve_model_path
    from circuitcut.zoo.card import measure, write_card

    model, tokenizer, _ = load_from_args(args.model, args)
    folder = resolve_model_path(args.model)
    write_card(folder, measure(model, tokenizer))
    print(f"wrote {folder}/README.md and card.json")
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Print the aliases and where they resolve."""
    from circuitcut.zoo.registry import ALIASES, alias_path

    for alias in ALIASES:
        path = alias_path(alias)
        state = "present" if path is not None and (path / "config.json").exists() else "missing"
        print(f"{alias:<24} {path}  ({state})")
    return 0
