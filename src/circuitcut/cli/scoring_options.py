"""The scoring options every verb that scores takes, built from :class:`ScoringConfig` itself.

One option per field of :class:`~circuitcut.attribution.config.ScoringConfig` (``--method``,
``--variant``, ``--aggregation``, ``--seed-mode``, ``--lrp-rules``, ``--batch-size``, ``--seed``, and
where the verb's data have counterfactual prompts ``--baseline`` and ``--ig-steps``),
each with the verb's default read from the config it holds (a compression run aggregates per token
by default, a sweep scores 16 samples a batch), and :func:`scoring_from_args` turning the parsed
options back into the config, checked once, by the dataclass.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from circuitcut.attribution.config import ScoringConfig
from circuitcut.attribution.methods import (
    AGGREGATIONS,
    BASELINES,
    LRP_RULES,
    METHOD_SPECS,
    SEED_MODES,
    VARIANTS,
)
from circuitcut.cli import args as types


def _method_help(methods: Sequence[str], what: str, default: str) -> str:
    listed = "; ".join(f"{m}: {METHOD_SPECS[m].summary}" for m in methods)
    return f"{what} (default {default}). {listed}"


def add_scoring_options(
    p: argparse.ArgumentParser,
    default: ScoringConfig,
    *,
    methods: Sequence[str] | None = None,
    method_help: str = "scoring method",
    counterfactual: bool = False,
) -> None:
    """Add one option per :class:`ScoringConfig` field, with ``default``'s values as defaults.

    ``methods`` limits ``--method``'s choices (default: every method); ``method_help`` says what the
    method is for in this verb (e.g. "method whose circuit is extracted"); ``counterfactual`` adds
    ``--baseline`` and ``--ig-steps`` where the verb's data have counterfactual prompts (elsewhere
    the baseline is zero and method ``ig`` is not offered).
    """
    d = default
    choices = [m for m in (methods or METHOD_SPECS) if counterfactual or m != "ig"]
    rules = ",".join(d.lrp_rules or LRP_RULES)
    p.add_argument(
        "--method", default=d.method, choices=choices, help=_method_help(choices, method_help, d.method)
    )
    p.add_argument(
        "--variant",
        default=d.variant,
        choices=list(VARIANTS),
        help=f"LRP variant: attnlrp (Achtibat et al., 2024) or cp-lrp (Ali et al., 2022) (default {d.variant})",
    )
    p.add_argument(
        "--aggregation",
        default=d.aggregation,
        choices=AGGREGATIONS,
        help="how LRP / gradient token relevance becomes a sample's score: abs (absolute per-sample relevance), "
        "token_abs (absolute relevance of every token, summed), token_norm (token_abs with each token's "
        "gradient scaled to unit L1 norm: every token weighs the same), token_l2, or signed "
        f"(default {d.aggregation})",
    )
    p.add_argument(
        "--seed-mode",
        default=d.seed_mode,
        choices=SEED_MODES,
        help="LRP / gradient / ig: each explained output starts with relevance 1 (unit) or its own value (value) "
        + (
            f"(default {d.seed_mode})"
            if d.seed_mode is not None
            else "(default: value against a counterfactual, i.e. ig or --baseline counterfactual, where each "
            "prompt's difference is explained as it is; unit otherwise)"
        ),
    )
    p.add_argument(
        "--lrp-rules",
        type=types.name_list(LRP_RULES),
        default=None,
        help="method lrp: comma-separated rules to install among "
        f"{','.join(LRP_RULES)}; a rule left out keeps the gradient there (default {rules})",
    )
    p.add_argument(
        "--batch-size",
        type=types.positive_int,
        default=d.batch_size,
        help=f"samples per attribution forward/backward; scores do not depend on it (default {d.batch_size})",
    )
    p.add_argument(
        "--seed",
        type=types.non_negative_int,
        default=d.seed,
        help="seed of the random method and of the reference / calibration draw where the verb draws one "
        f"(default {d.seed})",
    )
    if counterfactual:
        p.add_argument(
            "--baseline",
            default=d.baseline,
            choices=BASELINES,
            help="lrp / gradient: score the activations (zero) or their difference from the counterfactual "
            "prompt's (counterfactual: gradient is then attribution patching); ig is always against the "
            f"counterfactual (default {d.baseline})",
        )
        p.add_argument(
            "--ig-steps",
            type=types.positive_int,
            default=d.ig_steps,
            help=f"method ig: points on the path from the counterfactual to the prompt (default {d.ig_steps})",
        )


def scoring_from_args(args: argparse.Namespace) -> ScoringConfig:
    """The :class:`ScoringConfig` of parsed :func:`add_scoring_options` options (checked by it)."""
    return ScoringConfig(
        method=args.method,
        variant=args.variant,
        aggregation=args.aggregation,
        seed_mode=args.seed_mode,
        lrp_rules=args.lrp_rules,
        batch_size=args.batch_size,
        seed=args.seed,
        baseline=getattr(args, "baseline", "zero"),
        ig_steps=getattr(args, "ig_steps", ScoringConfig().ig_steps),
    )
