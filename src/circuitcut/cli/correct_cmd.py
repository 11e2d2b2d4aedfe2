"""``circuitcut correct``: prune what drives an undesired behaviour, keep general ability."""

from __future__ import annotations

import argparse
from dataclasses import replace

from circuitcut.cli import args as types
from circuitcut.cli.common import add_model_options, model_options
from circuitcut.cli.scoring_options import add_scoring_options, scoring_from_args
from circuitcut.correction.config import (
    CONTRASTIVE,
    CONTROLS,
    EXPLAIN,
    EXPORTS,
    CorrectionConfig,
    check_judge,
)
from circuitcut.errors import CircuitcutError
from circuitcut.metrics import QualityBounds
from circuitcut.validation import PROMPT_SUFFIXES


def _add_inputs(p: argparse.ArgumentParser) -> None:
    """The prompts, the general text and the behaviour's scorer."""
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


def _add_selection(p: argparse.ArgumentParser, d: CorrectionConfig) -> None:
    """What is pruned, how it is scored and compared, over how many seeds."""
    p.add_argument(
        "--level",
        default=d.level,
        choices=["neuron", "weight"],
        help=f"prune neurons or weights (default {d.level})",
    )
    p.add_argument(
        "--layers",
        default=d.layers,
        help=f"weight level: layers, e.g. '*.mlp.fc1' or '*.mlp.up_proj' (default {d.layers})",
    )
    p.add_argument(
        "--count",
        type=types.positive_int,
        default=None,
        help="components to prune in the exported model (default: the largest of --counts)",
    )
    p.add_argument(
        "--counts",
        type=types.int_list(),
        default=",".join(map(str, d.counts)),
        help=f"comma-separated counts for the sweep (default {','.join(map(str, d.counts))})",
    )
    add_scoring_options(
        p, d.scoring, methods=CONTRASTIVE, method_help="the contrastive method whose mask is exported"
    )
    p.add_argument(
        "--baselines",
        type=types.name_list(list(CONTRASTIVE), empty=True),
        default=",".join(d.baselines),
        help="comma-separated contrastive methods compared with --method, or none "
        f"(default {','.join(d.baselines)})",
    )
    p.add_argument(
        "--controls",
        type=types.name_list(list(CONTROLS), empty=True),
        default=",".join(d.controls),
        help=f"equal-count controls, or none (default {','.join(d.controls)})",
    )
    p.add_argument(
        "--seeds",
        type=types.positive_int,
        default=d.seeds,
        help="seeds of the estimate; each has its own attribution/held-out split, general windows and random "
        f"control (default {d.seeds})",
    )
    p.add_argument(
        "--n-general",
        type=types.positive_int,
        default=d.n_general,
        help=f"general-text windows explained (default {d.n_general})",
    )
    p.add_argument(
        "--seqlen",
        type=types.positive_int,
        default=d.general_seqlen,
        help=f"tokens per general window (default {d.general_seqlen})",
    )
    p.add_argument(
        "--eval-windows",
        type=types.positive_int,
        default=d.eval_windows,
        help=f"windows of the general evaluation text for perplexity (default {d.eval_windows})",
    )
    p.add_argument(
        "--max-new-tokens",
        type=types.positive_int,
        default=d.generation.max_new_tokens,
        help=f"greedy continuation length (default {d.generation.max_new_tokens})",
    )
    p.add_argument(
        "--normalize",
        action="store_true",
        help="normalise each relevance set to unit total (default off: on the reference models it removed the "
        "behaviour at fewer neurons; docs/correction.md)",
    )


def _add_measurement(p: argparse.ArgumentParser, d: CorrectionConfig) -> None:
    """How every model is measured and what the report flags."""
    p.add_argument(
        "--explain",
        default=d.explain,
        choices=list(EXPLAIN),
        help="what is explained of the undesired continuations: every token, or only the tokens of the flagged "
        "words: a wordlist:FILE scorer's matches, or for a classifier (profanity-check, hf:MODEL) the words whose "
        "removal lowers its score by >= 0.1 or its log-odds by >= 1, or most, in continuations it scores toxic "
        f"(docs/correction.md; default {d.explain})",
    )
    p.add_argument(
        "--test-share",
        type=types.fraction(),
        default=d.test_share,
        help="share of the undesired prompts held out from every attribution to test the exported model "
        f"(default {d.test_share})",
    )
    p.add_argument(
        "--export",
        default=d.export,
        choices=list(EXPORTS),
        help="the exported mask: 'all' = the method's contrastive relevance on all development prompts, "
        f"'consensus' = what most seeds prune at the count (default {d.export})",
    )
    p.add_argument(
        "--alpha",
        type=types.fraction(),
        default=d.alpha,
        help=f"significance level of the per-seed paired tests (default {d.alpha})",
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
        default=d.n_general_prompts,
        help=f"general prompts cut from the text (default {d.n_general_prompts})",
    )
    p.add_argument(
        "--general-prompt-tokens",
        type=types.positive_int,
        default=d.general_prompt_tokens,
        help=f"tokens per cut general prompt (default {d.general_prompt_tokens})",
    )
    p.add_argument(
        "--disagreement-bound",
        type=types.non_negative_float,
        default=d.disagreement_bound,
        help="warn when the seeds' held-out rates at the report count span more than this "
        f"(default {d.disagreement_bound})",
    )
    _add_quality_bounds(p, d)
    _add_judging(p, d)


