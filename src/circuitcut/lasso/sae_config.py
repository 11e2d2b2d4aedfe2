"""How sparse autoencoders are built and trained: settings only (no torch, so the CLI can read them fast).

:mod:`circuitcut.lasso.sae` holds the SAE, :mod:`circuitcut.lasso.sae_training` trains it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from circuitcut import validation
from circuitcut.errors import CircuitcutError

#: SAE architectures: ReLU (``standard``, trained with an L1 penalty) and TopK
ARCHITECTURES = ("standard", "topk")


@dataclass(frozen=True)
class SAETrainConfig:
    """How SAEs are trained (every field is one option of ``circuitcut sae train``)."""

    d_sae: int = 4608
    architecture: str = "topk"
    k: int = 32
    l1_coefficient: float = 5e-3
    steps: int = 3000
    batch_tokens: int = 1024
    lr: float = 4e-4
    buffer_tokens: int = 32768
    model_batch: int = 16
    seed: int = 0
    checkpoint_every: int = 500
    resample_dead: bool = True
    dead_tokens: int = 200_000
    skip_positions: int = 1

    def __post_init__(self) -> None:
        for name in (
            "d_sae",
            "k",
            "steps",
            "batch_tokens",
            "buffer_tokens",
            "model_batch",
            "checkpoint_every",
        ):
            validation.positive_int(getattr(self, name), name)
        validation.non_negative_int(self.seed, "seed")
        validation.positive_float(self.lr, "lr")
        validation.positive_int(self.dead_tokens, "dead_tokens")
        validation.non_negative_int(self.skip_positions, "skip_positions")
        if self.architecture not in ARCHITECTURES:
            raise CircuitcutError(
                f"unknown SAE architecture {self.architecture!r}; use {' or '.join(ARCHITECTURES)}"
            )
        if self.buffer_tokens < self.batch_tokens:
            raise CircuitcutError(
                f"buffer_tokens ({self.buffer_tokens}) is smaller than batch_tokens ({self.batch_tokens}); "
                "give a buffer of at least one batch"
            )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)
