"""The attribution engine: LRP and baseline scores per weight, neuron and head, over samples.

:func:`attribute` streams reference samples batch by batch, runs one forward (and, for gradient
methods, one backward to the input embeddings) per batch, and returns a :class:`~circuitcut.scores.Scores`.
:func:`explain` returns per-token input relevance of single samples (for heatmaps).

Methods:

* ``lrp``: AttnLRP (or CP-LRP with ``variant="cp-lrp"``) relevance, ``W * dW`` under the LRP
  backward; neurons and heads ``x * dx`` at their sites.
* ``gradient``: the same quantities under the plain gradient (gradient x weight / x input).
* ``gradient_magnitude``: the plain gradient alone, ``dW`` and ``dx``.
* ``wanda``: ``|W_ij| * ||X_j||_2`` over calibration tokens (Sun et al., "A Simple and Effective
  Pruning Approach for Large Language Models", 2023).
* ``magnitude``: ``|W|``, no data.

  For both, a neuron or head scores the sum of its weights' scores over the columns it feeds in the
  down / attention output projection (a circuitcut extension: the papers score weights only).
* ``activation``: summed ``|a|`` at each neuron and L2 norm of each head's output, over tokens.
* ``random``: uniform scores from a seeded generator, for every level.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from typing import Any

import torch
from tqdm.auto import tqdm

from circuitcut.attribution.baselines import random_scores, units_from_weights
from circuitcut.attribution.collector import AGGREGATIONS, ActivationCollector, GradientCollector
from circuitcut.attribution.memory import gradient_checkpointing as checkpointing_ctx
from circuitcut.attribution.methods import LEVELS, METHODS, VARIANTS, check_lrp_rules
from circuitcut.attribution.rules import IdentityRule, LRPRules, eval_mode
from circuitcut.attribution.streaming import Checkpointer, fingerprint, run_batches
from circuitcut.attribution.targets import Sample, collate, explained_outputs, seed_weights
from circuitcut.distributed import is_main_process
from circuitcut.errors import CircuitcutError
from circuitcut.models.adapter import LinearInfo, ModelAdapter, execution_device, get_adapter
from circuitcut.scores import Scores


def select_linears(
    adapter: ModelAdapter,
    layers: str | Sequence[str] | None = None,
    include_embeddings: bool = False,
) -> list[LinearInfo]:
    """The linear layers matching glob patterns on their readable names.

    ``None`` or ``"all"`` selects every decoder linear; ``"attn"`` and ``"mlp"`` select a group;
    other patterns are globs such as ``*.mlp.fc1`` or ``layers.[0-3].*``. Embeddings and the LM
    head are only included with ``include_embeddings`` (or when a pattern names them).
    """
    candidates = adapter.linears(include_embeddings=True)
    if layers is None or layers == "all":
        patterns = ["layers.*"]
    elif isinstance(layers, str):
        patterns = [p.strip() for p in layers.split(",") if p.strip()]
    else:
        patterns = list(layers)
    if not patterns:
        raise CircuitcutError("empty layer selection; pass a pattern such as 'all' or '*.mlp.*'")
    expanded = []
    for p in patterns:
        expanded.append({"attn": "layers.*.attn.*", "mlp": "layers.*.mlp.*"}.get(p, p))
    chosen = []
    for lin in candidates:  # compute order: embeddings, decoder layers, an untied LM head
        if lin.role in ("embed", "lm_head"):  # only when asked for, or named exactly
            # a tied LM head is the embedding matrix, listed once as embed_tokens
            if include_embeddings or any(
                p == lin.name or (p == "lm_head" and adapter.tied) for p in expanded
            ):
                chosen.append(lin)
        elif any(fnmatch.fnmatchcase(lin.name, p) for p in expanded):
            chosen.append(lin)
    if not chosen:
        example = adapter.linears()[0].name
        raise CircuitcutError(
            f"layer pattern {layers!r} matches no linear layer; names look like {example!r} "
            "(`circuitcut inspect MODEL` lists them)"
        )
    return chosen


def _batches(samples: Sequence[Sample], batch_size: int) -> Iterable[list[Sample]]:
    for i in range(0, len(samples), batch_size):
        yield list(samples[i : i + batch_size])


def _model_device(model: torch.nn.Module) -> torch.device:
    return execution_device(model.get_input_embeddings())


def _forward_logits(
    adapter: ModelAdapter,
    embeds: torch.Tensor,
    mask: torch.Tensor,
    lrp: bool,
) -> torch.Tensor:
    """Run the model on input embeddings; return logits, with the identity rule on soft-capping."""
    captured: dict[str, torch.Tensor] = {}
    head = adapter.lm_head.module if adapter.lm_head is not None else None
    cap = adapter.final_logit_softcap
    handle = None
    if cap and head is not None:
        handle = head.register_forward_hook(lambda m, a, o: captured.__setitem__("z", o))
    try:
        out = adapter.model(inputs_embeds=embeds, attention_mask=mask, use_cache=False)
    finally:
        if handle is not None:
            handle.remove()
    if not cap or head is None:
        return out.logits
    z = captured["z"]
    capped = torch.tanh(z / cap) * cap
    # identity rule through the soft-capping (AttnLRP: elementwise squashing passes relevance)
    return IdentityRule.apply(z, capped.detach(), 1e-6) if lrp else capped


def _gradient_pass(
    adapter: ModelAdapter,
    batch: list[Sample],
    pad_id: int,
    lrp: bool,
    seed_mode: str,
    collector: GradientCollector | None,
    embed_sum: torch.Tensor | None,
) -> torch.Tensor:
    """Forward + backward of one batch; returns the per-token input relevance ``[B, T]``."""
    device = _model_device(adapter.model)
    ids, mask = collate(batch, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    if collector is not None:
        collector.batch_shape = (ids.shape[0], ids.shape[1])
    embeds = adapter.model.get_input_embeddings()(ids).detach().requires_grad_(True)
    logits = _forward_logits(adapter, embeds, mask, lrp)
    values, _rows = explained_outputs(logits, batch)
    seeds = seed_weights(values, seed_mode)
    total = (seeds * values).sum()
    (grad,) = torch.autograd.grad(total, embeds)
    if collector is not None:
        collector.batch_shape = None
    rel = (embeds.detach().float() * grad.float()) * mask[..., None]
    if embed_sum is not None and collector is not None:
        _accumulate_embedding(embed_sum, ids, mask, rel, collector.aggregation)
    return rel.sum(-1)


def _accumulate_embedding(
    store: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, rel: torch.Tensor, agg: str
) -> None:
    """Embedding-matrix relevance: each token's input relevance, summed into its vocabulary row."""
    for b in range(ids.shape[0]):
        real = mask[b].bool()
        tok, r = ids[b][real], rel[b][real]
        uniq, inv = torch.unique(tok, return_inverse=True)
        zeros = torch.zeros(len(uniq), r.shape[-1], device=r.device)
        if agg == "token_l2":
            per_tok = zeros.index_add_(0, inv, r.square()).sqrt()
        else:
            per_tok = zeros.index_add_(0, inv, r.abs() if agg == "token_abs" else r)
            per_tok = per_tok.abs() if agg == "abs" else per_tok
        store.index_add_(0, uniq.to(store.device), per_tok.to(store.device))


