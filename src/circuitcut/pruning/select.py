"""Exact selection of the ``k`` smallest values spread over many tensors, without concatenating them.

A global mask over every weight of a 7B model would otherwise need the concatenated scores (28 GB in
float32) plus a full sort with int64 indices (three times that again). Here each chunk (one layer's
scores) is visited a few times and only per-chunk temporaries and two 65,536-bin histograms are held:

1. every float32 value is mapped to an unsigned 32-bit key with the same order (the usual
   "sortable float" bit trick: flip all bits of negatives, only the sign bit of non-negatives;
   -0.0 is first made +0.0 so it ties with +0.0 as it does in a comparison sort; NaN goes last);
2. a radix select over the key's high 16 bits, then its low 16 bits within the chosen bucket, finds
   the exact key ``T`` of the ``k``-th smallest value;
3. values with a key below ``T`` are selected, and of those equal to ``T`` the first ones in chunk
   order and then position order, so the result equals a stable sort of the concatenation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch

from circuitcut.errors import CircuitcutError

_BINS = 1 << 16


def sortable_keys(values: torch.Tensor) -> torch.Tensor:
    """int64 keys in ``[0, 2**32)`` ordered like the float32 values (NaN after +inf)."""
    v = values.detach().float().flatten() + 0.0  # -0.0 + 0.0 = +0.0
    bits = v.view(torch.int32).long() & 0xFFFFFFFF
    keys = torch.where(bits >= 0x80000000, bits ^ 0xFFFFFFFF, bits | 0x80000000)
    return torch.where(torch.isnan(v), torch.full_like(keys, 0xFFFFFFFF), keys)


def _bucket(hist: torch.Tensor, k: int) -> tuple[int, int]:
    """The bucket holding the ``k``-th smallest (1-based) and how many lie in earlier buckets."""
    cum = torch.cumsum(hist, 0)
    b = int(torch.searchsorted(cum, torch.tensor([k], dtype=cum.dtype)).item())
    before = int(cum[b - 1]) if b > 0 else 0
    return b, before


def lowest_k_chunks(
    chunks: Sequence[torch.Tensor] | Callable[[], Iterable[torch.Tensor]], k: int
) -> list[torch.Tensor]:
    """Boolean masks (one per chunk, shaped like it) of the ``k`` smallest values over all chunks,
    ties broken by chunk order and then position, exactly as a stable sort of the concatenation.

    ``chunks`` is a sequence of tensors, or a function returning a fresh iterable of them (so they can
    be produced on the fly, e.g. moved to CPU one layer at a time); it is visited three times.
    """
    visit = chunks if callable(chunks) else (lambda: chunks)
    total = sum(c.numel() for c in visit())
    if not 0 <= k <= total:
        raise CircuitcutError(f"cannot select {k} of {total} values")
    if k == 0:
        return [torch.zeros(c.shape, dtype=torch.bool) for c in visit()]
    hist = torch.zeros(_BINS, dtype=torch.long)
    for c in visit():
        hist += torch.bincount(sortable_keys(c.cpu()) >> 16, minlength=_BINS)
    hi, below = _bucket(hist, k)
    hist.zero_()
    for c in visit():
        keys = sortable_keys(c.cpu())
        hist += torch.bincount(keys[(keys >> 16) == hi] & 0xFFFF, minlength=_BINS)
    lo, below_lo = _bucket(hist, k - below)
    threshold = (hi << 16) | lo
    ties_left = k - below - below_lo  # how many values equal to the threshold are still to take
    out = []
    for c in visit():
        keys = sortable_keys(c.cpu())
        sel = keys < threshold
        if ties_left > 0:
            equal = torch.nonzero(keys == threshold).flatten()[:ties_left]
            sel[equal] = True
            ties_left -= len(equal)
        out.append(sel.view(c.shape))
    return out
