"""Feature node scores by gradients: attribution patching and integrated gradients, the baselines of CircuitLasso.

With the SAEs spliced in (:func:`~circuitcut.lasso.features.spliced`, error terms kept), each
feature's score is the absolute value, per prompt, of its first-order effect on the task metric
``m`` summed over positions, averaged over prompts:

* attribution patching against zero (Syed et al. 2023; Marks et al., "Sparse Feature Circuits",
  2024): ``|sum_t dm/dz_t * z_t|``;
* attribution patching against the counterfactual: ``|sum_t dm/dz_t * (z_t - z'_t)|``, with ``z'`` the
  codes on the counterfactual prompt (same length, position by position);
* integrated gradients (the EAP-IG-inputs path of Hanna et al., "Have Faith in Faithfulness", 2024):
  the input embeddings go from the counterfactual prompt's to the prompt's in ``steps`` points
  ``e' + (j / steps) (e - e')``, ``j = 1..steps``; the gradient with respect to every feature is averaged over
  the points and multiplied by ``z - z'``. With one step this is attribution patching against the
  counterfactual (tested).

Attribution patching against zero also gives edge scores for the top nodes (one backward per
downstream node, as in sparse feature circuits). Every function counts the model passes it ran
(``passes``: forward and backward separately), the cost :mod:`benchmarks` reports.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from circuitcut.errors import CircuitcutError
from circuitcut.lasso.features import batch_codes, check_nodes, prompt_batches, spliced, task_metric
from circuitcut.lasso.sae import SAE
from circuitcut.models.adapter import ModelAdapter, input_device
from circuitcut.tasks.base import Encoded, last_position_logits


@torch.no_grad()
def node_effects(delta: torch.Tensor, grad: torch.Tensor, mask: torch.Tensor, last: torch.Tensor,
                 nodes: str) -> torch.Tensor:  # fmt: skip
    """``|first-order effect|`` of each feature ``[d_sae]``, summed over a batch's prompts: ``delta * grad``
    summed over the real positions (nodes "all") or taken at the last position (nodes "last")."""
    effect = delta * grad
    if nodes == "last":
        per_prompt = effect[torch.arange(effect.shape[0]), last.to(effect.device)]
    else:
        per_prompt = (effect * mask[..., None].to(effect.dtype)).sum(1)
    return per_prompt.abs().sum(0).cpu()


def counterfactual_codes(model: torch.nn.Module, adapter: ModelAdapter, saes: Sequence[SAE], enc: Encoded,
                         batch_size: int = 32, pad_id: int = 0) -> list[list[torch.Tensor]]:  # fmt: skip
    """Per batch of ``enc`` (in :func:`prompt_batches` order), per site: the codes ``[B, T, d_sae]``
    on the counterfactual prompts, for counterfactual ablation and attribution (the forward pass
    ends after the deepest site: :func:`~circuitcut.lasso.features.batch_codes`)."""
    return [codes for _, _, codes in batch_codes(model, adapter, saes, enc.corrupted(), batch_size, pad_id)]


def attribution_patching(model: torch.nn.Module, adapter: ModelAdapter, saes: Sequence[SAE], enc: Encoded,
                         batch_size: int = 32, pad_id: int = 0, edges_per_site: int = 0,
                         patches: Sequence[Sequence[torch.Tensor]] | None = None, nodes: str = "all") -> dict:  # fmt: skip
    """Node scores of every feature against zero, or against ``patches`` (:func:`counterfactual_codes`
    of the same ``enc`` and ``batch_size``), see the module docstring, at every position or (``nodes``
    "last") at the last one; with ``edges_per_site``, edge scores from each site's features into the
    top nodes of the next. Returns ``{"nodes", "edges", "passes"}``."""
    check_nodes(nodes)
    scores = [torch.zeros(s.d_sae) for s in saes]
    edges: dict[tuple[int, int], torch.Tensor] = {}
    n, passes = 0, 0
    for b, (rows, ids, mask, last) in enumerate(prompt_batches(enc, batch_size, pad_id)):
        rec: list[torch.Tensor] = []
        with spliced(adapter, saes, batch_shape=tuple(ids.shape), record=rec):
            m = task_metric(last_position_logits(model, ids, mask, last), enc, rows).sum()
            grads = torch.autograd.grad(m, rec, retain_graph=edges_per_site > 0)
        passes += 2
        for k, (z, g) in enumerate(zip(rec, grads, strict=True)):
            delta = z.detach() if patches is None else z.detach() - patches[b][k]
            scores[k] += node_effects(delta, g, mask, last, nodes)
        if edges_per_site:
            passes += _edges(saes, rec, grads, mask[..., None].float(), scores, edges, edges_per_site)
        n += len(last)
    return {"nodes": [x / n for x in scores], "edges": edges, "passes": passes}


def _edges(saes: Sequence[SAE], rec: list[torch.Tensor], grads: Sequence[torch.Tensor], valid: torch.Tensor,
           nodes: list[torch.Tensor], edges: dict, per_site: int) -> int:  # fmt: skip
    """Add one batch's edge scores into the top ``per_site`` nodes of each site; returns the backward passes."""
    passes = 0
    for k in range(1, len(saes)):
        top = torch.topk(nodes[k], min(per_site, saes[k].d_sae)).indices
        acc = edges.setdefault((k - 1, k), torch.zeros(saes[k - 1].d_sae, saes[k].d_sae))
        for v in top.tolist():
            # d(z_v summed over positions)/d(upstream codes) * upstream activation * dm/dz_v
            dv = torch.autograd.grad((rec[k][..., v] * valid[..., 0]).sum(), rec[k - 1], retain_graph=True)[0]
            w = (grads[k][..., v] * valid[..., 0]).sum() / valid.sum()
            acc[:, v] += ((dv * rec[k - 1].detach()) * valid).sum((0, 1)).abs() * float(w.abs())
            passes += 1
    return passes


