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

from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from circuitcut.attribution.baselines import random_scores, unit_sites, units_from_weight_scores
from circuitcut.attribution.collector import ActivationCollector, GradientCollector, token_mass
from circuitcut.attribution.config import Execution, ScoringConfig
from circuitcut.attribution.counterfactual import CounterfactualCollector
from circuitcut.attribution.memory import gradient_checkpointing as checkpointing_ctx
from circuitcut.attribution.methods import LEVELS, METHODS
from circuitcut.attribution.rules import IdentityRule, LRPRules, eval_mode
from circuitcut.attribution.streaming import Checkpointer, fingerprint, run_batches
from circuitcut.attribution.targets import Sample, collate, explained_outputs, pad_batch, seed_weights
from circuitcut.distributed import is_main_process
from circuitcut.errors import CircuitcutError
from circuitcut.models.adapter import LinearInfo, ModelAdapter, get_adapter, input_device
from circuitcut.models.selection import select_linears
from circuitcut.scores import Scores

#: the id right-padded batches are filled with: padding is masked out and, on the right of a causal
#: model's input, seen by no real token, so any id in the vocabulary gives the same scores
PAD_ID = 0


def _batches(samples: Sequence[Sample], batch_size: int) -> Iterable[list[Sample]]:
    for i in range(0, len(samples), batch_size):
        yield list(samples[i : i + batch_size])


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
    lrp: bool,
    seed_mode: str,
    collector: GradientCollector | None,
    embed_sum: torch.Tensor | None,
) -> torch.Tensor:
    """Forward + backward of one batch; returns the per-token input relevance ``[B, T]``."""
    device = input_device(adapter.model)
    ids, mask = collate(batch, PAD_ID)
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
        # token_norm: each token's relevance over its gradient mass, as at every other site
        per_token = rel / token_mass(grad.float()) if collector.aggregation == "token_norm" else rel
        _accumulate_embedding(embed_sum, ids, mask, per_token, collector.aggregation)
    return rel.sum(-1)


def _difference_pass(
    adapter: ModelAdapter,
    batch: list[Sample],
    lrp: bool,
    seed_mode: str,
    collector: CounterfactualCollector,
    steps: int,
) -> None:
    """One batch against its counterfactuals (:mod:`circuitcut.attribution.counterfactual`): a
    forward on the counterfactual prompts, then a forward and backward at each of ``steps`` points
    between their embeddings and the prompts' (the prompts themselves first). Seeds are those of the
    difference ``m - m'`` of each explained output (unit: ``1 / (m - m')``; value: 1), the same at
    every point, so the path integral is of one function."""
    if any(s.baseline_ids is None for s in batch):
        raise CircuitcutError(
            "attribution against the counterfactual needs a counterfactual prompt for every sample (IOI tasks have "
            "them; a task file gives each record a 'corrupt' prompt); use baseline 'zero'"
        )
    device = input_device(adapter.model)
    ids, mask = collate(batch, PAD_ID)
    base, _ = pad_batch([s.baseline_ids for s in batch], PAD_ID)
    embed = adapter.model.get_input_embeddings()
    clean, counter = embed(ids.to(device)).detach(), embed(base.to(device)).detach()
    mask = mask.to(device)
    collector.batch_shape = (ids.shape[0], ids.shape[1])
    collector.phase = "baseline"
    with torch.no_grad():
        base_values, _rows = explained_outputs(_forward_logits(adapter, counter, mask, lrp), batch)
    seeds = None
    for k in range(steps, 0, -1):  # the prompt itself first: its outputs fix the seeds of every point
        collector.phase = "prompt" if k == steps else "path"
        point = (counter + (k / steps) * (clean - counter)).requires_grad_(True)
        values, _rows = explained_outputs(_forward_logits(adapter, point, mask, lrp), batch)
        if seeds is None:
            seeds = seed_weights(values.detach() - base_values, seed_mode)
        torch.autograd.grad((seeds * values).sum(), point)
    collector.flush(steps)
    collector.batch_shape = None


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
            per_tok = zeros.index_add_(0, inv, r.abs() if agg in ("token_abs", "token_norm") else r)
            per_tok = per_tok.abs() if agg == "abs" else per_tok
        store.index_add_(0, uniq.to(store.device), per_tok.to(store.device))


