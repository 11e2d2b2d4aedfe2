"""Memory: a rough estimate printed before a long run, and opt-in gradient checkpointing.

The estimate adds the weights, the float32 score accumulators of the scored layers, the per-sample
``dW`` buffers (chunked, see :mod:`circuitcut.attribution.collector`) and the activations a
forward + backward keeps (a standard per-token count for decoder layers plus the copies of the
batch's ``[B, T, V]`` logits the engine holds at its peak, :func:`logit_copies`). It is an order of
magnitude to plan with, not a guarantee: measure with ``benchmarks/scale.py``.

:func:`estimate_compression` adds the perplexity passes of ``compress`` (the decoder's states and
one chunk of logits, :mod:`circuitcut.evaluation.perplexity`), and :func:`check_fits` refuses a run
that cannot fit in the memory available (``CIRCUITCUT_MEMORY_LIMIT`` in GiB overrides what is read;
``CIRCUITCUT_SKIP_MEMORY_CHECK=1`` skips the check).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from circuitcut.attribution.collector import _CHUNK_ELEMENTS
from circuitcut.attribution.methods import method_spec
from circuitcut.errors import CircuitcutError
from circuitcut.models.adapter import ModelAdapter
from circuitcut.models.selection import select_linears

GIB = 1024**3

#: set to 1 to skip :func:`check_fits`
SKIP_ENV = "CIRCUITCUT_SKIP_MEMORY_CHECK"

#: the memory (GiB) a run may use, instead of what is available
LIMIT_ENV = "CIRCUITCUT_MEMORY_LIMIT"


def logit_copies(method: str, kinds: Sequence[str] = ("logit",), capped: bool = False) -> int:
    """Float32 copies of a scoring batch's ``[B, T, V]`` logits the engine holds at its peak, when
    every position is explained (next-token samples; measured on a 262k-vocabulary model): the
    logits, the explained rows gathered from them, and the gradients of both (3); a log-probability
    target adds its log-softmax and gradient (+2); Gemma's final soft-capping its intermediates (at
    least 5 under the plain backward, 7 under LRP's identity rule). A forward-only method holds the
    logits once (twice with soft-capping); weights-only methods none."""
    spec = method_spec(method)
    if spec.backward == "none":
        return 0
    if not spec.has_backward:
        return 2 if capped else 1
    copies = 3 + (2 if "logprob" in kinds else 0)
    if capped:
        copies = max(copies + 1, 7 if spec.backward == "lrp" else 5)
    return copies


def estimate_memory(
    adapter: ModelAdapter,
    batch_size: int,
    seqlen: int,
    method: str = "lrp",
    layers: str = "all",
    checkpointing: bool = False,
    kinds: Sequence[str] = ("logit",),
) -> dict[str, float]:
    """Rough peak memory (GiB) of one scoring batch, by part; ``kinds``: the samples' target kinds."""
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
    if not backward:  # a forward pass holds one layer's activations at a time; weights-only: none
        activations = per_layer if spec.backward != "none" else 0
    copies = logit_copies(method, kinds, bool(adapter.final_logit_softcap))
    parts = {
        "weights": param_bytes / GIB,
        "score_accumulators": acc / GIB,
        "per_sample_buffers": per_sample / GIB,
        "activations": activations / GIB,
        "logits": tokens * adapter.vocab_size * 4 * copies / GIB,
    }
    parts["total"] = sum(parts.values())
    return parts


