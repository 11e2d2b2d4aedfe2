"""Pruning masks from scores: exact counts, deterministic tie-breaking, explicit end.

A :class:`Mask` marks, for each chosen linear layer, which weight elements are pruned (``True``),
in the weight's own layout. Structured masks (neurons, heads) are expressed on the same footing: a
pruned neuron is an input column of the down projection / fc2, a pruned head the input columns of
the attention output projection that carry it, so zeroing them removes exactly that unit's output
(zero ablation). The units are listed too.

Counts are exact: ``k = floor(sparsity * n)`` elements (or an explicit ``count``) are pruned in
every group that competes (the whole selection for ``global``, each layer for ``layer``, each
output row for ``rowwise``, each group of ``M`` inputs for N:M). Ties are broken by position (an
element earlier in the layer order, then in the flattened weight, goes first), so masks are
reproducible. With a layer budget (:mod:`circuitcut.pruning.budgets`: OWL, relevance mass) each layer
prunes its own budgeted count instead, and the total is ``floor(sparsity * n)`` over the selection.
``prune="lowest"`` removes the least relevant (compression, circuits);
``prune="highest"`` the most relevant (correction by contrastive relevance removes the lowest
``R_general - R_undesired``, i.e. also ``lowest``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from circuitcut.errors import CircuitcutError
from circuitcut.io import read_pair, write_pair
from circuitcut.models.adapter import LinearInfo, ModelAdapter
from circuitcut.models.selection import select_linears
from circuitcut.pruning.budgets import LayerBudget
from circuitcut.pruning.select import lowest_k_chunks
from circuitcut.scores import Scores

SCHEMES = ("global", "layer", "rowwise")
FORMAT = "circuitcut.mask/1"


@dataclass
class Mask:
    """Which weight elements are pruned, per linear layer (``True`` = pruned), and why."""

    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    units: dict[str, dict[int, list[int]]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def pruned(self) -> int:
        """Number of pruned weight elements."""
        return int(sum(int(m.sum()) for m in self.weights.values()))

    def total(self) -> int:
        """Number of weight elements the mask covers."""
        return int(sum(m.numel() for m in self.weights.values()))

    def sparsity(self) -> float:
        """Pruned share of the covered weights."""
        return self.pruned() / max(1, self.total())

    def report(self) -> list[dict[str, Any]]:
        """Per-layer pruned counts and sparsity."""
        return [
            {
                "layer": name,
                "pruned": int(m.sum()),
                "total": m.numel(),
                "sparsity": round(float(m.float().mean()), 6),
            }
            for name, m in self.weights.items()
        ]

    def union(self, other: Mask) -> Mask:
        """Elements pruned by either mask."""
        weights = dict(self.weights)
        for k, v in other.weights.items():
            weights[k] = weights[k] | v if k in weights else v
        units = {
            kind: {layer: sorted(set(idx)) for layer, idx in d.items()} for kind, d in self.units.items()
        }
        for kind, d in other.units.items():
            for layer, idx in d.items():
                units.setdefault(kind, {})[layer] = sorted(set(units.get(kind, {}).get(layer, [])) | set(idx))
        return Mask(weights, units, {"union_of": [self.meta, other.meta]})

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the mask (safetensors, uint8) and its JSON sidecar as one unit
        (:func:`~circuitcut.io.write_pair`)."""
        units = {kind: {str(k): v for k, v in d.items()} for kind, d in self.units.items()}
        sidecar = {"meta": self.meta, "units": units, "sparsity": self.sparsity(), "layers": self.report()}
        tensors = {k: v.to(torch.uint8) for k, v in self.weights.items()}
        return write_pair(_with_suffix(path), tensors, sidecar, FORMAT)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Mask:
        """Read a mask written by :meth:`save` (the tensors and the sidecar must be one save)."""
        tensors, side = read_pair(_with_suffix(path), FORMAT)
        weights = {k: v.bool() for k, v in tensors.items()}
        units = {kind: {int(k): v for k, v in d.items()} for kind, d in side.get("units", {}).items()}
        return cls(weights, units, side.get("meta", {}))


