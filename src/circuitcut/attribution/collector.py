"""Hooks that turn one backward pass into per-sample component scores, streamed into accumulators.

For every scored linear layer a forward hook keeps its input ``x`` and registers a hook on its
output, which receives ``dy`` during the backward. The weight relevance of sample ``b`` is
``W * dW_b`` with ``dW_b = dy_b^T x_b`` (summed over the sample's tokens): under the LRP backward
this is the epsilon-rule relevance of each edge (Hatefi et al., arXiv 2506.13727, Eq. 8). Neuron
relevance is ``x * dx`` at the input of the down projection, head relevance ``x * dx`` at the input
of the attention output projection, summed over each head's slice; both summed over tokens.

Accumulators are float32, live on each parameter's device, and do not grow with the number of
samples. Per-sample statistics are exact: the ``abs`` aggregation takes ``|.|`` of each sample's
token-summed relevance before summing over samples; ``token_abs`` takes ``|.|`` of every token's
relevance before any sum (the relevance of one token at edge ``ij`` is ``w_ij x_i g_j``, so its
absolute value summed over tokens is ``|w_ij| (|G|^T |X|)_ij``: one matrix product, no per-sample
buffers); ``token_l2`` takes each sample's L2 norm over tokens, ``|w_ij| sqrt((G^2)^T X^2)_ij``
(with a constant gradient this is Wanda's ``|w_ij| ||x_i||_2``: LRP's relevance weighting of it);
``token_norm`` is ``token_abs`` with each token's gradient at the site scaled to unit L1 norm first,
``|w_ij| (|G~|^T |X|)_ij`` with ``G~_t = G_t / ||G_t||_1``: every token weighs the same, and within a
token the outputs are weighted by where its relevance flows; ``signed`` sums the signed relevance.

Why ``token_norm`` (our choice; measured in docs/compression.md): the LRP gradient of a layer's output
is very unevenly spread over tokens. On Gemma 3 270M the first token (BOS, the attention sink)
carries 55-85% of the summed ``|G|`` at the down projections of layers 5-16
(benchmarks/gradient_concentration.py), 1.4-3.3 effective tokens of 128, so ``token_abs``
scores those layers from one token per window. Scaling each token to unit mass removes that and
keeps the relevance weighting inside each token.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from circuitcut.attribution.methods import AGGREGATIONS
from circuitcut.models.adapter import LinearInfo, ModelAdapter

__all__ = ["AGGREGATIONS", "ActivationCollector", "GradientCollector", "token_mass"]

#: what a weight score is computed from
QUANTITIES = ("wdw", "grad")
#: the largest per-chunk [B, out, in] buffer, in elements
_CHUNK_ELEMENTS = 1 << 24


def token_mass(g: torch.Tensor) -> torch.Tensor:
    """Each token's gradient mass ``||g_t||_1`` (over the last dimension, kept), what ``token_norm``
    divides by; floored at the smallest positive float, so an all-zero token scores 0."""
    return g.abs().sum(-1, keepdim=True).clamp_min(torch.finfo(g.dtype).tiny)


def _per_token_unit(g: torch.Tensor) -> torch.Tensor:
    """``|g|`` with each token (last dimension) scaled to unit L1 norm."""
    return g.abs() / token_mass(g)


def _fold(per_sample: torch.Tensor, aggregation: str) -> torch.Tensor:
    """Sum per-sample scores ``[B, ...]`` over samples, taking ``|.|`` first if asked."""
    return (per_sample.abs() if aggregation == "abs" else per_sample).sum(0)


class _Accumulators:
    """Accumulators held in dicts by kind; weight-like kinds are keyed by layer name, units by layer index."""

    NAMED = ("weight", "feature_sq")

    def _stores(self) -> dict[str, dict]:  # pragma: no cover - implemented by each collector
        raise NotImplementedError

    @staticmethod
    def _add(store: dict, key: Any, value: torch.Tensor) -> None:
        if key in store:
            store[key] += value
        else:
            store[key] = value.clone()

    def state(self) -> dict[str, torch.Tensor]:
        """Every accumulator under a flat key ``kind/key`` (for checkpoints and all-reduce)."""
        return {f"{kind}/{k}": v for kind, store in self._stores().items() for k, v in store.items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Replace the accumulators by a saved or reduced state."""
        stores = self._stores()
        for key, value in state.items():
            kind, _, name = key.partition("/")
            store = stores[kind]
            k = name if kind in self.NAMED else int(name)
            store[k] = value.to(store[k].device) if k in store else value


