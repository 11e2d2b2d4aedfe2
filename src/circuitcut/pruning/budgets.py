"""Non-uniform layer budgets for unstructured pruning: how many weights each linear layer gives up.

A budget assigns every decoder layer (transformer block) ``l`` its own sparsity ``s_l`` while the
selection as a whole keeps the target ``s``: the rates' average weighted by the layers' sizes is
exactly ``s``, and the integer counts add up to exactly ``floor(s * N)`` of the ``N`` chosen weights
(the count the ``global`` scheme prunes; :mod:`circuitcut.pruning.masks`). Every linear layer of a
block gets the block's rate; the counts are rounded by largest remainders (ties by position), so
each layer is within one weight of its rate. Within a layer the mask then prunes the lowest-scored
weights of that count (``layer``) or spreads the count evenly over the output rows (``rowwise``).

Two budgets, both a signal per block mapped linearly onto a band of width ``2 * lam`` around ``s``
(more signal, less pruning) and shifted so the weighted mean is ``s`` again:

* ``owl``: Outlier Weighed Layerwise sparsity (Yin et al., 2024, "Outlier Weighed Layerwise
  Sparsity (OWL): A Missing Secret Sauce for Pruning LLMs to High Sparsity", ICML; Sec. 3-4). The
  signal is the block's outlier ratio ``D_l``: the share of its Wanda scores ``|W_ij| * ||X_j||_2``
  (all linear layers of the block together) above ``M`` times their mean. The paper sets
  ``S_l = 1 - D_l`` rescaled into ``[s - lam, s + lam]`` with average ``s``; M = 5 and lam = 0.08
  are its LLaMA-7B settings (M in {3, 5, 7, 10}, lam in [0.02, 0.2] were searched there).
* ``relevance``: the block's relevance density, its share of the total score mass (``sum |R|``)
  over its share of the weights (1 when relevance is spread like the weights). With LRP scores this
  is LRP's own budget: a block that carries more relevance per weight is pruned less. Any method's
  scores have a mass, so the rule applies to all of them.

With one block, or when every block has the same signal, the budget is uniform.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from circuitcut.errors import CircuitcutError
from circuitcut.models.adapter import LinearInfo
from circuitcut.scores import Scores

#: the budgets this module computes ("uniform" needs none)
KINDS = ("owl", "relevance")
#: OWL's outlier threshold: a score is an outlier above OWL_M times its block's mean
OWL_M = 5.0
#: half the width of the band the rates are spread over (OWL's lambda), for both budgets
LAMBDA = 0.08


@dataclass(frozen=True)
class LayerBudget:
    """Per-block rates and per-layer pruned counts of one budget, with the signal behind them."""

    kind: str
    sparsity: float
    #: decoder layer index -> that block's sparsity
    rates: dict[int, float]
    #: linear layer name -> how many of its weights are pruned
    counts: dict[str, int]
    #: decoder layer index -> the signal (OWL: outlier ratio; relevance: relevance density)
    signal: dict[int, float]
    params: dict[str, float] = field(default_factory=dict)

    def total(self) -> int:
        """Weights pruned over all layers."""
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        """Plain data for a mask's metadata and reports."""
        return {
            "kind": self.kind,
            "sparsity": self.sparsity,
            **self.params,
            "rates": {str(k): round(v, 6) for k, v in self.rates.items()},
            "signal": {str(k): round(v, 6) for k, v in self.signal.items()},
            "pruned": self.total(),
        }


def outlier_ratio(values: Sequence[torch.Tensor], m: float = OWL_M) -> float:
    """OWL's outlier ratio of one block: the share of its scores (all tensors together) above ``m``
    times their mean."""
    total = sum(v.numel() for v in values)
    if total == 0:
        raise CircuitcutError("a block with no scores has no outlier ratio")
    mean = sum(float(v.double().sum()) for v in values) / total
    return sum(int((v.double() > m * mean).sum()) for v in values) / total


def relevance_density(blocks: Mapping[int, Sequence[torch.Tensor]]) -> dict[int, float]:
    """Each block's share of the total score mass (``sum |s|``) over its share of the weights."""
    mass = {b: sum(float(v.double().abs().sum()) for v in vs) for b, vs in blocks.items()}
    size = {b: sum(v.numel() for v in vs) for b, vs in blocks.items()}
    all_mass, all_size = sum(mass.values()), sum(size.values())
    if all_mass <= 0:
        raise CircuitcutError(
            "every score is zero, so the relevance budget has nothing to go by; use --budget uniform"
        )
    return {b: (mass[b] / all_mass) / (size[b] / all_size) for b in blocks}


