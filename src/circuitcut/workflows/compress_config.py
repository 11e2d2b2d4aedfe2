"""The settings of a compression run (:func:`circuitcut.workflows.compress.compress`), checked when
made: plain data, importable without torch, so the command line shows the defaults at once."""

from __future__ import annotations

from dataclasses import dataclass, field

from circuitcut import validation
from circuitcut.attribution.config import ScoringConfig
from circuitcut.errors import CircuitcutError

SCHEMES = ("global", "layer", "rowwise", "2:4", "4:8")
METHODS = ("lrp", "wanda", "gradient", "magnitude", "random")
#: per-layer budgets (circuitcut.pruning.budgets): the same rate everywhere, OWL's outlier-weighted
#: rates, or rates from each layer's share of the relevance (score) mass
BUDGETS = ("uniform", "owl", "relevance")


#: calibration window length when none is given (shortened to a model's context)
DEFAULT_SEQLEN = 128


@dataclass
class CompressConfig:
    """Everything that determines a compression run (recorded in its report)."""

    #: the scores (method, aggregation, seeds, rules, batch size, seed of the calibration draw and of
    #: the random method). The default aggregation is ``token_norm``: every token's absolute
    #: relevance, each token's gradient at unit L1 mass, summed. At 50% row-wise (3 seeds) it gave
    #: 0.992x Wanda's perplexity on SmolLM2-135M, 1.044x on Gemma 3 270M, 1.001x and 1.005x on the
    #: reference models, where ``token_abs`` gave 1.068x, 1.135x, 1.000x and 1.012x
    #: (docs/compression.md). Unit seeds stay the default: value seeds were worse on ref-opt.
    scoring: ScoringConfig = field(default_factory=lambda: ScoringConfig(aggregation="token_norm"))
    sparsity: float = 0.5
    scheme: str = "rowwise"
    layers: str = "all"
    n_samples: int = 128
    #: tokens per calibration window; None: 128, or the model's context if shorter
    seqlen: int | None = None
    eval_seqlen: int | None = None
    eval_windows: int | None = None
    sequential: bool = False
    #: how the sparsity is shared among decoder layers (``layer`` and ``rowwise`` schemes): uniform;
    #: ``owl`` (Yin et al. 2024: fewer pruned where more Wanda scores are outliers, M=5, lambda=0.08);
    #: ``relevance`` (fewer pruned where the scores' mass per weight is higher, same lambda). The
    #: average stays the sparsity and the total count is exact (circuitcut.pruning.budgets).
    budget: str = "uniform"

    def __post_init__(self) -> None:
        self.scoring = ScoringConfig.of(self.scoring)
        validation.choice(self.scoring.method, "method", METHODS)
        validation.choice(self.scheme, "scheme", SCHEMES)
        validation.choice(self.budget, "budget", BUDGETS)
        if self.budget != "uniform" and self.scheme in ("global", "2:4", "4:8"):
            why = (
                "N:M keeps n of every m weights in every group, so its rate cannot differ between layers"
                if ":" in self.scheme
                else "the global scheme already lets all layers compete for one count"
            )
            raise CircuitcutError(
                f"budget {self.budget!r} does not apply to scheme {self.scheme!r}: {why}; use scheme layer or "
                "rowwise with a budget, or budget uniform"
            )
        if self.scoring.baseline != "zero":
            raise CircuitcutError(
                "compression explains text windows, which have no counterfactual: use baseline zero"
            )
        if self.scheme in ("2:4", "4:8"):
            self.sparsity = 0.5
        self.sparsity = validation.fraction(self.sparsity, "sparsity", zero=True)
        self.n_samples = validation.positive_int(self.n_samples, "n_samples")
        self.seqlen = validation.optional_positive_int(self.seqlen, "seqlen")
        self.eval_seqlen = validation.optional_positive_int(self.eval_seqlen, "eval_seqlen")
        self.eval_windows = validation.optional_positive_int(self.eval_windows, "eval_windows")
        if self.sequential and self.scheme == "global":
            raise CircuitcutError(
                "the sequential protocol prunes layer by layer: use scheme layer, rowwise or N:M"
            )
