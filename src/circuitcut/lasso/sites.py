"""Hook points ("sites") where sparse autoencoders read and write activations.

Names follow the TransformerLens convention that SAELens uses, so published SAEs name their site:

* ``blocks.{i}.hook_resid_pre``: the residual stream entering decoder layer ``i``;
* ``blocks.{i}.hook_resid_post``: the residual stream leaving decoder layer ``i``;
* ``blocks.{i}.hook_mlp_out``: the output of layer ``i``'s MLP (its down projection / fc2);
* ``blocks.{i}.hook_attn_out``: the output of layer ``i``'s attention output projection.

:func:`site_hook` installs a removable hook on one model instance that sees (and may replace) the
site's activation, always presented as ``[batch, tokens, width]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from circuitcut.errors import CircuitcutError
from circuitcut.models.adapter import ModelAdapter

KINDS = ("resid_pre", "resid_post", "mlp_out", "attn_out")
_NAME = re.compile(r"blocks\.(\d+)\.hook_(resid_pre|resid_post|mlp_out|attn_out)")


@dataclass(frozen=True)
class Site:
    """A parsed hook point."""

    name: str
    layer: int
    kind: str

    def width(self, adapter: ModelAdapter) -> int:
        """The activation width at this site (the hidden size for all supported kinds)."""
        return adapter.hidden_size

    def order(self) -> tuple[int, int]:
        """Position in compute order (layer, then resid_pre < attn_out < mlp_out < resid_post)."""
        return self.layer, {"resid_pre": 0, "attn_out": 1, "mlp_out": 2, "resid_post": 3}[self.kind]


def parse_site(name: str, adapter: ModelAdapter | None = None) -> Site:
    """Parse ``blocks.{i}.hook_{kind}``; with an adapter, check the layer exists."""
    m = _NAME.fullmatch(name)
    if not m:
        raise CircuitcutError(
            f"unknown hook point {name!r}; use blocks.N.hook_KIND with KIND one of {', '.join(KINDS)}"
        )
    site = Site(name, int(m.group(1)), m.group(2))
    if adapter is not None and not 0 <= site.layer < adapter.n_layers:
        raise CircuitcutError(f"hook point {name!r}: the model has layers 0..{adapter.n_layers - 1}")
    return site


def sites_matching(pattern: str, adapter: ModelAdapter) -> list[Site]:
    """Sites from a comma-separated list, where ``*`` stands for every layer
    (e.g. ``blocks.*.hook_resid_post``), in compute order."""
    out = []
    for part in (p.strip() for p in pattern.split(",") if p.strip()):
        if "*" in part:
            out += [parse_site(part.replace("*", str(i)), adapter) for i in range(adapter.n_layers)]
        else:
            out.append(parse_site(part, adapter))
    if not out:
        raise CircuitcutError("no hook points given")
    return sorted(dict.fromkeys(out), key=Site.order)


def _module(adapter: ModelAdapter, site: Site) -> tuple[nn.Module, bool]:
    """The module whose output (or, with ``pre``, input) is the site."""
    layer = adapter.layers[site.layer]
    if site.kind == "resid_pre":
        return layer.module, True
    if site.kind == "resid_post":
        return layer.module, False
    if site.kind == "mlp_out":
        return layer.linears["down"].module, False
    return layer.linears["o"].module, False


@contextmanager
def site_hook(
    adapter: ModelAdapter,
    site: Site,
    fn: Callable[[torch.Tensor], torch.Tensor | None],
    batch_shape: tuple[int, int] | None = None,
) -> Iterator[None]:
    """Call ``fn(activation [B, T, width])`` at the site; a returned tensor replaces the activation.

    Some models flatten tokens before their MLP (OPT); give ``batch_shape=(B, T)`` to see those
    activations as ``[B, T, width]`` too (otherwise they arrive as ``[1, B*T, width]``).
    """
    module, pre = _module(adapter, site)
    width = site.width(adapter)

    def apply(t: torch.Tensor) -> torch.Tensor | None:
        shape = t.shape
        if t.dim() == 3:
            view = t
        elif batch_shape is not None:
            view = t.reshape(*batch_shape, width)
        else:
            view = t.reshape(1, -1, width)
        out = fn(view)
        return None if out is None else out.reshape(shape)

    if pre:

        def pre_hook(mod: nn.Module, args: tuple, kwargs: dict) -> Any:
            if args:
                new = apply(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            key = "hidden_states"
            new = apply(kwargs[key])
            return None if new is None else (args, {**kwargs, key: new})

        handle = module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    else:

        def post_hook(mod: nn.Module, args: tuple, out: Any) -> Any:
            t = out[0] if isinstance(out, tuple) else out
            new = apply(t)
            if new is None:
                return None
            return (new, *out[1:]) if isinstance(out, tuple) else new

        handle = module.register_forward_hook(post_hook)
    try:
        yield
    finally:
        handle.remove()
