"""SAE features of prompts: collection, and splicing with feature ablation (zero or counterfactual).

* :func:`collect_codes`: the codes (and SAE error terms) of every site at the explained position of
  each prompt (the last token by default) — the observational data CircuitLasso regresses on;
  :func:`collect_site_codes` and :func:`batch_codes`: the codes alone, the forward pass ended after
  the deepest site (a counterfactual's codes need nothing after it).
* :func:`spliced`: run the model with each site's activation replaced by ``decode(keep * codes) +
  error``; with ``keep`` all ones this is the model itself (the error term makes the splice exact),
  zeros in ``keep`` ablate features (zero ablation) while the error term stays; with ``patch``, the
  ablated features take their values on the counterfactual prompt instead (counterfactual ablation).

The gradient baselines (attribution patching, integrated gradients) are in
:mod:`circuitcut.lasso.node_scores`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from circuitcut import validation
from circuitcut.attribution.targets import pad_batch
from circuitcut.errors import CircuitcutError
from circuitcut.io import read_pair, write_pair
from circuitcut.lasso.sae import SAE
from circuitcut.lasso.sites import parse_site, site_hook
from circuitcut.models.adapter import ModelAdapter
from circuitcut.tasks.base import Encoded, last_position_logits

FORMAT = "circuitcut.features/1"


def prompt_batches(
    enc: Encoded, batch_size: int, pad_id: int
) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(rows, ids, attention mask, last position)`` of each batch of prompts, right-padded."""
    for i in range(0, len(enc.prompts), batch_size):
        chunk = enc.prompts[i : i + batch_size]
        ids, mask = pad_batch(chunk, pad_id)
        last = torch.tensor([len(p) - 1 for p in chunk])
        yield slice(i, i + len(chunk)), ids, mask, last


