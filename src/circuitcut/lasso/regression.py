"""L1-penalised regressions: batched FISTA in torch, scikit-learn, and block-triangular structure learning.

Objective per target column (the same as scikit-learn's ``Lasso``)::

    min_b  1/(2n) ||y - X b||^2 + lambda ||b||_1

FISTA (Beck & Teboulle, "A Fast Iterative Shrinkage-Thresholding Algorithm", SIAM J. Imaging Sci.
2009) solves all target columns at once with one step size 1/L, L the largest eigenvalue of
X^T X / n (power iteration), with adaptive restart of each column's momentum; it runs wherever the
tensors live (CPU or GPU), in the dtype of its inputs (float32 by default in :func:`learn_structure`
and CircuitLasso: the columns are standardised, so single precision loses nothing that the
tolerance keeps, and it is twice as fast as float64).

Structure learning follows CircuitLasso (Yin et al., arXiv 2606.16939): with sites in compute order
and X = A^T X + noise, A block upper-triangular, each site's columns are regressed only on the
columns of earlier sites (all earlier sites, or only the adjacent one), which makes the graph
acyclic by construction and every block a plain Lasso.

Choices the paper leaves open, as defaults here: columns centred and scaled to unit variance
(coefficients are then comparable; they are reported on that scale); the penalty picked per target
by BIC along a path (or fixed, or set to reach a target number of edges); an edge is a coefficient
with |b| > ``threshold`` (default 0.05 on the standardised scale).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from circuitcut.errors import CircuitcutError

SOLVERS = ("fista", "sklearn")


def standardize(x: torch.Tensor, eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centre and scale columns; constant columns stay zero. Returns ``(z, mean, std)``."""
    mean = x.mean(0)
    std = x.std(0, unbiased=False)
    safe = torch.where(std > eps, std, torch.ones_like(std))
    return (x - mean) / safe * (std > eps), mean, safe


def lipschitz(x: torch.Tensor, iters: int = 50) -> float:
    """Largest eigenvalue of X^T X / n by power iteration."""
    n = x.shape[0]
    v = torch.randn(x.shape[1], 1, dtype=x.dtype, device=x.device, generator=None)
    v /= v.norm()
    val = torch.tensor(0.0)
    for _ in range(iters):
        w = x.t() @ (x @ v) / n
        val = w.norm()
        v = w / val.clamp_min(1e-30)
    return float(val)


def fista_lasso(
    x: torch.Tensor,
    y: torch.Tensor,
    lam: float | torch.Tensor,
    max_iter: int = 2000,
    tol: float = 1e-6,
    init: torch.Tensor | None = None,
    gram: tuple[torch.Tensor, torch.Tensor, float] | None = None,
) -> torch.Tensor:
    """Coefficients ``[p, q]`` of the Lasso of every column of ``y [n, q]`` on ``x [n, p]`` (no intercept:
    centre first). ``lam`` may be a scalar or one value per target column; ``init`` warm-starts (a
    regularisation path), ``gram`` reuses ``(X^T X / n, X^T y / n, step)`` across calls."""
    if x.shape[0] != y.shape[0]:
        raise CircuitcutError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
    if x.shape[0] == 0:
        raise CircuitcutError("no data to regress on")
    lam_t = torch.as_tensor(lam, dtype=x.dtype, device=x.device).reshape(1, -1)
    xtx, xty, step = gram if gram is not None else gram_of(x, y)
    b = (
        init.clone()
        if init is not None
        else torch.zeros(x.shape[1], y.shape[1], dtype=x.dtype, device=x.device)
    )
    z = b.clone()
    t = torch.ones(1, y.shape[1], dtype=x.dtype, device=x.device)  # momentum per target column
    thr = (step * lam_t).expand_as(b)
    c = step * xty
    for it in range(max_iter):
        u = torch.addmm(c, xtx, z, alpha=-step).add_(z)  # z - step * (X^T X z - X^T y) / n
        b_new = u - u.clamp(-thr, thr)  # soft thresholding
        d = b_new - b
        # gradient-based adaptive restart (O'Donoghue & Candes, "Adaptive Restart for Accelerated
        # Gradient Schemes", Found. Comput. Math. 2015): a column whose step goes against its
        # momentum starts its momentum again; this halves the iterations on SAE codes
        t = t.masked_fill(((z - b_new) * d).sum(0, keepdim=True) > 0, 1.0)
        t_new = (1 + (1 + 4 * t * t).sqrt()) / 2
        z = torch.addcmul(b_new, (t - 1) / t_new, d)
        b, t = b_new, t_new
        if it % 4 == 3 and float(d.abs().max()) <= tol * max(1.0, float(b.abs().max())):
            break
    return b


