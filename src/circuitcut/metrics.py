"""Behaviour metrics on generated token sequences."""

from __future__ import annotations

from collections.abc import Sequence


def response_uniqueness_ratio(tokens: Sequence[int]) -> float:
    """Unique generated tokens / generated tokens; 0 for an empty response.

    The Response Uniqueness Ratio of Hatefi et al. (arXiv 2506.13727, Sec. 4.3): low values mean
    the model repeats itself.
    """
    return len(set(tokens)) / len(tokens) if tokens else 0.0


def repeated_ngram_rate(tokens: Sequence[int], n: int = 3) -> float:
    """Share of the response's n-grams that already occurred earlier in it (0 when it has none)."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    seen: set[tuple[int, ...]] = set()
    repeats = 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams)
