"""The settings of a compression run (:func:`circuitcut.workflows.compress.compress`), checked when
made: plain data, importable without torch, so the command line shows the defaults at once."""

from __future__ import annotations

from dataclasses import dataclass

from circuitcut import validation
from circuitcut.attribution.methods import AGGREGATIONS, SEED_MODES, check_lrp_rules
from circuitcut.errors import CircuitcutError

SCHEMES = ("global", "layer", "rowwise", "2:4", "4:8")
METHODS = ("lrp", "wanda", "gradient", "magnitude", "random")


#: calibration window length when none is given (shortened to a model's context)
DEFAULT_SEQLEN = 128


@dataclass
class CompressConfig:
    """Everything that determines a compression run (recorded in its report)."""

    method: str = "lrp"
    sparsity: float = 0.5
    scheme: str = "rowwise"
    layers: str = "all"
    n_samples: int = 128
    #: tokens per calibration window; None: 128, or the model's context if shorter
    seqlen: int | None = None
    eval_seqlen: int | None = None
    eval_windows: int | None = None
    batch_size: int = 8
    seed: int = 0
    sequential: bool = False
    variant: str = "attnlrp"
    #: LRP / gradient: the absolute relevance of every token, summed (README, "Aggregation": at 50%
    #: row-wise it took SmolLM2-135M from 1.23x Wanda's perplexity to 1.03x)
    aggregation: str = "token_abs"
    #: LRP / gradient seeds: "unit" (default) or "value" (each explained logit seeded with its own
    #: value; on SmolLM2-135M 1.013x Wanda over 3 seeds against 1.046x, but worse on ref-opt: README)
    seed_mode: str = "unit"
    #: LRP: the rules to install (None: all; see attribute())
    lrp_rules: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        validation.choice(self.method, "method", METHODS)
        validation.choice(self.scheme, "scheme", SCHEMES)
        validation.choice(self.aggregation, "aggregation", AGGREGATIONS)
        validation.choice(self.seed_mode, "seed_mode", SEED_MODES)
        if self.lrp_rules is not None:
            self.lrp_rules = check_lrp_rules(self.lrp_rules, self.method)
        if self.scheme in ("2:4", "4:8"):
            self.sparsity = 0.5
        self.sparsity = validation.fraction(self.sparsity, "sparsity", zero=True)
        self.n_samples = validation.positive_int(self.n_samples, "n_samples")
        self.seqlen = validation.optional_positive_int(self.seqlen, "seqlen")
        self.eval_seqlen = validation.optional_positive_int(self.eval_seqlen, "eval_seqlen")
        self.eval_windows = validation.optional_positive_int(self.eval_windows, "eval_windows")
        self.batch_size = validation.positive_int(self.batch_size, "batch_size")
        self.seed = validation.non_negative_int(self.seed, "seed")
        if self.sequential and self.scheme == "global":
            raise CircuitcutError(
                "the sequential protocol prunes layer by layer: use scheme layer, rowwise or N:M"
            )
