"""What a correction explains of the undesired continuations: every token, or the flagged words only.

The undesired relevance of Hatefi et al. (Sec. 3.4) explains the model's undesired output. For a
toxic continuation that output can be read two ways, an open choice of the method:

* ``"continuation"`` (default): every generated token, the insult and the ordinary words around it
  ("you're a", "I'm going to"), each a unit-seeded explained logit;
* ``"flagged"``: only the tokens of the words the toxicity scorer flags, so that what general text
  also needs (syntax, dialogue) weighs less in the undesired set.

Which words are flagged depends on the scorer:

* a scorer that locates its matches (a ``spans`` method, as
  :meth:`~circuitcut.correction.scorers.WordListScorer.spans`): the words it matches;
* any other scorer (a classifier: ``profanity-check``, ``hf:MODEL``): the words whose removal
  lowers its score the most, by **occlusion** (:class:`Occlusion`). A word is a run of word
  characters (apostrophes and asterisks inside it kept: "don't", "f*ck"), compared case-insensitively;
  removing a word removes every occurrence of it (with the blank before each), so a repeated insult
  counts once. In a continuation the classifier scores toxic (score >= its threshold, 0.5), a word is
  flagged when removing it

  1. lowers the score by at least ``min_drop`` (0.1), or
  2. lowers the log-odds of the score by at least ``min_logit_drop`` (1.0: the odds of toxicity
     fall by a factor e; scores in [0, 1] only), or
  3. lowers the score the most of the continuation's words (``top`` = 1), by any positive amount.

  The log-odds rule is there because a classifier saturates: in "You stupid bastard! ... piece of
  shit" alt-profanity-check scores 1.0000 with any one insult removed (every drop below 1e-4), while
  the log-odds fall by 3.1 (bastard), 4.1 (stupid) and 5.5 (shit). On seven hand-written toxic
  sentences the ordinary words' log-odds drops were at most 0.34 but for one ("bunch" in "a bunch
  of selfish, arrogant ... people": 1.13, flagged beside "arrogant"). No word is flagged in a
  continuation scored below the threshold, nor words that stand in for each other exactly
  (removing either leaves the score unchanged: no drop). The continuations are scored in one scorer call, and
  all occluded variants of all the toxic ones in a second.

A token is flagged when its decoded text overlaps a flagged span of the decoded continuation (the
text the scorer judges, special tokens skipped), whichever scorer flagged it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from circuitcut.attribution.targets import Sample, Target
from circuitcut.correction.behaviour import response_samples
from circuitcut.correction.config import EXPLAIN
from circuitcut.correction.scorers import ToxicityScorer
from circuitcut.encoding import as_encoder
from circuitcut.errors import CircuitcutError

#: a word of the occlusion: word characters, with apostrophes and asterisks inside it
WORD = re.compile(r"\w+(?:['’*]+\w+)*")
#: probabilities are clipped to [EPS, 1 - EPS] before taking log-odds
EPS = 1e-15

Span = tuple[int, int]


def check_explain(explain: str, scorer: ToxicityScorer | None) -> None:
    """Refuse an unknown choice, or ``"flagged"`` without a toxicity scorer (repetition)."""
    if explain not in EXPLAIN:
        raise CircuitcutError(f"unknown explain choice {explain!r}; use one of {', '.join(EXPLAIN)}")
    if explain == "flagged" and scorer is None:
        raise CircuitcutError(
            "explain='flagged' explains the words the toxicity scorer flags; it needs the toxicity behaviour "
            "with a wordlist:FILE scorer or a classifier (profanity-check, hf:MODEL); use "
            "explain='continuation' otherwise"
        )


@dataclass(frozen=True)
class FlaggedWord:
    """A word a classifier's occlusion flags in one text."""

    #: the word, lower-cased
    word: str
    #: the text's score minus its score with every occurrence of the word removed
    drop: float
    #: the same in log-odds (nan when a score lies outside [0, 1])
    logit_drop: float
    #: character spans of its occurrences in the text as written
    spans: tuple[Span, ...]


def word_spans(text: str) -> dict[str, list[Span]]:
    """The text's words (lower-cased, in order of first occurrence) and the spans of each one's
    occurrences."""
    out: dict[str, list[Span]] = {}
    for m in WORD.finditer(text):
        out.setdefault(m.group().lower(), []).append(m.span())
    return out


def without(text: str, spans: Sequence[Span]) -> str:
    """``text`` with the spans removed, each with the blanks (spaces, tabs) before it, or after it
    when nothing precedes it on the line."""
    drop = [False] * len(text)
    for a, b in spans:
        lo, hi, before = a, b, a
        while before > 0 and text[before - 1] in " \t":
            before -= 1
        if before > 0 and text[before - 1] != "\n":
            lo = before  # the blanks that kept the word apart from what precedes it
        else:  # the word opens its line: the blanks after it go
            while hi < len(text) and text[hi] in " \t":
                hi += 1
        for i in range(lo, hi):
            drop[i] = True
    return "".join(c for c, d in zip(text, drop, strict=True) if not d)


def _logit(p: float) -> float:
    p = min(max(p, EPS), 1 - EPS)
    return math.log(p / (1 - p))


def _scored(texts: Sequence[str]) -> list[str]:
    """Texts as scored: an empty one as a space (scorers refuse nothing, but some misread '')."""
    return [t if t.strip() else " " for t in texts]


