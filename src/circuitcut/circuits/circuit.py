"""Extracting a circuit: the sparsest pruned model that keeps a share of the task metric.

The circuit is what remains of the selected components (weights of chosen layers, neurons or
heads) when the rest is zeroed. It is stored as the :class:`~circuitcut.pruning.Mask` of what is
pruned (safetensors) plus a JSON summary: the threshold, the metric of the full model, of the
circuit, of the empty circuit and of an equal-count random circuit (the control), and where the
circuit lives (kept counts per layer and component, the kept neurons and heads).
"""

from __future__ import annotations

import logging
import os
import statistics
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from circuitcut.attribution import attribute
from circuitcut.attribution.config import ScoringConfig
from circuitcut.circuits.monotone import COARSE, PATIENCE, SEARCH_RULES, falls
from circuitcut.circuits.sweep import (
    AblationSource,
    PhaseClock,
    SweepConfig,
    ablation_means,
    count_grid,
    empty_mask,
    kept_of,
    mask_keeping,
    n_components,
    task_metrics_under,
)
from circuitcut.encoding import pad_id
from circuitcut.errors import CircuitcutError
from circuitcut.io import read_json, read_tensors, write_json, write_tensors
from circuitcut.models.adapter import ModelAdapter
from circuitcut.pruning import Mask, masked
from circuitcut.pruning.patching import CounterfactualInputs
from circuitcut.scores import Scores
from circuitcut.tasks.base import Task, faithfulness

FORMAT = "circuitcut.circuit/1"
#: the mean inputs of a mean-ablated circuit's pruned layers
MEANS = "ablation_means.safetensors"
log = logging.getLogger(__name__)


