"""The scoring methods as data: what each scores, whether it needs reference samples, and which pass
computes it; the LRP variants and rules. Importable without torch, so the command line can offer the
choices at once (the engine, the memory estimate and the workflows read them here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from circuitcut import validation
from circuitcut.errors import InputError

LEVELS = ("weight", "neuron", "head")


@dataclass(frozen=True)
class MethodSpec:
    """What a scoring method is.

    ``backward`` names the pass that computes it: ``lrp`` (the LRP backward, rules installed),
    ``gradient`` (the plain backward), ``forward`` (activation statistics of a forward pass) or
    ``none`` (no pass: the weights alone, or a seeded generator). ``quantity`` is what a gradient
    method accumulates per weight: ``wdw`` (``W * dW``) or ``grad`` (``dW``). ``units_from_weights``
    says a neuron or head scores the sum of its weights' scores over the columns it feeds (Wanda and
    magnitude, which the papers define on weights only: a circuitcut extension).
    """

    name: str
    levels: tuple[str, ...]
    needs_data: bool
    backward: str
    quantity: str = "wdw"
    units_from_weights: bool = False
    summary: str = ""
    #: whether it can explain the difference from a counterfactual (scores of ``x - x'``)
    counterfactual: bool = False

    @property
    def has_backward(self) -> bool:
        """Whether the method runs a backward pass (and so explains outputs chosen by seeds)."""
        return self.backward in ("lrp", "gradient")


#: the method table: every method circuitcut scores with
METHOD_SPECS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec("lrp", LEVELS, True, "lrp", counterfactual=True,
                   summary="AttnLRP relevance: W * dW under the LRP backward"),
        MethodSpec("gradient", LEVELS, True, "gradient", counterfactual=True,
                   summary="gradient x weight / x input (against the counterfactual: attribution patching)"),
        MethodSpec("ig", LEVELS, True, "gradient", counterfactual=True,
                   summary="integrated gradients from the counterfactual to the prompt, at the embeddings "
                   "(EAP-IG-inputs, Hanna et al. 2024)"),
        MethodSpec("gradient_magnitude", LEVELS, True, "gradient", quantity="grad", summary="the gradient alone"),
        MethodSpec("wanda", LEVELS, True, "forward", units_from_weights=True,
                   summary="|W| x the L2 norm of its input over the calibration tokens (Sun et al., 2023)"),
        MethodSpec("magnitude", LEVELS, False, "none", units_from_weights=True, summary="|W|, no data"),
        MethodSpec("activation", ("neuron", "head"), True, "forward",
                   summary="summed |a| per neuron, L2 norm of each head's output"),
        MethodSpec("random", LEVELS, False, "none", summary="uniform scores from a seeded generator"),
    )
}  # fmt: skip
#: scoring method -> the levels it scores
METHODS: dict[str, tuple[str, ...]] = {name: spec.levels for name, spec in METHOD_SPECS.items()}


def method_spec(method: str) -> MethodSpec:
    """The table row of ``method``, or an error naming the choices."""
    validation.choice(method, "method", tuple(METHOD_SPECS))
    return METHOD_SPECS[method]


#: how token relevance becomes a sample's score (see circuitcut.attribution.collector)
AGGREGATIONS = ("abs", "signed", "token_abs", "token_norm", "token_l2")
#: the seed of each explained output (see circuitcut.attribution.targets)
SEED_MODES = ("unit", "value")
#: what a score is relative to: zero (``x``, the plain attribution) or the counterfactual (``x - x'``,
#: the sample's counterfactual prompt; see circuitcut.attribution.counterfactual)
BASELINES = ("zero", "counterfactual")

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
