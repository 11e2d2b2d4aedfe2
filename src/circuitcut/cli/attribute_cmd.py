"""``circuitcut attribute``: score weights, neurons and heads on reference samples."""

from __future__ import annotations

import argparse

from circuitcut.attribution.config import Execution, ScoringConfig
from circuitcut.attribution.methods import LEVELS
from circuitcut.cli import args as types
from circuitcut.cli.common import add_model_options, load_from_args
from circuitcut.cli.scoring_options import add_scoring_options, scoring_from_args
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
    p.add_argument(
        "--data",
        type=types.data_file(SAMPLE_SUFFIXES, "samples"),
        help="reference samples (.jsonl or .txt, UTF-8); not needed for magnitude/random",
    )
    p.add_argument(
        "--output", required=True, help="output path (.safetensors; a .json sidecar is written beside it)"
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
    p.add_argument("--n-samples", type=types.positive_int, default=None, help="use at most this many samples")
    p.add_argument("--seqlen", type=types.positive_int, default=None,
                   help="tokens per window of .txt data, and the most a .jsonl text record may hold (default "
                        "128, or the model's context if shorter)")  # fmt: skip
    p.add_argument("--truncate", action="store_true",
                   help="cut a .jsonl text record longer than --seqlen to its first --seqlen tokens, with a "
                        "warning (default: refuse it)")  # fmt: skip
    add_scoring_options(p, ScoringConfig())
    e = Execution()
    p.add_argument(
        "--checkpoint",
        default=e.checkpoint,
        help="path prefix for partial sums, saved every --checkpoint-every batches; rerunning the same "
        "command resumes from it",
    )
    p.add_argument(
        "--checkpoint-every",
        type=types.positive_int,
        default=e.checkpoint_every,
        help=f"batches between checkpoints (default {e.checkpoint_every})",
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
    scoring = scoring_from_args(args)  # checked before the model loads
    execution = Execution(args.checkpoint, args.checkpoint_every, args.gradient_checkpointing)
    if args.data:
        check_sample_file(args.data)
    elif scoring.spec.needs_data:
        raise CircuitcutError(f"--data is required for method {scoring.method!r}")
    init_from_env()  # under torchrun / accelerate launch: share the batches among the processes
    model, tokenizer, adapter = load_from_args(args.model, args)
    samples = []
    if args.data:
        args.seqlen = args.seqlen or min(128, tokenizer.context or 128)
        samples = load_samples(args.data, tokenizer, seqlen=args.seqlen, n_samples=args.n_samples,
                               truncate=args.truncate)  # fmt: skip
    layers = f"{args.layers},embeddings" if args.include_embeddings else args.layers
    if is_main_process() and samples:
        longest = max(len(s.input_ids) for s in samples)
        kinds = sorted({s.target.kind for s in samples})
        print(format_estimate(estimate_memory(adapter, scoring.batch_size, longest, scoring.method, layers,
                                              kinds=kinds)))  # fmt: skip
    provenance = {
        "model_id": args.model,
        "revision": args.revision,
        "data": args.data,
        "n_samples_requested": args.n_samples,
        "seqlen": args.seqlen,
        "encoding": tokenizer.provenance() if tokenizer is not None else None,
        "processes": world_size(),
    }
    scores = attribute(model, samples, scoring, adapter=adapter, levels=args.levels, layers=layers,
                       progress=not args.no_progress, provenance=provenance, execution=execution)  # fmt: skip
    if is_main_process():
        path = scores.save(output)
        print(
            f"wrote {path} and {path.with_suffix('.json')} ({scores.n_samples} samples, levels {', '.join(scores.levels)})"
        )
    shutdown()  # under a launcher: every rank waits for rank 0's write, then the group ends cleanly
    return 0