@dataclass
class Circuit:
    """A circuit: the mask of what is pruned, and what it keeps and achieves; under mean ablation,
    the mean inputs the pruned components are replaced with."""

    mask: Mask
    info: dict[str, Any] = field(default_factory=dict)
    means: AblationSource = None

    @contextmanager
    def run(
        self, adapter: ModelAdapter, counterfactual: CounterfactualInputs | None = None
    ) -> Iterator[None]:
        """Run the model with only the circuit (everything else in the selection ablated as when
        the circuit was found: zeroed, replaced by its mean, or patched from the counterfactual
        prompts, whose recorded inputs ``counterfactual`` passes for the prompts to be run)."""
        source = counterfactual if counterfactual is not None else self.means
        if self.info.get("ablation") == "patch" and not isinstance(source, CounterfactualInputs):
            raise CircuitcutError(
                "this circuit was found under counterfactual patching: run it with the counterfactual inputs "
                "of the prompts to evaluate (circuitcut.pruning.patching.counterfactual_inputs)"
            )
        with masked(adapter, self.mask, source):
            yield

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``circuit_mask.safetensors`` (+ its JSON), ``circuit.json`` and, under mean
        ablation, ``ablation_means.safetensors`` into ``folder``."""
        out = Path(folder)
        self.mask.save(out / "circuit_mask.safetensors")
        if isinstance(self.means, dict):  # counterfactual inputs belong to the prompts, not the circuit
            write_tensors(out / MEANS, self.means)
        write_json(out / "circuit.json", {"format": FORMAT, **self.info})
        return out

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> Circuit:
        """Read a circuit written by :meth:`save`."""
        out = Path(folder)
        info = read_json(out / "circuit.json")
        if info.pop("format", None) != FORMAT:
            raise CircuitcutError(f"{out / 'circuit.json'} is not a circuitcut circuit")
        means = read_tensors(out / MEANS) if info.get("ablation") == "mean" else None
        return cls(Mask.load(out / "circuit_mask.safetensors"), info, means)


def where(mask: Mask, adapter: ModelAdapter, level: str) -> dict[str, Any]:
    """Kept counts per layer and component (and the kept units for neuron/head circuits)."""
    if level == "weight":
        per_layer: dict[str, dict[str, int]] = {}
        for name, m in mask.weights.items():
            lin = adapter.linear(name)
            key = f"layer {lin.layer}" if lin.layer is not None else name
            per_layer.setdefault(key, {})[name.rsplit(".", 1)[-1]] = int((~m).sum())
        return {"kept_per_layer": per_layer}
    n = adapter.n_neurons if level == "neuron" else adapter.n_heads
    pruned = mask.units.get(level + "s", {})
    kept = {i: [j for j in range(n) if j not in set(pruned.get(i, []))] for i in range(adapter.n_layers)}
    return {"kept_per_layer": {f"layer {i}": len(v) for i, v in kept.items()}, f"kept_{level}s": kept}


def top_components(
    scores: Scores, adapter: ModelAdapter, level: str, mask: Mask, k: int = 20
) -> list[dict[str, Any]]:
    """The ``k`` components with the highest scores (what a circuit keeps first), each with its layer,
    score and whether ``mask`` (what is pruned) keeps it."""
    found: list[tuple[float, str, int | None, bool]] = []
    if level == "weight":
        for name, w in scores.weights.items():
            vals, idx = torch.topk(scores.weight(name).flatten().float().cpu(), min(k, w.numel()))
            pruned = mask.weights.get(name)
            for v, i in zip(vals.tolist(), idx.tolist(), strict=True):
                row, col = divmod(i, w.shape[-1])
                kept = pruned is None or not bool(pruned.flatten()[i])
                found.append((v, f"{name}[{row}, {col}]", adapter.linear(name).layer, kept))
    else:
        store = scores.neurons if level == "neuron" else scores.heads
        part = "mlp.neuron" if level == "neuron" else "attn.head"
        pruned = mask.units.get(level + "s", {})
        for layer in sorted(store):
            s = scores.neuron(layer) if level == "neuron" else scores.head(layer)
            vals, idx = torch.topk(s.float().cpu(), min(k, s.numel()))
            gone = set(pruned.get(layer, []))
            found += [(v, f"layers.{layer}.{part}.{i}", layer, i not in gone)
                      for v, i in zip(vals.tolist(), idx.tolist(), strict=True)]  # fmt: skip
    found.sort(key=lambda t: -t[0])
    return [{"component": c, "layer": layer, "score": v, "kept": kept} for v, c, layer, kept in found[:k]]


def extract_circuit(
    model: torch.nn.Module,
    tokenizer: Any,
    adapter: ModelAdapter,
    attribution: Task,
    evaluation: Task,
    config: SweepConfig | None = None,
    *,
    scores: Scores | None = None,
    reference: tuple[dict[str, float], dict[str, float]] | None = None,
    means: AblationSource = None,
) -> Circuit:
    """The sparsest circuit of ``config.scoring.method`` (on a fine log-spaced grid of distinct
    component counts, searched by :func:`search_grid`) whose faithfulness reaches ``config.threshold``.

    The threshold applies to faithfulness, f = (m(C) - m(empty)) / (m(model) - m(empty)), not to
    the raw metric; every reported figure is measured at the point returned. Scores are computed on
    the whole attribution split unless given; the metric is measured on the evaluation split.
    ``reference`` passes the full and empty model's metrics when the caller has them (a sweep
    measured them on the same prompts, under the same ablation); ``means`` passes the means of a
    mean ablation (a sweep's ``means``; otherwise measured here). The control prunes the same
    number of components chosen at random (:func:`random_controls`); the answer's probability and
    the accuracy are recorded beside the metric; ``info["phases"]`` times attribution and evaluation.
    """
    cfg = (config or SweepConfig()).for_task(evaluation)
    method, level, layers = cfg.scoring.method, cfg.level, cfg.layers
    scheme = cfg.scheme(method)
    pad = pad_id(tokenizer)
    metric = evaluation.metric
    clock = PhaseClock()
    enc = evaluation.encode(tokenizer)
    everything = empty_mask(adapter, level, layers)
    with clock("evaluation"):
        if means is None:
            means = ablation_means(model, tokenizer, adapter, attribution, everything, cfg.ablation,
                                   cfg.eval_batch_size, evaluation)  # fmt: skip
        elif cfg.ablation not in ("mean", "patch"):
            raise CircuitcutError("means are only used with ablation 'mean' or 'patch'")
        evaluate = lambda mask: task_metrics_under(model, adapter, enc, cfg.eval_batch_size, pad, mask, means)  # noqa: E731
        dense, empty = reference or (evaluate(Mask()), evaluate(everything))
    if scores is None:
        with clock("attribution"):
            scores = attribute(model, attribution.samples(tokenizer), cfg.scoring, adapter=adapter, levels=(level,),
                               layers=layers, progress=False)  # fmt: skip
    n = n_components(adapter, level, layers)
    if dense[metric] <= 0:
        log.warning("the full model's %s is %.4f <= 0: it does not perform the task, so a circuit keeping "
                    "%.0f%% of it is not meaningful", metric, dense[metric], 100 * cfg.threshold)  # fmt: skip
    f = lambda m: faithfulness(m[metric], dense[metric], empty[metric])  # noqa: E731

    def measure(count: int) -> tuple[Mask, dict[str, float]]:
        with clock("masks"):
            mask = mask_keeping(scores, adapter, level, layers, count, n, scheme)
        with clock("evaluation"):
            return mask, evaluate(mask)

    found = search_grid(measure, count_grid(n), n, f, cfg.threshold, cfg.search, dense, level)
    best_mask, best_metrics, kept = found.mask, found.metrics, found.kept
    if not best_mask.weights:
        best_mask = Mask({k: torch.zeros_like(v) for k, v in everything.weights.items()})
    with clock("evaluation"):
        controls = random_controls(model, adapter, cfg, kept, n, evaluate)
    control = {k: statistics.fmean(c[k] for c in controls) for k in dense} if controls else dict(empty)
    info = {
        "method": method, "level": level, "layers": layers, "scheme": scheme, "threshold": cfg.threshold,
        "threshold_applies_to": "faithfulness", "metric": metric, "ablation": cfg.ablation, "keep": kept / n,
        "components": n, "kept": kept, "model": dense, "circuit": best_metrics, "empty": empty,
        "random_control": {**control, "metric": control[metric], "runs": [c[metric] for c in controls],
                           "seeds": cfg.random_seeds},
        "faithfulness": f(best_metrics),
        "random_faithfulness": f(control),
        "met_threshold": f(best_metrics) >= cfg.threshold,
        "model_performs_task": dense[metric] > 0,
        "n_attribution": len(attribution), "n_evaluation": len(evaluation),
        **found.info(cfg.search), "phases": clock.seconds, "scoring": cfg.scoring.as_dict(),
        **where(best_mask, adapter, level),
        "top_components": top_components(scores, adapter, level, best_mask),
    }  # fmt: skip
    best_mask.meta = {**best_mask.meta, "circuit_of": method, "level": level}
    return Circuit(best_mask, info, means)


def random_controls(
    model: torch.nn.Module,
    adapter: ModelAdapter,
    cfg: SweepConfig,
    kept: int,
    n: int,
    evaluate: Callable[[Mask], dict[str, float]],
) -> list[dict[str, float]]:
    """The metrics of ``cfg.random_seeds`` circuits of ``kept`` components chosen at random (seeds
    1000, 1001, ...), pruned by the circuit's own scheme."""
    level, layers, scheme = cfg.level, cfg.layers, cfg.scheme(cfg.scoring.method)
    out = []
    for seed in range(cfg.random_seeds):
        rnd = attribute(model, [], ScoringConfig(method="random", seed=1000 + seed), adapter=adapter, levels=(level,),
                        layers=layers, progress=False)  # fmt: skip
        out.append(
            evaluate(mask_keeping(rnd, adapter, level, layers, kept, n, scheme) if kept < n else Mask())
        )
    return out


@dataclass
class GridSearch:
    """What :func:`search_grid` found and every point it measured on the way."""

    mask: Mask
    metrics: dict[str, float]
    kept: int
    #: every evaluated point, in evaluation order: ``{"count": kept components, "faithfulness": f}``
    evaluated: list[dict[str, Any]] = field(default_factory=list)
    #: the measured pairs where faithfulness falls as the count grows (:func:`~circuitcut.circuits.monotone.falls`)
    nonmonotone: list[dict[str, Any]] = field(default_factory=list)

    @property
    def monotone(self) -> bool:
        """Whether faithfulness grew with the count over the evaluated points (within the tolerance)."""
        return not self.nonmonotone

    def info(self, search: str) -> dict[str, Any]:
        """The circuit info's entries about the search."""
        return {"search": search, "search_rule": SEARCH_RULES[search], "search_evaluated": self.evaluated,
                "monotone": self.monotone, "nonmonotone": self.nonmonotone}  # fmt: skip


def _checked_bisection(hit: Callable[[int], bool], size: int) -> None:
    """Evaluate grid indices (``hit(i)``: does index ``i`` reach the threshold; ``hit(size)``, the full
    model, does) by the "bisection" rule of :func:`search_grid`."""
    if size == 0:
        return
    coarse = sorted({round(i * (size - 1) / (COARSE - 1)) for i in range(COARSE)})
    hi = min([i for i in coarse if hit(i)], default=size)  # every coarse count is evaluated
    lo = max((i for i in coarse if i < hi), default=-1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if hit(mid) else (mid, hi)
    misses, i = 0, hi - 1
    while i >= 0 and misses < PATIENCE:
        misses = 0 if hit(i) else misses + 1
        i -= 1


def search_grid(
    measure: Callable[[int], tuple[Mask, dict[str, float]]],
    grid: Sequence[int],
    n: int,
    f: Callable[[dict[str, float]], float],
    threshold: float,
    search: str,
    dense: dict[str, float],
    level: str,
) -> GridSearch:
    """The sparsest evaluated count of ``grid`` (below ``n``) whose faithfulness ``f`` reaches
    ``threshold``, and every (count, faithfulness) measured.

    ``measure(count)`` returns ``(mask, metrics)``; no count is measured twice. The curve is not
    assumed monotone. The rule of ``"bisection"`` (the default), which stays cheap:

    1. a coarse pass: :data:`COARSE` counts spread evenly over the grid's indices (both ends
       included; the grid is log-spaced, so they are too), every one evaluated, so the whole range
       of sizes is seen;
    2. bisection between the sparsest coarse count reaching the threshold (else the full model) and
       the coarse count below it, as if the curve were monotone there;
    3. the bracket checked: the counts below the sparsest count reaching the threshold are
       evaluated, downwards, until :data:`PATIENCE` in a row miss; one reaching it there becomes the
       circuit and the walk goes on below it.

    The circuit is the sparsest evaluated count reaching the threshold; the grid count just below it
    is always measured and misses. That is about COARSE + log2(grid size / COARSE) + PATIENCE
    evaluations (about 12 on a 40-count grid, against 6 for a plain bisection; a grid of at most
    COARSE counts is scanned), and on a monotone curve the result is the scan's. ``"scan"`` is the
    exhaustive option: every count from the sparsest up to the first reaching the threshold.
    Faithfulness falling as the count grows over the measured points (by more than
    :data:`~circuitcut.circuits.monotone.TOLERANCE`) is recorded as a non-monotone pair. Nothing
    reaching the threshold: the full model.
    """
    grid = [c for c in grid if c < n]
    found: dict[int, tuple[Mask, dict[str, float], float]] = {}
    evaluated: list[dict[str, Any]] = []

    def hit(i: int) -> bool:
        if i >= len(grid):
            return True  # the full model
        if i not in found:
            mask, got = measure(grid[i])
            found[i] = (mask, got, f(got))
            evaluated.append({"count": kept_of(mask, level, n), "faithfulness": found[i][2]})
        return found[i][2] >= threshold

    if search == "scan":
        i = 0
        while not hit(i):
            i += 1
    else:
        _checked_bisection(hit, len(grid))
    pairs = falls((e["count"], e["faithfulness"]) for e in evaluated)
    reached = sorted((kept_of(mask, level, n), i) for i, (mask, _, fi) in found.items() if fi >= threshold)
    if not reached:
        return GridSearch(Mask(), dense, n, evaluated, pairs)
    kept, i = reached[0]
    return GridSearch(found[i][0], found[i][1], kept, evaluated, pairs)
