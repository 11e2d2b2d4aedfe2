"""Architecture descriptions as data.

Each supported ``model_type`` maps to an :class:`ArchSpec`: the names of the parts of one decoder
layer (relative to the layer module) and of the few model-level parts that cannot be found
generically. Everything numeric (layer count, heads, key/value heads, head size, neuron count) is
derived from the loaded model and its config by :mod:`circuitcut.models.adapter`, never written here.

To support a new family, add an entry: no model code is copied or patched.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ArchSpec:
    """Where the parts of one decoder layer live, relative to the layer module.

    Attributes:
        attn: the attention module.
        q, k, v: separate query/key/value projections (``None`` when fused).
        qkv: a fused query/key/value projection (``None`` when separate).
        qkv_layout: how the fused output is laid out: ``"blocks"`` is ``[q | k | v]`` (GPT-2,
            Phi-3), ``"per_head"`` is ``[h0: q k v | h1: q k v | ...]`` (GPT-NeoX).
        o: the attention output projection; its input, split by head, is the head site.
        up: the MLP input projection (``fc1``; ``up_proj`` in gated MLPs).
        gate: the gate projection of a gated MLP (``None`` otherwise).
        gate_up: a fused ``[gate | up]`` projection (Phi-3).
        down: the MLP output projection (``fc2``); its input is the neuron site.
        act: the elementwise activation module.
        norms: the layer's normalisation modules.
        qk_norms: per-head query/key norms (Qwen3, Gemma 3).
        final_norm: the final norm, relative to the module that holds the layer list.
        positions: a learned position embedding, relative to the module that holds the layer list.
    """

    attn: str
    o: str
    down: str
    act: str
    norms: tuple[str, ...]
    final_norm: str
    q: str | None = None
    k: str | None = None
    v: str | None = None
    qkv: str | None = None
    qkv_layout: str = "blocks"
    up: str | None = None
    gate: str | None = None
    gate_up: str | None = None
    qk_norms: tuple[str, ...] = ()
    positions: str | None = None

    @property
    def gated(self) -> bool:
        """Whether the MLP multiplies act(gate) by up."""
        return self.gate is not None or self.gate_up is not None


LLAMA = ArchSpec(
    attn="self_attn",
    q="self_attn.q_proj",
    k="self_attn.k_proj",
    v="self_attn.v_proj",
    o="self_attn.o_proj",
    gate="mlp.gate_proj",
    up="mlp.up_proj",
    down="mlp.down_proj",
    act="mlp.act_fn",
    norms=("input_layernorm", "post_attention_layernorm"),
    final_norm="norm",
)

GEMMA2 = replace(
    LLAMA,
    norms=(
        "input_layernorm",
        "post_attention_layernorm",
        "pre_feedforward_layernorm",
        "post_feedforward_layernorm",
    ),
)

SPECS: dict[str, ArchSpec] = {
    "llama": LLAMA,
    "mistral": LLAMA,
    "qwen2": LLAMA,
    "qwen3": replace(LLAMA, qk_norms=("self_attn.q_norm", "self_attn.k_norm")),
    "gemma": LLAMA,
    "gemma2": GEMMA2,
    "gemma3_text": replace(GEMMA2, qk_norms=("self_attn.q_norm", "self_attn.k_norm")),
    "gemma3": replace(GEMMA2, qk_norms=("self_attn.q_norm", "self_attn.k_norm")),
    "phi3": replace(
        LLAMA,
        q=None,
        k=None,
        v=None,
        qkv="self_attn.qkv_proj",
        gate=None,
        up=None,
        gate_up="mlp.gate_up_proj",
        act="mlp.activation_fn",
    ),
    "opt": ArchSpec(
        attn="self_attn",
        q="self_attn.q_proj",
        k="self_attn.k_proj",
        v="self_attn.v_proj",
        o="self_attn.out_proj",
        up="fc1",
        down="fc2",
        act="activation_fn",
        norms=("self_attn_layer_norm", "final_layer_norm"),
        final_norm="final_layer_norm",
        positions="embed_positions",
    ),
    "gpt2": ArchSpec(
        attn="attn",
        qkv="attn.c_attn",
        o="attn.c_proj",
        up="mlp.c_fc",
        down="mlp.c_proj",
        act="mlp.act",
        norms=("ln_1", "ln_2"),
        final_norm="ln_f",
        positions="wpe",
    ),
    "gpt_neox": ArchSpec(
        attn="attention",
        qkv="attention.query_key_value",
        qkv_layout="per_head",
        o="attention.dense",
        up="mlp.dense_h_to_4h",
        down="mlp.dense_4h_to_h",
        act="mlp.act",
        norms=("input_layernorm", "post_attention_layernorm"),
        final_norm="final_layer_norm",
    ),
}


def supported_model_types() -> list[str]:
    """The ``model_type`` values circuitcut has an adapter for, sorted."""
    return sorted(SPECS)
