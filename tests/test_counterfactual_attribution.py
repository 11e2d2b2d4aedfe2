"""Attribution against a counterfactual (:mod:`circuitcut.attribution.counterfactual`), by hand.

On a tiny Llama, each weight's score under ``gradient`` against the counterfactual must equal
``w_ij sum_t (x_j - x'_j) dm/dy_i`` (attribution patching) computed here with plain autograd hooks,
and ``ig`` with ``steps`` points must equal the same product with the gradient averaged over the
points ``e' + (k / steps)(e - e')`` of the path between the embeddings; with one step ``ig`` is
attribution patching. Neurons score ``(a - a') dm/da`` summed over tokens.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from circuitcut import get_adapter
from circuitcut.attribution import ScoringConfig, answer_sample, attribute
from circuitcut.errors import CircuitcutError
from circuitcut.models.tiny import tiny_model


def _samples() -> list:
    return [
        answer_sample([5, 9, 14, 22, 9, 31], 14, 22, baseline_ids=[5, 17, 40, 22, 9, 31]),
        answer_sample([7, 12, 19, 3], 19, 12, baseline_ids=[7, 44, 19, 8]),
    ]


def _run(
    model: torch.nn.Module, hooked: dict, s: Any, point: float | None, tag: str, acts: dict, grads: dict
) -> None:
    """One forward (and, on the path, backward of the logit difference) with every input and
    output gradient of the hooked modules recorded: the counterfactual run when ``point`` is None,
    else the point ``e' + point (e - e')`` of the path."""

    def hook(name: str) -> Any:
        def record(m: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
            x = args[0]
            acts.setdefault(tag, {})[name] = x.detach()[0]
            watched = x if name == "site" else out
            if watched.requires_grad:
                watched.register_hook(lambda g: grads.__setitem__(name, grads.get(name, 0) + g[0]))

        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in hooked.items()]
    try:
        emb = model.get_input_embeddings()
        e0 = emb(torch.tensor([s.baseline_ids])).detach()
        if point is None:
            with torch.no_grad():
                model(inputs_embeds=e0)
            return
        e = (e0 + point * (emb(torch.tensor([s.input_ids])).detach() - e0)).requires_grad_(True)
        logits = model(inputs_embeds=e).logits[0, -1]
        (logits[s.target.token_ids[0]] - logits[s.target.contrast_ids[0]]).backward()
    finally:
        for h in handles:
            h.remove()


def _by_hand(model: torch.nn.Module, steps: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Weight scores (signed, value seeds) and layer-0 neuron scores against the counterfactual."""
    a = get_adapter(model)
    lins = {lin.name: lin for lin in a.linears()}
    hooked = {**{n: lin.module for n, lin in lins.items()}, "site": a.neuron_site(0).module}
    weights = {n: torch.zeros(lin.shape) for n, lin in lins.items()}
    neurons = torch.zeros(a.n_neurons)
    for s in _samples():
        acts: dict[str, dict[str, torch.Tensor]] = {}
        grads: dict[str, torch.Tensor] = {}
        _run(model, hooked, s, None, "counter", acts, grads)
        for k in range(1, steps + 1):  # the last point (k = steps) is the prompt
            _run(model, hooked, s, k / steps, "clean", acts, grads)
        for n, lin in lins.items():
            delta = acts["clean"][n] - acts["counter"][n]
            weights[n] += lin.as_out_in(lin.weight.detach()) * ((grads[n] / steps).t() @ delta)
        neurons += ((acts["clean"]["site"] - acts["counter"]["site"]) * grads["site"] / steps).sum(0)
        model.zero_grad(set_to_none=True)
    return weights, neurons


@pytest.mark.parametrize("steps", [1, 3])
def test_ig_and_attribution_patching_equal_the_hand_computation(steps: int) -> None:
    model = tiny_model("llama")
    weights, neurons = _by_hand(model, steps)
    cfg = ScoringConfig(method="ig", ig_steps=steps, aggregation="signed", seed_mode="value", batch_size=2)
    got = attribute(model, _samples(), cfg, levels=("weight", "neuron"), progress=False)
    for n, want in weights.items():
        torch.testing.assert_close(got.weight(n) * 2, want, rtol=1e-4, atol=1e-5 * want.abs().max().item())
    torch.testing.assert_close(got.neuron_matrix()[0] * 2, neurons, rtol=1e-4, atol=1e-6)
    assert got.meta["baseline"] == "counterfactual" and got.meta["ig_steps"] == steps
    if steps == 1:  # one step of the path is the prompt itself: attribution patching
        patching = attribute(model, _samples(), ScoringConfig(method="gradient", baseline="counterfactual",
                                                              aggregation="signed", seed_mode="value"),
                             levels=("weight", "neuron"), progress=False)  # fmt: skip
        for key, t in got.tensors().items():
            torch.testing.assert_close(patching.tensors()[key], t)


