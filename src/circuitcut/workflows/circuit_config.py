"""The settings of a circuit discovery run (:func:`circuitcut.workflows.circuit.discover_circuit`),
checked when made: plain data, importable without torch, so the command line shows the defaults at once."""

from __future__ import annotations

from dataclasses import dataclass, field

from circuitcut import validation
from circuitcut.circuits.config import SweepConfig


@dataclass(frozen=True)
class DiscoveryConfig:
    """A circuit discovery run: the sweep and circuit settings, and how the task is split."""

    sweep: SweepConfig = field(default_factory=SweepConfig)
    #: attribution prompts (reference sets of ``sweep.n_ref`` are drawn from them) and held-out prompts
    n_attribution: int = 128
    n_evaluation: int = 200
    #: IOI from lists: the share of sentence templates held out for evaluation
    heldout_templates: float = 0.3
    #: IOI from these name/template/place/object lists (a JSON file in the ACDC lists' layout);
    #: None: the reference models' own lists
    ioi_lists: str | None = None

    def __post_init__(self) -> None:
        validation.positive_int(self.n_attribution, "n_attribution")
        validation.positive_int(self.n_evaluation, "n_evaluation")
        validation.fraction(self.heldout_templates, "heldout_templates")
