"""Targeted correction: contrastive relevance, behaviour scorers and evaluation.

The run's configuration (:mod:`circuitcut.correction.config`) is plain data; everything else is
imported on first use (PEP 562), so reading the settings does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# the contrastive function keeps the name of its module: import it from circuitcut.correction.contrastive
_WHERE = {
    "HFClassifierScorer": "scorers",
    "ProfanityCheckScorer": "scorers",
    "ToxicityScorer": "scorers",
    "WordListScorer": "scorers",
    "auroc": "scorers",
    "judge_prompts": "prompt_judging",
    "make_scorer": "scorers",
    "totals": "contrastive",
}

__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"circuitcut.correction.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'circuitcut.correction' has no attribute {name!r}")
