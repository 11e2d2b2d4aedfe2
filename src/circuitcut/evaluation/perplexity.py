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

Memory stays bounded whatever the vocabulary: the decoder runs once per batch to its final hidden
states, and the LM head, the soft-capping and the log-softmax run on chunks of at most
:data:`CHUNK_ELEMENTS` logits (:func:`head_logprobs`), so a batch of ``[B, T, V]`` float32 logits
(8 x 512 x 262k: 4.3 GB) is never held. Each window's NLL is the same as from the full logits, to
float rounding. A model whose logits are not its output embedding (plus Gemma's soft-capping) on
its base model's states (:func:`lm_head_split` checks on a few tokens) takes the full forward.
"""

from __future__ import annotations

import math
import os
import warnings
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


#: float32 logits the LM head produces at a time (64 MiB): 64 positions of a 262k vocabulary
CHUNK_ELEMENTS = 2**24

#: tokens the split into decoder and head is checked on, against the full forward
_PROBE_TOKENS = 8


@dataclass(frozen=True)
class HeadSplit:
    """A causal LM cut into its decoder (``model.base_model``, final norm included) and its LM head
    (``model.get_output_embeddings()``, then the final logit soft-capping ``cap`` when set)."""

    base: torch.nn.Module
    head: torch.nn.Module
    cap: float | None
    vocab: int

    def states(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's final hidden states ``[B, T, H]``."""
        return self.base(input_ids=ids, attention_mask=attention_mask, use_cache=False)[0]

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """The logits of some hidden states, in the model's dtype, as the full model computes them."""
        z = self.head(states)
        return torch.tanh(z / self.cap) * self.cap if self.cap else z


def lm_head_split(
    model: torch.nn.Module, probe: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None
) -> HeadSplit | None:
    """The model's :class:`HeadSplit`, or ``None`` when it has no separate base model and output
    embedding, or when, on ``probe`` (a few token ids ``[1, t]``), the head on the decoder's states
    does not give the model's own logits (a family that scales its logits otherwise)."""
    base = getattr(model, "base_model", model)
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if get_head is not None else None
    if base is model or head is None:
        return None
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    weight = getattr(head, "weight", None)
    vocab = int(weight.shape[0]) if weight is not None else int(config.vocab_size)
    split = HeadSplit(base, head, getattr(config, "final_logit_softcapping", None) or None, vocab)
    if probe is None:
        return split
    mask = None if attention_mask is None else attention_mask[:1, :_PROBE_TOKENS]
    x = probe[:1, :_PROBE_TOKENS]
    with torch.no_grad():
        full = model(input_ids=x, attention_mask=mask, use_cache=False).logits.float()
        mine = split.logits(split.states(x, mask)).float()
    scale = full.abs().max().item() + 1e-6
    if full.shape == mine.shape and torch.allclose(mine, full, rtol=1e-3, atol=1e-4 * scale):
        return split
    warnings.warn(
        f"{type(model).__name__}: its logits are not its output embedding on its decoder's states; "
        "evaluating on full logits (memory grows with the vocabulary)",
        stacklevel=2,
    )
    return None


def head_logprobs(
    split: HeadSplit, states: torch.Tensor, targets: torch.Tensor, chunk_elements: int = CHUNK_ELEMENTS
) -> torch.Tensor:
    """``log p(targets[k])`` under the logits of ``states[k]`` (``[K, H]`` and ``[K]``), float32
    ``[K]``, the head and log-softmax run on ``chunk_elements // vocab`` rows at a time."""
    if chunk_elements < 1:
        raise CircuitcutError(f"chunk_elements must be >= 1, got {chunk_elements}")
    step = max(1, chunk_elements // split.vocab)
    out = []
    for s in range(0, states.shape[0], step):
        z = split.logits(states[s : s + step]).float()
        tgt = targets[s : s + step].to(z.device)
        out.append(-torch.nn.functional.cross_entropy(z, tgt, reduction="none"))
    return torch.cat(out) if out else states.new_zeros(0, dtype=torch.float32)


def token_logprobs(
    model: torch.nn.Module,
    ids: torch.Tensor,
    rows: torch.Tensor,
    positions: torch.Tensor,
    targets: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> torch.Tensor:
    """``log p(targets[k])`` under the logits at ``(rows[k], positions[k])`` of a batch ``ids``
    (float32 ``[K]``), without the batch's full-vocabulary logits (see the module docstring)."""
    split = lm_head_split(model, ids[:1], attention_mask)
    if split is None:
        logits = model(input_ids=ids, attention_mask=attention_mask, use_cache=False).logits
        picked = logits[rows, positions].float()
        return picked.log_softmax(-1).gather(1, targets.to(picked.device)[:, None])[:, 0]
    states = split.states(ids, attention_mask)
    return head_logprobs(split, states[rows.to(states.device), positions.to(states.device)], targets,
                         chunk_elements)  # fmt: skip


def _batch_nll(
    model: torch.nn.Module, split: HeadSplit | None, x: torch.Tensor, first: int, chunk_elements: int
) -> float:
    """Summed NLL (float64) of the scored tokens ``x[:, first:]`` of a batch of windows."""
    targets = x[:, first:].flatten()
    if split is None:
        logits = model(input_ids=x, use_cache=False).logits[:, first - 1 : -1].float()
        nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets, reduction="none")
        return nll.double().sum().item()
    states = split.states(x)[:, first - 1 : -1]
    return -head_logprobs(split, states.flatten(0, 1), targets, chunk_elements).double().sum().item()


@torch.no_grad()
def perplexity_of_ids(
    model: torch.nn.Module,
    ids: torch.Tensor | list[int],
    seqlen: int = 2048,
    batch_size: int = 8,
    max_windows: int | None = None,
    progress: bool = True,
    prefix: Sequence[int] = (),
    chunk_elements: int = CHUNK_ELEMENTS,
) -> PerplexityResult:
    """Perplexity of a token stream encoded without special tokens; ``prefix`` (the tokenizer's
    leading special tokens, :attr:`circuitcut.encoding.Encoder.prefix`) starts every window (see the
    module docstring). A progress bar counts the windows (``progress=False`` hides it);
    ``chunk_elements`` bounds the logits held at a time."""
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
    with (
        eval_mode(model),
        tqdm(total=n, desc="perplexity", unit="window", leave=False, disable=not progress) as bar,
    ):
        split = lm_head_split(model, windows[:1].to(device))
        for i in range(0, n, batch_size):
            x = windows[i : i + batch_size].to(device)
            total += _batch_nll(model, split, x, first, chunk_elements)
            bar.update(len(x))
    tokens = n * (seqlen - first)
    return PerplexityResult(math.exp(total / tokens), total / tokens, tokens, n, seqlen)


def perplexity(
    model: torch.nn.Module,
    tokenizer: Any,
    text: str,
    seqlen: int = 2048,
    batch_size: int = 8,
    max_windows: int | None = None,
    progress: bool = True,
) -> PerplexityResult:
    """Perplexity of a text (the whole corpus as one string); ``tokenizer`` may be an
    :class:`~circuitcut.encoding.Encoder` (its policy decides the window prefix)."""
    if tokenizer is None:
        raise CircuitcutError("perplexity of a text needs the model's tokenizer")
    if not text.strip():
        raise CircuitcutError("the corpus is empty")
    enc = as_encoder(tokenizer, model)
    return perplexity_of_ids(model, enc.pieces(text), seqlen, batch_size, max_windows, progress, enc.prefix)