def attribute(
    model: torch.nn.Module,
    samples: Sequence[Sample],
    method: str = "lrp",
    *,
    adapter: ModelAdapter | None = None,
    levels: Sequence[str] | None = None,
    layers: str | Sequence[str] | None = None,
    include_embeddings: bool = False,
    variant: str = "attnlrp",
    seed_mode: str = "unit",
    aggregation: str = "abs",
    batch_size: int = 8,
    pad_id: int = 0,
    seed: int = 0,
    progress: bool = True,
    provenance: dict[str, Any] | None = None,
    checkpoint: str | None = None,
    checkpoint_every: int = 50,
    gradient_checkpointing: bool = False,
    lrp_rules: Sequence[str] | None = None,
) -> Scores:
    """Score every weight element, MLP neuron and attention head, averaged over samples.

    Args:
        model: a Hugging Face causal LM (left unchanged).
        samples: reference samples (see :mod:`circuitcut.attribution.targets`).
        method: one of :data:`METHODS`.
        adapter: the model's adapter (built if omitted).
        levels: any of ``weight``, ``neuron``, ``head`` (default: all the method supports).
        layers: which linear layers get weight scores (see :func:`select_linears`).
        include_embeddings: also score the embedding matrix and an untied LM head.
        variant: LRP variant, ``attnlrp`` or ``cp-lrp``.
        seed_mode: ``unit`` (each explained output carries relevance 1) or ``value``.
        aggregation: ``abs`` (per-sample absolute relevance, the default), ``token_abs`` (absolute
            relevance of every token, then sums) or ``signed``.
        batch_size: samples per forward/backward; scores do not depend on it.
        pad_id: token used to right-pad batches (masked out).
        seed: seed of the ``random`` method.
        progress: show a progress bar.
        provenance: extra fields for the Scores sidecar (model id, data file...).
        checkpoint: path prefix for partial accumulators; a rerun with the same samples and
            settings resumes from it (see :mod:`circuitcut.attribution.streaming`).
        checkpoint_every: batches between checkpoints.
        gradient_checkpointing: recompute decoder layers in the backward (less memory, more time).
        lrp_rules: with ``method="lrp"``, the rules to install among
            :data:`~circuitcut.attribution.methods.LRP_RULES` (default all: the variant's LRP); e.g.
            without ``attention_scores`` and ``attention_values`` attention keeps its gradient.

    Under ``torchrun`` / ``accelerate launch`` (an initialised process group), the batches are
    shared among the processes and the sums all-reduced: every process returns the same Scores.

    Returns:
        :class:`~circuitcut.scores.Scores`: means over samples of the per-sample scores.
    """
    if method not in METHODS:
        raise CircuitcutError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if aggregation not in AGGREGATIONS:
        raise CircuitcutError(f"unknown aggregation {aggregation!r}; use one of {AGGREGATIONS}")
    if variant not in VARIANTS:
        raise CircuitcutError(f"unknown LRP variant {variant!r}; use one of {', '.join(VARIANTS)}")
    if batch_size < 1:
        raise CircuitcutError(f"batch_size must be >= 1, got {batch_size}")
    rules = check_lrp_rules(lrp_rules, method)
    supported = METHODS[method]
    levels = tuple(supported if levels is None else levels)
    bad = [lv for lv in levels if lv not in supported]
    if bad:
        raise CircuitcutError(
            f"method {method!r} cannot score {', '.join(bad)}; it scores {', '.join(supported)}"
        )
    adapter = adapter or get_adapter(model)
    linears = select_linears(adapter, layers, include_embeddings) if "weight" in levels else []
    if method in ("wanda", "magnitude") and ("neuron" in levels or "head" in levels):
        return units_from_weights(model, samples, method, adapter, linears, levels, batch_size, pad_id, progress,
                                   provenance)  # fmt: skip
    needs_data = method not in ("magnitude", "random")
    if needs_data and not samples:
        raise CircuitcutError(f"method {method!r} needs at least one reference sample; got none")
    if needs_data:
        _check_vocabulary(samples, adapter.vocab_size)
    meta: dict[str, Any] = {
        "method": method,
        "levels": list(levels),
        "aggregation": aggregation,
        "layers": [lin.name for lin in linears],
        "model_type": adapter.model_type,
        "model_id": getattr(model.config, "_name_or_path", ""),
        "n_layers": adapter.n_layers,
        "n_heads": adapter.n_heads,
        "n_neurons": adapter.n_neurons,
        "head_dim": adapter.head_dim,
        "tied_embeddings": adapter.tied,
        "batch_size": batch_size,
    }
    if method == "lrp":
        meta["variant"] = variant
        meta["lrp_rules"] = list(rules)
    if method in ("lrp", "gradient", "gradient_magnitude"):
        meta["seed_mode"] = seed_mode
        meta["targets"] = _describe_targets(samples)
    if method == "random":
        meta["seed"] = seed
    meta.update(provenance or {})

    if method == "magnitude":
        weights = {lin.name: lin.as_out_in(lin.weight_values().detach().float().abs()) for lin in linears}
        return Scores(weights=weights, n_samples=1, meta=meta)
    if method == "random":
        return random_scores(adapter, linears, levels, seed, meta)

    bar = tqdm(
        total=len(samples),
        desc=f"{method} scores",
        unit="sample",
        disable=not progress or not is_main_process(),
    )
    batches = list(_batches(samples, batch_size))
    ckpt = None
    if checkpoint is not None:
        key = fingerprint(
            samples, {k: v for k, v in meta.items() if k not in ("model_id",)} | {"variant": variant}
        )
        ckpt = Checkpointer(checkpoint, checkpoint_every, key)
    if method in ("wanda", "activation"):
        coll = ActivationCollector(adapter, linears, "neuron" in levels, "head" in levels)

        def forward_only(batch: list[Sample]) -> None:
            ids, mask = collate(batch, pad_id)
            dev = _model_device(model)
            coll.mask = mask.to(dev)
            adapter.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False)

        with coll, torch.no_grad(), eval_mode(model):
            run_batches(batches, forward_only, coll, ckpt, bar.update)
        bar.close()
        n = len(samples)
        if method == "wanda":
            weights = {}
            for lin in linears:
                norm = coll.feature_sq[lin.name].sqrt()
                values = lin.weight_values().detach().float().abs()
                weights[lin.name] = lin.as_out_in(values) * norm.to(values.device)[None, :]
            # Wanda's score is a statistic over all calibration tokens, not a per-sample mean
            return Scores(weights=weights, n_samples=1, meta={**meta, "n_samples": n})
        return Scores(neurons=coll.neuron_abs, heads=coll.head_norm, n_samples=n, meta=meta)

    lrp = method == "lrp"
    quantity = "grad" if method == "gradient_magnitude" else "wdw"
    embed_scored = any(lin.role == "embed" for lin in linears) and quantity == "wdw"
    collector = GradientCollector(
        adapter,
        [lin for lin in linears if lin.role != "embed"],
        neurons="neuron" in levels,
        heads="head" in levels,
        aggregation=aggregation,
        quantity=quantity,
    )
    if embed_scored:
        w = adapter.embed.weight
        collector.weight_sums["embed_tokens"] = torch.zeros(w.shape, dtype=torch.float32, device=w.device)

    def step(batch: list[Sample]) -> None:
        embed_sum = collector.weight_sums["embed_tokens"] if embed_scored else None
        _gradient_pass(adapter, batch, pad_id, lrp, seed_mode, collector, embed_sum)

    with ExitStack() as stack:
        stack.enter_context(collector)
        stack.enter_context(LRPRules(adapter, variant, rules=rules) if lrp else eval_mode(model))
        stack.enter_context(checkpointing_ctx(adapter, gradient_checkpointing))
        run_batches(batches, step, collector, ckpt, bar.update)
    bar.close()
    return Scores(
        weights=dict(collector.weight_sums),
        neurons=collector.neuron_sums,
        heads=collector.head_sums,
        n_samples=len(samples),
        meta=meta,
    )


