"""Ground truth for structure learning: random sparse structural models with a known DAG.

Nodes are generated in a fixed (compute) order; node ``j`` has each earlier node as a parent with a
probability giving ``degree`` expected parents per node, edge weights of random sign and magnitude in
[0.5, 2], and Gaussian noise of standard deviation ``noise``. Each node is rescaled to unit variance
as it is generated (a standardised model, so long chains stay well conditioned; the graph is
unchanged). The nonlinear variant passes each parent through ``tanh`` before weighting.

Scores: the structural Hamming distance to the true graph (with the order known no edge can be
reversed, so SHD = false positives + false negatives), edge precision and recall.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from circuitcut.errors import CircuitcutError


@dataclass
class SyntheticSEM:
    """Data drawn from a random structural model, and its true graph."""

    data: torch.Tensor  # [samples, nodes]
    graph: torch.Tensor  # [nodes, nodes] bool, graph[i, j] = edge i -> j
    weights: torch.Tensor  # [nodes, nodes]


def random_sem(
    nodes: int,
    samples: int = 2000,
    degree: float = 2.0,
    noise: float = 1.0,
    nonlinear: bool = False,
    seed: int = 0,
) -> SyntheticSEM:
    """Draw a random DAG over ``nodes`` ordered variables and ``samples`` observations."""
    if nodes < 2 or samples < 2:
        raise CircuitcutError("a structural model needs at least 2 nodes and 2 samples")
    g = torch.Generator().manual_seed(seed)
    p = min(1.0, 2 * degree / (nodes - 1))  # expected parents ~ degree on average over the order
    upper = torch.triu(torch.ones(nodes, nodes, dtype=torch.bool), diagonal=1)
    graph = (torch.rand(nodes, nodes, generator=g) < p) & upper
    mag = 0.5 + 1.5 * torch.rand(nodes, nodes, generator=g)
    sign = torch.where(torch.rand(nodes, nodes, generator=g) < 0.5, -1.0, 1.0)
    weights = mag * sign * graph
    x = torch.zeros(samples, nodes, dtype=torch.float64)
    for j in range(nodes):
        parents = x[:, :j]
        drive = (torch.tanh(parents) if nonlinear else parents) @ weights[:j, j].double()
        col = drive + noise * torch.randn(samples, generator=g, dtype=torch.float64)
        x[:, j] = (col - col.mean()) / col.std().clamp_min(1e-12)
    return SyntheticSEM(x, graph, weights)


def structure_scores(estimated: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """SHD, precision, recall and counts of an estimated graph (bool ``[n, n]``) against the truth."""
    est, tru = estimated.bool(), truth.bool()
    if est.shape != tru.shape:
        raise CircuitcutError(f"graphs differ in size: {tuple(est.shape)} vs {tuple(tru.shape)}")
    tp = int((est & tru).sum())
    fp = int((est & ~tru).sum())
    fn = int((~est & tru).sum())
    return {
        "shd": fp + fn,
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
        "true_edges": int(tru.sum()),
        "found_edges": int(est.sum()),
    }
