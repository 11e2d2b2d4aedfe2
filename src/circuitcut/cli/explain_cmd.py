"""``circuitcut explain``: token relevance of prompts as an HTML heatmap."""

from __future__ import annotations

import argparse

from circuitcut.cli import args as types
from circuitcut.cli.common import add_model_options, load_from_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the verb."""
    p = sub.add_parser(
        "explain",
        help="token relevance of prompts (AttnLRP), as an HTML heatmap",
        description=(
            "Explain the logit of the next token after each prompt (the model's own prediction, or "
            "--target, minus --contrast if given) by AttnLRP or gradient x input; print the relevance "
            "per token and write an HTML heatmap with a JSON of the values beside it."
        ),
    )
    p.add_argument("--prompt", action="append", default=[],
                   help="a prompt to explain (repeat for several); --target/--contrast apply to these")  # fmt: skip
    p.add_argument("--file", type=types.data_file((".jsonl",), "prompts"), default=None,
                   help="a .jsonl of prompts, one object a line: {\"prompt\": ..., \"target\": ..., "
                        "\"contrast\": ...} (target and contrast optional, per prompt; default: the "
                        "--target / --contrast options)")  # fmt: skip
    p.add_argument("--target", default=None,
                   help="the next word to explain, as it runs on from the prompt (must be one token; "
                        "default: the model's greedy prediction)")  # fmt: skip
    p.add_argument("--contrast", default=None,
                   help="explain logit(target) - logit(contrast) (one token; default: none)")  # fmt: skip
    p.add_argument("--method", default="lrp", choices=["lrp", "gradient"],
                   help="lrp (AttnLRP rules, default) or gradient (plain gradient x input)")  # fmt: skip
    p.add_argument("--variant", default="attnlrp", choices=["attnlrp", "cp-lrp"],
                   help="LRP rule set: attnlrp (default) or cp-lrp (no relevance through queries and keys)")  # fmt: skip
    p.add_argument(
        "--output",
        type=types.output_file(".html", "circuitcut.explain/1"),
        default=None,
        help="write the heatmap here (.html; a .json is written beside it)",
    )
    add_model_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Explain, print, write."""
    from circuitcut.errors import CircuitcutError
    from circuitcut.reports.heatmap import token_heatmap_text
    from circuitcut.workflows.explain import explain_prompts, explain_record, load_explain_file

    if not args.prompt and not args.file:
        raise CircuitcutError("nothing to explain: give --prompt TEXT (repeatable) or --file PROMPTS.jsonl")
    items = [explain_record(p, args.target, args.contrast, "--prompt") for p in args.prompt]
    if args.file:
        items += load_explain_file(args.file, args.target, args.contrast)
    model, tokenizer, adapter = load_from_args(args.model, args)
    records = explain_prompts(model, tokenizer, adapter, items, method=args.method, variant=args.variant,
                              output=args.output)  # fmt: skip
    for rec in records:
        print(f"{rec['prompt']}  ->  {rec['explained']}")
        print("    " + token_heatmap_text(rec["tokens"], rec["relevance"]))
    if args.output:
        print(f"wrote {args.output}")
    return 0