def _add_judging(p: argparse.ArgumentParser, d: CorrectionConfig) -> None:
    """The second scorer and the sampled continuations the dense and exported models are judged on."""
    g = d.generation
    p.add_argument(
        "--judge",
        type=_judge,
        default=d.judge,
        help="second, independent scorer of the dense and exported models: auto (the alt-profanity-check "
        "classifier when --scorer is a word list), none, wordlist:FILE, profanity-check or hf:MODEL "
        f"(default {d.judge})",
    )
    p.add_argument(
        "--no-sample",
        dest="sample",
        action="store_false",
        help="judge greedy continuations only: no sampled continuations, RealToxicityPrompts figures or "
        f"sample diversity (sampling on by default: sample={d.sample})",
    )
    p.add_argument(
        "--samples",
        type=types.positive_int,
        default=d.samples,
        help=f"sampled continuations per test and general prompt (k; default {d.samples})",
    )
    p.add_argument(
        "--top-p",
        type=types.fraction(one=True),
        default=g.top_p,
        help=f"nucleus sampling: the probability mass sampled from (default {g.top_p})",
    )
    p.add_argument(
        "--temperature",
        type=types.positive_float,
        default=g.temperature,
        help=f"sampling temperature (default {g.temperature})",
    )
    p.add_argument(
        "--sample-seed",
        type=types.non_negative_int,
        default=g.seed,
        help=f"seed of the samples and of the bootstrap intervals (default {g.seed})",
    )
    p.add_argument(
        "--bootstrap",
        type=types.positive_int,
        default=d.bootstrap,
        help=f"bootstrap resamples of the intervals over prompts (default {d.bootstrap})",
    )


def _judge(value: str) -> str:
    """A judge spec, checked (argparse type)."""
    try:
        return check_judge(value)
    except CircuitcutError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _add_quality_bounds(p: argparse.ArgumentParser, d: CorrectionConfig) -> None:
    """The quality bounds the report flags a corrected model against."""
    bounds = d.quality
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
    p.add_argument(
        "--max-empty-share",
        type=types.fraction(zero=True, one=True),
        default=bounds.empty,
        help=f"flag a prompt set with more than this share of empty continuations (default {bounds.empty})",
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the verb."""
    d = CorrectionConfig()
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
    _add_inputs(p)
    _add_selection(p, d)
    _add_measurement(p, d)
    p.add_argument("--output", type=types.output_dir("correct"), required=True, help="output folder")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_model_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the workflow and print the report."""
    from circuitcut.reports.correction import correction_markdown
    from circuitcut.workflows.correct import run_correction

    cfg = correction_config(args)
    s = run_correction(args.model, args.undesired, args.general, args.output, args.behaviour, args.scorer, cfg,
                       args.general_eval, progress=not args.no_progress,
                       general_prompts_file=args.general_prompts, model_options=model_options(args))  # fmt: skip
    print(correction_markdown(s))
    return 0


def correction_config(args: argparse.Namespace) -> CorrectionConfig:
    """The run's :class:`CorrectionConfig` from the parsed options (checked by the dataclass)."""
    counts = args.counts
    if args.count is not None:
        counts = tuple(sorted(set(counts) | {args.count}))
    bounds = QualityBounds(perplexity=args.max_perplexity_increase, fluency=args.max_fluency_increase,
                           behaviour_fluency=args.max_behaviour_fluency_increase,
                           diversity=args.max_diversity_drop, empty=args.max_empty_share)  # fmt: skip
    return CorrectionConfig(level=args.level, layers=args.layers, counts=counts, report_count=args.count,
                            scoring=scoring_from_args(args), baselines=args.baselines, controls=args.controls,
                            seeds=args.seeds, n_general=args.n_general, general_seqlen=args.seqlen,
                            eval_windows=args.eval_windows, normalize=args.normalize, explain=args.explain,
                            generation=replace(CorrectionConfig().generation, max_new_tokens=args.max_new_tokens,
                                               top_p=args.top_p, temperature=args.temperature, seed=args.sample_seed),
                            judge=args.judge, sample=args.sample, samples=args.samples, bootstrap=args.bootstrap,
                            test_share=args.test_share, export=args.export, n_general_prompts=args.n_general_prompts,
                            general_prompt_tokens=args.general_prompt_tokens,
                            disagreement_bound=args.disagreement_bound, alpha=args.alpha, quality=bounds)  # fmt: skip