def _check_vocabulary(samples: Sequence[Sample], vocab_size: int) -> None:
    """Every token id (inputs, targets, contrasts) must index the model's vocabulary."""
    top = 0
    for s in samples:
        t = s.target
        top = max(top, *s.input_ids, *t.token_ids, *(t.contrast_ids or ()))
    if top >= vocab_size:
        raise CircuitcutError(
            f"token id {top} is outside the model's vocabulary of {vocab_size}; the samples were "
            "tokenised with a tokenizer that does not belong to this model"
        )


def _describe_targets(samples: Sequence[Sample]) -> dict[str, Any]:
    kinds = sorted({s.target.kind for s in samples})
    n_out = sum(len(s.target.positions) for s in samples)
    return {
        "kinds": kinds,
        "explained_outputs": n_out,
        "mean_outputs_per_sample": n_out / max(1, len(samples)),
        "mean_tokens_per_sample": sum(len(s.input_ids) for s in samples) / max(1, len(samples)),
    }


def explain(
    model: torch.nn.Module,
    samples: Sequence[Sample],
    *,
    adapter: ModelAdapter | None = None,
    method: str = "lrp",
    variant: str = "attnlrp",
    seed_mode: str = "value",
    batch_size: int = 8,
    pad_id: int = 0,
) -> list[torch.Tensor]:
    """Per-token input relevance of each sample (embedding x gradient summed over the hidden size).

    Returns one float tensor of the sample's length per sample. With ``variant="cp-lrp"`` and
    ``seed_mode="value"`` on a bias-free model, each sums to the explained value.
    """
    if method not in ("lrp", "gradient"):
        raise CircuitcutError("explain supports method 'lrp' or 'gradient'")
    adapter = adapter or get_adapter(model)
    out: list[torch.Tensor] = []
    ctx = LRPRules(adapter, variant) if method == "lrp" else eval_mode(model)
    with ctx:
        for batch in _batches(samples, batch_size):
            rel = _gradient_pass(adapter, batch, pad_id, method == "lrp", seed_mode, None, None)
            out += [rel[i, : len(s.input_ids)].detach().cpu() for i, s in enumerate(batch)]
    return out


__all__ = ["LEVELS", "METHODS", "attribute", "explain", "select_linears"]
