"""Baselines that need no backward pass of their own: random scores, and unit scores derived from
weight scores (Wanda and magnitude score a neuron or head as the sum of its columns' scores)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

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


def unit_sites(adapter: ModelAdapter, levels: Sequence[str]) -> list[str]:
    """The projections whose input columns are the units of ``levels``: each layer's neuron site
    (the MLP down projection) and head site (the attention output projection)."""
    sites = []
    for i in range(adapter.n_layers):
        if "neuron" in levels:
            sites.append(adapter.neuron_site(i).name)
        if "head" in levels:
            sites.append(adapter.head_site(i).name)
    return sites


def units_from_weight_scores(
    base: Scores, adapter: ModelAdapter, levels: Sequence[str], keep: Sequence[str]
) -> Scores:
    """Unit scores from weight scores (Wanda, magnitude): each neuron or head scores the sum of its
    site projection's weight scores over the columns it feeds; weight scores are kept for ``keep``.

    ``base`` must hold weight scores of every site of ``levels`` (:func:`unit_sites`).
    """
    neurons, heads = {}, {}
    for i in range(adapter.n_layers):
        if "neuron" in levels:
            neurons[i] = base.weights[adapter.neuron_site(i).name].sum(0)
        if "head" in levels:
            cols = base.weights[adapter.head_site(i).name].sum(0)
            heads[i] = cols.view(adapter.n_heads, adapter.head_dim).sum(-1)
    kept = set(keep)
    weights = {k: v for k, v in base.weights.items() if k in kept}
    meta = {
        **base.meta,
        "levels": list(levels),
        "layers": sorted(kept),
        "unit_scores": "sum over the unit's columns",
    }
    return Scores(weights=weights, neurons=neurons, heads=heads, n_samples=base.n_samples, meta=meta)
