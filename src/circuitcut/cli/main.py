"""Entry point of the ``circuitcut`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from circuitcut import __version__
from circuitcut.cli import (
    attribute_cmd,
    circuit_cmd,
    compress_cmd,
    convert_cmd,
    correct_cmd,
    demo_cmd,
    explain_cmd,
    inspect_cmd,
    lasso_cmd,
    sae_cmd,
    view_cmd,
    zoo_cmd,
)
from circuitcut.cli.args import OneLineParser
from circuitcut.errors import CircuitcutError

VERBS = (
    inspect_cmd,
    attribute_cmd,
    explain_cmd,
    compress_cmd,
    circuit_cmd,
    correct_cmd,
    lasso_cmd,
    sae_cmd,
    convert_cmd,
    zoo_cmd,
    demo_cmd,
    view_cmd,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every verb."""
    parser = OneLineParser(
        prog="circuitcut",
        description=(
            "Find the parameters of a language model behind a behaviour (LRP / AttnLRP "
            "attribution) and act on them: compression, circuit discovery, targeted correction."
        ),
    )
    parser.add_argument("--version", action="version", version=f"circuitcut {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="print debug logging")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb in VERBS:
        verb.add_parser(sub)
    return parser


def silence_library_progress() -> None:
    """Turn off the progress bars of transformers ("Loading weights", "Writing model shards") and of
    huggingface_hub (downloads), for --json and --no-progress."""
    # deferred heavy import: only a run that will load a model pays for transformers
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    disable_progress_bars()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad argument (already reported in one line)
        return exc.code if isinstance(exc.code, int) else 0
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s"
    )
    if getattr(args, "json", False) or getattr(args, "no_progress", False):
        silence_library_progress()
    try:
        return int(args.run(args) or 0)
    except CircuitcutError as exc:
        message = " ".join(str(exc).split())  # one line, whatever a library put in the message
        print(f"circuitcut {args.verb}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"circuitcut {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
