"""Adapters: counts against the config, component names resolving to the right slices."""

from __future__ import annotations

import pytest
import torch

from circuitcut import UnsupportedModelError, get_adapter, supported_model_types
from circuitcut.errors import CircuitcutError
from circuitcut.models.tiny import tiny_config, tiny_model

REQUIRED = {
    "opt",
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "gemma3_text",
    "gpt2",
    "gpt_neox",
    "phi3",
}


def test_required_families_supported() -> None:
    assert set(supported_model_types()) >= REQUIRED


def test_counts_match_config(model: torch.nn.Module, family: str) -> None:
    a = get_adapter(model)
    cfg = tiny_config(family)
    assert a.n_layers == cfg.num_hidden_layers == 2
    assert a.n_heads == cfg.num_attention_heads == 4
    assert a.n_kv_heads == (getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)
    assert a.head_dim == 8
    expected_neurons = {"opt": cfg.ffn_dim if family == "opt" else None, "gpt2": 4 * 32}.get(
        family
    ) or getattr(cfg, "intermediate_size", None)
    assert a.n_neurons == expected_neurons
    counts = a.counts()
    assert counts["heads"] == 8 and counts["neurons"] == 2 * a.n_neurons
    n_linear = {"gpt2": 4, "gpt_neox": 4, "phi3": 4, "opt": 6}.get(family, 7)
    assert len(a.layers[0].linears) == n_linear
    assert len(a.linears()) == 2 * n_linear
    # every linear's shape agrees with the derived sizes
    lin = a.layers[1].linears
    assert lin["o"].in_features == a.n_heads * a.head_dim
    assert lin["down"].in_features == a.n_neurons
    if "qkv" in lin:
        assert lin["qkv"].out_features == sum(a.qkv_sizes())
    else:
        assert lin["k"].out_features == a.n_kv_heads * a.head_dim


def test_names_are_readable_and_unique(model: torch.nn.Module) -> None:
    a = get_adapter(model)
    names = [lin.name for lin in a.linears(include_embeddings=True)]
    assert len(names) == len(set(names))
    assert all(n.startswith(("layers.", "embed_tokens", "lm_head")) for n in names)
    for lin in a.linears():
        assert model.get_submodule(lin.path) is lin.module


def test_head_component_is_o_proj_column_slice(model: torch.nn.Module) -> None:
    a = get_adapter(model)
    comp = a.resolve("layers.1.attn.head.2")
    o = a.head_site(1)
    w = o.as_out_in(o.weight)
    assert torch.equal(o.as_out_in(comp.tensor()), w[:, 2 * a.head_dim : 3 * a.head_dim])
    # zeroing the slice removes exactly that head's contribution to the projection's output
    x = torch.randn(3, o.in_features)
    xh = x.clone()
    xh[:, 2 * a.head_dim : 3 * a.head_dim] = 0
    with torch.no_grad():
        expected = o.module(xh)
        comp.tensor().zero_()
        assert torch.allclose(o.module(x), expected, atol=1e-6)


def test_neuron_component_is_down_column(model: torch.nn.Module) -> None:
    a = get_adapter(model)
    comp = a.resolve("layers.0.mlp.neuron.5")
    down = a.neuron_site(0)
    assert torch.equal(down.as_out_in(comp.tensor()), down.as_out_in(down.weight)[:, 5:6])
    assert a.resolve("layers.0.mlp.neuron.5").linear.name == down.name


def test_resolve_errors(model: torch.nn.Module) -> None:
    a = get_adapter(model)
    with pytest.raises(CircuitcutError, match="out of range"):
        a.resolve("layers.0.attn.head.99")
    with pytest.raises(CircuitcutError, match="layer 7 out of range"):
        a.resolve("layers.7.mlp.neuron.0")
    with pytest.raises(CircuitcutError, match="no linear layer named"):
        a.resolve("layers.0.mlp.nonexistent")


def test_tied_embeddings_detected() -> None:
    assert get_adapter(tiny_model("gpt2")).tied
    assert not get_adapter(tiny_model("llama")).tied
    assert get_adapter(tiny_model("llama", tie_word_embeddings=True)).tied


def test_fraction_says_share() -> None:
    a = get_adapter(tiny_model("opt"))
    assert a.fraction(3, "neuron") == "3 neurons = 3.12% of fc1 neurons"


def test_unsupported_model_type_lists_supported() -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(
        AutoConfig.for_model("bloom", hidden_size=32, n_head=4, n_layer=1, vocab_size=64)
    )
    with pytest.raises(UnsupportedModelError) as exc:
        get_adapter(model)
    msg = str(exc.value)
    assert "'bloom'" in msg and "llama" in msg and "gpt_neox" in msg
