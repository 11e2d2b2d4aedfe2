"""Global unstructured masks at model scale: exact chunked selection against concatenate-and-sort.

Usage::

    python benchmarks/masks.py [--layers 28] [--per-layer 4000000] [--sparsity 0.5] [--threads 1]

Scores for ``--layers`` layers of ``--per-layer`` weights each (random normal, float32, rounded to
bf16 precision so there are many ties) are held in memory as a Scores-like list of tensors. Both
methods pick the same exact global lowest share; the baseline concatenates everything and runs a
stable sort (what circuitcut did before ``circuitcut.pruning.select``), the new path visits one
layer at a time. Reported, in one process: wall time and the added peak resident memory over the
scores themselves (kernel high-water mark reset before each), and that both masks are identical.

glibc raises its mmap threshold as large blocks are freed and then keeps freed heap memory resident,
which makes resident-memory peaks depend on allocation history rather than on what an algorithm
holds; the benchmark therefore re-runs itself with ``MALLOC_MMAP_THRESHOLD_`` fixed at 128 KiB, so
large blocks always go back to the system when freed.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable

import torch

import common
from circuitcut.pruning.select import lowest_k_chunks


def concatenate_and_sort(chunks: list[torch.Tensor], k: int) -> list[torch.Tensor]:
    """The baseline: one flat copy, a stable sort with int64 indices, split back."""
    flat = torch.cat([c.flatten() for c in chunks])
    sel = torch.zeros(flat.numel(), dtype=torch.bool)
    sel[torch.sort(flat, stable=True).indices[:k]] = True
    del flat
    return [m.view(c.shape) for m, c in zip(sel.split([c.numel() for c in chunks]), chunks, strict=True)]


def measure(fn: Callable[[list[torch.Tensor], int], list[torch.Tensor]], chunks: list[torch.Tensor],
            k: int) -> tuple[list[torch.Tensor], dict]:  # fmt: skip
    """Run once with the peak-memory mark reset; the masks and the figures."""
    out, fig = common.peak_memory(lambda: fn(chunks, k))
    return out, {"seconds": round(fig["seconds"], 2), "added_peak_mib": round(fig["added_mib"], 1)}


def main() -> None:
    """Run and print a JSON report."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") != "131072":  # see the module docstring
        os.execve(
            sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
        )
    p = common.parser(__doc__)
    p.add_argument("--layers", type=int, default=28, help="number of score tensors (default 28)")
    p.add_argument("--per-layer", type=int, default=4_000_000, help="scores per tensor (default 4M)")
    p.add_argument("--sparsity", type=float, default=0.5)
    args = common.parse(p)
    g = torch.Generator().manual_seed(0)
    chunks = [torch.randn(args.per_layer, generator=g).bfloat16().float() for _ in range(args.layers)]
    total = args.layers * args.per_layer
    k = math.floor(args.sparsity * total)
    scores_mib = total * 4 / 2**20
    new, new_fig = measure(lowest_k_chunks, chunks, k)
    old, old_fig = measure(concatenate_and_sort, chunks, k)
    report = {
        "scores": f"{args.layers} x {args.per_layer} float32 ({scores_mib:.0f} MiB)",
        "k": k,
        "chunked_select": new_fig,
        "concatenate_and_sort": old_fig,
        "identical": all(torch.equal(a, b) for a, b in zip(new, old, strict=True)),
        "time_ratio_select_over_sort": round(new_fig["seconds"] / old_fig["seconds"], 3),
        "added_memory_ratio_select_over_sort": round(
            new_fig["added_peak_mib"] / old_fig["added_peak_mib"], 3
        ),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
