"""Targeted correction: contrastive relevance, behaviour scorers and evaluation."""

from circuitcut.correction.contrastive import contrastive, totals
from circuitcut.correction.scorers import (
    HFClassifierScorer,
    ProfanityCheckScorer,
    ToxicityScorer,
    WordListScorer,
    auroc,
    make_scorer,
)

__all__ = [
    "HFClassifierScorer",
    "ProfanityCheckScorer",
    "ToxicityScorer",
    "WordListScorer",
    "auroc",
    "contrastive",
    "make_scorer",
    "totals",
]
