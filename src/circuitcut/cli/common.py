"""Options shared by several verbs."""

from __future__ import annotations

import argparse
from typing import Any

from circuitcut.cli import args as types
from circuitcut.models.options import DTYPES, ModelOptions

MODEL_HELP = (
    "the model: a folder written by save_pretrained (safetensors weights), a .gguf file or a folder "
    "holding one (dequantized to --dtype; needs the gguf package), a reference-model alias "
    "(circuitcut/ref-llama, circuitcut/ref-opt; see 'circuitcut zoo list'), or a Hugging Face hub "
    "id such as HuggingFaceTB/SmolLM2-135M (downloads need network; offline, the hub cache is used)"
)


def add_model_options(
    p: argparse.ArgumentParser, *, positional: bool = False, default: str | None = None
) -> None:
    """The model and how it is loaded: ``--model`` (or a positional ``MODEL``), ``--revision``,
    ``--dtype``, ``--device``, ``--allow-pickle``, ``--trust-remote-code``, ``--no-special-tokens``.
    Every verb that loads a model takes them; :func:`model_options` turns them into a
    :class:`~circuitcut.models.ModelOptions`, whose defaults they share."""
    d = ModelOptions()
    if positional:
        p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    elif default is not None:
        p.add_argument("--model", default=default, help=f"{MODEL_HELP} (default {default})")
    else:
        p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument(
        "--revision", default=d.revision, help="hub revision: branch, tag or commit (default: main)"
    )
    p.add_argument(
        "--dtype",
        default=d.dtype,
        choices=DTYPES,
        metavar="DTYPE",
        help=f"weight dtype: float32 (default {d.dtype}), bf16, fp16, or auto (as saved); also bfloat16, "
        "float16, fp32",
    )
    p.add_argument(
        "--device",
        type=types.device,
        default=d.device,
        help="device for the model, e.g. cpu, cuda, cuda:1 (default cpu)",
    )
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="accept a model stored only as pickle (pytorch_model.bin); unpickling runs code from the "
        "file, so only for files you trust (default: safetensors and .gguf only)",
    )
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow custom modelling code from the model's repository (off by default)",
    )
    p.add_argument(
        "--no-special-tokens",
        action="store_true",
        help="do not put the tokenizer's leading special tokens (a BOS where it adds one) before prompts "
        "and windows (default: the model's own encoding, recorded in every output)",
    )


def model_options(args: argparse.Namespace) -> ModelOptions:
    """The :class:`~circuitcut.models.ModelOptions` of parsed :func:`add_model_options` options."""
    return ModelOptions(
        revision=args.revision,
        dtype=args.dtype,
        device=args.device,
        allow_pickle=args.allow_pickle,
        trust_remote_code=args.trust_remote_code,
        special_tokens=not args.no_special_tokens,
    )


def load_from_args(name: str, args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """Load ``(model, encoder, adapter)`` with the common options; the tokenizer comes back as a
    :class:`~circuitcut.encoding.Encoder` with the special-token policy of ``--no-special-tokens``
    (``None`` when the model has no tokenizer)."""
    from circuitcut.encoding import as_encoder
    from circuitcut.models.loading import load_model

    options = model_options(args)
    model, tokenizer, adapter = load_model(name, options)
    if tokenizer is not None:
        tokenizer = as_encoder(tokenizer, model, special_tokens=options.special_tokens)
    return model, tokenizer, adapter


def add_ioi_lists(p: argparse.ArgumentParser) -> None:
    """``--ioi-lists``: the IOI task from the standard lists (a verb's ``--task ioi``)."""
    p.add_argument(
        "--ioi-lists",
        type=types.data_file((".json",), "IOI lists"),
        default=None,
        help="with --task ioi: generate IOI from these name/template/place/object lists (JSON in the ACDC "
        "lists' layout: NAMES, BABA_TEMPLATES, ABBA_TEMPLATES, PLACES, OBJECTS) instead of the reference "
        "models' own; names that are not one token for this tokenizer are dropped and reported; "
        "evaluation uses held-out templates (default: circuitcut's reference-model lists)",
    )
