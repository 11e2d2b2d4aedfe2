"""Attribution against a counterfactual: scores of ``metric(prompt) - metric(counterfactual)``.

Each sample carries a counterfactual prompt of as many tokens (:attr:`Sample.baseline_ids`; for
IOI the same sentence with other names). A component's score uses the difference of its activation
between the two runs, ``x - x'``, in place of ``x``:

* ``gradient`` against the counterfactual is **attribution patching** (Nanda 2023; Syed et al.,
  2023): the first-order estimate of what patching the component changes, ``(x - x') . dm/dx`` at the
  prompt; a weight ``w_ij`` scores ``w_ij (x_j - x'_j) dm/dy_i`` summed over tokens.
* ``ig`` is **integrated gradients** from the counterfactual to the prompt at the input embeddings
  (Sundararajan et al., 2017; the "EAP-IG-inputs" variant of Hanna et al., 2024): the gradient is
  averaged over ``steps`` points ``e' + (k / steps)(e - e')``, ``k = 1..steps``, of the path between
  the counterfactual's embeddings ``e'`` and the prompt's ``e``, then multiplied by ``x - x'``. With
  one step it is attribution patching (tested).
* ``lrp`` against the counterfactual (our rule; the papers explain single inputs) replaces the
  gradient by LRP's modified gradient at the prompt: ``w_ij (x_j - x'_j) R_i / y_i``-style relevance
  flow, i.e. attribution patching under the LRP backward.

Per-sample aggregation (``abs``, ``token_abs``, ...) applies to these differences as to plain
scores, after the average over the path, so the scores of ``ig`` are exact for every aggregation.
Seeds are those of each explained output's difference ``m - m'`` (unit seeds: ``1 / (m - m')``,
so each sample's difference carries relevance 1; value seeds: 1, the raw difference), fixed at the
prompt and the same at every point of the path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from circuitcut.attribution.collector import GradientCollector
from circuitcut.models.adapter import LinearInfo, ModelAdapter


class CounterfactualCollector(GradientCollector):
    """A :class:`GradientCollector` that scores ``x - x'`` against the path-averaged gradient.

    A batch runs in phases: ``"baseline"`` (one forward on the counterfactual, recording each input
    ``x'``), ``"prompt"`` (forward and backward at the prompt itself, recording ``x`` and the
    gradient), then ``"path"`` for the other points of the path (the gradient only); :meth:`flush`
    then accumulates the batch's scores.
    """

    def __init__(self, adapter: ModelAdapter, linears: Iterable[LinearInfo], **options: Any) -> None:
        """As :class:`GradientCollector` (``neurons``, ``heads``, ``aggregation``); the quantity is
        always ``W * dW``-like: ``w (x - x') g``."""
        super().__init__(adapter, linears, quantity="wdw", **options)
        self.phase = "baseline"
        self._base: dict[Any, torch.Tensor] = {}
        self._clean: dict[Any, torch.Tensor] = {}
        self._grad: dict[Any, torch.Tensor] = {}

    def _record(self, key: Any, x: torch.Tensor) -> None:
        if self.phase != "path":
            (self._base if self.phase == "baseline" else self._clean)[key] = x.detach()

    def _add_grad(self, key: Any, g: torch.Tensor) -> None:
        g = g.detach().float()
        self._grad[key] = self._grad[key] + g if key in self._grad else g

    def _weight_hook(self, lin: LinearInfo):
        name = "embed_tokens" if lin.role == "lm_head" and self.adapter.tied else lin.name

        def forward_hook(module: Any, args: tuple, out: torch.Tensor) -> None:
            self._record(("weight", name), args[0])
            if self.phase != "baseline" and out.requires_grad:
                out.register_hook(lambda g: self._add_grad(("weight", name), g))

        return forward_hook

    def _site_hook(self, kind: str, layer: int):
        def forward_hook(module: Any, args: tuple, out: torch.Tensor) -> None:
            x = args[0]
            self._record((kind, layer), x)
            if self.phase != "baseline" and x.requires_grad:
                x.register_hook(lambda g: self._add_grad((kind, layer), g))

        return forward_hook

    def flush(self, steps: int) -> None:
        """Accumulate the batch: each component's ``x - x'`` against its gradient averaged over the
        ``steps`` points of the path, then forget the batch."""
        names = {("embed_tokens" if lin.role == "lm_head" and self.adapter.tied else lin.name): lin
                 for lin in self.linears}  # fmt: skip
        for key, g in self._grad.items():
            delta = self._clean[key].float() - self._base[key].float()
            kind, which = key
            if kind == "weight":
                self._accumulate_weight(which, names[which], delta, g / steps)
            else:
                self._accumulate_site(kind, which, delta, g / steps)
        self._base.clear()
        self._clean.clear()
        self._grad.clear()
        self.phase = "baseline"
