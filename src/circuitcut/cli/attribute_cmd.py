"""``circuitcut attribute``: score weights, neurons and heads on reference samples."""

from __future__ import annotations

import argparse

from circuitcut.attribution.methods import LEVELS, LRP_RULES, METHODS, VARIANTS, check_lrp_rules
from circuitcut.cli import args as types
from circuitcut.cli.common import add_model_options, load_from_args
from circuitcut.validation import SAMPLE_SUFFIXES


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the verb."""
    p = sub.add_parser(
        "attribute",
        help="compute relevance (LRP) or baseline scores per weight, neuron and head",
        description=(
            "Score every weight element, MLP neuron and attention head of a model on reference "
            "samples and write a Scores file (safetensors + JSON sidecar). Data: a .jsonl file of "
            "{'text'} or {'prompt','answer'[,'contrast']} or {'prompt','response'} records, or a "
            ".txt file cut into windows of --seqlen tokens."
        ),
    )
    p.add_argument("--model", required=True, help="model directory, alias or hub id")
    p.add_argument(
        "--data",
        type=types.data_file(SAMPLE_SUFFIXES, "samples"),
        help="reference samples (.jsonl or .txt, UTF-8); not needed for magnitude/random",
    )
    p.add_argument(
        "--output", required=True, help="output path (.safetensors; a .json sidecar is written beside it)"
    )
    p.add_argument("--method", default="lrp", choices=list(METHODS), help="scoring method (default lrp)")
    p.add_argument(
        "--variant",
        default="attnlrp",
        choices=list(VARIANTS),
        help="LRP variant: attnlrp (default) or cp-lrp (no relevance through q/k; conservative)",
    )
    p.add_argument(
        "--lrp-rules",
        type=types.name_list(list(LRP_RULES)),
        default=None,
        help=f"with --method lrp: comma-separated rules to install, among {','.join(LRP_RULES)} "
        "(default: all); a rule left out keeps the plain gradient there",
    )
    p.add_argument(
        "--levels",
        default=None,
        type=types.name_list(LEVELS),
        help="comma-separated levels among weight,neuron,head (default: all the method supports)",
    )
    p.add_argument(
        "--layers",
        default="all",
        help="linear layers to score weights of: all, attn, mlp or globs like '*.mlp.fc1' (default all)",
    )
    p.add_argument(
        "--include-embeddings",
        action="store_true",
        help="also score the embedding matrix and an untied LM head",
    )
    p.add_argument(
        "--seed-mode",
        default="unit",
        choices=["unit", "value"],
        help="relevance of each explained output: 1 (unit, default) or its value",
    )
    p.add_argument(
        "--aggregation",
        default="abs",
        choices=["abs", "signed", "token_abs", "token_l2"],
        help="how token relevance becomes a sample's score, then the mean over samples: abs (|sum over "
        "tokens|, default), signed (the sum), token_abs (sum of |each token's relevance|) or token_l2 "
        "(L2 norm over tokens)",
    )
    p.add_argument("--n-samples", type=types.positive_int, default=None, help="use at most this many samples")
    p.add_argument("--seqlen", type=types.positive_int, default=None,
                   help="tokens per window of text data (default 128, or the model's context if shorter)")  # fmt: skip
    p.add_argument(
        "--batch-size", type=types.positive_int, default=8, help="samples per forward/backward (default 8)"
    )
    p.add_argument(
        "--seed", type=types.non_negative_int, default=0, help="seed of the random method (default 0)"
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help="path prefix for partial sums, saved every --checkpoint-every batches; rerunning the same "
        "command resumes from it",
    )
    p.add_argument(
        "--checkpoint-every",
        type=types.positive_int,
        default=50,
        help="batches between checkpoints (default 50)",
    )
    p.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute each decoder layer's activations in the backward (less memory, more time)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_model_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Load the model and data, score, save."""
    from circuitcut.attribution import attribute
    from circuitcut.attribution.memory import estimate_memory, format_estimate
    from circuitcut.data import check_sample_file, load_samples
    from circuitcut.distributed import init_from_env, is_main_process, shutdown, world_size
    from circuitcut.errors import CircuitcutError
    from circuitcut.scores import Scores

    output = Scores.check_output(args.output, "--output")  # before any work: never clobber, never fail late
    check_lrp_rules(args.lrp_rules, args.method)
    if args.data:
        check_sample_file(args.data)
    init_from_env()  # under torchrun / accelerate launch: share the batches among the processes
    model, tokenizer, adapter = load_from_args(args.model, args)
    samples = []
    if args.data:
        args.seqlen = args.seqlen or min(128, tokenizer.context or 128)
        samples = load_samples(args.data, tokenizer, seqlen=args.seqlen, n_samples=args.n_samples)
    elif args.method not in ("magnitude", "random"):
        raise CircuitcutError(f"--data is required for method {args.method!r}")
    levels = list(args.levels) if args.levels else None
    if is_main_process() and samples:
        longest = max(len(s.input_ids) for s in samples)
        print(format_estimate(estimate_memory(adapter, args.batch_size, longest, args.method, args.layers)))
    pad = tokenizer.pad_token_id if tokenizer is not None and tokenizer.pad_token_id is not None else 0
    scores = attribute(
        model,
        samples,
        args.method,
        adapter=adapter,
        levels=levels,
        layers=args.layers,
        include_embeddings=args.include_embeddings,
        variant=args.variant,
        lrp_rules=args.lrp_rules,
        seed_mode=args.seed_mode,
        aggregation=args.aggregation,
        batch_size=args.batch_size,
        pad_id=pad,
        seed=args.seed,
        progress=not args.no_progress,
        provenance={
            "model_id": args.model,
            "revision": args.revision,
            "data": args.data,
            "n_samples_requested": args.n_samples,
            "seqlen": args.seqlen,
            "encoding": tokenizer.provenance() if tokenizer is not None else None,
            "processes": world_size(),
        },
        checkpoint=args.checkpoint,
        checkpoint_every=args.checkpoint_every,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    if is_main_process():
        path = scores.save(output)
        print(
            f"wrote {path} and {path.with_suffix('.json')} ({scores.n_samples} samples, levels {', '.join(scores.levels)})"
        )
    shutdown()  # under a launcher: every rank waits for rank 0's write, then the group ends cleanly
    return 0
