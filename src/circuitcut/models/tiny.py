"""Tiny randomly initialised models of every supported family, built from configs (no downloads).

Used by the tests and benchmarks, and handy to try circuitcut on an architecture without weights.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM

#: the shared shape of the decoder-only families with grouped-query attention: hidden 32, 4 heads
#: (2 kv heads), 2 layers, MLP 48; ``head_dim=8`` is given where a family's config has its own default
#: instead of hidden / heads
_GQA: dict[str, Any] = dict(
    hidden_size=32, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2, intermediate_size=48
)

#: small config overrides per model type; hidden 32, 4 heads (2 kv heads where GQA exists), 2 layers
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "opt": dict(
        hidden_size=32,
        num_attention_heads=4,
        num_hidden_layers=2,
        ffn_dim=48,
        word_embed_proj_dim=32,
        max_position_embeddings=128,
    ),
    "llama": dict(_GQA),
    "mistral": dict(_GQA, head_dim=8),
    "qwen2": dict(_GQA),
    "qwen3": dict(_GQA, head_dim=8),
    "gemma": dict(_GQA, num_key_value_heads=1, head_dim=8),  # multi-query attention
    "gemma2": dict(_GQA, head_dim=8),
    "gemma3_text": dict(_GQA, head_dim=8),
    "gpt2": dict(n_embd=32, n_head=4, n_layer=2, n_positions=128),
    "gpt_neox": dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=48),
    "phi3": dict(_GQA),
}

VOCAB = 64


def tiny_config(model_type: str, **overrides: Any):
    """A tiny config of the given family (vocabulary 64, no dropout, float32)."""
    kw = dict(TINY_CONFIGS[model_type])
    kw.update(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    for key in (
        "attention_dropout",
        "hidden_dropout",
        "resid_pdrop",
        "embd_pdrop",
        "attn_pdrop",
        "dropout",
        "activation_dropout",
    ):
        kw.setdefault(key, 0.0)
    kw.update(overrides)
    return AutoConfig.for_model(model_type, **kw)


def tiny_model(model_type: str, seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """A tiny randomly initialised causal LM of the given family, in eval mode.

    Biases and norm weights are randomised too, so tests exercise them.
    """
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(model_type, **overrides))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()
