"""Mean ablation: pruned neurons and heads pass on their mean (checked against a hand-built hook),
weights pass on W_ij mu_j, the model comes back exactly, and sweeps and circuits carry it through."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from circuitcut import get_adapter
from circuitcut.attribution.config import ScoringConfig
from circuitcut.attribution.targets import pad_batch
from circuitcut.circuits import Circuit, SweepConfig, extract_circuit
from circuitcut.circuits.sweep import sweep
from circuitcut.errors import CircuitcutError
from circuitcut.models.tiny import tiny_model
from circuitcut.pruning import Mask, masked
from circuitcut.pruning.ablation import input_means
from circuitcut.tasks import evaluate_task, ioi_task
from circuitcut.zoo.tokenizer import build_tokenizer

TOK = build_tokenizer()
PROMPTS = [[5, 9, 12, 7, 3], [4, 8], [11, 6, 2, 10]]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model("llama", vocab_size=len(TOK))


def _logits(model: torch.nn.Module, prompts: list[list[int]]) -> torch.Tensor:
    ids, mask = pad_batch(prompts)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def test_input_means_average_real_tokens_only(model: torch.nn.Module) -> None:
    a = get_adapter(model)
    site = a.neuron_site(0).name
    seen = []
    handle = a.linear(site).module.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    for p in PROMPTS:  # one prompt at a time: no padding at all
        _logits(model, [p])
    handle.remove()
    by_hand = torch.cat([x[0] for x in seen]).mean(0)
    means = input_means(model, a, [site], PROMPTS, batch_size=2, pad_id=0)
    torch.testing.assert_close(means[site], by_hand, rtol=1e-5, atol=1e-6)


def test_mean_ablated_neurons_equal_their_mean_substituted_by_hand(model: torch.nn.Module) -> None:
    a = get_adapter(model)
    site = a.neuron_site(1)
    means = input_means(model, a, [site.name], PROMPTS)
    pruned = [0, 3, 5]
    m = torch.zeros(site.shape, dtype=torch.bool)
    m[:, pruned] = True  # a neuron is an input column of the down projection
    mask = Mask({site.name: m})

    def substitute(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
        x = args[0].clone()
        x[..., pruned] = means[site.name][pruned]
        return (x,)

    handle = site.module.register_forward_pre_hook(substitute)
    expected = _logits(model, PROMPTS)
    handle.remove()
    dense = _logits(model, PROMPTS)
    weight = site.weight.detach().clone()
    with masked(a, mask, means):
        got = _logits(model, PROMPTS)
    with masked(a, mask):
        zeroed = _logits(model, PROMPTS)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert (got - zeroed).abs().max() > 1e-3  # mean ablation is not zero ablation
    # the model comes back exactly, hooks included
    assert torch.equal(site.weight, weight) and not site.module._forward_hooks
    assert torch.equal(_logits(model, PROMPTS), dense)


def test_mean_ablated_weights_pass_on_w_times_mean(model: torch.nn.Module) -> None:
    a = get_adapter(model)
    lin = a.linear(a.neuron_site(0).name)
    means = input_means(model, a, [lin.name], PROMPTS)
    m = torch.rand(lin.shape, generator=torch.Generator().manual_seed(0)) < 0.3
    out = []
    with masked(a, Mask({lin.name: m}), means):  # hooks run in order: this one sees the corrected output
        handle = lin.module.register_forward_hook(
            lambda mod, args, y: out.append((args[0].detach(), y.detach()))
        )
        _logits(model, [PROMPTS[0]])
        handle.remove()
    x, y = out[0]
    w = lin.weight.detach()
    by_hand = x @ (w * ~m).T + (w * m) @ means[lin.name]
    torch.testing.assert_close(y, by_hand, rtol=1e-4, atol=1e-5)


def test_means_must_cover_the_masked_layers(model: torch.nn.Module) -> None:
    a = get_adapter(model)
    s0, s1 = a.neuron_site(0), a.neuron_site(1)
    means = input_means(model, a, [s0.name], PROMPTS)
    weight = s1.weight.detach().clone()
    everything = Mask({s1.name: torch.ones(s1.shape, dtype=torch.bool)})
    with pytest.raises(CircuitcutError, match=f"no mean input for {s1.name}"), masked(a, everything, means):
        pass
    assert torch.equal(s1.weight, weight) and not s1.module._forward_hooks
    with pytest.raises(CircuitcutError, match="needs reference prompts"):
        input_means(model, a, [s0.name], [])


def test_sweep_and_circuit_under_mean_ablation(model: torch.nn.Module, tmp_path: Path) -> None:
    a = get_adapter(model)
    attr, ev = ioi_task(TOK, 40, seed=2).split(16)
    with pytest.raises(
        CircuitcutError, match="unknown ablation 'median'; use one of auto, zero, mean, patch"
    ):
        SweepConfig(ablation="median")
    cfg = dict(
        scoring=ScoringConfig(method="random"), baselines=(), level="head", keep=(1.0, 0.5), seeds=1, n_ref=8
    )
    zero = sweep(model, TOK, a, attr, ev, SweepConfig(**cfg, ablation="zero"), progress=False)
    mean = sweep(model, TOK, a, attr, ev, SweepConfig(**cfg, ablation="mean"), progress=False)
    assert mean.as_dict()["ablation"] == "mean" and zero.as_dict()["ablation"] == "zero"
    assert mean.dense == zero.dense and mean.empty != zero.empty
    # every head replaced by its mean: the empty circuit is the model with constant attention outputs
    head = SweepConfig(level="head", threshold=0.5, random_seeds=1, ablation="mean")
    circuit = extract_circuit(model, TOK, a, attr, ev, head)
    assert circuit.info["ablation"] == "mean" and circuit.info["empty"] == mean.empty
    circuit.save(tmp_path / "c")
    back = Circuit.load(tmp_path / "c")
    assert back.means is not None and set(back.means) == set(circuit.means or {})
    with back.run(a):
        again = evaluate_task(model, TOK, ev)
    assert again["logit_diff"] == pytest.approx(circuit.info["circuit"]["logit_diff"], rel=1e-5)
    # the sweep's means are the ones a circuit extracted after it uses (measured once, not twice)
    assert mean.means is not None and zero.means is None
    reused = extract_circuit(
        model, TOK, a, attr, ev, head, means=mean.means, reference=(mean.dense, mean.empty)
    )
    assert reused.means is mean.means and reused.info["circuit"] == circuit.info["circuit"]
    with pytest.raises(CircuitcutError, match="means are only used with ablation 'mean' or 'patch'"):
        extract_circuit(model, TOK, a, attr, ev, replace(head, ablation="zero"), means=mean.means)
