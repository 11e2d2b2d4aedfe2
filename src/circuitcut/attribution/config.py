"""The one scoring configuration: every setting that decides what a score is, checked when made.

:class:`ScoringConfig` is what :func:`circuitcut.attribution.attribute` takes and what every workflow
(circuit sweeps, compression, correction) holds as its ``scoring`` field; the command line builds it
with one shared ``add_scoring_options`` whose defaults are read from the dataclass. :class:`Execution`
holds how a pass runs (checkpoints, recomputation), which never changes the scores. Both are plain,
frozen data, importable without torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from circuitcut import validation
from circuitcut.attribution.methods import (
    AGGREGATIONS,
    BASELINES,
    LRP_RULES,
    SEED_MODES,
    VARIANTS,
    MethodSpec,
    check_lrp_rules,
    method_spec,
)
from circuitcut.errors import InputError


@dataclass(frozen=True)
class ScoringConfig:
    """How scores are computed (recorded in every output that uses them).

    Attributes:
        method: a row of :data:`~circuitcut.attribution.methods.METHOD_SPECS`.
        variant: the LRP variant (``attnlrp`` or ``cp-lrp``), method ``lrp`` only.
        aggregation: how a gradient method's token relevance becomes a sample's score: ``abs`` (the
            absolute per-sample relevance), ``token_abs`` (absolute relevance of every token,
            summed), ``token_norm`` (``token_abs`` with each token's gradient scaled to unit L1 norm),
            ``token_l2`` or ``signed``.
        seed_mode: the seed of each explained output: ``unit`` (relevance 1) or ``value`` (its own
            value); ``None`` (the default) is ``value`` against a counterfactual (``ig``, or baseline
            ``counterfactual``: each prompt's difference ``m - m'`` explained as it is, as attribution
            patching and EAP-IG sum it over prompts) and ``unit`` otherwise. Unit seeds on a difference
            divide each prompt's scores by its own ``m - m'``, which flips their sign on prompts the
            model gets wrong and blows up where the difference is near 0; on SmolLM2's IOI heads this
            took the sparsest circuit at 90% faithfulness from 50% of heads to 5% (docs/circuits.md).
            :attr:`effective_seed_mode` is the mode in effect.
        lrp_rules: the LRP rules installed (method ``lrp``); ``None`` means all of
            :data:`~circuitcut.attribution.methods.LRP_RULES` and is stored as that tuple. Other
            methods hold ``None``.
        batch_size: samples per forward/backward (scores do not depend on it).
        seed: the seed of anything random in scoring: the ``random`` method's scores, and the draw
            of reference or calibration samples where a workflow draws them.
        baseline: ``zero`` (scores of the activations ``x``) or ``counterfactual`` (of ``x - x'``,
            ``x'`` on each sample's counterfactual prompt: the metric's difference from the
            counterfactual is explained). Methods ``lrp`` and ``gradient`` take either; ``ig`` is
            always against the counterfactual; other methods hold ``zero``.
        ig_steps: integration steps of method ``ig`` (EAP-IG uses 5).
    """

    method: str = "lrp"
    variant: str = "attnlrp"
    aggregation: str = "abs"
    seed_mode: str | None = None
    lrp_rules: tuple[str, ...] | None = None
    batch_size: int = 8
    seed: int = 0
    baseline: str = "zero"
    ig_steps: int = 5

    def __post_init__(self) -> None:
        method_spec(self.method)
        validation.choice(self.variant, "LRP variant", tuple(VARIANTS))
        validation.choice(self.aggregation, "aggregation", AGGREGATIONS)
        if self.seed_mode is not None:
            validation.choice(self.seed_mode, "seed_mode", SEED_MODES)
        set_ = object.__setattr__  # frozen: normalise once, here
        if self.method == "lrp":
            set_(self, "lrp_rules", check_lrp_rules(self.lrp_rules))
        elif self.lrp_rules is not None and tuple(self.lrp_rules) != LRP_RULES:
            raise InputError(f"LRP rules apply to method 'lrp', not {self.method!r}: drop --lrp-rules")
        else:
            set_(self, "lrp_rules", None)
        set_(self, "batch_size", validation.positive_int(self.batch_size, "batch_size"))
        set_(self, "seed", validation.non_negative_int(self.seed, "seed"))
        set_(self, "ig_steps", validation.positive_int(self.ig_steps, "ig_steps"))
        validation.choice(self.baseline, "baseline", BASELINES)
        if self.method == "ig":
            set_(self, "baseline", "counterfactual")
        elif self.baseline == "counterfactual" and not self.spec.counterfactual:
            raise InputError(
                f"method {self.method!r} has no attribution against a counterfactual; use lrp, gradient or ig, "
                "or baseline zero"
            )

    @property
    def effective_seed_mode(self) -> str:
        """The seed mode in effect: the one given, else ``value`` against a counterfactual, ``unit``
        otherwise."""
        if self.seed_mode is not None:
            return self.seed_mode
        return "value" if self.baseline == "counterfactual" else "unit"

    @property
    def spec(self) -> MethodSpec:
        """The method's row of the method table."""
        return method_spec(self.method)

    def with_method(self, method: str) -> ScoringConfig:
        """The same settings for another method (the LRP rules apply to ``lrp`` only, the
        counterfactual baseline to the methods that have one)."""
        baseline = self.baseline if method_spec(method).counterfactual else "zero"
        return replace(
            self, method=method, lrp_rules=self.lrp_rules if method == "lrp" else None, baseline=baseline
        )

    def with_seed(self, seed: int) -> ScoringConfig:
        """The same settings with another seed."""
        return replace(self, seed=seed)

    def describe(self) -> dict[str, Any]:
        """The settings that matter for this method, as recorded in a Scores sidecar."""
        spec = self.spec
        out: dict[str, Any] = {"method": self.method, "aggregation": self.aggregation}
        if self.method == "lrp":
            out["variant"] = self.variant
            out["lrp_rules"] = list(self.lrp_rules or ())
        if spec.has_backward:
            out["seed_mode"] = self.effective_seed_mode
        if self.method == "random":
            out["seed"] = self.seed
        if self.baseline != "zero":
            out["baseline"] = self.baseline
        if self.method == "ig":
            out["ig_steps"] = self.ig_steps
        return out

    def as_dict(self) -> dict[str, Any]:
        """Every field (for reports and JSON)."""
        d = asdict(self)
        d["seed_mode"] = self.effective_seed_mode
        d["lrp_rules"] = None if self.lrp_rules is None else list(self.lrp_rules)
        return d

    @classmethod
    def of(cls, scoring: ScoringConfig | str | None) -> ScoringConfig:
        """A config from a config, a method name (defaults otherwise) or ``None`` (all defaults)."""
        if scoring is None:
            return cls()
        if isinstance(scoring, str):
            return cls(method=scoring)
        if not isinstance(scoring, cls):
            raise InputError(
                f"scoring must be a ScoringConfig or a method name, got {type(scoring).__name__}"
            )
        return scoring


@dataclass(frozen=True)
class Execution:
    """How an attribution pass runs; none of it changes the scores.

    Attributes:
        checkpoint: path prefix for partial accumulators; a rerun with the same samples and settings
            resumes from it (:mod:`circuitcut.attribution.streaming`).
        checkpoint_every: batches between checkpoints.
        gradient_checkpointing: recompute decoder layers in the backward (less memory, more time).
    """

    checkpoint: str | None = None
    checkpoint_every: int = 50
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.checkpoint_every < 1:
            raise InputError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