def estimate_evaluation(adapter: ModelAdapter, batch_size: int, seqlen: int) -> dict[str, float]:
    """Rough peak memory (GiB) of a perplexity batch (:func:`~circuitcut.evaluation.perplexity_of_ids`):
    the weights, one decoder layer's activations and the final states, and one chunk of logits
    (with the log-softmax and gather around it: 3 float32 copies)."""
    from circuitcut.evaluation.perplexity import CHUNK_ELEMENTS

    model = adapter.model
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    tokens = batch_size * seqlen
    h, i, v = adapter.hidden_size, adapter.n_neurons, adapter.vocab_size
    rows = min(tokens, max(1, CHUNK_ELEMENTS // v))
    parts = {
        "weights": param_bytes / GIB,
        "activations": tokens * (12 * h + 4 * i + 2 * h) * 4 / GIB,
        "logits": rows * v * 4 * 3 / GIB,
    }
    parts["total"] = sum(parts.values())
    return parts


def format_estimate(parts: dict[str, float]) -> str:
    """One line for the log."""
    detail = ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in parts.items() if k != "total")
    return f"estimated peak memory per process: {parts['total']:.2f} GiB ({detail})"


def estimate_compression(
    adapter: ModelAdapter,
    batch_size: int,
    seqlen: int,
    eval_batch_size: int,
    eval_seqlen: int,
    method: str = "lrp",
    layers: str = "all",
) -> dict[str, float]:
    """Rough peak memory (GiB) of a compression run: the weights plus the larger of what the scoring
    pass (:func:`estimate_memory`, with its ``logits`` part) and a perplexity pass
    (:func:`estimate_evaluation`) add to them; they run one after the other."""
    scoring = estimate_memory(adapter, batch_size, seqlen, method, layers)
    evaluation = estimate_evaluation(adapter, eval_batch_size, eval_seqlen)
    weights = scoring["weights"]
    parts = {
        "weights": weights,
        "scoring": scoring["total"] - weights,
        "scoring_logits": scoring["logits"],
        "evaluation": evaluation["total"] - weights,
    }
    parts["total"] = weights + max(parts["scoring"], parts["evaluation"])
    return parts


def format_compression_estimate(parts: dict[str, float]) -> str:
    """One line for the log of a compression run."""
    return (
        f"estimated peak memory: {parts['total']:.2f} GiB (weights {parts['weights']:.2f}, then the larger of "
        f"scoring {parts['scoring']:.2f} of which its logits {parts['scoring_logits']:.2f}, "
        f"and a perplexity pass {parts['evaluation']:.2f})"
    )


def _meminfo_gib() -> float | None:
    """``MemAvailable`` of ``/proc/meminfo`` (or psutil's), capped by a cgroup v2 memory limit."""
    avail = None
    try:
        import psutil

        avail = psutil.virtual_memory().available / GIB
    except ImportError:
        info = Path("/proc/meminfo")
        if info.exists():
            for line in info.read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) / 1024**2
    cg_max, cg_now = Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")
    try:
        limit = cg_max.read_text().strip()
        if limit != "max":
            room = (int(limit) - int(cg_now.read_text().strip())) / GIB
            avail = room if avail is None else min(avail, room)
    except (OSError, ValueError):
        pass
    return avail


def available_memory_gib(device: torch.device | str | None = None) -> float | None:
    """Memory free now for a run on ``device`` (GiB): the GPU's free memory, else the host's
    available memory (cgroup limit included); ``None`` when it cannot be read."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.mem_get_info(device)[0] / GIB
    return _meminfo_gib()


def check_fits(
    parts: dict[str, float], device: torch.device | str | None = None, what: str = "this run"
) -> None:
    """Refuse, naming the fixes, when an estimate (with ``weights`` and ``total``) does not fit.

    With ``CIRCUITCUT_MEMORY_LIMIT`` (GiB) the whole estimate is compared with it; otherwise what the
    run adds to the loaded weights is compared with the memory available now.
    ``CIRCUITCUT_SKIP_MEMORY_CHECK=1`` skips the check.
    """
    if os.environ.get(SKIP_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return
    limit = os.environ.get(LIMIT_ENV, "").strip()
    if limit:
        try:
            have, need, of = float(limit), parts["total"], f"the limit {LIMIT_ENV}={limit}"
        except ValueError as exc:
            raise CircuitcutError(
                f"{LIMIT_ENV}={limit!r} is not a number of GiB; write e.g. {LIMIT_ENV}=16"
            ) from exc
    else:
        free = available_memory_gib(device)
        if free is None:
            return
        have, need, of = (
            free,
            parts["total"] - parts["weights"],
            "the memory available beside the loaded model",
        )
    if need > have:
        raise CircuitcutError(
            f"{what} needs about {need:.2f} GiB but {of} is {have:.2f} GiB; "
            f"{format_compression_estimate(parts) if 'scoring' in parts else format_estimate(parts)}. Lower "
            "--batch-size or --seqlen (the scoring pass holds copies of its [batch, seqlen, vocabulary] "
            f"logits), or set {SKIP_ENV}=1 to run anyway"
        )


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
