"""Per-token aggregations (``token_abs``, ``token_norm``, ``token_l2``): equal to hand computations;
``token_abs`` never below the per-sample absolute value; equal to it for one-token samples;
``token_norm`` does not change when one token's gradient is scaled."""

from __future__ import annotations

import torch

from circuitcut import get_adapter
from circuitcut.attribution import answer_sample, attribute
from circuitcut.attribution.config import ScoringConfig
from circuitcut.models.tiny import tiny_model


def test_token_abs_equals_the_hand_computation() -> None:
    model = tiny_model("llama")
    adapter = get_adapter(model)
    lin = adapter.linear("layers.1.mlp.down_proj")
    ids = [3, 14, 15, 9, 26]
    sample = answer_sample(ids, 7)
    got, got_l2 = (
        attribute(model, [sample], ScoringConfig(method="gradient", aggregation=agg, seed_mode="value"), adapter=adapter, levels=("weight",)).weight(lin.name)
        for agg in ("token_abs", "token_l2")
    )  # fmt: skip
    seen = {}

    def hook(module, args, out):
        seen["x"] = args[0].detach()[0]
        out.register_hook(lambda g: seen.__setitem__("g", g.detach()[0]))

    handle = lin.module.register_forward_hook(hook)
    try:
        model(input_ids=torch.tensor([ids])).logits[0, -1, 7].backward()
    finally:
        handle.remove()
        model.zero_grad()
    expected = lin.weight.detach().abs() * (seen["g"].abs().t() @ seen["x"].abs())
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    expected_l2 = lin.weight.detach().abs() * (seen["g"].square().t() @ seen["x"].square()).sqrt()
    torch.testing.assert_close(got_l2, expected_l2, rtol=1e-5, atol=1e-7)


def test_token_abs_bounds_per_sample_abs_and_equals_it_on_one_token() -> None:
    model = tiny_model("llama")
    adapter = get_adapter(model)
    long = [answer_sample([3, 14, 15, 9, 26], 7), answer_sample([2, 7, 18], 4)]
    kw = {"adapter": adapter, "levels": ("weight", "neuron", "head")}
    per_token = attribute(model, long, ScoringConfig(aggregation="token_abs"), **kw)
    per_sample = attribute(model, long, ScoringConfig(aggregation="abs"), **kw)
    for name in per_token.weights:
        assert bool((per_token.weight(name) >= per_sample.weight(name) - 1e-6).all())
    assert bool((per_token.neuron_matrix() > per_sample.neuron_matrix() + 1e-6).any())
    one = [answer_sample([5], 7), answer_sample([9], 2)]
    b = attribute(model, one, ScoringConfig(aggregation="abs"), **kw)
    for agg in ("token_abs", "token_l2"):  # one token: every per-token norm is the absolute value
        a = attribute(model, one, ScoringConfig(aggregation=agg), **kw)
        for name in a.weights:
            torch.testing.assert_close(a.weight(name), b.weight(name))
        torch.testing.assert_close(a.neuron_matrix(), b.neuron_matrix())
        torch.testing.assert_close(a.head_matrix(), b.head_matrix())


def _site_and_output(model, lin, ids: list[int], answer: int) -> dict[str, torch.Tensor]:
    """The input of ``lin`` and the gradient at its output, of ``answer``'s logit at the last token."""
    seen: dict[str, torch.Tensor] = {}

    def hook(module, args, out):
        seen["x"] = args[0].detach()[0]
        out.register_hook(lambda g: seen.__setitem__("g", g.detach()[0]))

    handle = lin.module.register_forward_hook(hook)
    try:
        model(input_ids=torch.tensor([ids])).logits[0, -1, answer].backward()
    finally:
        handle.remove()
        model.zero_grad()
    return seen


def test_token_norm_equals_the_hand_computation_at_weights_and_neurons() -> None:
    model = tiny_model("llama")
    adapter = get_adapter(model)
    ids, answer = [3, 14, 15, 9, 26], 7
    scoring = ScoringConfig(method="gradient", aggregation="token_norm", seed_mode="value")
    got = attribute(
        model, [answer_sample(ids, answer)], scoring, adapter=adapter, levels=("weight", "neuron")
    )
    for layer in (0, 1):
        lin = adapter.linear(f"layers.{layer}.mlp.down_proj")
        seen = _site_and_output(model, lin, ids, answer)
        g, x = seen["g"], seen["x"]
        dx = g @ lin.weight.detach()  # the gradient at the neuron site (the down projection's input)
        if layer == 1:  # the last layer: only the explained token has a gradient; the others add 0
            assert bool((g[:-1] == 0).all()) and bool((g[-1] != 0).any())
            g, x, dx = g[-1:], x[-1:], dx[-1:]
        unit = g.abs() / g.abs().sum(-1, keepdim=True)  # each token's output gradient at unit L1 mass
        expected = lin.weight.detach().abs() * (unit.t() @ x.abs())
        torch.testing.assert_close(got.weight(lin.name), expected, rtol=1e-5, atol=1e-7)
        expected = ((x * dx).abs() / dx.abs().sum(-1, keepdim=True)).sum(0)
        torch.testing.assert_close(got.neuron(layer), expected, rtol=1e-5, atol=1e-7)


def test_token_norm_weighs_every_token_the_same() -> None:
    """Two samples that differ only in how strongly their outputs are seeded get the same scores under
    ``token_norm``, and different ones under ``token_abs`` (one-token samples: the seed scales the
    whole gradient of the token)."""
    model = tiny_model("llama")
    adapter = get_adapter(model)
    kw = {"adapter": adapter, "levels": ("weight", "neuron", "head")}
    one = [answer_sample([5], 7)]
    for agg, same in (("token_norm", True), ("token_abs", False)):
        unit = attribute(model, one, ScoringConfig(aggregation=agg, seed_mode="unit"), **kw)
        value = attribute(model, one, ScoringConfig(aggregation=agg, seed_mode="value"), **kw)
        scored = [name for name in unit.weights if bool(unit.weight(name).any())]  # one token: q, k get 0
        assert len(scored) >= len(unit.weights) // 2
        for name in scored:
            assert torch.allclose(unit.weight(name), value.weight(name), rtol=1e-4) is same
        assert torch.allclose(unit.neuron_matrix(), value.neuron_matrix(), rtol=1e-4) is same
        assert torch.allclose(unit.head_matrix(), value.head_matrix(), rtol=1e-4) is same
