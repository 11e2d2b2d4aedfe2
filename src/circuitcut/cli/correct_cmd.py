"""``circuitcut correct``: prune what drives an undesired behaviour, keep general ability."""

from __future__ import annotations

import argparse

from circuitcut.attribution.methods import METHODS
from circuitcut.cli import args as types
from circuitcut.metrics import QualityBounds
from circuitcut.validation import PROMPT_SUFFIXES


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the verb."""
    p = sub.add_parser(
        "correct",
        help="targeted correction by contrastive relevance (toxic or repetitive output)",
        description=(
            "Explain the model's greedy continuations of undesired prompts and general text, prune the components "
            "with the lowest R_general - R_undesired, and compare with gradient/Wanda contrastive scores and with "
            "equal-count random and magnitude pruning, over seeds, on held-out prompts. Writes the corrected model, "
            "its mask, score files, a Markdown/JSON report and plots."
        ),
    )
    p.add_argument("--model", required=True, help="model directory, alias (circuitcut/ref-llama) or hub id")
    p.add_argument(
        "--undesired",
        type=types.data_file(PROMPT_SUFFIXES, "prompts"),
        required=True,
        help="undesired prompts: .jsonl with 'prompt' fields, or .txt one per line",
    )
    p.add_argument(
        "--general",
        type=types.text_source,
        required=True,
        help="general text: a file or a corpus name (wikitext2, hf:...)",
    )
    p.add_argument(
        "--general-eval",
        type=types.text_source,
        default=None,
        help="held-out general text for perplexity (default: --general)",
    )
    p.add_argument(
        "--behaviour",
        default="toxicity",
        choices=["toxicity", "repetition"],
        help="what to reduce: toxicity (needs --scorer) or repetition (RUR)",
    )
    p.add_argument(
        "--scorer",
        default=None,
        help="toxicity scorer: wordlist:FILE, profanity-check (alt-profanity-check) or hf:MODEL_ID_OR_PATH",
    )
    p.add_argument(
        "--level", default="neuron", choices=["neuron", "weight"], help="prune neurons (default) or weights"
    )
    p.add_argument(
        "--layers",
        default="all",
        help="weight level: layers, e.g. '*.mlp.fc1' or '*.mlp.up_proj' (default all)",
    )
    p.add_argument(
        "--count",
        type=types.positive_int,
        default=None,
        help="components to prune (default: the largest of --counts)",
    )
    p.add_argument(
        "--counts",
        type=types.int_list(),
        default="10,20,50",
        help="comma-separated counts for the sweep (default 10,20,50)",
    )
    p.add_argument(
        "--methods",
        type=types.name_list(list(METHODS)),
        default="lrp,gradient,wanda",
        help="comma-separated contrastive methods; the first is the one exported (default lrp,gradient,wanda)",
    )
    p.add_argument(
        "--controls",
        type=types.name_list(["random", "magnitude"]),
        default="random,magnitude",
        help="equal-count controls (default random,magnitude)",
    )
    p.add_argument(
        "--seeds",
        type=types.positive_int,
        default=3,
        help="seeds of the estimate; each has its own attribution/held-out split, general windows and random "
        "control (default 3)",
    )
    p.add_argument(
        "--n-general", type=types.positive_int, default=64, help="general-text windows explained (default 64)"
    )
    p.add_argument(
        "--seqlen", type=types.positive_int, default=64, help="tokens per general window (default 64)"
    )
    p.add_argument(
        "--eval-windows",
        type=types.positive_int,
        default=100,
        help="windows of the general evaluation text for perplexity (default 100)",
    )
    p.add_argument(
        "--max-new-tokens",
        type=types.positive_int,
        default=50,
        help="greedy continuation length (default 50)",
    )
    p.add_argument(
        "--normalize",
        action="store_true",
        help="normalise each relevance set to unit total (default off: on the reference models it removed the "
        "behaviour at fewer neurons; see the README)",
    )
    p.add_argument(
        "--explain",
        default="continuation",
        choices=["continuation", "flagged"],
        help="what is explained of the undesired continuations: every token, or only the tokens of the words "
        "a wordlist:FILE scorer flags (default continuation)",
    )
    p.add_argument(
        "--test-share",
        type=types.fraction(),
        default=0.25,
        help="share of the undesired prompts held out from every attribution to test the exported model "
        "(default 0.25)",
    )
    p.add_argument(
        "--export",
        default="all",
        choices=["all", "consensus"],
        help="the exported mask: 'all' = the first method's contrastive relevance on all development prompts, "
        "'consensus' = what most seeds prune at the count (default all)",
    )
    p.add_argument(
        "--general-prompts",
        type=types.data_file(PROMPT_SUFFIXES, "prompts"),
        default=None,
        help="general prompts whose continuations are scored for toxicity, fluency and diversity: .jsonl or .txt "
        "(default: --n-general-prompts openings cut from the general evaluation text)",
    )
    p.add_argument(
        "--n-general-prompts",
        type=types.positive_int,
        default=16,
        help="general prompts cut from the text (default 16)",
    )
    p.add_argument(
        "--general-prompt-tokens",
        type=types.positive_int,
        default=12,
        help="tokens per cut general prompt (default 12)",
    )
    p.add_argument(
        "--disagreement-bound",
        type=float,
        default=0.25,
        help="warn when the seeds' held-out rates at the report count span more than this (default 0.25)",
    )
    bounds = QualityBounds()
    p.add_argument(
        "--max-perplexity-increase",
        type=types.positive_float,
        default=bounds.perplexity,
        help=f"flag a general-perplexity rise above this share (default {bounds.perplexity})",
    )
    p.add_argument(
        "--max-fluency-increase",
        type=types.positive_float,
        default=bounds.fluency,
        help="flag a rise of the general prompts' continuation perplexity under the dense model above this "
        f"share (default {bounds.fluency})",
    )
    p.add_argument(
        "--max-behaviour-fluency-increase",
        type=types.positive_float,
        default=bounds.behaviour_fluency,
        help="the same for behaviour prompts, where the dense judge expects the removed behaviour "
        f"(default {bounds.behaviour_fluency})",
    )
    p.add_argument(
        "--max-diversity-drop",
        type=types.fraction(one=True),
        default=bounds.diversity,
        help=f"flag a fall of distinct-2 below (1 - this) x the dense model's (default {bounds.diversity})",
    )
    p.add_argument("--output", type=types.output_dir(), required=True, help="output folder")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the workflow and print the report."""
    from circuitcut.generation import GenerationSettings
    from circuitcut.reports.correction import correction_markdown
    from circuitcut.workflows.correct import CorrectionConfig, run_correction

    counts = args.counts
    if args.count is not None:
        counts = tuple(sorted(set(counts) | {args.count}))
    bounds = QualityBounds(perplexity=args.max_perplexity_increase, fluency=args.max_fluency_increase,
                           behaviour_fluency=args.max_behaviour_fluency_increase,
                           diversity=args.max_diversity_drop)  # fmt: skip
    cfg = CorrectionConfig(level=args.level, layers=args.layers, counts=counts, report_count=args.count,
                           methods=args.methods, controls=args.controls, seeds=args.seeds,
                           n_general=args.n_general, general_seqlen=args.seqlen, eval_windows=args.eval_windows,
                           normalize=args.normalize, explain=args.explain, generation=GenerationSettings(args.max_new_tokens),
                           test_share=args.test_share, export=args.export, n_general_prompts=args.n_general_prompts,
                           general_prompt_tokens=args.general_prompt_tokens,
                           disagreement_bound=args.disagreement_bound, quality=bounds)  # fmt: skip
    s = run_correction(args.model, args.undesired, args.general, args.output, args.behaviour, args.scorer, cfg,
                       args.general_eval, progress=not args.no_progress,
                       general_prompts_file=args.general_prompts)  # fmt: skip
    print(correction_markdown(s))
    return 0
