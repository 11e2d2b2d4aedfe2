"""``circuitcut convert``: a GGUF file, hub id or model folder as an ordinary safetensors folder."""

from __future__ import annotations

import argparse

from circuitcut.cli.common import add_model_options, model_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the verb."""
    p = sub.add_parser(
        "convert",
        help="write a model (a .gguf file, a hub id, a folder) as a safetensors folder",
        description=(
            "Load MODEL and write it to OUT with save_pretrained: model.safetensors, config.json, "
            "generation_config.json, the tokenizer files, and circuitcut-source.json recording the "
            "source and the loading options. A .gguf file is dequantized to --dtype (float32 by "
            "default), so OUT holds plain float weights that transformers reads without the gguf "
            "package; a hub id is fetched once (needs network or the hub cache) and can then be used "
            "offline; a pickle-only folder (with --allow-pickle) becomes safetensors. OUT is written "
            "under a temporary name beside it and renamed when complete; an existing non-empty OUT "
            "is refused."
        ),
    )
    add_model_options(p, positional=True)
    p.add_argument(
        "output",
        metavar="OUT",
        help="the folder to create for the converted model; must not exist or be empty",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the loading progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Convert and print where the folder is."""
    from circuitcut.models import convert

    out = convert(args.model, args.output, model_options(args), progress=not args.no_progress)
    print(f"wrote {out} (load it with --model {out})")
    return 0