def attribute(
    model: torch.nn.Module,
    samples: Sequence[Sample],
    scoring: ScoringConfig | str | None = None,
    *,
    adapter: ModelAdapter | None = None,
    levels: Sequence[str] | None = None,
    layers: str | Sequence[str] | None = None,
    progress: bool = True,
    provenance: dict[str, Any] | None = None,
    execution: Execution | None = None,
) -> Scores:
    """Score every weight element, MLP neuron and attention head, averaged over samples.

    Args:
        model: a Hugging Face causal LM (left unchanged).
        samples: reference samples (see :mod:`circuitcut.attribution.targets`).
        scoring: the :class:`~circuitcut.attribution.config.ScoringConfig` (method, LRP variant and
            rules, aggregation, seeds, batch size, seed), or a method name with the defaults.
        adapter: the model's adapter (built if omitted).
        levels: any of ``weight``, ``neuron``, ``head`` (default: all the method supports).
        layers: which linear layers get weight scores (see
            :func:`~circuitcut.models.selection.select_linears`; ``"embeddings"`` adds the
            embedding matrix and an untied LM head).
        progress: show a progress bar.
        provenance: extra fields for the Scores sidecar (model id, data file...).
        execution: checkpoints and gradient checkpointing (:class:`~circuitcut.attribution.config.Execution`).

    Batches are right-padded and masked, so the padding id does not change any score. Under
    ``torchrun`` / ``accelerate launch`` (an initialised process group), the batches are shared
    among the processes and the sums all-reduced: every process returns the same Scores.

    Returns:
        :class:`~circuitcut.scores.Scores`: means over samples of the per-sample scores.
    """
    cfg = ScoringConfig.of(scoring)
    spec = cfg.spec
    levels = tuple(spec.levels if levels is None else levels)
    bad = [lv for lv in levels if lv not in spec.levels]
    if bad:
        raise CircuitcutError(
            f"method {cfg.method!r} cannot score {', '.join(bad)}; it scores {', '.join(spec.levels)}"
        )
    adapter = adapter or get_adapter(model)
    linears = select_linears(adapter, layers) if "weight" in levels else []
    units = [lv for lv in levels if lv != "weight"]
    if spec.units_from_weights and units:
        sites = unit_sites(adapter, units)
        names = list(dict.fromkeys([lin.name for lin in linears] + sites))
        base = attribute(model, samples, cfg, adapter=adapter, levels=("weight",), layers=names,
                         progress=progress, provenance=provenance, execution=execution)  # fmt: skip
        return units_from_weight_scores(base, adapter, levels, [lin.name for lin in linears])
    if spec.needs_data and not samples:
        raise CircuitcutError(f"method {cfg.method!r} needs at least one reference sample; got none")
    if spec.needs_data:
        _check_vocabulary(samples, adapter.vocab_size)
    meta = _meta(model, adapter, cfg, levels, linears, samples) | (provenance or {})
    if cfg.method == "magnitude":
        weights = {lin.name: lin.as_out_in(lin.weight_values().detach().float().abs()) for lin in linears}
        return Scores(weights=weights, n_samples=1, meta=meta)
    if cfg.method == "random":
        return random_scores(adapter, linears, levels, cfg.seed, meta)
    execution = execution or Execution()
    batches = list(_batches(samples, cfg.batch_size))
    ckpt = None
    if execution.checkpoint is not None:
        key = fingerprint(
            samples, {k: v for k, v in meta.items() if k != "model_id"} | {"variant": cfg.variant}
        )
        ckpt = Checkpointer(execution.checkpoint, execution.checkpoint_every, key)
    bar = tqdm(total=len(samples), desc=f"{cfg.method} scores", unit="sample",
               disable=not progress or not is_main_process())  # fmt: skip
    run = _forward_scores if spec.backward == "forward" else _backward_scores
    try:
        return run(_Pass(adapter, batches, cfg, levels, linears, meta, ckpt, bar.update, execution))
    finally:
        bar.close()


@dataclass
class _Pass:
    """One attribution pass: the batches, what is scored, the settings, checkpoints and progress."""

    adapter: ModelAdapter
    batches: list[list[Sample]]
    cfg: ScoringConfig
    levels: Sequence[str]
    linears: list[LinearInfo]
    meta: dict[str, Any]
    ckpt: Checkpointer | None
    tick: Any
    execution: Execution


def _meta(
    model: torch.nn.Module,
    adapter: ModelAdapter,
    cfg: ScoringConfig,
    levels: Sequence[str],
    linears: list[LinearInfo],
    samples: Sequence[Sample],
) -> dict[str, Any]:
    """The Scores sidecar: what was scored, of which model, with which settings."""
    meta: dict[str, Any] = {
        "method": cfg.method,
        "levels": list(levels),
        "aggregation": cfg.aggregation,
        "layers": [lin.name for lin in linears],
        "model_type": adapter.model_type,
        "model_id": getattr(model.config, "_name_or_path", ""),
        "n_layers": adapter.n_layers,
        "n_heads": adapter.n_heads,
        "n_neurons": adapter.n_neurons,
        "head_dim": adapter.head_dim,
        "tied_embeddings": adapter.tied,
        "batch_size": cfg.batch_size,
    }
    meta.update(cfg.describe())
    if cfg.spec.has_backward:
        meta["targets"] = _describe_targets(samples)
    return meta


