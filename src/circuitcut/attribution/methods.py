"""The scoring methods, the levels each one scores, and the LRP variants: plain data, importable
without torch, so the command line can offer them at once (the engine and the rules read them here).
"""

from __future__ import annotations

from collections.abc import Sequence

from circuitcut import validation
from circuitcut.errors import InputError

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

#: the rules of each LRP variant on attention's two bilinear products, as (query, key, value) gradient
#: factors: the scores ``q . k`` and the output ``A . V`` (A the softmax of the scores). AttnLRP's
#: uniform rule gives each factor of a product half (Achtibat et al., ICML 2024): half to q and k
#: in the scores, half to A (so to q and k again) and half to V in the output. CP-LRP (Ali et al.,
#: ICML 2022) passes nothing through A and the output's whole share through V.
ATTENTION_RULES: dict[str, dict[str, tuple[float, float, float]]] = {
    "attnlrp": {"attention_scores": (0.5, 0.5, 1.0), "attention_values": (0.5, 0.5, 0.5)},
    "cp-lrp": {"attention_scores": (1.0, 1.0, 1.0), "attention_values": (0.0, 0.0, 1.0)},
}
#: query, key and value gradient factors per LRP variant: the product of its attention rules
VARIANTS: dict[str, tuple[float, float, float]] = {
    name: tuple(a * b for a, b in zip(*rules.values(), strict=True))  # type: ignore[misc]
    for name, rules in ATTENTION_RULES.items()
}
#: the rules LRP installs (see circuitcut.attribution.rules): the identity rule of elementwise
#: activations, norms with their scale held constant, the uniform rule on the attention scores and
#: on the attention output (ATTENTION_RULES), and the halved gated product
LRP_RULES: tuple[str, ...] = ("activation", "norm", "attention_scores", "attention_values", "gate")


def check_lrp_rules(rules: Sequence[str] | None, method: str = "lrp") -> tuple[str, ...]:
    """The LRP rules to install, in :data:`LRP_RULES`' order (all when ``rules`` is None, none when
    it is empty); unknown names, and rules given to a method other than ``lrp``, are refused with
    the choices named."""
    if rules is None:
        return LRP_RULES
    if method != "lrp":
        raise InputError(f"LRP rules apply to method 'lrp', not {method!r}")
    chosen = set(validation.name_list(rules, "LRP rules", LRP_RULES) if len(rules) else ())
    return tuple(r for r in LRP_RULES if r in chosen)
