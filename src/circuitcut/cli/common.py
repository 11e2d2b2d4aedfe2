"""Options shared by several verbs."""

from __future__ import annotations

import argparse

from circuitcut.cli import args as types


def add_model_options(p: argparse.ArgumentParser) -> None:
    """``MODEL`` loading options."""
    p.add_argument(
        "--dtype",
        default="float32",
        help="weight dtype: float32 (default), bf16, fp16 or auto (as saved)",
    )
    p.add_argument(
        "--device", type=types.device, default=None, help="device for the model, e.g. cpu, cuda, cuda:1"
    )
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow custom modelling code from the model's repository (off by default)",
    )
    p.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="accept a model stored only as pickle (pytorch_model.bin); unpickling runs code from the "
        "file, so only for files you trust (default: safetensors and .gguf only)",
    )
    p.add_argument(
        "--no-special-tokens",
        action="store_true",
        help="do not put the tokenizer's leading special tokens (a BOS where it adds one) before prompts "
        "and windows (default: the model's own encoding, recorded in every output)",
    )


def load_from_args(name: str, args: argparse.Namespace):
    """Load ``(model, encoder, adapter)`` with the common options; the tokenizer comes back as a
    :class:`~circuitcut.encoding.Encoder` with the special-token policy of ``--no-special-tokens``
    (``None`` when the model has no tokenizer)."""
    from circuitcut.encoding import as_encoder
    from circuitcut.models import load_model

    model, tokenizer, adapter = load_model(
        name,
        dtype=args.dtype,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        revision=args.revision,
        allow_pickle=args.allow_pickle,
    )
    if tokenizer is not None:
        tokenizer = as_encoder(tokenizer, model, special_tokens=not args.no_special_tokens)
    return model, tokenizer, adapter
