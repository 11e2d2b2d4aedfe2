"""Memory: a rough estimate printed before a long run, and opt-in gradient checkpointing.

The estimate adds the weights, the float32 score accumulators of the scored layers, the per-sample
``dW`` buffers (chunked, see :mod:`circuitcut.attribution.collector`) and the activations a
forward + backward keeps (a standard per-token count for decoder layers plus the logits and their
gradient). It is an order of magnitude to plan with, not a guarantee: measure with
``benchmarks/scale.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from circuitcut.attribution.collector import _CHUNK_ELEMENTS
from circuitcut.attribution.methods import method_spec
from circuitcut.errors import CircuitcutError
from circuitcut.models.adapter import ModelAdapter
from circuitcut.models.selection import select_linears

GIB = 1024**3


def estimate_memory(
    adapter: ModelAdapter,
    batch_size: int,
    seqlen: int,
    method: str = "lrp",
    layers: str = "all",
    checkpointing: bool = False,
) -> dict[str, float]:
    """Rough peak memory (GiB) of one scoring batch, by part."""
    spec = method_spec(method)
    model = adapter.model
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    scored = select_linears(adapter, layers) if "weight" in spec.levels else []
    acc = sum(lin.weight.numel() for lin in scored) * 4
    biggest = max((lin.weight.numel() for lin in scored), default=0)
    backward = spec.has_backward
    per_sample = 2 * 4 * max(biggest, min(batch_size * biggest, _CHUNK_ELEMENTS)) if backward else 0
    tokens = batch_size * seqlen
    h, i, n = adapter.hidden_size, adapter.n_neurons, adapter.n_layers
    per_layer = tokens * (12 * h + 4 * i) * 4  # saved inputs/outputs of norms, projections, activations
    activations = (tokens * h * 4 * n + per_layer) if checkpointing else per_layer * n
    logits = tokens * adapter.vocab_size * 4 * (2 if backward else 1)
    parts = {
        "weights": param_bytes / GIB,
        "score_accumulators": acc / GIB,
        "per_sample_buffers": per_sample / GIB,
        "activations": (activations if backward else per_layer) / GIB,
        "logits": logits / GIB,
    }
    parts["total"] = sum(parts.values())
    return parts


def format_estimate(parts: dict[str, float]) -> str:
    """One line for the log."""
    detail = ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in parts.items() if k != "total")
    return f"estimated peak memory per process: {parts['total']:.2f} GiB ({detail})"


@contextmanager
def gradient_checkpointing(adapter: ModelAdapter, enabled: bool = True) -> Iterator[None]:
    """Recompute each decoder layer in the backward (transformers' own checkpointing), then restore.

    transformers checkpoints a layer only in training mode; the layer modules alone are flagged as
    training (their children, dropout included, stay in eval mode), so outputs are unchanged.
    """
    if not enabled:
        yield
        return
    model = adapter.model
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise CircuitcutError(f"{type(model).__name__} does not support gradient checkpointing")
    was_on = bool(getattr(model, "is_gradient_checkpointing", False))
    flags = [(layer.module, layer.module.training) for layer in adapter.layers]
    # enabling also registers a hook making the embeddings' output require grad (for frozen-weight
    # fine-tuning); the engine's inputs already require grad, so that hook is removed at once and
    # the attributes it leaves are put back as they were
    names = ("_require_grads_hook", "_require_grads_hooks")
    saved = {k: getattr(model, k) for k in names if k in vars(model)}
    prior_hooks = list(saved.get("_require_grads_hooks") or [])
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name is deprecated
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    for hook in getattr(model, "_require_grads_hooks", None) or []:
        if hook not in prior_hooks:
            hook.remove()
    for k in names:
        if k in saved:
            setattr(model, k, saved[k])
        elif k in vars(model):
            delattr(model, k)
    for layer in adapter.layers:
        layer.module.training = True
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag
        if not was_on:
            disable = (
                getattr(model, "activation_checkpointing_disable", None)
                or model.gradient_checkpointing_disable
            )
            disable()


def _status_mib(field: str, what: str) -> float:
    """A memory line of ``/proc/self/status`` (reported in kB) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise CircuitcutError(f"{what} is read from /proc/self/status (Linux only)")


def peak_rss_mib() -> float:
    """This process's peak resident memory (Linux ``VmHWM``) in MiB."""
    return _status_mib("VmHWM", "peak memory")


def current_rss_mib() -> float:
    """This process's resident memory now (Linux ``VmRSS``) in MiB."""
    return _status_mib("VmRSS", "resident memory")


def reset_peak_rss() -> None:
    """Reset the kernel's high-water mark of this process (Linux)."""
    Path("/proc/self/clear_refs").write_text("5")
