"""AttnLRP rules as a modified gradient, installed with removable per-model hooks.

LRP is computed as Input x Gradient under a modified backward pass: the "efficient" AttnLRP
formulation of Achtibat et al., "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for
Transformers", ICML 2024 (Sec. 3 and Appendix). Each rule below keeps the forward value bit for bit
and changes only the backward:

* linear layers: plain autograd (equals the epsilon rule, the bias absorbing its share);
* elementwise activations and squashing (identity rule): ``dx = dy * y / x`` (stabilised), so
  the relevance ``x * dx`` equals ``y * dy``;
* the gated product ``act(gate) * up`` (uniform rule): both factors get half the gradient, which
  is the same as halving the gradient of the product itself (both factor gradients are linear in
  it); it is applied at the input of the down projection;
* attention (uniform rule on both matrix products): query and key gradients divided by 4, value
  gradient by 2; softmax keeps its gradient. Because every step between the projections and the
  attention products (reshape, RoPE, per-head norms under the identity rule) is linear in the
  backward, the factors are applied at the projection outputs. CP-LRP (Ali et al., ICML 2022)
  blocks the query/key paths (factor 0) and passes the value path whole: exactly conservative;
* RMSNorm / LayerNorm (identity rule through the normalisation): the variance treated as a
  constant, LayerNorm keeping its mean subtraction;
* dropout off (the model is put in eval mode for the duration).

Deviation, documented: Gemma 2's attention-logit soft-capping (a tanh inside the attention kernel)
keeps its ordinary gradient, like the softmax beside it; the final-logit soft-capping gets the
identity rule in :mod:`circuitcut.attribution.targets`.

Nothing global is patched: hooks live on this model's modules and are removed on exit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from circuitcut.attribution.methods import ATTENTION_RULES, VARIANTS, check_lrp_rules
from circuitcut.errors import CircuitcutError
from circuitcut.models.adapter import ModelAdapter, materialized


def _stabilise(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``x + eps * sign(x)`` with sign(0) taken as +1, so the result is never zero."""
    return x + eps * torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


class IdentityRule(torch.autograd.Function):
    """Forward returns ``y``; backward passes ``dy * y / x`` to ``x`` (AttnLRP identity rule)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(y.float() / _stabilise(x.float(), eps))
        return y.view_as(y)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (ratio,) = ctx.saved_tensors
        return (grad.float() * ratio).to(grad.dtype), None, None


class NormRule(torch.autograd.Function):
    """Forward returns ``y``; backward through the norm with its scale statistic held constant.

    ``gain`` is ``w / rms(x)`` (RMSNorm) or ``w / std(x)`` (LayerNorm), per element; with
    ``centre`` the backward also applies the mean subtraction (LayerNorm).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, y: torch.Tensor, gain: torch.Tensor, centre: bool) -> torch.Tensor:
        ctx.save_for_backward(gain)
        ctx.centre = centre
        return y.view_as(y)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (gain,) = ctx.saved_tensors
        g = grad.float() * gain
        if ctx.centre:
            g = g - g.mean(dim=-1, keepdim=True)
        return g.to(grad.dtype), None, None, None


