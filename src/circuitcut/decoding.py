"""How continuations are decoded: the settings, plain data importable without torch (the
decoding itself is :func:`circuitcut.generation.greedy_continuations` and
:func:`circuitcut.generation.sampled_continuations`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from circuitcut.errors import CircuitcutError


@dataclass(frozen=True)
class GenerationSettings:
    """How continuations are produced (recorded in reports).

    Greedy decoding reads ``max_new_tokens``, ``batch_size`` and ``stop_at_eos``. Sampling
    (:func:`~circuitcut.generation.sampled_continuations`) reads them too, and draws
    ``num_samples`` continuations per prompt by nucleus sampling (``top_p``, ``temperature``),
    seeded by ``seed``: each sample has its own random stream, derived from the seed, the prompt's
    text and the sample's index, so a rerun gives the same samples whatever the batching and order.
    """

    max_new_tokens: int = 50
    #: whether this setting describes sampled continuations (recorded; greedy_continuations is greedy)
    do_sample: bool = False
    batch_size: int = 16
    #: stop at the end-of-text token (dropped); with False, decoding runs through it and the token
    #: counts as generated (a document-level LM then starts a new document, as GPT-2 does)
    stop_at_eos: bool = True
    #: nucleus sampling: the smallest set of most probable tokens whose mass reaches top_p
    top_p: float = 0.9
    temperature: float = 1.0
    seed: int = 0
    #: samples per prompt when sampling
    num_samples: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.top_p <= 1:
            raise CircuitcutError(
                f"top_p must lie in (0, 1], got {self.top_p}; 1 samples from the whole vocabulary"
            )
        if not self.temperature > 0:
            raise CircuitcutError(
                f"temperature must be > 0, got {self.temperature}; use greedy decoding for 0"
            )
        for name in ("max_new_tokens", "batch_size", "num_samples"):
            if getattr(self, name) < 1:
                raise CircuitcutError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise CircuitcutError(f"the sampling seed must be >= 0, got {self.seed}")

    def as_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return asdict(self)
