"""Contrastive relevance: R_diff = R_general - R_undesired per component (Hatefi et al., Sec. 3.4).

Both score sets come from the same :func:`~circuitcut.attribution.attribute` call settings (one code
path, unit-seeded explained outputs by default), so they are on the same scale; with
``normalize=True`` each set is first divided by its total per level (unit total). Components with
the lowest difference (relevant to the undesired behaviour, not to general ability) are pruned first.
"""

from __future__ import annotations

from typing import Any

import torch

from circuitcut.errors import CircuitcutError
from circuitcut.pruning import Mask
from circuitcut.scores import Scores


def totals(scores: Scores) -> dict[str, float]:
    """Total mean relevance per level (the sum over components of the per-component means)."""
    m = scores.means()
    out = {}
    if m.weights:
        out["weight"] = float(sum(v.sum() for v in m.weights.values()))
    if m.neurons:
        out["neuron"] = float(sum(v.sum() for v in m.neurons.values()))
    if m.heads:
        out["head"] = float(sum(v.sum() for v in m.heads.values()))
    return out


def contrastive(general: Scores, undesired: Scores, normalize: bool = False) -> tuple[Scores, dict[str, Any]]:
    """``general - undesired`` per component (means over each set's samples), and each set's totals."""
    if set(general.weights) != set(undesired.weights) or set(general.neurons) != set(undesired.neurons) \
            or set(general.heads) != set(undesired.heads):  # fmt: skip
        raise CircuitcutError("contrastive relevance needs both score sets over the same components")
    for key in ("method", "variant", "seed_mode", "aggregation"):
        if general.meta.get(key) != undesired.meta.get(key):
            raise CircuitcutError(
                f"the two score sets differ in {key} ({general.meta.get(key)!r} vs {undesired.meta.get(key)!r}); "
                "compute both with the same settings"
            )
    g, u = general.means(), undesired.means()
    tg, tu = totals(general), totals(undesired)
    if normalize:
        for scores, tot in ((g, tg), (u, tu)):
            for level, store in (
                ("weight", scores.weights),
                ("neuron", scores.neurons),
                ("head", scores.heads),
            ):
                if store and abs(tot[level]) < 1e-30:
                    raise CircuitcutError(f"cannot normalise: the {level} relevance sums to zero")
                for k in store:
                    store[k] = store[k] / tot[level]
    diff = Scores(
        weights={k: v - u.weights[k] for k, v in g.weights.items()},
        neurons={k: v - u.neurons[k] for k, v in g.neurons.items()},
        heads={k: v - u.heads[k] for k, v in g.heads.items()},
        n_samples=1,
        meta={
            "contrastive": True,
            "normalized": normalize,
            "general": general.meta,
            "undesired": undesired.meta,
        },
    )
    return diff, {"general_total": tg, "undesired_total": tu, "normalized": normalize}


def consensus(diffs: list[Scores], masks: list[Mask]) -> Scores:
    """Scores that rank components by how many seeds prune them (most first), ties broken by the
    mean contrastive score over seeds (lowest first): pruning the lowest ``count`` gives the seeds'
    consensus at that count.

    ``diffs`` are the seeds' contrastive scores and ``masks`` their masks at the count; neuron
    masks vote per neuron, weight masks per element.
    """
    if not diffs or len(diffs) != len(masks):
        raise CircuitcutError("a consensus needs one mask per seed's contrastive scores")
    means = [d.means() for d in diffs]
    unit = bool(means[0].neurons)
    stores = [m.neurons if unit else m.weights for m in means]
    mean = {key: sum(s[key] for s in stores) / len(stores) for key in stores[0]}
    votes = {key: torch.zeros_like(v) for key, v in mean.items()}
    for m in masks:
        if unit:
            for layer, idx in m.units.get("neurons", {}).items():
                votes[layer][idx] += 1
        else:
            for name in votes:
                votes[name] += m.weights[name].to(votes[name].dtype)
    scale = 2 * max(float(v.abs().max()) for v in mean.values()) + 1e-30
    ranked = {key: -votes[key] + mean[key] / scale for key in mean}  # the tie term lies in (-0.5, 0.5)
    meta = {"consensus_of_seeds": len(diffs), "contrastive": True, "seeds": [d.meta for d in diffs]}
    return Scores(weights={} if unit else ranked, neurons=ranked if unit else {}, n_samples=1, meta=meta)
