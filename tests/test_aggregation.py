"""Per-token aggregations (``token_abs``, ``token_l2``): equal to hand computations; ``token_abs`` never
below the per-sample absolute value; both equal to it for one-token samples."""

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
