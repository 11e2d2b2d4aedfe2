"""Perplexity on a text corpus, by the standard protocol.

Join the corpus, tokenise it once, cut it into non-overlapping windows of ``seqlen`` tokens (the
last partial window is dropped), and average the next-token negative log-likelihood over every
predicted token; perplexity is its exponential. Sums run in float64 over windows in a fixed order, so
the same inputs give the same value to the last digit.

Where the BOS goes (:mod:`circuitcut.encoding`): when the tokenizer puts special tokens before a text,
every window is that prefix followed by ``seqlen - len(prefix)`` corpus tokens, all of them scored (the
first predicted from the BOS), as lm-evaluation-harness feeds a document's first window its prefix
token; without a prefix (GPT-2, SmolLM2) a window is ``seqlen`` corpus tokens and its first is context
only (``seqlen - 1`` scored), which is Wanda's protocol. Either way each corpus token is scored at most
once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from circuitcut.attribution.rules import eval_mode
from circuitcut.encoding import as_encoder, context_length, cut_windows, window_body
from circuitcut.errors import CircuitcutError
from circuitcut.models.adapter import input_device

#: short names for corpora loaded with the ``datasets`` library: (path, config, split, joiner)
DATASETS = {
    "wikitext2": ("wikitext", "wikitext-2-raw-v1", "test", "\n\n"),
    "wikitext2-valid": ("wikitext", "wikitext-2-raw-v1", "validation", "\n\n"),
}


@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity with what it was computed from."""

    perplexity: float
    nll: float
    tokens: int
    windows: int
    seqlen: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dict(self.__dict__)


def load_text(source: str | os.PathLike[str]) -> str:
    """Text from a local file, or from a ``datasets`` corpus by short name (``wikitext2``) or by
    ``hf:PATH:CONFIG:SPLIT[:FIELD]`` (needs the ``datasets`` package and, for hub data, network)."""
    src = str(source)
    if os.path.isfile(src):
        return Path(src).read_text(encoding="utf-8")
    if src in DATASETS or src.startswith("hf:"):
        if src in DATASETS:
            path, config, split, joiner = DATASETS[src]
            field = "text"
        else:
            parts = src[3:].split(":")
            if len(parts) < 3:
                raise CircuitcutError(f"{src!r}: write hf:PATH:CONFIG:SPLIT[:FIELD]")
            path, config, split = parts[:3]
            field = parts[3] if len(parts) > 3 else "text"
            joiner = "\n\n"
        try:
            import datasets
        except ImportError as exc:
            raise CircuitcutError(
                "loading a corpus by name needs the 'datasets' package: pip install datasets"
            ) from exc
        try:
            ds = datasets.load_dataset(path, config or None, split=split)
        except Exception as exc:  # datasets raises many error types, offline ones included
            raise CircuitcutError(
                f"cannot load corpus {src!r} ({exc}); pass a local text file instead"
            ) from exc
        return joiner.join(ds[field])
    raise CircuitcutError(
        f"corpus {src!r} is neither a file nor a known corpus name ({', '.join(DATASETS)}, or hf:PATH:CONFIG:SPLIT)"
    )


@torch.no_grad()
def perplexity_of_ids(
    model: torch.nn.Module,
    ids: torch.Tensor | list[int],
    seqlen: int = 2048,
    batch_size: int = 8,
    max_windows: int | None = None,
    progress: bool = False,
    prefix: Sequence[int] = (),
) -> PerplexityResult:
    """Perplexity of a token stream encoded without special tokens; ``prefix`` (the tokenizer's
    leading special tokens, :attr:`circuitcut.encoding.Encoder.prefix`) starts every window (see the
    module docstring)."""
    if max_windows is not None and max_windows < 1:
        raise CircuitcutError(f"max_windows must be >= 1 (or None for all), got {max_windows}")
    if batch_size < 1:
        raise CircuitcutError(f"batch_size must be >= 1, got {batch_size}")
    stream = torch.as_tensor(ids, dtype=torch.long).flatten().tolist()
    context = context_length(model.config)
    windows = torch.tensor(cut_windows(stream, seqlen, prefix, context, max_windows), dtype=torch.long)
    n = len(windows)
    if n == 0:
        raise CircuitcutError(
            f"the corpus has {len(stream)} tokens, fewer than one window of {window_body(seqlen, prefix)}"
        )
    first = max(len(prefix), 1)  # the first scored position
    device = input_device(model)
    total = 0.0
    with eval_mode(model):
        for i in tqdm(range(0, n, batch_size), desc="perplexity", disable=not progress):
            x = windows[i : i + batch_size].to(device)
            logits = model(input_ids=x, use_cache=False).logits[:, first - 1 : -1].float()
            nll = torch.nn.functional.cross_entropy(
                logits.flatten(0, 1), x[:, first:].flatten(), reduction="none"
            )
            total += nll.double().sum().item()
    tokens = n * (seqlen - first)
    return PerplexityResult(math.exp(total / tokens), total / tokens, tokens, n, seqlen)


def perplexity(
    model: torch.nn.Module,
    tokenizer: Any,
    text: str,
    seqlen: int = 2048,
    batch_size: int = 8,
    max_windows: int | None = None,
    progress: bool = False,
) -> PerplexityResult:
    """Perplexity of a text (the whole corpus as one string); ``tokenizer`` may be an
    :class:`~circuitcut.encoding.Encoder` (its policy decides the window prefix)."""
    if tokenizer is None:
        raise CircuitcutError("perplexity of a text needs the model's tokenizer")
    if not text.strip():
        raise CircuitcutError("the corpus is empty")
    enc = as_encoder(tokenizer, model)
    return perplexity_of_ids(model, enc.pieces(text), seqlen, batch_size, max_windows, progress, enc.prefix)