def spread_rates(
    signal: Mapping[int, float], sizes: Mapping[int, int], sparsity: float, lam: float = LAMBDA
) -> dict[int, float]:
    """Block rates from a signal: mapped linearly onto ``[s - lam, s + lam]`` (the highest signal
    gets ``s - lam``), then shifted so their mean weighted by ``sizes`` is exactly ``s``.

    Refused when a rate would leave ``[0, 1)`` (never when ``2 * lam <= s < 1 - 2 * lam``).
    """
    if not 0 <= lam < 0.5:
        raise CircuitcutError(f"lambda must be in [0, 0.5), got {lam}")
    lo, hi = min(signal.values()), max(signal.values())
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return {b: sparsity for b in signal}
    raw = {b: sparsity + lam - 2 * lam * (x - lo) / (hi - lo) for b, x in signal.items()}
    shift = sum(raw[b] * sizes[b] for b in raw) / sum(sizes[b] for b in raw) - sparsity
    rates = {b: r - shift for b, r in raw.items()}
    bad = {b: r for b, r in rates.items() if not 0.0 <= r < 1.0}
    if bad:
        b, r = next(iter(bad.items()))
        raise CircuitcutError(
            f"the budget gives block {b} the sparsity {r:.4f}, outside [0, 1): a band of +-{lam} around "
            f"{sparsity} does not fit; use a sparsity between {2 * lam:g} and {1 - 2 * lam:g}, budget "
            "uniform, or a smaller lambda (layer_budget(..., lam=...))"
        )
    return rates


def allocate(rates: Mapping[str, float], sizes: Mapping[str, int], total: int) -> dict[str, int]:
    """Integer counts with ``counts[k] ~ rates[k] * sizes[k]`` adding up to exactly ``total``:
    each layer gets the floor of its share, and the largest remainders (ties by position) one more."""
    ideal = {k: rates[k] * sizes[k] for k in rates}
    scale = total / max(1e-300, sum(ideal.values())) if ideal else 0.0
    ideal = {k: min(float(sizes[k]), v * scale) for k, v in ideal.items()}
    counts = {k: min(sizes[k], math.floor(v + 1e-9)) for k, v in ideal.items()}
    left = total - sum(counts.values())
    position = {k: i for i, k in enumerate(ideal)}
    order = sorted(ideal, key=lambda k: (-(ideal[k] - counts[k]), position[k]))
    while left > 0:
        moved = False
        for k in order:
            if left and counts[k] < sizes[k]:
                counts[k] += 1
                left -= 1
                moved = True
        if not moved:
            raise CircuitcutError(f"cannot place {total} pruned weights in {sum(sizes.values())}")
    return counts


def _blocks(scores: Scores, linears: Sequence[LinearInfo]) -> dict[int, list[LinearInfo]]:
    blocks: dict[int, list[LinearInfo]] = {}
    for lin in linears:
        if lin.layer is None:
            raise CircuitcutError(
                f"{lin.name} belongs to no decoder layer, so a layer budget cannot place it; "
                "leave embeddings out of --layers or use --budget uniform"
            )
        blocks.setdefault(lin.layer, []).append(lin)
    return blocks


def layer_budget(
    kind: str,
    scores: Scores,
    linears: Sequence[LinearInfo],
    sparsity: float,
    *,
    m: float = OWL_M,
    lam: float = LAMBDA,
) -> LayerBudget:
    """The ``owl`` or ``relevance`` budget of the chosen ``linears`` at the target ``sparsity``.

    ``scores`` give the signal: Wanda scores for OWL (as in the paper, whatever method then ranks
    the weights), the ranking method's scores for the relevance budget.
    """
    if kind not in KINDS:
        raise CircuitcutError(f"unknown budget {kind!r}; use one of uniform, {', '.join(KINDS)}")
    if not 0.0 <= sparsity < 1.0:
        raise CircuitcutError(f"sparsity must be in [0, 1), got {sparsity}")
    blocks = _blocks(scores, linears)
    values = {b: [scores.weight(lin.name).float().cpu() for lin in lins] for b, lins in blocks.items()}
    if kind == "owl":
        signal = {b: outlier_ratio(vs, m) for b, vs in values.items()}
        params = {"m": m, "lambda": lam}
    else:
        signal = relevance_density(values)
        params = {"lambda": lam}
    sizes = {b: sum(v.numel() for v in vs) for b, vs in values.items()}
    rates = spread_rates(signal, sizes, sparsity, lam)
    n = sum(sizes.values())
    per_linear = {lin.name: rates[b] for b, lins in blocks.items() for lin in lins}
    numel = {lin.name: lin.out_features * lin.in_features for lins in blocks.values() for lin in lins}
    counts = allocate(per_linear, numel, math.floor(sparsity * n + 1e-9))
    return LayerBudget(kind, sparsity, rates, counts, signal, params)
