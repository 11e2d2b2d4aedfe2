"""Counterfactual patching: a pruned component passes on what it computes on the counterfactual prompt.

The ablation of the circuit literature (ACDC, Conmy et al. 2023; EAP-IG, Hanna et al. 2024; MIB,
Mueller et al. 2025): a component outside the circuit takes its activation from a corrupted run
(for IOI the same sentence with other names), example by example and position by position, so a
circuit must keep what the task needs, not what keeps the model's activations in range. Zero
ablation measures the latter.

For a linear layer ``y = W x`` with pruned entries ``P`` (a boolean mask), the patched layer computes
``(W masked to zero) x + (W * P) x'``, where ``x'`` is the layer's input on the counterfactual
prompt, measured once on the unpruned model: each pruned weight passes on ``W_ij x'_j``. For a unit
mask (the input columns of the down projection for neurons, of the output projection for heads) this
is exactly the pruned neuron's or head's output replaced by its output on the counterfactual prompt.
With every decoder linear pruned, every layer's output is the counterfactual run's, and so is the
last position's residual stream when the two prompts end in the same token: the metric is the
corrupted model's (tested).

The counterfactual inputs are recorded for the evaluation prompts in the batches the evaluation
runs them in; a forward pre-hook on the input embeddings counts the batches, and a batch of another
shape than the recorded one is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from circuitcut.attribution.targets import pad_batch
from circuitcut.errors import CircuitcutError
from circuitcut.models.adapter import ModelAdapter, input_device
from circuitcut.tasks.base import Encoded


@dataclass
class CounterfactualInputs:
    """Each named linear layer's input on the counterfactual prompts, batch by batch (float32, CPU)."""

    batches: list[dict[str, torch.Tensor]]
    shapes: list[tuple[int, int]]
    batch_size: int
    #: the batch the next forward runs (set by the counter hook)
    cursor: list[int] = field(default_factory=lambda: [-1], repr=False)


@torch.no_grad()
def counterfactual_inputs(
    model: torch.nn.Module,
    adapter: ModelAdapter,
    names: Sequence[str],
    task: Encoded,
    batch_size: int = 64,
    pad_id: int = 0,
) -> CounterfactualInputs:
    """The inputs of the named linear layers on the counterfactual prompts of an encoded task,
    recorded in batches of ``batch_size`` as the evaluation of its prompts will run them, on the
    model as it is."""
    prompts = task.corrupted().prompts
    if not prompts:
        raise CircuitcutError("counterfactual patching needs counterfactual prompts; the task has none")
    current: dict[str, torch.Tensor] = {}
    # q, k and v read one tensor: one copy; the tensor itself is held until the forward ends, so its
    # memory (the key) cannot be reused by another layer's input meanwhile
    seen: dict[tuple[int, tuple[int, ...]], tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0]
            key = (x.data_ptr(), tuple(x.shape))
            if key not in seen:
                seen[key] = (x, x.detach().float().cpu())
            current[name] = seen[key][1]

        return record

    handles = [adapter.linear(n).module.register_forward_pre_hook(hook(n)) for n in dict.fromkeys(names)]
    device = input_device(model)
    out = CounterfactualInputs([], [], batch_size)
    try:
        for i in range(0, len(prompts), batch_size):
            ids, mask = pad_batch(prompts[i : i + batch_size], pad_id)
            current.clear()
            seen.clear()
            model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
            out.batches.append(dict(current))
            out.shapes.append((ids.shape[0], ids.shape[1]))
    finally:
        for h in handles:
            h.remove()
    return out


def patch_hooks(
    adapter: ModelAdapter, pruned: dict[str, torch.Tensor], source: CounterfactualInputs
) -> list[torch.utils.hooks.RemovableHandle]:
    """Hooks adding ``(W * P) x'`` to each pruned layer's output for the batch being run (``pruned``
    maps a layer to its ``[out, in]`` boolean mask; read before the weights are zeroed)."""
    source.cursor[0] = -1
    missing = [n for n in pruned if source.batches and n not in source.batches[0]]
    if missing:
        raise CircuitcutError(
            f"no counterfactual input for {', '.join(missing[:3])}: the inputs were recorded for other layers; "
            "record them for the layers the mask prunes"
        )
    handles = [adapter.model.get_input_embeddings().register_forward_pre_hook(_counter(source))]
    for name, m in pruned.items():
        lin = adapter.linear(name)
        w = lin.as_out_in(lin.weight.detach()).float()
        handles.append(lin.module.register_forward_hook(_adder(name, w * m.to(w.device), source)))
    return handles


def _counter(source: CounterfactualInputs) -> Callable[..., None]:
    def count(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        source.cursor[0] += 1
        i = source.cursor[0]
        shape = tuple(args[0].shape[:2])
        if i >= len(source.shapes) or shape != source.shapes[i]:
            want = source.shapes[i] if i < len(source.shapes) else "none"
            raise CircuitcutError(
                f"counterfactual patching: batch {i} has shape {shape}, the recorded counterfactual batch {want}; "
                "evaluate the prompts the inputs were recorded for, in batches of the same size"
            )

    return count


def _adder(name: str, wp: torch.Tensor, source: CounterfactualInputs) -> Callable[..., torch.Tensor]:
    def add(module: torch.nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        x = source.batches[max(source.cursor[0], 0)][name].to(output.device)
        delta = x @ wp.to(output.device).t()
        return output + delta.reshape(output.shape).to(output.dtype)

    return add
