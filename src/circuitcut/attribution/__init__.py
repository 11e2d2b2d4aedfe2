"""Attribution: AttnLRP relevance and baselines per weight element, neuron and head.

The method table, the variant names and the scoring configuration (:mod:`circuitcut.attribution.methods`,
:mod:`circuitcut.attribution.config`) are plain data; everything else
is imported on first use (PEP 562), so reading the names does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from circuitcut.attribution.config import Execution, ScoringConfig
from circuitcut.attribution.methods import LEVELS, METHOD_SPECS, METHODS, VARIANTS, MethodSpec

_WHERE = {
    "attribute": "attribution.engine",
    "explain": "attribution.engine",
    "select_linears": "models.selection",
    "LRPRules": "attribution.rules",
    "lrp_rules": "attribution.rules",
    "Sample": "attribution.targets",
    "Target": "attribution.targets",
    "answer_sample": "attribution.targets",
    "next_token_sample": "attribution.targets",
    "response_sample": "attribution.targets",
}

__all__ = [
    "LEVELS",
    "METHODS",
    "METHOD_SPECS",
    "VARIANTS",
    "Execution",
    "MethodSpec",
    "ScoringConfig",
    *_WHERE,
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        # deferred heavy import: the engine, rules and targets import torch
        return getattr(import_module(f"circuitcut.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'circuitcut.attribution' has no attribute {name!r}")