def _with_suffix(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    return p if p.suffix == ".safetensors" else p.with_name(p.name + ".safetensors")


def _check_rate(sparsity: float | None, count: int | None) -> None:
    if (sparsity is None) == (count is None):
        raise CircuitcutError("give exactly one of sparsity (a rate in [0, 1)) or count (a number of units)")
    if sparsity is not None and not (0.0 <= sparsity < 1.0):
        raise CircuitcutError(f"sparsity must be in [0, 1), got {sparsity}")
    if count is not None and count < 0:
        raise CircuitcutError(f"count must be >= 0, got {count}")


def _check_end(prune: str) -> None:
    if prune not in ("lowest", "highest"):
        raise CircuitcutError(f"prune must be 'lowest' or 'highest', got {prune!r}")


def _k(n: int, sparsity: float | None, count: int | None) -> int:
    if count is not None:
        if count > n:
            raise CircuitcutError(f"cannot prune {count} of only {n} candidates")
        return count
    return math.floor(sparsity * n + 1e-9)


def _lowest_k(values: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` smallest entries of a 1-D tensor, ties broken by position."""
    return lowest_k_chunks([values], k)[0]


def _oriented(scores: Scores, lin: LinearInfo, prune: str) -> torch.Tensor:
    s = scores.weight(lin.name).float()
    return -s if prune == "highest" else s


def _back(lin: LinearInfo, mask_out_in: torch.Tensor) -> torch.Tensor:
    """Masks are kept ``[out, in]`` (:attr:`~circuitcut.models.adapter.LinearInfo.shape`) whatever the
    module stores; :func:`circuitcut.pruning.apply` orients them onto the weight."""
    return mask_out_in.contiguous()


def unstructured_mask(
    scores: Scores,
    adapter: ModelAdapter,
    sparsity: float | None = None,
    *,
    count: int | None = None,
    scheme: str = "global",
    layers: str | Sequence[str] | None = "all",
    prune: str = "lowest",
    budget: LayerBudget | None = None,
) -> Mask:
    """Prune individual weights: ``global`` (all chosen layers compete), ``layer`` (the same rate in
    each layer) or ``rowwise`` (the same rate in each output row, Wanda's protocol).

    With a ``budget`` (:func:`circuitcut.pruning.budgets.layer_budget`, made for this ``sparsity``)
    each layer prunes its own count instead: its lowest-scored weights (``layer``) or that count
    spread evenly over its rows (``rowwise``: every row prunes ``count // rows``, and the rows whose
    next weight scores lowest one more), so the total is the budget's exact total.
    """
    _check_rate(sparsity, count)
    _check_end(prune)
    scores.check_model(adapter)
    if scheme not in SCHEMES:
        raise CircuitcutError(
            f"unknown scheme {scheme!r}; use one of {', '.join(SCHEMES)} (or nm_mask for N:M)"
        )
    if count is not None and scheme != "global":
        raise CircuitcutError(
            "an exact count is only meaningful with scheme='global'; give a sparsity instead"
        )
    chosen = _scored(scores, adapter, layers)
    if budget is not None:
        _check_budget(budget, chosen, sparsity, scheme)
    weights: dict[str, torch.Tensor] = {}
    if scheme == "global":
        # exact over all chosen layers, one layer's scores in memory at a time (pruning.select)
        total = sum(lin.out_features * lin.in_features for lin in chosen)
        picked = lowest_k_chunks(
            lambda: (_oriented(scores, lin, prune) for lin in chosen), _k(total, sparsity, count), total
        )
        for lin, sel in zip(chosen, picked, strict=True):
            weights[lin.name] = _back(lin, sel)
    else:
        for lin in chosen:
            s = _oriented(scores, lin, prune).cpu()
            if scheme == "layer":
                k = budget.counts[lin.name] if budget else _k(s.numel(), sparsity, None)
                weights[lin.name] = _back(lin, _lowest_k(s.flatten(), k).view(s.shape))
            else:
                k = budget.counts[lin.name] if budget else s.shape[0] * _k(s.shape[1], sparsity, None)
                weights[lin.name] = _back(lin, _rowwise(s, k))
    meta = {"kind": "unstructured", "scheme": scheme, "sparsity": sparsity, "count": count, "prune": prune,
            "scores": scores.meta}  # fmt: skip
    if budget is not None:
        meta["budget"] = budget.as_dict()
    return Mask(weights, {}, meta)


def _check_budget(budget: LayerBudget, chosen: list[LinearInfo], sparsity: float | None, scheme: str) -> None:
    if scheme == "global":
        raise CircuitcutError(
            "a layer budget sets each layer's rate, but the global scheme lets all layers compete; "
            "use scheme 'layer' or 'rowwise' with a budget, or no budget"
        )
    if sparsity is None or abs(budget.sparsity - sparsity) > 1e-12:
        raise CircuitcutError(
            f"the budget was made for sparsity {budget.sparsity}, not {sparsity}; make it again for this rate"
        )
    missing = [lin.name for lin in chosen if lin.name not in budget.counts]
    if missing:
        raise CircuitcutError(
            f"the budget has no count for {', '.join(missing[:3])}; make it for the same layer selection"
        )


def _rowwise(s: torch.Tensor, count: int) -> torch.Tensor:
    """Prune ``count`` weights of an ``[out, in]`` score matrix as evenly as the rows allow: each row
    its ``count // out`` lowest, and the ``count % out`` rows whose next-lowest score is lowest (ties
    by row) one more."""
    rows = s.shape[0]
    base, extra = divmod(count, rows)
    m = torch.zeros_like(s, dtype=torch.bool)
    if base == 0 and extra == 0:
        return m
    order = torch.sort(s, dim=1, stable=True).indices
    if base:
        m.scatter_(1, order[:, :base], True)
    if extra:
        following = s.gather(1, order[:, base : base + 1]).flatten()
        picked = torch.nonzero(_lowest_k(following, extra)).flatten()
        m[picked, order[picked, base]] = True
    return m


def nm_mask(
    scores: Scores,
    adapter: ModelAdapter,
    n: int = 2,
    m: int = 4,
    *,
    layers: str | Sequence[str] | None = "all",
    prune: str = "lowest",
) -> Mask:
    """Semi-structured N:M: in every group of ``m`` consecutive inputs of each output row, prune the
    ``m - n`` lowest-scored weights so ``n`` of every ``m`` remain (2:4 keeps 2 of every 4)."""
    _check_end(prune)
    scores.check_model(adapter)
    if not (0 < n < m):
        raise CircuitcutError(f"N:M needs 0 < N < M, got {n}:{m}")
    weights = {}
    for lin in _scored(scores, adapter, layers):
        s = _oriented(scores, lin, prune).cpu()
        if s.shape[1] % m:
            raise CircuitcutError(
                f"{lin.name} has {s.shape[1]} inputs, not a multiple of {m}: N:M does not apply"
            )
        groups = s.view(s.shape[0], -1, m)
        idx = torch.sort(groups, dim=-1, stable=True).indices[..., : m - n]
        mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, idx, True)
        weights[lin.name] = _back(lin, mask.view(s.shape))
    meta = {"kind": "n:m", "n": n, "m": m, "sparsity": 1 - n / m, "prune": prune, "scores": scores.meta}
    return Mask(weights, {}, meta)


def _scored(scores: Scores, adapter: ModelAdapter, layers: str | Sequence[str] | None) -> list[LinearInfo]:
    chosen = [
        lin for lin in select_linears(adapter, layers, include_embeddings=False) if lin.name in scores.weights
    ]
    if not chosen:
        have = ", ".join(list(scores.weights)[:3]) or "no weight scores"
        raise CircuitcutError(
            f"the layer selection {layers!r} has no scored weights (the scores have: {have}); "
            "score those layers first or change --layers"
        )
    return chosen


def unit_mask(
    scores: Scores,
    adapter: ModelAdapter,
    unit: str,
    sparsity: float | None = None,
    *,
    count: int | None = None,
    scheme: str = "global",
    prune: str = "lowest",
    layers: Sequence[int] | None = None,
    group_kv: bool = False,
) -> Mask:
    """Structured pruning of MLP neurons (``unit="neuron"``) or attention heads (``unit="head"``).

    ``scheme="global"`` ranks units model-wide, ``"layer"`` prunes the same share in each layer.
    With grouped-query attention a query head is pruned alone (its slice of the output projection;
    the shared key/value heads stay); ``group_kv=True`` prunes whole key/value groups instead
    (scored by the sum of their query heads).
    """
    _check_rate(sparsity, count)
    _check_end(prune)
    scores.check_model(adapter)
    if unit not in ("neuron", "head"):
        raise CircuitcutError(f"unit must be 'neuron' or 'head', got {unit!r}")
    if scheme not in ("global", "layer"):
        raise CircuitcutError(f"structured pruning takes scheme 'global' or 'layer', got {scheme!r}")
    if count is not None and scheme != "global":
        raise CircuitcutError("an exact count is only meaningful with scheme='global'")
    store = scores.neurons if unit == "neuron" else scores.heads
    if not store:
        raise CircuitcutError(f"these scores have no {unit} scores; attribute with levels including {unit!r}")
    chosen = sorted(store) if layers is None else list(layers)
    missing = [i for i in chosen if i not in store]
    if missing:
        raise CircuitcutError(f"no {unit} scores for layers {missing}")
    group = adapter.kv_group if (unit == "head" and group_kv) else 1
    per_layer = []
    for i in chosen:
        s = (scores.neuron(i) if unit == "neuron" else scores.head(i)).float().cpu()
        if group > 1:
            s = s.view(-1, group).sum(-1)
        per_layer.append(-s if prune == "highest" else s)
    picked: dict[int, list[int]] = {}
    if scheme == "global":
        sel = lowest_k_chunks(per_layer, _k(sum(s.numel() for s in per_layer), sparsity, count))
        for i, m in zip(chosen, sel, strict=True):
            picked[i] = torch.nonzero(m).flatten().tolist()
    else:
        for i, s in zip(chosen, per_layer, strict=True):
            picked[i] = torch.nonzero(_lowest_k(s, _k(s.numel(), sparsity, None))).flatten().tolist()
    if group > 1:
        picked = {i: [g * group + j for g in idx for j in range(group)] for i, idx in picked.items()}
    weights = {}
    for i, idx in picked.items():
        lin = adapter.neuron_site(i) if unit == "neuron" else adapter.head_site(i)
        cols = torch.zeros(lin.in_features, dtype=torch.bool)
        width = 1 if unit == "neuron" else adapter.head_dim
        for j in idx:
            cols[j * width : (j + 1) * width] = True
        m = cols[None, :].expand(lin.out_features, -1).clone()
        weights[lin.name] = _back(lin, m)
    meta = {"kind": unit, "scheme": scheme, "sparsity": sparsity, "count": count, "prune": prune,
            "group_kv": group_kv, "pruned_units": sum(len(v) for v in picked.values()), "scores": scores.meta}  # fmt: skip
    return Mask(weights, {unit + "s": {i: v for i, v in picked.items() if v}}, meta)