def integrated_gradients(model: torch.nn.Module, adapter: ModelAdapter, saes: Sequence[SAE], enc: Encoded,
                         steps: int = 5, batch_size: int = 32, pad_id: int = 0,
                         patches: Sequence[Sequence[torch.Tensor]] | None = None, nodes: str = "all") -> dict:  # fmt: skip
    """Integrated-gradients node scores along the embedding path from the counterfactual prompts to the
    prompts (module docstring), at every position or (``nodes`` "last") at the last one. ``patches``
    (:func:`counterfactual_codes`) are computed when not given. Returns ``{"nodes", "passes"}``."""
    check_nodes(nodes)
    if steps < 1:
        raise CircuitcutError(f"steps must be >= 1, got {steps}")
    passes = 0
    if patches is None:
        patches = counterfactual_codes(model, adapter, saes, enc, batch_size, pad_id)
        passes += len(patches)
    embed = model.get_input_embeddings()
    device = input_device(model)
    corrupted = enc.corrupted()
    scores = [torch.zeros(s.d_sae) for s in saes]
    n = 0
    batches = zip(
        prompt_batches(enc, batch_size, pad_id), prompt_batches(corrupted, batch_size, pad_id), strict=True
    )
    for b, ((rows, ids, mask, last), (_, cids, _, _)) in enumerate(batches):
        with torch.no_grad():
            clean, counter = embed(ids.to(device)), embed(cids.to(device))
        total: list[torch.Tensor] | None = None
        codes: list[torch.Tensor] = []
        for j in range(steps, 0, -1):  # the prompt itself first: its codes are z
            rec: list[torch.Tensor] = []
            point = counter + (j / steps) * (clean - counter)
            with spliced(adapter, saes, batch_shape=tuple(ids.shape), record=rec):
                logits = last_position_logits(
                    model, None, mask.to(device), last.to(device), inputs_embeds=point
                )
                grads = torch.autograd.grad(task_metric(logits, enc, rows).sum(), rec)
            passes += 2
            if j == steps:
                codes = [r.detach() for r in rec]
            total = (
                [g.detach() for g in grads]
                if total is None
                else [t + g for t, g in zip(total, grads, strict=True)]
            )
        assert total is not None
        for k in range(len(saes)):
            scores[k] += node_effects(codes[k] - patches[b][k], total[k] / steps, mask, last, nodes)
        n += len(last)
    return {"nodes": [x / n for x in scores], "passes": passes}
