"""The model adapter: where the parts of a loaded Hugging Face causal LM live.

:func:`get_adapter` combines the family description in :mod:`circuitcut.models.specs` with what
the model itself says: the decoder layer list is found by searching the module tree, head counts and
the head size come from the config and are checked against the weight shapes, neuron counts come
from the weights.

Readable component names, stable across runs:

- linear layers: ``layers.3.attn.q_proj``, ``layers.3.mlp.down_proj``, ``layers.0.mlp.fc1``, plus
  ``embed_tokens`` and ``lm_head``;
- units: ``layers.3.mlp.neuron.1021`` (an input column of the down projection / fc2) and
  ``layers.3.attn.head.5`` (a slice of the input columns of the output projection).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from circuitcut.errors import CircuitcutError, UnsupportedModelError
from circuitcut.models.specs import SPECS, ArchSpec, supported_model_types

#: roles a decoder linear layer can play
ATTN_ROLES = ("q", "k", "v", "qkv", "o")
MLP_ROLES = ("gate", "up", "gate_up", "down")


def materialized(module: nn.Module, name: str = "weight") -> torch.Tensor | None:
    """A parameter's values even when accelerate offloaded it (``device_map`` with CPU/disk offload
    keeps offloaded weights on the meta device outside their forward; the values live in the
    module's offload map)."""
    t = getattr(module, name, None)
    if t is None or t.device.type != "meta":
        return t
    weights_map = getattr(getattr(module, "_hf_hook", None), "weights_map", None)
    if weights_map is None:
        raise CircuitcutError(
            f"{type(module).__name__}.{name} is on the meta device and no offload map holds it"
        )
    return weights_map[name]


def execution_device(module: nn.Module) -> torch.device:
    """Where a module's computation runs (its parameters' device, or accelerate's execution device)."""
    p = getattr(module, "weight", None)
    if p is not None and p.device.type != "meta":
        return p.device
    dev = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
    return torch.device(dev) if dev is not None else torch.device("cpu")


def input_device(model: nn.Module) -> torch.device:
    """Where a model's input ids go: the execution device of its input embeddings (under
    accelerate's offloading, not the meta device its weights report)."""
    return execution_device(model.get_input_embeddings())


@dataclass(frozen=True)
class LinearInfo:
    """One weight matrix the adapter knows about.

    ``transposed`` is true for GPT-2's ``Conv1D`` (weight stored ``[in, out]``); :meth:`as_out_in`
    turns any tensor of the weight's shape into ``[out, in]`` orientation, the one of every score and
    mask (:attr:`shape`).
    """

    name: str
    path: str
    module: nn.Module = field(repr=False, compare=False)
    role: str
    layer: int | None
    transposed: bool = False

    @property
    def weight(self) -> nn.Parameter:
        """The weight parameter."""
        return self.module.weight

    def weight_values(self) -> torch.Tensor:
        """The weight's values, read from the offload map if accelerate offloaded them."""
        return materialized(self.module)

    @property
    def device(self) -> torch.device:
        """Where this layer computes (and where its score accumulators live)."""
        return execution_device(self.module)

    @property
    def bias(self) -> nn.Parameter | None:
        """The bias parameter, if any."""
        return getattr(self.module, "bias", None)

    @property
    def out_features(self) -> int:
        """Number of output units."""
        w = self.weight
        return w.shape[1] if self.transposed else w.shape[0]

    @property
    def in_features(self) -> int:
        """Number of input units."""
        w = self.weight
        return w.shape[0] if self.transposed else w.shape[1]

    @property
    def group(self) -> str:
        """``attn``, ``mlp`` or ``embed``."""
        if self.role in ATTN_ROLES:
            return "attn"
        if self.role in MLP_ROLES:
            return "mlp"
        return "embed"

    @property
    def shape(self) -> tuple[int, int]:
        """``(out_features, in_features)``: the orientation of every score and mask circuitcut writes
        (``nn.Linear``'s, whatever the module stores: GPT-2's ``Conv1D`` keeps ``[in, out]``)."""
        return (self.out_features, self.in_features)

    def as_out_in(self, t: torch.Tensor) -> torch.Tensor:
        """View ``t`` (shaped like the weight) as ``[out, in]``; the same call turns an ``[out, in]``
        tensor back into the weight's orientation (a transpose is its own inverse)."""
        return t.t() if self.transposed else t


