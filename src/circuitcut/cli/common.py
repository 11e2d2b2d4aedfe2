"""Options shared by several verbs."""

from __future__ import annotations

import argparse


def add_model_options(p: argparse.ArgumentParser) -> None:
    """``MODEL`` loading options."""
    p.add_argument(
        "--dtype",
        default="float32",
        help="weight dtype: float32 (default), bf16, fp16 or auto (as saved)",
    )
    p.add_argument("--device", default=None, help="device for the model, e.g. cpu, cuda, cuda:1")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow custom modelling code from the model's repository (off by default)",
    )
    p.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")


def load_from_args(name: str, args: argparse.Namespace):
    """Load ``(model, tokenizer, adapter)`` with the common options."""
    from circuitcut.models import load_model

    return load_model(
        name,
        dtype=args.dtype,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        revision=args.revision,
    )
