"""How continuations are decoded: the settings, plain data importable without torch (the
decoding itself is :func:`circuitcut.generation.greedy_continuations`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class GenerationSettings:
    """How continuations are produced (recorded in reports)."""

    max_new_tokens: int = 50
    do_sample: bool = False
    batch_size: int = 16
    #: stop at the end-of-text token (dropped); with False, decoding runs through it and the token
    #: counts as generated (a document-level LM then starts a new document, as GPT-2 does)
    stop_at_eos: bool = True

    def as_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return asdict(self)
