"""Behaviour scorers: how toxic a text is (pluggable), and how repetitive a continuation is.

Toxicity scorers share one interface: ``scores(texts) -> list[float]`` (higher = more toxic) and
``flags(texts) -> list[bool]``, plus a ``name`` that reports carry. Three kinds:

* :class:`WordListScorer`: a word list the user supplies (one entry per line; multi-word entries
  match as phrases); score = number of matches; flagged when > 0;
* :class:`ProfanityCheckScorer`: the offline ``alt-profanity-check`` classifier from the package
  registry (``pip install alt-profanity-check``), a probability; flagged at >= 0.5;
* :class:`HFClassifierScorer`: a Hugging Face text-classification model by hub id or local path,
  the probability of its toxic label; flagged at >= 0.5.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from circuitcut.errors import CircuitcutError


def _check(texts: Sequence[str]) -> list[str]:
    texts = list(texts)
    if not texts:
        raise CircuitcutError("no texts to score")
    return texts


class ToxicityScorer:
    """Interface of the toxicity scorers."""

    name = "scorer"
    threshold = 0.5

    def scores(self, texts: Sequence[str]) -> list[float]:  # pragma: no cover - interface
        """Toxicity of each text (higher = more toxic)."""
        raise NotImplementedError

    def flags(self, texts: Sequence[str]) -> list[bool]:
        """Whether each text counts as toxic."""
        return [s >= self.threshold for s in self.scores(texts)]

    def words_in(self, texts: Sequence[str]) -> list[str]:
        """The scorer's own words found in the texts, for marking them in reports (none for a
        classifier, which has no word list)."""
        return []


class WordListScorer(ToxicityScorer):
    """Counts words (or phrases) from a list, case-insensitively, on word boundaries."""

    threshold = 1.0

    def __init__(self, words: Sequence[str], name: str = "word list") -> None:
        words = sorted({w.strip().lower() for w in words if w.strip()}, key=len, reverse=True)
        if not words:
            raise CircuitcutError("the word list is empty; give at least one word")
        self.words = words
        self.name = f"{name} ({len(words)} entries)"
        self._re = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(w) for w in words) + r")(?!\w)")
        self._re_any_case = re.compile(self._re.pattern, re.IGNORECASE)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> WordListScorer:
        """A word list from a text file, one entry per line (``#`` starts a comment)."""
        p = Path(path)
        if not p.is_file():
            raise CircuitcutError(f"no such word list: {p}")
        lines = [ln.split("#", 1)[0] for ln in p.read_text(encoding="utf-8").splitlines()]
        return cls(lines, name=f"word list {p.name}")

    def scores(self, texts: Sequence[str]) -> list[float]:
        """Number of list entries found in each text."""
        return [float(len(self._re.findall(t.lower()))) for t in _check(texts)]

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans ``(start, end)`` of the list entries found in ``text`` (the matches
        :meth:`scores` counts, located in the text as written)."""
        return [m.span() for m in self._re_any_case.finditer(text)]

    def words_in(self, texts: Sequence[str]) -> list[str]:
        """The list entries found in the texts, sorted."""
        return sorted({m for t in texts for m in self._re.findall(t.lower())})


class ProfanityCheckScorer(ToxicityScorer):
    """The offline ``alt-profanity-check`` classifier (a linear model on character n-grams)."""

    name = "alt-profanity-check"

    def __init__(self) -> None:
        try:
            from profanity_check import predict_prob
        except ImportError as exc:
            raise CircuitcutError(
                "this scorer needs alt-profanity-check: pip install alt-profanity-check"
            ) from exc
        self._predict = predict_prob

    def scores(self, texts: Sequence[str]) -> list[float]:
        """Probability that each text is offensive."""
        return [float(p) for p in self._predict(_check(texts))]


class HFClassifierScorer(ToxicityScorer):
    """A Hugging Face text-classification model (hub id or local path), the toxic label's probability."""

    def __init__(self, model: str, label: str | None = None, device: str | None = None) -> None:
        from transformers import pipeline

        try:
            self._pipe = pipeline("text-classification", model=model, top_k=None, device=device)
        except (OSError, ValueError) as exc:
            raise CircuitcutError(f"cannot load the classifier {model!r}: {exc}") from exc
        labels = [str(v) for v in self._pipe.model.config.id2label.values()]
        self.label = label or next(
            (
                lb
                for lb in labels
                if re.search(r"toxic|offensive|hate|insult", lb, re.I) and not lb.lower().startswith("non")
            ),
            labels[-1],
        )
        if self.label not in labels:
            raise CircuitcutError(f"label {self.label!r} is not one of the classifier's labels {labels}")
        self.name = f"{model} (label {self.label})"

    def scores(self, texts: Sequence[str]) -> list[float]:
        """Probability of the toxic label for each text."""
        out = self._pipe(_check(texts), truncation=True)
        return [float(next(d["score"] for d in row if d["label"] == self.label)) for row in out]


def make_scorer(spec: str, **kwargs: Any) -> ToxicityScorer:
    """A scorer from a short spec: ``wordlist:FILE``, ``profanity-check`` or ``hf:MODEL_ID_OR_PATH``."""
    if spec.startswith("wordlist:"):
        return WordListScorer.from_file(spec.split(":", 1)[1])
    if spec in ("profanity-check", "alt-profanity-check"):
        return ProfanityCheckScorer()
    if spec.startswith("hf:"):
        return HFClassifierScorer(spec[3:], **kwargs)
    raise CircuitcutError(
        f"unknown scorer {spec!r}; use wordlist:FILE, profanity-check or hf:MODEL_ID_OR_PATH"
    )


def auroc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve of scores against binary labels."""
    from sklearn.metrics import roc_auc_score

    if len(set(labels)) < 2:
        raise CircuitcutError("AUROC needs both positive and negative labels")
    return float(roc_auc_score(list(labels), list(scores)))
