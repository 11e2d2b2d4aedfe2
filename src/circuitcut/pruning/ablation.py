"""Mean ablation: what a pruned weight passes on is its average contribution instead of nothing.

Zero ablation, the default everywhere, sets pruned weights to 0, so a pruned neuron or head
contributes nothing at all. Mean ablation (Wang et al., "Interpretability in the Wild", ICLR 2023,
for IOI circuits; one of the ablations MIB compares) replaces a pruned component's output by its
mean over reference inputs, which removes the information it carries while leaving the average
signal downstream layers expect.

For a linear layer ``y = W x`` with pruned entries ``P`` (a boolean mask), the mean-ablated layer
computes ``(W masked to zero) x + (W * P) mu``, where ``mu`` is the layer's mean input over the
reference tokens, measured on the unpruned model: each pruned weight passes on ``W_ij mu_j``.
For a unit mask (the input columns of the down projection for neurons, of the output projection
for heads, :meth:`~circuitcut.models.adapter.ModelAdapter.neuron_site`) this is exactly the pruned
neuron's or head's output replaced by its mean. The correction is a constant vector per layer,
added by a forward hook for the duration of :func:`~circuitcut.pruning.masked` only.

Choice of ours (the paper ablates by zeroing): the mean is over every non-padding token of the
reference prompts, not per position, since IOI prompts differ in length.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from circuitcut.attribution.targets import pad_batch
from circuitcut.errors import CircuitcutError
from circuitcut.models.adapter import ModelAdapter, input_device


@torch.no_grad()
def input_means(
    model: torch.nn.Module,
    adapter: ModelAdapter,
    names: Sequence[str],
    prompts: Sequence[Sequence[int]],
    batch_size: int = 64,
    pad_id: int = 0,
) -> dict[str, torch.Tensor]:
    """The mean input of each named linear layer over every real (non-padding) token of ``prompts``,
    float32 on the CPU, measured on the model as it is."""
    if not prompts:
        raise CircuitcutError("mean ablation needs reference prompts to average over; got none")
    sums: dict[str, torch.Tensor] = {}
    count = 0
    current: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].float()
            keep = current["mask"].to(x.device, x.dtype).unsqueeze(-1)
            total = (x * keep).sum(dim=tuple(range(x.dim() - 1))).cpu()
            sums[name] = sums[name] + total if name in sums else total

        return record

    handles = [adapter.linear(n).module.register_forward_pre_hook(hook(n)) for n in dict.fromkeys(names)]
    device = input_device(model)
    try:
        for i in range(0, len(prompts), batch_size):
            ids, mask = pad_batch(prompts[i : i + batch_size], pad_id)
            current["mask"] = mask
            model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
            count += int(mask.sum())
    finally:
        for h in handles:
            h.remove()
    return {name: s / count for name, s in sums.items()}


def mean_corrections(
    adapter: ModelAdapter, pruned: dict[str, torch.Tensor], means: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Per layer, ``(W * P) mu``: what the pruned weights pass on under mean ablation (``pruned`` maps
    a layer to its ``[out, in]`` boolean mask, read before the weights are zeroed)."""
    out = {}
    for name, m in pruned.items():
        if name not in means:
            raise CircuitcutError(
                f"no mean input for {name}: the means were measured for other layers ({', '.join(means)}); "
                "measure them for the layers the mask prunes"
            )
        lin = adapter.linear(name)
        w = lin.as_out_in(lin.weight.detach()).float()
        mu = means[name].to(w.device)
        out[name] = (w * m.to(w.device)) @ mu
    return out


def add_to_output(module: torch.nn.Module, delta: torch.Tensor) -> torch.utils.hooks.RemovableHandle:
    """A forward hook adding the constant ``delta`` to ``module``'s output (removed by the caller)."""

    def hook(mod: torch.nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        return output + delta.to(output.device, output.dtype)

    return module.register_forward_hook(hook)
