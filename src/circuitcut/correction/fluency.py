"""Text quality of generated continuations: fluency under the dense model, diversity, and bounds.

A correction can lower an undesired behaviour by breaking the model ("a a a a" is not toxic), and
the perplexity of general text, measured with teacher forcing, may not show it. The detoxification
literature therefore reports a triple (Gehman et al., RealToxicityPrompts, 2020; Liu et al., DExperts,
ACL 2021): the behaviour (toxicity), **fluency** = the perplexity of the generated continuations
under a reference model, conditioned on their prompts (here the *dense*, unpruned model, so the
corrected model cannot grade its own text), and **diversity** = distinct-1/2/3
(:func:`circuitcut.metrics.distinct_n`).

:class:`~circuitcut.metrics.QualityBounds` (plain data, so the command line shows its defaults
without loading torch) states how far a corrected model may drift from the dense one before the
report flags it; :func:`quality_flags` applies them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from circuitcut.attribution.rules import eval_mode
from circuitcut.attribution.targets import pad_batch
from circuitcut.errors import CircuitcutError
from circuitcut.evaluation.perplexity import token_logprobs
from circuitcut.metrics import QualityBounds, distinct_n
from circuitcut.models.adapter import input_device

__all__ = [
    "QualityBounds",
    "continuation_nll",
    "perplexity_flag",
    "quality_flags",
    "relative",
    "text_quality",
]


@torch.no_grad()
def continuation_nll(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    batch_size: int = 16,
) -> list[tuple[float, int]]:
    """Per continuation: (summed negative log-likelihood of its tokens given its prompt, token count).

    Empty continuations give ``(0.0, 0)``. Sums are float64; batches are right-padded, so every
    position indexes from the start of its own sequence.
    """
    if len(prompts) != len(continuations):
        raise CircuitcutError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    if any(len(p) == 0 for p in prompts):
        raise CircuitcutError("a continuation's prompt is empty; its first token has no context")
    device = input_device(model)
    out: list[tuple[float, int]] = [(0.0, 0)] * len(prompts)
    todo = [i for i, c in enumerate(continuations) if len(c)]
    with eval_mode(model):
        for start in range(0, len(todo), batch_size):
            rows = todo[start : start + batch_size]
            seqs = [list(prompts[i]) + list(continuations[i]) for i in rows]
            ids, mask = pad_batch(seqs)
            # logits at position t predict token t + 1; the head runs on these positions only, in chunks
            spans = [(len(prompts[i]), len(continuations[i])) for i in rows]
            row = torch.tensor([j for j, (_, c) in enumerate(spans) for _ in range(c)])
            pos = torch.tensor([t for p, c in spans for t in range(p - 1, p + c - 1)])
            tgt = torch.tensor([t for i in rows for t in continuations[i]])
            logp = token_logprobs(model, ids.to(device), row, pos, tgt, mask.to(device)).double().cpu()
            for i, part in zip(rows, logp.split([c for _, c in spans]), strict=True):
                out[i] = (-float(part.sum()), len(continuations[i]))
    return out


def text_quality(
    dense: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    batch_size: int = 16,
) -> dict[str, Any]:
    """Fluency and diversity of a set of continuations (token ids), with the dense model as judge.

    ``fluency_perplexity`` = exp(total NLL / total tokens) over every non-empty continuation (None
    when all are empty); ``distinct_1/2/3`` pooled over the set; ``empty_share`` and ``mean_length``
    in generated tokens.
    """
    nll = continuation_nll(dense, prompts, continuations, batch_size)
    tokens = sum(n for _, n in nll)
    n = len(continuations)
    return {
        "fluency_perplexity": math.exp(sum(v for v, _ in nll) / tokens) if tokens else None,
        **{f"distinct_{k}": distinct_n(continuations, k) for k in (1, 2, 3)},
        "empty_share": sum(1 for c in continuations if not c) / n if n else 0.0,
        "mean_length": tokens / n if n else 0.0,
    }


def relative(x: float | None, ref: float | None) -> float | None:
    """(x - ref) / ref, or None when either is missing or ref is 0."""
    if x is None or ref is None or abs(ref) < 1e-12:
        return None
    return (x - ref) / ref


def quality_flags(
    dense: dict[str, Any], corrected: dict[str, Any], bounds: QualityBounds, where: str, behaviour: bool
) -> list[str]:
    """Messages for each bound a set of continuations breaks (empty list: within bounds).

    ``dense`` and ``corrected`` are :func:`text_quality` results on the same prompts; ``where``
    names the set in the messages (e.g. "held-out behaviour prompts"); ``behaviour`` says whether
    the prompts are behaviour prompts (the wide fluency bound) or general ones.
    """
    flags = []
    bound = bounds.behaviour_fluency if behaviour else bounds.fluency
    f0, f1 = dense.get("fluency_perplexity"), corrected.get("fluency_perplexity")
    if f1 is None and f0 is not None:
        flags.append(f"fluency on {where}: every continuation is empty")
    else:
        rel = relative(f1, f0)
        if rel is not None and rel > bound:
            flags.append(
                f"fluency on {where}: perplexity of the continuations under the dense model "
                f"{f0:.3g} -> {f1:.3g} ({100 * rel:+.0f}%, bound +{100 * bound:.0f}%)"
            )
    rel = relative(corrected["distinct_2"], dense["distinct_2"])
    if rel is not None and -rel > bounds.diversity:
        flags.append(
            f"diversity on {where}: distinct-2 {dense['distinct_2']:.3f} -> {corrected['distinct_2']:.3f} "
            f"({100 * rel:+.0f}%, bound -{100 * bounds.diversity:.0f}%)"
        )
    if corrected["empty_share"] > max(bounds.empty, dense["empty_share"]):
        flags.append(
            f"empty continuations on {where}: {100 * corrected['empty_share']:.0f}% "
            f"(dense {100 * dense['empty_share']:.0f}%, bound {100 * bounds.empty:.0f}%)"
        )
    return flags


def perplexity_flag(dense: float, corrected: float, bounds: QualityBounds) -> list[str]:
    """A message when general-text perplexity rose beyond the bound (empty list otherwise)."""
    rel = relative(corrected, dense)
    if rel is not None and rel > bounds.perplexity:
        return [
            f"general perplexity {dense:.3f} -> {corrected:.3f} ({100 * rel:+.1f}%, "
            f"bound +{100 * bounds.perplexity:.0f}%)"
        ]
    return []
