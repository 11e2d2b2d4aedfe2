"""What a circuit sweep and the circuit extracted after it do: plain data, checked when made and
importable without torch, so the command line shows the defaults at once."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from circuitcut import validation
from circuitcut.attribution.config import ScoringConfig
from circuitcut.attribution.methods import LEVELS
from circuitcut.attribution.methods import METHODS as SCORE_METHODS
from circuitcut.errors import CircuitcutError

#: what a pruned component passes on: nothing, its mean (:mod:`circuitcut.pruning.ablation`), its
#: activation on the counterfactual prompt (:mod:`circuitcut.pruning.patching`), or "auto": patching
#: when every prompt of the task has a counterfactual, zeroing otherwise
ABLATIONS = ("auto", "zero", "mean", "patch")
#: how reports name each ablation
ABLATION_WORDS = {
    "zero": "zeroing",
    "mean": "mean ablation (each pruned component passes on its mean over the attribution prompts)",
    "patch": "counterfactual patching (each pruned component passes on its activation on the prompt's "
    "counterfactual, as ACDC, EAP-IG and MIB ablate)",
}
#: kept fractions: 100% down to 0.1% (the MIB circuit sizes, log-spaced)
DEFAULT_KEEP = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001)
DEFAULT_BASELINES = ("gradient", "wanda", "activation", "random")
#: the circuit search over the grid of counts (see :func:`circuitcut.circuits.circuit.extract_circuit`)
SEARCHES = ("bisection", "scan")


@dataclass
class SweepConfig:
    """What a sweep and the circuit extracted after it do (recorded in their outputs)."""

    #: the scores: the method swept first and whose circuit is extracted, and the settings every
    #: method shares (LRP variant and rules, aggregation, seeds, attribution batch size)
    scoring: ScoringConfig = field(default_factory=lambda: ScoringConfig(batch_size=16))
    #: the methods compared with it (the same settings, each applied where it means something)
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    level: str = "weight"
    layers: str = "all"
    keep: tuple[float, ...] = DEFAULT_KEEP
    seeds: int = 3
    n_ref: int = 64
    metric: str = "logit_diff"
    #: pruning scheme per method at weight level; the paper's best: global, Wanda row-wise
    schemes: dict[str, str] = field(default_factory=lambda: {"wanda": "rowwise"})
    default_scheme: str = "global"
    #: prompts per evaluation forward (evaluation needs no backward, so larger batches fit)
    eval_batch_size: int = 64
    #: the faithfulness a circuit must reach to count (the sparsest such point is reported)
    threshold: float = 0.9
    #: what a pruned component passes on: "patch" (its activation on the counterfactual prompt),
    #: "zero", "mean" (its mean over the attribution split), or "auto": patch where the task has
    #: counterfactuals, else zero
    ablation: str = "auto"
    #: how the extracted circuit's grid of counts is searched: "bisection" or "scan" (see extract_circuit)
    search: str = "bisection"
    #: random circuits of the same size measured as the extracted circuit's control
    random_seeds: int = 3

    def __post_init__(self) -> None:
        self.scoring = ScoringConfig.of(self.scoring)
        validation.choice(self.ablation, "ablation", ABLATIONS)
        validation.choice(self.search, "search", SEARCHES)
        validation.choice(self.level, "level", LEVELS)
        if self.baselines:
            validation.name_list(self.baselines, "baselines", tuple(SCORE_METHODS))
        self.baselines = tuple(self.baselines)
        if not self.keep or any(not 0 < k <= 1 for k in self.keep):
            raise CircuitcutError("kept fractions must lie in (0, 1]")
        self.seeds = validation.positive_int(self.seeds, "seeds")
        self.n_ref = validation.positive_int(self.n_ref, "n_ref")
        self.eval_batch_size = validation.positive_int(self.eval_batch_size, "eval_batch_size")
        self.random_seeds = validation.non_negative_int(self.random_seeds, "random_seeds")
        if not 0 < self.threshold <= 1:
            raise CircuitcutError(f"the faithfulness threshold must be in (0, 1], got {self.threshold}")
        self.keep = tuple(sorted(set(self.keep), reverse=True))

    @property
    def methods(self) -> tuple[str, ...]:
        """The scoring method first, then the baselines (each once)."""
        return tuple(dict.fromkeys((self.scoring.method, *self.baselines)))

    def scoring_for(self, method: str, seed: int = 0) -> ScoringConfig:
        """The scores of ``method`` on reference set ``seed``: the shared settings, the seed offset."""
        return self.scoring.with_method(method).with_seed(self.scoring.seed + seed)

    def for_task(self, task: Any) -> SweepConfig:
        """The config with ``ablation="auto"`` resolved for ``task`` (patch where every prompt has a
        counterfactual, zero otherwise); an explicit "patch" on a task without them is refused."""
        has = bool(getattr(task, "has_counterfactuals", False))
        if self.ablation == "auto":
            return replace(self, ablation="patch" if has else "zero")
        if self.ablation == "patch" and not has:
            raise CircuitcutError(
                "ablation 'patch' needs a counterfactual prompt for every example (IOI has them; a task file "
                "gives each record a 'corrupt' prompt); use ablation zero or mean"
            )
        return self

    def scheme(self, method: str) -> str:
        """The weight-level scheme a method is pruned with."""
        return self.schemes.get(method, self.default_scheme)
