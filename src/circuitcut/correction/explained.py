"""What a correction explains of the undesired continuations: every token, or the flagged words only.

The undesired relevance of Hatefi et al. (Sec. 3.4) explains the model's undesired output. For a
toxic continuation that output can be read two ways, an open choice of the method:

* ``"continuation"`` (default): every generated token, the insult and the ordinary words around it
  ("you're a", "I'm going to"), each a unit-seeded explained logit;
* ``"flagged"``: only the tokens of the words the toxicity scorer flags (the word list's matches),
  so that what general text also needs (syntax, dialogue) weighs less in the undesired set. Needs a
  scorer that locates its matches (:meth:`~circuitcut.correction.scorers.WordListScorer.spans`).

A token is flagged when its decoded text overlaps a flagged span of the decoded continuation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from circuitcut.attribution.targets import Sample, Target
from circuitcut.correction.behaviour import response_samples
from circuitcut.correction.config import EXPLAIN
from circuitcut.correction.scorers import ToxicityScorer
from circuitcut.encoding import as_encoder
from circuitcut.errors import CircuitcutError


def check_explain(explain: str, scorer: ToxicityScorer | None) -> None:
    """Refuse an unknown choice, or ``"flagged"`` without a scorer that locates its matches."""
    if explain not in EXPLAIN:
        raise CircuitcutError(f"unknown explain choice {explain!r}; use one of {', '.join(EXPLAIN)}")
    if explain == "flagged" and not hasattr(scorer, "spans"):
        raise CircuitcutError(
            "explain='flagged' explains the words a word-list scorer flags; it needs the toxicity behaviour "
            "with a wordlist:FILE scorer (use explain='continuation' otherwise)"
        )


def flagged_tokens(tokenizer: Any, continuation: Sequence[int], scorer: ToxicityScorer) -> list[int]:
    """Indices of the continuation's tokens whose decoded text overlaps a span the scorer flags.

    The decoded continuation is the text the scorer judges (special tokens skipped); token ``i``
    covers the characters its decoding adds to the first ``i`` tokens' text.
    """
    ids = list(continuation)
    text = tokenizer.decode(ids, skip_special_tokens=True)
    spans = scorer.spans(text)
    if not spans:
        return []
    ends = [len(tokenizer.decode(ids[: i + 1], skip_special_tokens=True)) for i in range(len(ids))]
    out = []
    for i, end in enumerate(ends):
        start = ends[i - 1] if i else 0
        if end > start and any(start < b and end > a for a, b in spans):
            out.append(i)
    return out


def undesired_samples(
    tokenizer: Any,
    prompts: Sequence[str],
    continuations: Sequence[Sequence[int]],
    explain: str = "continuation",
    scorer: ToxicityScorer | None = None,
) -> list[Sample]:
    """Attribution samples of the undesired continuations: every token, or only the flagged tokens
    (continuations with no flagged token are then skipped; an error if none is left)."""
    check_explain(explain, scorer)
    if explain == "continuation":
        return response_samples(tokenizer, prompts, [list(c) for c in continuations])
    enc = as_encoder(tokenizer)
    out = []
    for p, c in zip(prompts, continuations, strict=True):
        idx = flagged_tokens(tokenizer, c, scorer)
        if idx:
            ids = enc.prompt(p)
            full = tuple(ids) + tuple(int(t) for t in c)
            out.append(
                Sample(full, Target(tuple(len(ids) - 1 + i for i in idx), tuple(int(c[i]) for i in idx)))
            )
    if not out:
        raise CircuitcutError(
            "no continuation holds a flagged word: nothing to explain with explain='flagged'"
        )
    return out
