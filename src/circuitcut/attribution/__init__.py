"""Attribution: AttnLRP relevance and baselines per weight element, neuron and head.

The method and variant names (:mod:`circuitcut.attribution.methods`) are plain data; everything else
is imported on first use (PEP 562), so reading the names does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from circuitcut.attribution.methods import LEVELS, METHODS, VARIANTS

_WHERE = {
    "attribute": "engine",
    "explain": "engine",
    "select_linears": "engine",
    "LRPRules": "rules",
    "lrp_rules": "rules",
    "Sample": "targets",
    "Target": "targets",
    "answer_sample": "targets",
    "next_token_sample": "targets",
    "response_sample": "targets",
}

__all__ = ["LEVELS", "METHODS", "VARIANTS", *_WHERE]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        # deferred heavy import: the engine, rules and targets import torch
        return getattr(import_module(f"circuitcut.attribution.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'circuitcut.attribution' has no attribute {name!r}")