@dataclass
class FeatureData:
    """Codes and error terms per site at the explained position of each prompt, and the metric."""

    sites: list[str]
    codes: list[torch.Tensor]  # per site [n, d_sae]
    errors: list[torch.Tensor]  # per site [n, d_in]
    metric: torch.Tensor  # [n] (e.g. the logit difference)
    outputs: torch.Tensor | None = None  # [n, q]: logits of the candidate answers, if collected
    #: with positions "lastK", each site's columns are K blocks of d_sae (position -1 first)
    window: int = 1

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the data as safetensors (codes stored sparse: indices and values) + JSON, as one unit
        (:func:`~circuitcut.io.write_pair`); the path gets ``.safetensors`` if it has no such suffix."""
        tensors: dict[str, torch.Tensor] = {"metric": self.metric}
        if self.outputs is not None:
            tensors["outputs"] = self.outputs
        for k, (c, e) in enumerate(zip(self.codes, self.errors, strict=True)):
            nz = torch.nonzero(c)
            tensors[f"codes/{k}/indices"] = nz.to(torch.int32)
            tensors[f"codes/{k}/values"] = c[nz[:, 0], nz[:, 1]]
            tensors[f"errors/{k}"] = e
        sidecar = {"sites": self.sites, "shapes": [list(c.shape) for c in self.codes]}
        return write_pair(path, tensors, sidecar, FORMAT)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FeatureData:
        """Read one file written by :meth:`save`, or every shard of a folder (in name order)."""
        path = Path(path)
        files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
        if not files:
            raise CircuitcutError(f"no feature files in {path}")
        parts = []
        for f in files:
            t, side = read_pair(f, FORMAT)
            codes = []
            for k, shape in enumerate(side["shapes"]):
                dense = torch.zeros(shape)
                idx = t[f"codes/{k}/indices"].long()
                dense[idx[:, 0], idx[:, 1]] = t[f"codes/{k}/values"]
                codes.append(dense)
            errors = [t[f"errors/{k}"] for k in range(len(codes))]
            parts.append(cls(side["sites"], codes, errors, t["metric"], t.get("outputs")))
        first = parts[0]
        return cls(first.sites, [torch.cat([p.codes[k] for p in parts]) for k in range(len(first.codes))],
                   [torch.cat([p.errors[k] for p in parts]) for k in range(len(first.codes))],
                   torch.cat([p.metric for p in parts]),
                   torch.cat([p.outputs for p in parts]) if first.outputs is not None else None)  # fmt: skip

    def oriented(self, signs: torch.Tensor) -> FeatureData:
        """The same data with the metric multiplied by per-prompt signs (a regression target that
        varies: for IOI, logit(first name) - logit(second name) = +/- (IO - S))."""
        return FeatureData(
            self.sites, self.codes, self.errors, self.metric * signs.to(self.metric.dtype), self.outputs
        )


def task_metric(logits: torch.Tensor, enc: Encoded, rows: slice) -> torch.Tensor:
    """Per prompt of a batch, from its logits at the explained position ``[B, V]``
    (:func:`~circuitcut.tasks.base.last_position_logits`): the answer's logit, minus the contrast's
    when every prompt has one."""
    row = logits.float()
    ans = torch.tensor(enc.answers[rows], device=row.device)
    con = enc.contrasts[rows]
    val = row.gather(1, ans[:, None])[:, 0]
    if all(c is not None for c in con):
        val = val - row.gather(1, torch.tensor(con, device=row.device)[:, None])[:, 0]
    return val


@contextmanager
def spliced(
    adapter: ModelAdapter,
    saes: Sequence[SAE],
    keep: Sequence[torch.Tensor] | None = None,
    batch_shape: tuple[int, int] | None = None,
    record: list | None = None,
    errors: list | None = None,
    patch: Sequence[torch.Tensor] | None = None,
    at: torch.Tensor | None = None,
) -> Iterator[None]:
    """Replace every site by ``decode(keep * encode(x)) + error(x)`` (see the module docstring).

    With ``patch`` (per site, the batch's codes on the counterfactual prompts, ``[B, T, d_sae]``), a
    feature outside ``keep`` takes its counterfactual value instead of zero: ``decode(keep * z +
    (1 - keep) * patch) + error(x)`` (counterfactual ablation; the error term stays the clean run's).
    With ``record``, the codes of each site (``[B, T, d_sae]``, requiring grad) are appended to it;
    with ``errors``, the SAE error terms (``[B, T, d_in]``). With ``at`` (``[B]`` positions), ``keep``
    and ``patch`` act at that position of each sequence only (nodes "last": a feature at the explained
    position); every other position keeps all its features.
    """
    if patch is not None and keep is None:
        raise CircuitcutError("counterfactual patching needs the features to keep (keep)")
    with ExitStack() as stack:
        for k, sae in enumerate(saes):
            site = parse_site(sae.hook_name, adapter)
            mask = None if keep is None else keep[k]
            other = None if patch is None else patch[k]

            def fn(t: torch.Tensor, sae: SAE = sae, mask: torch.Tensor | None = mask,
                   other: torch.Tensor | None = other) -> torch.Tensor:  # fmt: skip
                z = sae.sequence_codes(t)
                err = (t.float() - sae.decode(z)).detach()
                if errors is not None:
                    errors.append(err)
                if record is not None:
                    z = z.detach().requires_grad_(True) if not z.requires_grad else z
                    record.append(z)
                if mask is None:
                    zk = z
                else:
                    m = mask.to(z.device, z.dtype)
                    if at is not None:
                        m = node_mask(m, at, z)
                    zk = z * m if other is None else z * m + other.to(z.device, z.dtype) * (1 - m)
                return (sae.decode(zk) + err).to(t.dtype)

            stack.enter_context(site_hook(adapter, site, fn, batch_shape))
        yield


def node_mask(mask: torch.Tensor, at: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``mask [d_sae]`` at position ``at[b]`` of each sequence ``b`` of ``z [B, T, d_sae]``, ones elsewhere."""
    full = torch.ones_like(z)
    full[torch.arange(z.shape[0], device=z.device), at.to(z.device)] = mask
    return full


def check_nodes(nodes: str) -> str:
    """``nodes`` if it is one of :data:`~circuitcut.validation.FEATURE_NODES`, else a clear error."""
    return validation.choice(nodes, "nodes", validation.FEATURE_NODES)


POSITIONS = ("all", "last", "lastK (e.g. last8)")


def _window(positions: str) -> int:
    """1 for "last", K for "lastK", 0 for "all"."""
    if positions == "all":
        return 0
    if positions == "last":
        return 1
    if positions.startswith("last") and positions[4:].isdigit() and int(positions[4:]) >= 1:
        return int(positions[4:])
    raise CircuitcutError(f"positions must be 'all', 'last' or 'lastK' (e.g. last8), got {positions!r}")


def _gathered(t: torch.Tensor, mask: torch.Tensor, last: torch.Tensor, window: int) -> torch.Tensor:
    """``t [B, T, d]`` per prompt ``[B, window * d]``: positions ``last``, ``last - 1``, ... as column
    blocks (zeros before the start), or (``window`` 0) summed over the real positions."""
    if window == 0:
        return (t * mask[..., None].to(t.dtype)).sum(1)
    at = torch.arange(len(last))
    blocks = []
    for r in range(window):
        pos = last - r
        blocks.append(t[at, pos.clamp_min(0)] * (pos >= 0).to(t.dtype)[:, None])
    return torch.cat(blocks, 1)


class _SitesDone(Exception):
    """Ends a forward pass at the deepest site (:func:`batch_codes`): nothing after it is needed."""


@torch.no_grad()
def batch_codes(model: torch.nn.Module, adapter: ModelAdapter, saes: Sequence[SAE], enc: Encoded,
                batch_size: int = 32, pad_id: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]]:  # fmt: skip
    """Per batch of ``enc`` (:func:`prompt_batches` order): ``(mask, last, codes)``, each site's codes
    ``[B, T, d_sae]``. The forward pass ends after the deepest site (an exception raised by a hook
    there, caught here): the layers after it and the LM head never run."""
    if not saes:
        raise CircuitcutError("no SAEs given")
    deepest = max((parse_site(s.hook_name, adapter) for s in saes), key=lambda site: site.order())

    def done(t: torch.Tensor) -> None:
        raise _SitesDone

    for _, ids, mask, last in prompt_batches(enc, batch_size, pad_id):
        rec: list[torch.Tensor] = []
        shape = tuple(ids.shape)
        # hooks run in the order they were registered: the splice records the deepest site, then this ends the pass
        with (
            spliced(adapter, saes, batch_shape=shape, record=rec),
            site_hook(adapter, deepest, done, shape),
            suppress(_SitesDone),
        ):
            model(input_ids=ids, attention_mask=mask, use_cache=False)
        if len(rec) != len(saes):
            raise CircuitcutError(f"the forward pass reached {len(rec)} of {len(saes)} SAE sites")
        yield mask, last, [r.detach() for r in rec]


def collect_site_codes(model: torch.nn.Module, adapter: ModelAdapter, saes: Sequence[SAE], enc: Encoded,
                       batch_size: int = 32, pad_id: int = 0, positions: str = "last") -> list[torch.Tensor]:  # fmt: skip
    """Per site, the codes ``[n, d_sae]`` of :func:`collect_codes` alone (no metric, no error terms),
    with the forward pass ended after the deepest site (:func:`batch_codes`)."""
    window = _window(positions)
    if not enc.prompts:
        raise CircuitcutError("no prompts to collect features on")
    codes: list[list[torch.Tensor]] = [[] for _ in saes]
    for mask, last, rec in batch_codes(model, adapter, saes, enc, batch_size, pad_id):
        for k, z in enumerate(rec):
            codes[k].append(_gathered(z, mask, last, window))
    return [torch.cat(c) for c in codes]


@torch.no_grad()
def collect_codes(model: torch.nn.Module, adapter: ModelAdapter, saes: Sequence[SAE], enc: Encoded,
                  batch_size: int = 32, pad_id: int = 0, positions: str = "all",
                  candidates: Sequence[int] | None = None) -> FeatureData:  # fmt: skip
    """Codes and errors per prompt, with the task metric: summed over all (real) token positions
    (default) or taken at the last position; with ``candidates``, also the logits of those tokens at
    the last position (a multi-output regression target)."""
    window = _window(positions)
    if not saes:
        raise CircuitcutError("no SAEs given")
    if not enc.prompts:
        raise CircuitcutError("no prompts to collect features on")
    codes: list[list[torch.Tensor]] = [[] for _ in saes]
    errors: list[list[torch.Tensor]] = [[] for _ in saes]
    metric, outs = [], []
    for rows, ids, mask, last in prompt_batches(enc, batch_size, pad_id):
        rec: list[torch.Tensor] = []
        err: list[torch.Tensor] = []
        with spliced(adapter, saes, batch_shape=tuple(ids.shape), record=rec, errors=err):
            logits = last_position_logits(model, ids, mask, last)
        for k in range(len(saes)):
            codes[k].append(_gathered(rec[k].detach(), mask, last, window))
            errors[k].append(_gathered(err[k], mask, last, window))
        metric.append(task_metric(logits, enc, rows))
        if candidates is not None:
            outs.append(logits[:, list(candidates)].float())
    return FeatureData([s.hook_name for s in saes], [torch.cat(c) for c in codes], [torch.cat(e) for e in errors],
                       torch.cat(metric), torch.cat(outs) if outs else None, max(window, 1))  # fmt: skip


def stream_codes(model: torch.nn.Module, adapter: ModelAdapter, saes: Sequence[SAE], enc: Encoded,
                 folder: str | os.PathLike[str], shard_prompts: int = 4096, **kwargs: Any) -> Path:  # fmt: skip
    """:func:`collect_codes` in shards of ``shard_prompts`` prompts written to ``folder`` as they are done
    (memory bounded by one shard); :meth:`FeatureData.load` reads the folder back."""
    folder = Path(folder)
    for n, i in enumerate(range(0, len(enc.prompts), shard_prompts)):
        part = enc.rows(i, i + shard_prompts)
        collect_codes(model, adapter, saes, part, **kwargs).save(folder / f"shard{n:05d}.safetensors")
    return folder


@torch.no_grad()
def metric_with(model: torch.nn.Module, adapter: ModelAdapter, saes: Sequence[SAE], enc: Encoded,
                keep: Sequence[torch.Tensor] | None, batch_size: int = 32, pad_id: int = 0,
                patches: Sequence[Sequence[torch.Tensor]] | None = None, nodes: str = "all") -> float:  # fmt: skip
    """Mean task metric with the SAEs spliced in and the features outside ``keep`` ablated: zeroed,
    or with ``patches`` (:func:`counterfactual_codes` of the same ``enc`` and ``batch_size``) set
    to their counterfactual values; at every position, or (``nodes="last"``) at the last one only."""
    check_nodes(nodes)
    vals = []
    for b, (rows, ids, mask, last) in enumerate(prompt_batches(enc, batch_size, pad_id)):
        patch = None if patches is None else patches[b]
        at = last if nodes == "last" else None
        with spliced(adapter, saes, keep, batch_shape=tuple(ids.shape), patch=patch, at=at):
            logits = last_position_logits(model, ids, mask, last)
        vals.append(task_metric(logits, enc, rows))
    return float(torch.cat(vals).mean())
