"""Attribution: AttnLRP relevance and baselines per weight element, neuron and head."""

from circuitcut.attribution.engine import LEVELS, METHODS, attribute, explain, select_linears
from circuitcut.attribution.rules import VARIANTS, LRPRules, lrp_rules
from circuitcut.attribution.targets import (
    Sample,
    Target,
    answer_sample,
    next_token_sample,
    response_sample,
)

__all__ = [
    "LEVELS",
    "METHODS",
    "VARIANTS",
    "LRPRules",
    "Sample",
    "Target",
    "answer_sample",
    "attribute",
    "explain",
    "lrp_rules",
    "next_token_sample",
    "response_sample",
    "select_linears",
]