def _forward_scores(job: _Pass) -> Scores:
    """Wanda and activation scores: statistics of one forward pass per batch."""
    adapter, batches, levels, linears, meta = job.adapter, job.batches, job.levels, job.linears, job.meta
    model = adapter.model
    coll = ActivationCollector(adapter, linears, "neuron" in levels, "head" in levels)

    def forward_only(batch: list[Sample]) -> None:
        ids, mask = collate(batch, PAD_ID)
        dev = input_device(model)
        coll.mask = mask.to(dev)
        model(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False)

    with coll, torch.no_grad(), eval_mode(model):
        run_batches(batches, forward_only, coll, job.ckpt, job.tick)
    n = sum(len(b) for b in batches)
    if job.cfg.method == "wanda":
        weights = {}
        for lin in linears:
            norm = coll.feature_sq[lin.name].sqrt()
            values = lin.weight_values().detach().float().abs()
            weights[lin.name] = lin.as_out_in(values) * norm.to(values.device)[None, :]
        # Wanda's score is a statistic over all calibration tokens, not a per-sample mean
        return Scores(weights=weights, n_samples=1, meta={**meta, "n_samples": n})
    return Scores(neurons=coll.neuron_abs, heads=coll.head_norm, n_samples=n, meta=meta)


def _backward_scores(job: _Pass) -> Scores:
    """LRP and gradient scores: one forward and one backward to the input embeddings per batch."""
    adapter, batches, cfg, levels, linears = job.adapter, job.batches, job.cfg, job.levels, job.linears
    spec = cfg.spec
    lrp = spec.backward == "lrp"
    embed_scored = any(lin.role == "embed" for lin in linears) and spec.quantity == "wdw"
    scored = [lin for lin in linears if lin.role != "embed"]
    units = {"neurons": "neuron" in levels, "heads": "head" in levels}
    if cfg.baseline == "counterfactual":
        if embed_scored:
            raise CircuitcutError(
                "the embedding matrix has no score against a counterfactual; drop 'embeddings'"
            )
        diff = CounterfactualCollector(adapter, scored, aggregation=cfg.aggregation, **units)
        steps = cfg.ig_steps if cfg.method == "ig" else 1
        collector: GradientCollector = diff

        def step(batch: list[Sample]) -> None:
            _difference_pass(adapter, batch, lrp, cfg.effective_seed_mode, diff, steps)
    else:
        collector = GradientCollector(
            adapter, scored, aggregation=cfg.aggregation, quantity=spec.quantity, **units
        )
        if embed_scored:
            w = adapter.embed.weight
            collector.weight_sums["embed_tokens"] = torch.zeros(w.shape, dtype=torch.float32, device=w.device)

        def step(batch: list[Sample]) -> None:
            embed_sum = collector.weight_sums["embed_tokens"] if embed_scored else None
            _gradient_pass(adapter, batch, lrp, cfg.effective_seed_mode, collector, embed_sum)

    with ExitStack() as stack:
        stack.enter_context(collector)
        stack.enter_context(
            LRPRules(adapter, cfg.variant, rules=cfg.lrp_rules) if lrp else eval_mode(adapter.model)
        )
        stack.enter_context(checkpointing_ctx(adapter, job.execution.gradient_checkpointing))
        run_batches(batches, step, collector, job.ckpt, job.tick)
    return Scores(
        weights=dict(collector.weight_sums),
        neurons=collector.neuron_sums,
        heads=collector.head_sums,
        n_samples=sum(len(b) for b in batches),
        meta=job.meta,
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
    scoring: ScoringConfig | str | None = None,
    *,
    adapter: ModelAdapter | None = None,
) -> list[torch.Tensor]:
    """Per-token input relevance of each sample (embedding x gradient summed over the hidden size).

    ``scoring`` takes method ``lrp`` or ``gradient`` (its variant, rules, seeds and batch size);
    the default is LRP with value seeds. Returns one float tensor of the sample's length per
    sample. With ``variant="cp-lrp"`` and value seeds on a bias-free model, each sums to the
    explained value.
    """
    cfg = ScoringConfig(seed_mode="value") if scoring is None else ScoringConfig.of(scoring)
    if cfg.method not in ("lrp", "gradient"):
        raise CircuitcutError("explain supports method 'lrp' or 'gradient'")
    adapter = adapter or get_adapter(model)
    out: list[torch.Tensor] = []
    lrp = cfg.method == "lrp"
    ctx = LRPRules(adapter, cfg.variant, rules=cfg.lrp_rules) if lrp else eval_mode(model)
    with ctx:
        for batch in _batches(samples, cfg.batch_size):
            rel = _gradient_pass(adapter, batch, lrp, cfg.effective_seed_mode, None, None)
            out += [rel[i, : len(s.input_ids)].detach().cpu() for i, s in enumerate(batch)]
    return out


__all__ = ["LEVELS", "METHODS", "attribute", "explain"]
