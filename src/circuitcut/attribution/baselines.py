"""Baselines that need no backward pass of their own: random scores, and unit scores derived from
weight scores (Wanda and magnitude score a neuron or head as the sum of its columns' scores)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from circuitcut.attribution.targets import Sample
from circuitcut.models.adapter import LinearInfo, ModelAdapter
from circuitcut.scores import Scores


def random_scores(
    adapter: ModelAdapter,
    linears: list[LinearInfo],
    levels: Sequence[str],
    seed: int,
    meta: dict[str, Any],
) -> Scores:
    """Uniform scores from a seeded generator for every requested level."""
    gen = torch.Generator().manual_seed(seed)
    weights = {lin.name: torch.rand(lin.shape, generator=gen) for lin in linears}
    neurons = (
        {i: torch.rand(adapter.n_neurons, generator=gen) for i in range(adapter.n_layers)}
        if "neuron" in levels
        else {}
    )
    heads = (
        {i: torch.rand(adapter.n_heads, generator=gen) for i in range(adapter.n_layers)}
        if "head" in levels
        else {}
    )
    return Scores(weights=weights, neurons=neurons, heads=heads, n_samples=1, meta=meta)


def units_from_weights(
    model: torch.nn.Module,
    samples: Sequence[Sample],
    method: str,
    adapter: ModelAdapter,
    linears: list[LinearInfo],
    levels: Sequence[str],
    batch_size: int,
    pad_id: int,
    progress: bool,
    provenance: dict[str, Any] | None,
) -> Scores:
    """Wanda/magnitude unit scores: each unit's column sums of its site projection's weight scores."""
    sites = []
    for i in range(adapter.n_layers):
        if "neuron" in levels:
            sites.append(adapter.neuron_site(i).name)
        if "head" in levels:
            sites.append(adapter.head_site(i).name)
    names = list(dict.fromkeys([lin.name for lin in linears] + sites))
    from circuitcut.attribution.engine import attribute

    base = attribute(model, samples, method, adapter=adapter, levels=("weight",), layers=names, batch_size=batch_size,
                     pad_id=pad_id, progress=progress, provenance=provenance)  # fmt: skip
    neurons, heads = {}, {}
    for i in range(adapter.n_layers):
        if "neuron" in levels:
            lin = adapter.neuron_site(i)
            neurons[i] = base.weights[lin.name].sum(0)
        if "head" in levels:
            lin = adapter.head_site(i)
            cols = base.weights[lin.name].sum(0)
            heads[i] = cols.view(adapter.n_heads, adapter.head_dim).sum(-1)
    keep = {lin.name for lin in linears}
    weights = {k: v for k, v in base.weights.items() if k in keep}
    meta = {
        **base.meta,
        "levels": list(levels),
        "layers": sorted(keep),
        "unit_scores": "sum over the unit's columns",
    }
    return Scores(weights=weights, neurons=neurons, heads=heads, n_samples=base.n_samples, meta=meta)
