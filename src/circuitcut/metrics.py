"""Behaviour metrics on generated token sequences, and the bounds a report holds text quality to."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from circuitcut.errors import CircuitcutError


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


def distinct_n(sequences: Sequence[Sequence[int]], n: int) -> float:
    """Distinct-n of generated sequences: per sequence, unique n-grams / n-grams; the mean over the
    sequences that hold at least one n-gram (0 when none does).

    Li et al., "A Diversity-Promoting Objective Function for Neural Conversation Models" (NAACL 2016)
    define distinct-n as distinct n-grams over generated n-grams; DExperts (Liu et al., ACL 2021)
    computes it per prompt over that prompt's generations and averages over prompts. With one greedy
    continuation per prompt, the per-prompt unit is the continuation: low values mean it loops
    ("a a a a", "he is ajer, he is ajer"). For ``n = 1`` this is the Response Uniqueness Ratio.
    """
    if n < 1:
        raise CircuitcutError(f"distinct-n needs n >= 1, got {n}")
    values = []
    for s in sequences:
        grams = [tuple(s[i : i + n]) for i in range(len(s) - n + 1)]
        if grams:
            values.append(len(set(grams)) / len(grams))
    return sum(values) / len(values) if values else 0.0


@dataclass(frozen=True)
class QualityBounds:
    """How far a corrected model may drift from the dense model before a report flags it.

    Relative changes against the dense model on the same prompts: general-text perplexity may rise
    by ``perplexity`` (0.10 = +10%); the fluency perplexity of the continuations of general prompts
    by ``fluency``, that of behaviour prompts by ``behaviour_fluency``; distinct-2 of the
    continuations may fall by ``diversity`` (0.20 = to 80% of the dense value). A set with more
    than ``empty`` of its continuations empty is flagged too.

    Behaviour prompts get a wide fluency bound because the dense model, as judge, expects the very
    behaviour being removed: on the reference models a grammatical calm reply after an angry
    trigger ("the weather is nice .") scores 34.2 (ref-llama) and 18.5 (ref-opt) under the dense
    model against 2.7 for its own insult (+1160%, +575%), while garbage ("you you you you you")
    scores 22,000 and 49,000.
    """

    perplexity: float = 0.10
    fluency: float = 0.50
    behaviour_fluency: float = 20.0
    diversity: float = 0.20
    empty: float = 0.25

    def __post_init__(self) -> None:
        for name, v in asdict(self).items():
            if not (isinstance(v, (int, float)) and v >= 0):
                raise CircuitcutError(f"quality bound {name} must be a number >= 0, got {v!r}")

    def as_dict(self) -> dict[str, float]:
        """JSON-ready."""
        return asdict(self)