class GradScale(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``scale`` (a number or a vector)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def _first_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    if args:
        return args[0]
    for value in kwargs.values():
        if isinstance(value, torch.Tensor):
            return value
    raise CircuitcutError("a hooked module was called without a tensor input")


def _norm_gain(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Per-element ``d y / d x`` of a norm with its statistic held constant, and whether to centre."""
    xf = x.float()
    if isinstance(module, nn.LayerNorm):
        std = torch.sqrt(xf.var(dim=-1, unbiased=False, keepdim=True) + module.eps)
        weight = materialized(module)
        w = weight.float().to(xf.device) if weight is not None else 1.0
        return w / std, True
    # RMS-type norms (Llama, Gemma's 1 + w, Qwen, Phi-3...): y = G * x / rms(x). G is read off the
    # module itself by a probe with a vector of ones (rms(1) = sqrt(1 + eps)), so every weight
    # parametrisation is handled without knowing it.
    eps = float(getattr(module, "variance_epsilon", getattr(module, "eps", 1e-6)))
    with torch.no_grad():
        probe = module.forward(torch.ones(x.shape[-1], dtype=x.dtype, device=x.device))
    gain_w = probe.float() * (1.0 + eps) ** 0.5
    rms = torch.sqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)
    return gain_w / rms, False


class eval_mode:
    """Put a model in eval mode (dropout off) for a block and restore every module's flag after."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.saved: list[tuple[nn.Module, bool]] = []

    def __enter__(self) -> eval_mode:
        self.saved = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        return self

    def __exit__(self, *exc: object) -> None:
        for m, t in self.saved:
            m.training = t
        self.saved.clear()


class LRPRules:
    """Context manager installing the AttnLRP (or CP-LRP) rules on one model instance.

    Inside the context the model's outputs are identical to the plain model's; only gradients
    change. On exit every hook is removed and each module's training flag restored.

    Args:
        adapter: the model's adapter.
        variant: ``"attnlrp"`` or ``"cp-lrp"``.
        eps: stabiliser of the identity rule's division.
        rules: which rules to install, among :data:`~circuitcut.attribution.methods.LRP_RULES`
            (default None, all: LRP; the attention rules are the variant's, split by bilinear product in
            :data:`~circuitcut.attribution.methods.ATTENTION_RULES`). A subset gives the gradient
            with only those rules, so each rule's
            share of the difference between LRP and gradient x input can be measured
            (``benchmarks/circuit_layers.py``); the empty set is the plain gradient.
    """

    def __init__(
        self,
        adapter: ModelAdapter,
        variant: str = "attnlrp",
        eps: float = 1e-6,
        rules: Sequence[str] | None = None,
    ) -> None:
        if variant not in VARIANTS:
            raise CircuitcutError(f"unknown LRP variant {variant!r}; use one of {', '.join(VARIANTS)}")
        self.rules = check_lrp_rules(rules)
        self.adapter = adapter
        self.variant = variant
        self.eps = eps
        self._handles: list[Any] = []
        self._eval = eval_mode(adapter.model)

    # hooks ---------------------------------------------------------------------------------------
    def _act_hook(self, module: nn.Module, args: tuple, kwargs: dict, out: torch.Tensor):
        x = _first_input(args, kwargs)
        return IdentityRule.apply(x, out.detach(), self.eps)

    def _norm_hook(self, module: nn.Module, args: tuple, kwargs: dict, out: torch.Tensor):
        x = _first_input(args, kwargs)
        gain, centre = _norm_gain(module, x.detach())
        return NormRule.apply(x, out.detach(), gain, centre)

    @staticmethod
    def _scale_out_hook(scale: torch.Tensor | float):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
            s = scale.to(out.device, out.dtype) if isinstance(scale, torch.Tensor) else scale
            return GradScale.apply(out, s)

        return hook

    @staticmethod
    def _halve_input_hook(module: nn.Module, args: tuple, kwargs: dict):
        if args:
            return (GradScale.apply(args[0], 0.5), *args[1:]), kwargs
        key = next(k for k, v in kwargs.items() if isinstance(v, torch.Tensor))
        return args, {**kwargs, key: GradScale.apply(kwargs[key], 0.5)}

    # context -------------------------------------------------------------------------------------
    def __enter__(self) -> LRPRules:
        a = self.adapter
        self._eval.__enter__()
        fq, fk, fv = 1.0, 1.0, 1.0
        for rule, (q, k, v) in ATTENTION_RULES[self.variant].items():
            if rule in self.rules:
                fq, fk, fv = fq * q, fk * k, fv * v
        attention = (fq, fk, fv) != (1.0, 1.0, 1.0)
        hooks, rules = self._handles, self.rules
        for layer in a.layers:
            if "activation" in rules:
                hooks.append(layer.act.register_forward_hook(self._act_hook, with_kwargs=True))
            if "norm" in rules:
                for norm in (*layer.norms, *layer.qk_norms):
                    hooks.append(norm.register_forward_hook(self._norm_hook, with_kwargs=True))
            lin = layer.linears
            if attention and "qkv" in lin:
                scale = a.fused_qkv_scale(fq, fk, fv)
                hooks.append(lin["qkv"].module.register_forward_hook(self._scale_out_hook(scale)))
            elif attention:
                for role, factor in (("q", fq), ("k", fk), ("v", fv)):
                    mod = lin[role].module
                    hooks.append(mod.register_forward_hook(self._scale_out_hook(factor)))
            if "gate" in rules and a.spec.gated:
                hooks.append(
                    lin["down"].module.register_forward_pre_hook(self._halve_input_hook, with_kwargs=True)
                )
        if "norm" in rules:
            hooks.append(a.final_norm.register_forward_hook(self._norm_hook, with_kwargs=True))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._eval.__exit__()


@contextmanager
def lrp_rules(adapter: ModelAdapter, variant: str = "attnlrp") -> Iterator[LRPRules]:
    """Functional form of :class:`LRPRules`."""
    with LRPRules(adapter, variant) as rules:
        yield rules