def test_counterfactual_scores_differ_from_plain_and_need_counterfactuals() -> None:
    model = tiny_model("llama")
    plain = attribute(model, _samples(), ScoringConfig(method="gradient"), levels=("neuron",), progress=False)
    patched = attribute(model, _samples(), ScoringConfig(method="gradient", baseline="counterfactual"),
                        levels=("neuron",), progress=False)  # fmt: skip
    assert not torch.allclose(plain.neuron_matrix(), patched.neuron_matrix())
    lrp = attribute(
        model, _samples(), ScoringConfig(baseline="counterfactual"), levels=("head",), progress=False
    )
    assert lrp.meta["baseline"] == "counterfactual" and bool((lrp.head_matrix() > 0).any())
    no_counterfactual = [answer_sample([5, 9, 14], 14, 9)]
    with pytest.raises(CircuitcutError, match="needs a counterfactual prompt for every sample"):
        attribute(model, no_counterfactual, ScoringConfig(method="ig"), progress=False)
    with pytest.raises(CircuitcutError, match="has no attribution against a counterfactual"):
        ScoringConfig(method="wanda", baseline="counterfactual")
    with pytest.raises(CircuitcutError, match="the counterfactual has 2 tokens, the sample 3"):
        answer_sample([5, 9, 14], 14, 9, baseline_ids=[5, 9])
    assert ScoringConfig(baseline="counterfactual").with_method("wanda").baseline == "zero"
    assert ScoringConfig().with_method("ig").baseline == "counterfactual"


def test_counterfactual_scores_default_to_value_seeds() -> None:
    """Against a counterfactual the default explains each prompt's difference as it is (value seeds):
    the scores equal those with ``seed_mode="value"``, the sidecar says so, and a method derived
    from a zero-baseline config picks its own default. Unit seeds divide each prompt's scores by its
    own difference ``m - m'``: on a prompt whose difference is negative every signed score flips."""
    model = tiny_model("llama")
    kw = {"levels": ("neuron",), "progress": False}
    for method in ("ig", "gradient"):
        default = attribute(model, _samples(), ScoringConfig(method=method, baseline="counterfactual",
                                                             aggregation="signed"), **kw)  # fmt: skip
        value = attribute(model, _samples(), ScoringConfig(method=method, baseline="counterfactual",
                                                           aggregation="signed", seed_mode="value"), **kw)  # fmt: skip
        torch.testing.assert_close(default.neuron_matrix(), value.neuron_matrix())
        assert default.meta["seed_mode"] == "value"
    assert ScoringConfig().effective_seed_mode == "unit"
    assert ScoringConfig(method="lrp").with_method("ig").effective_seed_mode == "value"
    assert ScoringConfig(method="ig").as_dict()["seed_mode"] == "value"
    assert ScoringConfig(method="ig", seed_mode="unit").effective_seed_mode == "unit"
    # one prompt, unit against value seeds: the ratio of the signed scores is 1 / (m - m')
    s = _samples()[:1]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([s[0].input_ids])).logits[0, -1]
        base = model(input_ids=torch.tensor([s[0].baseline_ids])).logits[0, -1]
    t, c = s[0].target.token_ids[0], s[0].target.contrast_ids[0]
    diff = float((logits[t] - logits[c]) - (base[t] - base[c]))
    cfg = {"method": "gradient", "baseline": "counterfactual", "aggregation": "signed"}
    unit = attribute(model, s, ScoringConfig(**cfg, seed_mode="unit"), **kw).neuron_matrix()
    value = attribute(model, s, ScoringConfig(**cfg), **kw).neuron_matrix()
    torch.testing.assert_close(unit, value / diff, rtol=1e-4, atol=1e-7)