class GradientCollector(_Accumulators):
    """Accumulate weight, neuron and head scores from backward passes.

    Args:
        adapter: the model's adapter.
        linears: the linear layers whose weights are scored (``[]`` for none).
        neurons: score MLP neurons (all layers).
        heads: score attention heads (all layers).
        aggregation: one of :data:`AGGREGATIONS` (see the module's docstring).
        quantity: ``"wdw"`` (weight times gradient: relevance) or ``"grad"`` (gradient only).
    """

    def __init__(
        self,
        adapter: ModelAdapter,
        linears: Iterable[LinearInfo],
        neurons: bool = True,
        heads: bool = True,
        aggregation: str = "abs",
        quantity: str = "wdw",
    ) -> None:
        self.adapter = adapter
        self.linears = list(linears)
        self.neurons = neurons
        self.heads = heads
        self.aggregation = aggregation
        self.quantity = quantity
        self.weight_sums: dict[str, torch.Tensor] = {}
        self.neuron_sums: dict[int, torch.Tensor] = {}
        self.head_sums: dict[int, torch.Tensor] = {}
        #: (batch, tokens) of the current batch: some models (OPT) flatten them before the MLP
        self.batch_shape: tuple[int, int] | None = None
        self._handles: list[Any] = []

    def _unflatten(self, t: torch.Tensor) -> torch.Tensor:
        """View ``t`` as ``[B, T, features]``, whatever the model did to the leading dimensions."""
        if self.batch_shape is None:
            return t if t.dim() == 3 else t.reshape(1, -1, t.shape[-1])
        return t.reshape(*self.batch_shape, t.shape[-1])

    # --------------------------------------------------------------------------------------------
    def _weight_hook(self, lin: LinearInfo):
        name = "embed_tokens" if lin.role == "lm_head" and self.adapter.tied else lin.name

        def forward_hook(module: Any, args: tuple, out: torch.Tensor) -> None:
            if not out.requires_grad:
                return
            x = args[0].detach()
            out.register_hook(lambda g: self._accumulate_weight(name, lin, x, g))

        return forward_hook

    def _accumulate_weight(self, name: str, lin: LinearInfo, x: torch.Tensor, g: torch.Tensor) -> None:
        w = lin.as_out_in(lin.weight_values().detach()).float().to(x.device)
        xf = self._unflatten(x.float())
        gf = self._unflatten(g.float())
        if self.aggregation == "signed":
            dw = gf.flatten(0, 1).t() @ xf.flatten(0, 1)
            total = dw if self.quantity == "grad" else w * dw
        elif self.aggregation in ("token_abs", "token_norm"):
            ga = _per_token_unit(gf) if self.aggregation == "token_norm" else gf.abs()
            dw = ga.flatten(0, 1).t() @ xf.flatten(0, 1).abs()
            total = dw if self.quantity == "grad" else w.abs() * dw
        elif self.aggregation == "token_l2":
            total = torch.zeros_like(w)
            step = max(1, _CHUNK_ELEMENTS // max(1, w.numel()))
            for i in range(0, xf.shape[0], step):
                sq = torch.bmm(gf[i : i + step].square().transpose(1, 2), xf[i : i + step].square()).sqrt()
                total += (sq if self.quantity == "grad" else w.abs() * sq).sum(0)
        else:
            total = torch.zeros_like(w)
            step = max(1, _CHUNK_ELEMENTS // max(1, w.numel()))
            for i in range(0, xf.shape[0], step):
                dw = torch.bmm(gf[i : i + step].transpose(1, 2), xf[i : i + step])
                total += _fold(dw if self.quantity == "grad" else w * dw, "abs")
        self._add(self.weight_sums, name, total)  # [out, in], the orientation of every output

    def _site_hook(self, kind: str, layer: int):
        def forward_hook(module: Any, args: tuple, out: torch.Tensor) -> None:
            x = args[0]
            if x.requires_grad:
                xd = x.detach()
                x.register_hook(lambda g: self._accumulate_site(kind, layer, xd, g))

        return forward_hook

    def _accumulate_site(self, kind: str, layer: int, x: torch.Tensor, g: torch.Tensor) -> None:
        g = self._unflatten(g.float())
        r = g if self.quantity == "grad" else self._unflatten(x.float()) * g  # [B, T, n]
        if kind == "head":
            a = self.adapter
            r = r.reshape(*r.shape[:-1], a.n_heads, a.head_dim).sum(-1)
        if self.aggregation == "token_norm":
            per_sample = (r.abs() / token_mass(g)).sum(1)  # [B, n]
        elif self.aggregation == "token_l2":
            per_sample = r.square().sum(1).sqrt()  # [B, n]
        else:
            per_sample = (r.abs() if self.aggregation == "token_abs" else r).sum(1)  # [B, n]
        self._add(
            self.neuron_sums if kind == "neuron" else self.head_sums,
            layer,
            _fold(per_sample, self.aggregation),
        )

    # --------------------------------------------------------------------------------------------
    def _stores(self) -> dict[str, dict]:
        return {"weight": self.weight_sums, "neuron": self.neuron_sums, "head": self.head_sums}

    def __enter__(self) -> GradientCollector:
        a = self.adapter
        for lin in self.linears:  # zero accumulators: every process holds the same keys
            name = "embed_tokens" if lin.role == "lm_head" and a.tied else lin.name
            self.weight_sums.setdefault(name, torch.zeros(lin.shape, dtype=torch.float32, device=lin.device))
        for i in range(a.n_layers):
            if self.neurons:
                dev = a.neuron_site(i).device
                self.neuron_sums.setdefault(i, torch.zeros(a.n_neurons, device=dev))
            if self.heads:
                dev = a.head_site(i).device
                self.head_sums.setdefault(i, torch.zeros(a.n_heads, device=dev))
        for lin in self.linears:
            # prepend: see each output before any LRP rule wraps it, so the hook receives the
            # gradient that reaches the layer's own output
            self._handles.append(lin.module.register_forward_hook(self._weight_hook(lin), prepend=True))
        for layer in range(self.adapter.n_layers):
            if self.neurons:
                mod = self.adapter.neuron_site(layer).module
                self._handles.append(
                    mod.register_forward_hook(self._site_hook("neuron", layer), prepend=True)
                )
            if self.heads:
                mod = self.adapter.head_site(layer).module
                self._handles.append(mod.register_forward_hook(self._site_hook("head", layer), prepend=True))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


class ActivationCollector(_Accumulators):
    """Forward-only statistics: Wanda's input-feature norms and activation magnitudes.

    ``feature_sq[name]`` sums ``x_j^2`` over all real (non-padding) tokens for each scored linear;
    ``neuron_abs[layer]`` sums ``|x|`` at the neuron site per sample then over samples;
    ``head_norm[layer]`` sums the L2 norm of each head's output over tokens.
    """

    def __init__(
        self,
        adapter: ModelAdapter,
        linears: Iterable[LinearInfo],
        neurons: bool = False,
        heads: bool = False,
    ) -> None:
        self.adapter = adapter
        self.linears = list(linears)
        self.neurons = neurons
        self.heads = heads
        self.feature_sq: dict[str, torch.Tensor] = {}
        self.neuron_abs: dict[int, torch.Tensor] = {}
        self.head_norm: dict[int, torch.Tensor] = {}
        self.mask: torch.Tensor | None = None
        self.tokens = 0
        self._handles: list[Any] = []

    def _masked(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.detach().float()
        if self.mask is None:
            return xf if xf.dim() == 3 else xf.reshape(1, -1, xf.shape[-1])
        xf = xf.reshape(*self.mask.shape, xf.shape[-1])  # undo any flattening (OPT)
        return xf * self.mask[..., None].to(xf.device, xf.dtype)

    def _linear_hook(self, lin: LinearInfo):
        def hook(module: Any, args: tuple, out: torch.Tensor) -> None:
            x = self._masked(args[0])
            self._add(self.feature_sq, lin.name, x.pow(2).flatten(0, -2).sum(0))

        return hook

    def _site_hook(self, kind: str, layer: int):
        def hook(module: Any, args: tuple, out: torch.Tensor) -> None:
            x = self._masked(args[0])
            if kind == "neuron":
                self._add(self.neuron_abs, layer, x.abs().sum((0, 1)))
            else:
                a = self.adapter
                per_head = x.reshape(*x.shape[:-1], a.n_heads, a.head_dim).norm(dim=-1)
                self._add(self.head_norm, layer, per_head.sum((0, 1)))

        return hook

    def _stores(self) -> dict[str, dict]:
        return {"feature_sq": self.feature_sq, "neuron": self.neuron_abs, "head": self.head_norm}

    def __enter__(self) -> ActivationCollector:
        a = self.adapter
        for lin in self.linears:  # zero accumulators: every process holds the same keys
            self.feature_sq.setdefault(lin.name, torch.zeros(lin.in_features, device=lin.device))
        for i in range(a.n_layers):
            if self.neurons:
                self.neuron_abs.setdefault(i, torch.zeros(a.n_neurons, device=a.neuron_site(i).device))
            if self.heads:
                self.head_norm.setdefault(i, torch.zeros(a.n_heads, device=a.head_site(i).device))
        for lin in self.linears:
            self._handles.append(lin.module.register_forward_hook(self._linear_hook(lin)))
        for layer in range(self.adapter.n_layers):
            if self.neurons:
                mod = self.adapter.neuron_site(layer).module
                self._handles.append(mod.register_forward_hook(self._site_hook("neuron", layer)))
            if self.heads:
                mod = self.adapter.head_site(layer).module
                self._handles.append(mod.register_forward_hook(self._site_hook("head", layer)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