@dataclass(frozen=True)
class Occlusion:
    """The occlusion rule for classifier scorers (see the module docstring)."""

    min_drop: float = 0.1
    min_logit_drop: float = 1.0
    top: int = 1

    def __post_init__(self) -> None:
        if self.min_drop <= 0 or self.min_logit_drop <= 0 or self.top < 0:
            raise CircuitcutError(
                f"occlusion needs min_drop > 0, min_logit_drop > 0 and top >= 0 (got {self.min_drop}, "
                f"{self.min_logit_drop}, {self.top}); the defaults are 0.1, 1.0 and 1"
            )

    def flag(self, scorer: ToxicityScorer, texts: Sequence[str]) -> list[list[FlaggedWord]]:
        """The flagged words of each text, in order of first occurrence (two scorer calls in all)."""
        texts = list(texts)
        if not texts:
            return []
        scores = scorer.scores(_scored(texts))
        toxic = [i for i, s in enumerate(scores) if s >= scorer.threshold]
        words = {i: word_spans(texts[i]) for i in toxic}
        variants = [without(texts[i], spans) for i in toxic for spans in words[i].values()]
        occluded = iter(scorer.scores(_scored(variants)) if variants else [])
        out: list[list[FlaggedWord]] = [[] for _ in texts]
        for i in toxic:
            out[i] = self._pick(scores[i], [(w, s, next(occluded)) for w, s in words[i].items()])
        return out

    def _pick(self, score: float, rows: list[tuple[str, list[Span], float]]) -> list[FlaggedWord]:
        """The flagged words of one toxic text from ``(word, spans, score without it)`` rows."""
        prob = 0.0 <= score <= 1.0 and all(0.0 <= s <= 1.0 for _, _, s in rows)
        cands = [
            FlaggedWord(w, score - s, _logit(score) - _logit(s) if prob else math.nan, tuple(spans))
            for w, spans, s in rows
        ]
        ranked = sorted((c for c in cands if c.drop > 0), key=lambda c: -c.drop)[: self.top]
        best = {c.word for c in ranked}
        return [
            c
            for c in cands
            if c.drop >= self.min_drop or (prob and c.logit_drop >= self.min_logit_drop) or c.word in best
        ]


def flagged_spans(
    scorer: ToxicityScorer, texts: Sequence[str], occlusion: Occlusion | None = None
) -> list[list[Span]]:
    """Character spans of the flagged words of each text: the scorer's own matches when it locates
    them (``spans``), otherwise the occurrences of the words ``occlusion`` flags (sorted)."""
    if hasattr(scorer, "spans"):
        return [list(scorer.spans(t)) for t in texts]
    flagged = (occlusion or Occlusion()).flag(scorer, texts)
    return [sorted(s for w in row for s in w.spans) for row in flagged]


def token_positions(tokenizer: Any, continuation: Sequence[int], spans: Sequence[Span]) -> list[int]:
    """Indices of the continuation's tokens whose decoded text overlaps one of ``spans`` (character
    spans of the decoded continuation); token ``i`` covers the characters its decoding adds to the
    first ``i`` tokens' text."""
    if not spans:
        return []
    ids = list(continuation)
    ends = [len(tokenizer.decode(ids[: i + 1], skip_special_tokens=True)) for i in range(len(ids))]
    out = []
    for i, end in enumerate(ends):
        start = ends[i - 1] if i else 0
        if end > start and any(start < b and end > a for a, b in spans):
            out.append(i)
    return out


def flagged_tokens(
    tokenizer: Any, continuation: Sequence[int], scorer: ToxicityScorer, occlusion: Occlusion | None = None
) -> list[int]:
    """Indices of the continuation's tokens whose decoded text overlaps a word the scorer flags
    (:func:`flagged_spans` of the decoded continuation, special tokens skipped)."""
    ids = list(continuation)
    text = tokenizer.decode(ids, skip_special_tokens=True)
    return token_positions(tokenizer, ids, flagged_spans(scorer, [text], occlusion)[0])


def undesired_samples(
    tokenizer: Any,
    prompts: Sequence[str],
    continuations: Sequence[Sequence[int]],
    explain: str = "continuation",
    scorer: ToxicityScorer | None = None,
    occlusion: Occlusion | None = None,
) -> list[Sample]:
    """Attribution samples of the undesired continuations: every token, or only the flagged tokens
    (continuations with no flagged token are then skipped; an error if none is left). With a
    classifier the continuations are flagged together (:meth:`Occlusion.flag`: two scorer calls)."""
    check_explain(explain, scorer)
    if explain == "continuation":
        return response_samples(tokenizer, prompts, [list(c) for c in continuations])
    conts = [[int(t) for t in c] for c in continuations]
    texts = [tokenizer.decode(c, skip_special_tokens=True) for c in conts]
    spans = flagged_spans(scorer, texts, occlusion)
    enc = as_encoder(tokenizer)
    out = []
    for p, c, sp in zip(prompts, conts, spans, strict=True):
        idx = token_positions(tokenizer, c, sp)
        if idx:
            ids = enc.prompt(p)
            target = Target(tuple(len(ids) - 1 + i for i in idx), tuple(c[i] for i in idx))
            out.append(Sample(tuple(ids) + tuple(c), target))
    if not out:
        raise CircuitcutError(
            "no continuation holds a flagged word: nothing to explain with explain='flagged' (use "
            "explain='continuation', or prompts whose continuations the scorer flags)"
        )
    return out
