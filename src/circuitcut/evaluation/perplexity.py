"""Perplexity on a text corpus, by the standard protocol.

Join the corpus, tokenise it once, cut it into non-overlapping windows of ``seqlen`` tokens (the
last partial window is dropped), and average the next-token negative log-likelihood over every
predicted token (``seqlen - 1`` per window); perplexity is its exponential. Sums run in float64 over
windows in a fixed order, so the same inputs give the same value to the last digit.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from circuitcut.attribution.rules import eval_mode
from circuitcut.errors import CircuitcutError

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
) -> PerplexityResult:
    """Perplexity of a token stream (see the module docstring)."""
    ids = torch.as_tensor(ids, dtype=torch.long).flatten()
    if seqlen < 2:
        raise CircuitcutError(f"seqlen must be >= 2, got {seqlen}")
    n = ids.numel() // seqlen
    if max_windows is not None:
        n = min(n, max_windows)
    if n == 0:
        raise CircuitcutError(f"the corpus has {ids.numel()} tokens, fewer than one window of {seqlen}")
    windows = ids[: n * seqlen].view(n, seqlen)
    device = model.get_input_embeddings().weight.device
    total = 0.0
    with eval_mode(model):
        for i in tqdm(range(0, n, batch_size), desc="perplexity", disable=not progress):
            x = windows[i : i + batch_size].to(device)
            logits = model(input_ids=x, use_cache=False).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(
                logits.flatten(0, 1), x[:, 1:].flatten(), reduction="none"
            )
            total += nll.double().view(x.shape[0], -1).sum(1).sum().item()
    tokens = n * (seqlen - 1)
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
    """Perplexity of a text (the whole corpus as one string)."""
    if tokenizer is None:
        raise CircuitcutError("perplexity of a text needs the model's tokenizer")
    if not text.strip():
        raise CircuitcutError("the corpus is empty")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return perplexity_of_ids(model, ids, seqlen, batch_size, max_windows, progress)