def gram_of(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(X^T X / n, X^T y / n, 1 / L)`` for :func:`fista_lasso`."""
    n = x.shape[0]
    return x.t() @ x / n, x.t() @ y / n, 1.0 / max(lipschitz(x), 1e-12)


def sklearn_lasso(x: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """The same problem with scikit-learn's coordinate descent (CPU)."""
    from sklearn.linear_model import Lasso

    model = Lasso(alpha=lam, fit_intercept=False, max_iter=10000, tol=1e-7)
    model.fit(x.cpu().double().numpy(), y.cpu().double().numpy())
    coef = np.atleast_2d(model.coef_)  # [q, p]
    return torch.from_numpy(coef.T.copy()).to(x.dtype)


def lambda_max(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per target, the smallest penalty giving all-zero coefficients: max_j |x_j^T y| / n."""
    return (x.t() @ y).abs().max(0).values / x.shape[0]


def lasso_bic(x: torch.Tensor, y: torch.Tensor, n_lambdas: int = 12, ratio: float = 1e-2,
              solver: str = "fista", tol: float = 1e-4, patience: int = 3) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Per target, the penalty on a log path from lambda_max down to ``ratio`` x lambda_max that minimises
    BIC = n log(RSS / n) + df log(n) (df = non-zero coefficients); returns ``(coef [p, q], lambdas [q])``.

    The path is warm-started and stops once BIC has risen ``patience`` times in a row for every target.
    """
    n = x.shape[0]
    top = lambda_max(x, y).clamp_min(1e-12)
    best_bic = torch.full((y.shape[1],), float("inf"), dtype=x.dtype, device=x.device)
    best = torch.zeros(x.shape[1], y.shape[1], dtype=x.dtype, device=x.device)
    best_lam = top.clone()
    gram = gram_of(x, y) if solver == "fista" else None
    coef = None
    worse = torch.zeros(y.shape[1], dtype=torch.long, device=x.device)
    for i in range(n_lambdas):
        lam = top * ratio ** (i / (n_lambdas - 1))
        coef = fista_lasso(x, y, lam, init=coef, gram=gram, tol=tol) if solver == "fista" else torch.stack(
            [sklearn_lasso(x, y[:, j : j + 1], float(lam[j]))[:, 0] for j in range(y.shape[1])], dim=1)  # fmt: skip
        rss = (y - x @ coef).pow(2).sum(0).clamp_min(1e-12)
        df = (coef != 0).sum(0).to(x.dtype)
        bic = n * torch.log(rss / n) + df * math.log(n)
        better = bic < best_bic
        best_bic = torch.where(better, bic, best_bic)
        best[:, better] = coef[:, better]
        best_lam = torch.where(better, lam, best_lam)
        worse = torch.where(better, torch.zeros_like(worse), worse + 1)
        if bool((worse >= patience).all()):
            break
    return best, best_lam


def check_solver(solver: str) -> str:
    """``solver`` if it is one of :data:`SOLVERS`, else a clear error."""
    if solver not in SOLVERS:
        raise CircuitcutError(f"unknown solver {solver!r}; use one of {', '.join(SOLVERS)}")
    return solver


def regress(x: torch.Tensor, y: torch.Tensor, penalty: str | float, solver: str = "fista") -> torch.Tensor:
    """Coefficients ``[p, q]`` of the Lasso of every column of ``y`` on ``x``, the penalty chosen per
    column by BIC (``penalty="bic"``) or fixed (a number)."""
    if penalty == "bic":
        return lasso_bic(x, y, solver=solver)[0]
    lam = float(penalty)
    return fista_lasso(x, y, lam) if solver == "fista" else sklearn_lasso(x, y, lam)


@dataclass
class Structure:
    """Learned dependencies between blocks of variables (sites), in compute order."""

    names: list[str]
    sizes: list[int]
    #: (source block, target block) -> coefficients [p_source, p_target] on the standardised scale
    blocks: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    threshold: float = 0.05

    def edges(self) -> list[tuple[tuple[int, int], tuple[int, int], float]]:
        """``((source block, index), (target block, index), coefficient)`` with |coef| > threshold."""
        out = []
        for (i, j), a in self.blocks.items():
            for s, t in torch.nonzero(a.abs() > self.threshold).tolist():
                out.append(((i, s), (j, t), float(a[s, t])))
        return out

    def adjacency(self) -> torch.Tensor:
        """The full thresholded coefficient matrix over all variables (row = source, column = target)."""
        offsets = np.cumsum([0, *self.sizes]).tolist()
        full = torch.zeros(offsets[-1], offsets[-1])
        for (i, j), a in self.blocks.items():
            full[offsets[i] : offsets[i + 1], offsets[j] : offsets[j + 1]] = a.cpu().float() * (
                a.abs() > self.threshold
            )
        return full


def learn_structure(
    blocks: Sequence[torch.Tensor],
    names: Sequence[str] | None = None,
    adjacent_only: bool = False,
    penalty: str | float = "bic",
    threshold: float = 0.05,
    solver: str = "fista",
    target_edges: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> Structure:
    """Regress each block on the earlier blocks (block upper-triangular A; see the module docstring).

    ``blocks`` are ``[n, p_k]`` activations of the sites in compute order (same rows). With
    ``target_edges``, one penalty shared by all regressions is chosen on a log path (from the largest
    useful one down) as the first that yields at least that many edges. Columns are standardised in
    float64 and regressed in ``dtype``.
    """
    if target_edges is not None:
        return _structure_with_edges(blocks, names, adjacent_only, threshold, solver, target_edges, dtype)
    check_solver(solver)
    if not blocks:
        raise CircuitcutError("no sites to learn a structure over")
    n = blocks[0].shape[0]
    if n < 2 or any(b.shape[0] != n for b in blocks):
        raise CircuitcutError("every site needs the same number (>= 2) of rows of data")
    names = list(names or [f"site{i}" for i in range(len(blocks))])
    z = [standardize(b.double())[0].to(dtype) for b in blocks]
    st = Structure(names, [b.shape[1] for b in blocks], threshold=threshold)
    for j in range(1, len(z)):
        sources = [j - 1] if adjacent_only else list(range(j))
        coef = regress(torch.cat([z[i] for i in sources], dim=1), z[j], penalty, solver)
        offset = 0
        for i in sources:
            st.blocks[(i, j)] = coef[offset : offset + z[i].shape[1]].float()
            offset += z[i].shape[1]
    return st


def _structure_with_edges(blocks: Sequence[torch.Tensor], names: Sequence[str] | None, adjacent_only: bool,
                          threshold: float, solver: str, target: int, dtype: torch.dtype) -> Structure:  # fmt: skip
    if target < 1:
        raise CircuitcutError(f"target_edges must be >= 1, got {target}")
    z = [standardize(b.double())[0].to(dtype) for b in blocks]
    top = max(float(lambda_max(torch.cat(z[:j], 1), z[j]).max()) for j in range(1, len(z)))
    st = None
    for i in range(40):
        lam = top * 0.8**i
        st = learn_structure(blocks, names, adjacent_only, lam, threshold, solver, dtype=dtype)
        if len(st.edges()) >= target:
            break
    return st