@dataclass(frozen=True)
class ComponentSlice:
    """A named component resolved to a parameter and the index of its slice."""

    name: str
    linear: LinearInfo
    index: tuple[Any, ...]

    def tensor(self) -> torch.Tensor:
        """The slice of the weight (a view)."""
        return self.linear.weight[self.index]


@dataclass
class LayerInfo:
    """The parts of one decoder layer."""

    index: int
    module: nn.Module
    attn: nn.Module
    linears: dict[str, LinearInfo]
    act: nn.Module
    norms: list[nn.Module]
    qk_norms: list[nn.Module]


class ModelAdapter:
    """Describes where a model's layers, projections, heads, neurons and norms live.

    Build one with :func:`get_adapter`. The adapter holds references into the model; it never
    changes it.
    """

    def __init__(self, model: nn.Module, model_type: str, spec: ArchSpec) -> None:
        self.model = model
        self.model_type = model_type
        self.spec = spec
        config = model.config
        self.config = config.get_text_config() if hasattr(config, "get_text_config") else config
        self.layers_path, layer_list, parent_path = _find_layer_list(model, self.config, spec)
        self.n_layers = len(layer_list)
        self.layers = [self._layer_info(i, mod) for i, mod in enumerate(layer_list)]
        self.n_heads = int(self.config.num_attention_heads)
        kv = getattr(self.config, "num_key_value_heads", None)
        self.n_kv_heads = int(kv) if kv else self.n_heads
        o = self.layers[0].linears["o"]
        head_dim = getattr(self.config, "head_dim", None)
        self.head_dim = int(head_dim) if head_dim else o.in_features // self.n_heads
        if o.in_features != self.n_heads * self.head_dim:
            raise CircuitcutError(
                f"{model_type}: the attention output projection has {o.in_features} inputs, but the "
                f"config says {self.n_heads} heads of size {self.head_dim}; the config does not "
                "match the weights"
            )
        if self.n_heads % self.n_kv_heads:
            raise CircuitcutError(
                f"{model_type}: {self.n_heads} heads is not a multiple of {self.n_kv_heads} key/value heads"
            )
        self.n_neurons = self.layers[0].linears["down"].in_features
        self.hidden_size = o.out_features
        embed = model.get_input_embeddings()
        head = model.get_output_embeddings()
        self.embed = LinearInfo("embed_tokens", _path_of(model, embed), embed, "embed", None)
        self.lm_head = (
            LinearInfo("lm_head", _path_of(model, head), head, "lm_head", None) if head is not None else None
        )
        self.tied = head is not None and head.weight is embed.weight
        prefix = f"{parent_path}." if parent_path else ""
        self.final_norm = model.get_submodule(prefix + spec.final_norm)
        self.positions = model.get_submodule(prefix + spec.positions) if spec.positions else None
        self.final_logit_softcap = getattr(self.config, "final_logit_softcapping", None)
        self.attn_logit_softcap = getattr(self.config, "attn_logit_softcapping", None)
        self.vocab_size = embed.weight.shape[0]

    # ----------------------------------------------------------------------------------------------
    def _layer_info(self, i: int, layer: nn.Module) -> LayerInfo:
        spec = self.spec
        linears: dict[str, LinearInfo] = {}
        for role in ("q", "k", "v", "qkv", "o", "gate", "up", "gate_up", "down"):
            rel = getattr(spec, role)
            if rel is None:
                continue
            mod = _get(layer, rel, self.model_type)
            group = "attn" if role in ATTN_ROLES else "mlp"
            leaf = rel.rsplit(".", 1)[-1]
            linears[role] = LinearInfo(
                name=f"layers.{i}.{group}.{leaf}",
                path=f"{self.layers_path}.{i}.{rel}",
                module=mod,
                role=role,
                layer=i,
                transposed=type(mod).__name__ == "Conv1D",
            )
        return LayerInfo(
            index=i,
            module=layer,
            attn=_get(layer, spec.attn, self.model_type),
            linears=linears,
            act=_get(layer, spec.act, self.model_type),
            norms=[_get(layer, n, self.model_type) for n in spec.norms],
            qk_norms=[_get(layer, n, self.model_type) for n in spec.qk_norms],
        )

    # ----------------------------------------------------------------------------------------------
    def linears(self, include_embeddings: bool = False) -> list[LinearInfo]:
        """The decoder linear layers in compute order (plus embeddings and LM head if asked).

        With tied embeddings the LM head shares the embedding matrix and is listed once, as
        ``embed_tokens``.
        """
        out = [lin for layer in self.layers for lin in layer.linears.values()]
        if include_embeddings:
            out = [self.embed, *out]
            if self.lm_head is not None and not self.tied:
                out.append(self.lm_head)
        return out

    def linear(self, name: str) -> LinearInfo:
        """The linear layer with the given readable name (e.g. ``layers.0.mlp.fc1``)."""
        for lin in self.linears(include_embeddings=True):
            if lin.name == name:
                return lin
        if name == "lm_head" and self.tied:
            return self.embed
        raise CircuitcutError(
            f"no linear layer named {name!r}; names look like "
            f"{self.linears()[0].name!r} (see `circuitcut inspect`)"
        )

    def neuron_site(self, layer: int) -> LinearInfo:
        """The MLP output projection whose input columns are the layer's neurons."""
        return self.layers[layer].linears["down"]

    def head_site(self, layer: int) -> LinearInfo:
        """The attention output projection whose input, split by head, is the head site."""
        return self.layers[layer].linears["o"]

    @property
    def kv_group(self) -> int:
        """Query heads per key/value head (grouped-query attention)."""
        return self.n_heads // self.n_kv_heads

    def qkv_sizes(self) -> tuple[int, int, int]:
        """Output sizes of the query, key and value projections."""
        return (
            self.n_heads * self.head_dim,
            self.n_kv_heads * self.head_dim,
            self.n_kv_heads * self.head_dim,
        )

    def fused_qkv_scale(self, q: float, k: float, v: float) -> torch.Tensor:
        """A per-output-unit vector for a fused QKV projection: ``q`` on query units, etc."""
        nq, nk, nv = self.qkv_sizes()
        if self.spec.qkv_layout == "per_head":
            one = torch.cat([torch.full((self.head_dim,), s) for s in (q, k, v)])
            return one.repeat(self.n_heads)
        return torch.cat([torch.full((nq,), q), torch.full((nk,), k), torch.full((nv,), v)])

    # ----------------------------------------------------------------------------------------------
    def resolve(self, component: str) -> ComponentSlice:
        """Resolve a readable component name to the weight slice it denotes.

        ``layers.L.mlp.neuron.J`` is input column ``J`` of the layer's down projection;
        ``layers.L.attn.head.H`` is input columns ``H*d:(H+1)*d`` of the attention output
        projection; a linear layer's name is its whole weight.
        """
        m = re.fullmatch(r"layers\.(\d+)\.(mlp\.neuron|attn\.head)\.(\d+)", component)
        if m:
            layer, kind, idx = int(m.group(1)), m.group(2), int(m.group(3))
            self._check_layer(layer, component)
            if kind == "mlp.neuron":
                lin, count, cols = self.neuron_site(layer), self.n_neurons, slice(idx, idx + 1)
            else:
                lin, count = self.head_site(layer), self.n_heads
                cols = slice(idx * self.head_dim, (idx + 1) * self.head_dim)
            if idx >= count:
                raise CircuitcutError(
                    f"{component}: index {idx} out of range, layer {layer} has {count} "
                    f"{'neurons' if kind == 'mlp.neuron' else 'heads'}"
                )
            index = (cols, slice(None)) if lin.transposed else (slice(None), cols)
            return ComponentSlice(component, lin, index)
        return ComponentSlice(component, self.linear(component), (slice(None), slice(None)))

    def _check_layer(self, layer: int, component: str) -> None:
        if not 0 <= layer < self.n_layers:
            raise CircuitcutError(
                f"{component}: layer {layer} out of range, the model has {self.n_layers} layers"
            )

    # ----------------------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Totals per component group: layers, heads, kv heads, neurons, weights per role."""
        out: dict[str, int] = {
            "layers": self.n_layers,
            "heads": self.n_layers * self.n_heads,
            "kv_heads": self.n_layers * self.n_kv_heads,
            "neurons": self.n_layers * self.n_neurons,
        }
        for lin in self.linears():
            key = f"weights.{lin.group}.{lin.name.rsplit('.', 1)[-1]}"
            out[key] = out.get(key, 0) + lin.weight.numel()
        return out

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable description of the architecture."""
        params = {
            "total": sum(p.numel() for p in self.model.parameters()),
            "embeddings": self.embed.weight.numel(),
            "lm_head": 0 if self.lm_head is None or self.tied else self.lm_head.weight.numel(),
            "attention": sum(lin.weight.numel() for lin in self.linears() if lin.group == "attn"),
            "mlp": sum(lin.weight.numel() for lin in self.linears() if lin.group == "mlp"),
        }
        params["other"] = params["total"] - sum(v for k, v in params.items() if k != "total")
        return {
            "model_type": self.model_type,
            "class": type(self.model).__name__,
            "layers": self.n_layers,
            "hidden_size": self.hidden_size,
            "heads": self.n_heads,
            "kv_heads": self.n_kv_heads,
            "head_dim": self.head_dim,
            "neurons_per_layer": self.n_neurons,
            "gated_mlp": self.spec.gated,
            "activation": type(self.layers[0].act).__name__,
            "norm": type(self.final_norm).__name__,
            "vocab_size": self.vocab_size,
            "tied_embeddings": self.tied,
            "layers_path": self.layers_path,
            "linears_per_layer": [
                {
                    "name": lin.name.split(".", 2)[2],
                    "role": lin.role,
                    "shape": [lin.out_features, lin.in_features],
                }
                for lin in self.layers[0].linears.values()
            ],
            "counts": self.counts(),
            "parameters": params,
        }

    def fraction(self, n: int, unit: str) -> str:
        """Say ``n`` units as a share of the model, e.g. ``"100 neurons = 0.27% of fc1 neurons"``."""
        total = {"neuron": self.n_layers * self.n_neurons, "head": self.n_layers * self.n_heads}
        if unit not in total:
            raise CircuitcutError(f"unit must be 'neuron' or 'head', got {unit!r}")
        first = self.layers[0].linears
        up = first.get("up") or first["gate_up"]
        site = up.name.rsplit(".", 1)[-1] if unit == "neuron" else "attention"
        return f"{n} {unit}s = {100 * n / total[unit]:.2f}% of {site} {unit}s"


# --------------------------------------------------------------------------------------------------
def _get(root: nn.Module, rel: str, model_type: str) -> nn.Module:
    try:
        return root.get_submodule(rel)
    except AttributeError as exc:
        raise UnsupportedModelError(
            f"{model_type}: expected a submodule {rel!r} in {type(root).__name__}; this "
            "transformers version lays the model out differently from circuitcut's description"
        ) from exc


def _path_of(model: nn.Module, module: nn.Module) -> str:
    for name, mod in model.named_modules():
        if mod is module:
            return name
    return ""


def _find_layer_list(model: nn.Module, config: Any, spec: ArchSpec) -> tuple[str, nn.ModuleList, str]:
    """Find the decoder layer list: a ModuleList of ``num_hidden_layers`` layers with attention."""
    n = int(config.num_hidden_layers)
    found: list[tuple[str, nn.ModuleList]] = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) == n and "vision" not in name:
            try:
                mod[0].get_submodule(spec.attn)
            except AttributeError:
                continue
            found.append((name, mod))
    if not found:
        raise UnsupportedModelError(f"could not find the {n} decoder layers in {type(model).__name__}")
    name, mod = min(found, key=lambda item: len(item[0]))
    parent = name.rsplit(".", 1)[0] if "." in name else ""
    return name, mod, parent


def get_adapter(model: nn.Module) -> ModelAdapter:
    """Build the adapter for a loaded Hugging Face causal LM.

    Raises:
        UnsupportedModelError: the model type has no entry; the message lists supported types.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in SPECS:
        raise UnsupportedModelError(
            f"unsupported model type {model_type!r} ({type(model).__name__}); circuitcut supports: "
            f"{', '.join(supported_model_types())}. Add an entry to circuitcut.models.specs.SPECS "
            "to describe a new family"
        )
    return ModelAdapter(model, model_type, SPECS[model_type])
