"""Applying masks: reversibly (restored bit for bit) or permanently, and exporting a pruned model."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from circuitcut.errors import CircuitcutError
from circuitcut.io import write_json
from circuitcut.models.adapter import ModelAdapter
from circuitcut.pruning.ablation import add_to_output, mean_corrections
from circuitcut.pruning.masks import Mask
from circuitcut.pruning.patching import CounterfactualInputs, patch_hooks


def _targets(adapter: ModelAdapter, mask: Mask) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
    out = []
    for name, m in mask.weights.items():
        w = adapter.linear(name).weight
        if w.is_meta:  # zeroing a meta tensor would silently do nothing
            raise CircuitcutError(
                f"{name} is offloaded by accelerate (its weight is on the meta device and is read from the "
                "offload folder at each forward), so it cannot be pruned in place; load the model with a "
                "device_map that keeps the pruned layers in memory (CPU or GPU), or without offloading"
            )
        lin = adapter.linear(name)
        if tuple(m.shape) != lin.shape:
            raise CircuitcutError(
                f"mask for {name} has shape {tuple(m.shape)} but the weight is {lin.shape} (out x in); "
                "the mask was made for another model"
            )
        out.append((w, lin.as_out_in(m).to(w.device)))
    return out


@torch.no_grad()
def apply_mask(adapter: ModelAdapter, mask: Mask) -> dict[str, Any]:
    """Zero the masked weights in place (permanent). Returns the sparsity report."""
    for w, m in _targets(adapter, mask):
        w.masked_fill_(m, 0)
    return sparsity_report(adapter, mask)


@contextmanager
def masked(
    adapter: ModelAdapter, mask: Mask, means: dict[str, torch.Tensor] | CounterfactualInputs | None = None
) -> Iterator[dict[str, Any]]:
    """Zero the masked weights for the duration of the block, then restore them bit for bit.

    Only the masked entries are copied aside, so the cost is proportional to what is pruned. They
    are put back in reverse order, so a matrix the mask names twice (a tied embedding, as
    ``embed_tokens`` and ``lm_head``) ends as it began. With ``means`` (each masked layer's mean
    input, :func:`circuitcut.pruning.ablation.input_means`) the pruning is a mean ablation: each
    layer also adds what its pruned weights pass on at the mean input, by a forward hook removed on
    exit (:mod:`circuitcut.pruning.ablation`); with counterfactual inputs
    (:func:`circuitcut.pruning.patching.counterfactual_inputs`) it passes on their input on the
    counterfactual prompt, batch by batch (:mod:`circuitcut.pruning.patching`).
    """
    targets = _targets(adapter, mask)
    hooks = []
    with torch.no_grad():
        if isinstance(means, CounterfactualInputs):
            hooks = patch_hooks(adapter, mask.weights, means)
        elif means is not None:
            corrections = mean_corrections(adapter, mask.weights, means)
            hooks = [add_to_output(adapter.linear(n).module, d) for n, d in corrections.items()]
        saved = []
        for w, m in targets:
            saved.append((w, m, w[m].clone()))
            w.masked_fill_(m, 0)
    try:
        yield sparsity_report(adapter, mask)
    finally:
        for h in hooks:
            h.remove()
        with torch.no_grad():
            for w, m, values in reversed(saved):
                w[m] = values


def sparsity_report(adapter: ModelAdapter, mask: Mask) -> dict[str, Any]:
    """Per-layer and overall share of zero weights among the masked layers, and mask counts."""
    layers = []
    zeros_total = numel_total = 0
    for name, m in mask.weights.items():
        w = adapter.linear(name).weight
        zeros = int((w == 0).sum())
        layers.append({"layer": name, "masked": int(m.sum()), "zeros": zeros, "total": w.numel(),
                       "sparsity": round(zeros / w.numel(), 6)})  # fmt: skip
        zeros_total += zeros
        numel_total += w.numel()
    return {
        "layers": layers,
        "masked": mask.pruned(),
        "covered": numel_total,
        "sparsity": round(zeros_total / max(1, numel_total), 6),
    }


def export_pruned(
    model: torch.nn.Module,
    tokenizer: Any,
    adapter: ModelAdapter,
    mask: Mask,
    output: str | os.PathLike[str],
    report: dict[str, Any] | None = None,
) -> Path:
    """Write the pruned model (``save_pretrained``), its tokenizer, the mask and a JSON of what was
    pruned and why. The model's weights are zeroed in place first."""
    out = Path(output)
    apply_report = apply_mask(adapter, mask)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    mask.save(out / "mask.safetensors")
    write_json(out / "pruning.json", {"mask": mask.meta, "sparsity": apply_report, **(report or {})})
    return out
