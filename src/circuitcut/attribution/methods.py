"""The scoring methods, the levels each one scores, and the LRP variants: plain data, importable
without torch, so the command line can offer them at once (the engine and the rules read them here).
"""

from __future__ import annotations

#: scoring method -> the levels it scores
METHODS: dict[str, tuple[str, ...]] = {
    "lrp": ("weight", "neuron", "head"),
    "gradient": ("weight", "neuron", "head"),
    "gradient_magnitude": ("weight", "neuron", "head"),
    "wanda": ("weight", "neuron", "head"),
    "magnitude": ("weight", "neuron", "head"),
    "activation": ("neuron", "head"),
    "random": ("weight", "neuron", "head"),
}
LEVELS = ("weight", "neuron", "head")

#: how token relevance becomes a sample's score (see circuitcut.attribution.collector)
AGGREGATIONS = ("abs", "signed", "token_abs", "token_l2")
#: the seed of each explained output (see circuitcut.attribution.targets)
SEED_MODES = ("unit", "value")

#: query, key and value gradient factors per LRP variant (see circuitcut.attribution.rules)
VARIANTS: dict[str, tuple[float, float, float]] = {
    "attnlrp": (0.25, 0.25, 0.5),
    "cp-lrp": (0.0, 0.0, 1.0),
}
#: the AttnLRP rules (see circuitcut.attribution.rules): the identity rule of elementwise
#: activations, norms with their scale held constant, the attention factors, the halved gated product
LRP_RULES: tuple[str, ...] = ("activation", "norm", "attention", "gate")
