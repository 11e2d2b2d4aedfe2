"""Exact selection of the ``k`` smallest values spread over many tensors, without concatenating them.

A global mask over every weight of a 7B model would otherwise need the concatenated scores (28 GB in
float32) plus a full sort with int64 indices (three times that again). Here each chunk (one layer's
scores) is visited a few times and only per-chunk temporaries and two 65,536-bin histograms are held:

1. every float32 value is mapped to a signed 32-bit integer key with the same order (the usual
   "sortable float" bit trick: the magnitude bits of negatives are flipped; -0.0 is first made +0.0
   so it ties with +0.0 as it does in a comparison sort; NaN goes last);
2. a radix select over the key's high 16 bits, then its low 16 bits within the chosen bucket, finds
   the exact key ``T`` of the ``k``-th smallest value;
3. values with a key below ``T`` are selected, and of those equal to ``T`` the first ones in chunk
   order and then position order, so the result equals a stable sort of the concatenation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from tqdm.auto import tqdm

from circuitcut.errors import CircuitcutError

_BINS = 1 << 16
#: below this many values the three passes take well under a second: no progress bar
PROGRESS_FROM = 50_000_000


def sortable_keys(values: torch.Tensor) -> torch.Tensor:
    """int32 keys ordered like the float32 values (signed integer order; NaN after +inf)."""
    v = values.detach().float().flatten() + 0.0  # -0.0 + 0.0 = +0.0
    bits = v.view(torch.int32)
    keys = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # negatives: flip the magnitude bits
    return keys.masked_fill_(torch.isnan(v), torch.iinfo(torch.int32).max)


def _bucket(hist: torch.Tensor, k: int) -> tuple[int, int]:
    """The bucket holding the ``k``-th smallest (1-based) and how many lie in earlier buckets."""
    cum = torch.cumsum(hist, 0)
    b = int(torch.searchsorted(cum, torch.tensor([k], dtype=cum.dtype)).item())
    before = int(cum[b - 1]) if b > 0 else 0
    return b, before


def lowest_k_chunks(
    chunks: Sequence[torch.Tensor] | Callable[[], Iterable[torch.Tensor]], k: int, total: int | None = None
) -> list[torch.Tensor]:
    """Boolean masks (one per chunk, shaped like it) of the ``k`` smallest values over all chunks,
    ties broken by chunk order and then position, exactly as a stable sort of the concatenation.

    ``chunks`` is a sequence of tensors, or a function returning a fresh iterable of them (so they can
    be produced on the fly, e.g. moved to CPU one layer at a time); it is visited three times, or four
    when it is a function and ``total`` (the number of values) is not given. A progress bar shows from
    :data:`PROGRESS_FROM` values on.
    """
    source = chunks if callable(chunks) else (lambda: chunks)
    if total is None or not callable(chunks):
        total = sum(c.numel() for c in source())
    if not 0 <= k <= total:
        raise CircuitcutError(f"cannot select {k} of {total} values")
    if k == 0:
        return [torch.zeros(c.shape, dtype=torch.bool) for c in source()]
    bar = tqdm(desc="exact global selection (3 passes)", unit="layer", disable=total < PROGRESS_FROM)

    def visit() -> Iterable[torch.Tensor]:
        for c in source():
            yield c
            bar.update(1)

    hist = torch.zeros(_BINS, dtype=torch.long)
    for c in visit():  # high 16 bits (arithmetic shift: -32768..32767, offset to a bin)
        hist += torch.bincount((sortable_keys(c.cpu()) >> 16) + _BINS // 2, minlength=_BINS)
    hi, below = _bucket(hist, k)
    hi -= _BINS // 2
    hist.zero_()
    for c in visit():  # low 16 bits of the keys in the chosen high bucket
        keys = sortable_keys(c.cpu())
        hist += torch.bincount(keys[(keys >> 16) == hi] & 0xFFFF, minlength=_BINS)
    lo, below_lo = _bucket(hist, k - below)
    threshold = hi * _BINS + lo  # the key of the k-th smallest value
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
    bar.close()
    return out
