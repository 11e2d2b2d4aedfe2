"""Performance-versus-sparsity sweeps: prune by each method's scores at log-spaced rates, evaluate.

For each method and seed, a reference set of ``n_ref`` attribution examples (drawn with that seed)
is scored; the model is then pruned, reversibly, to keep a log-spaced series of fractions of the
selected components (weights of chosen layers, MLP neurons or attention heads) and the task is
evaluated on the held-out evaluation split. Ablation is zeroing by default (pruned weights are set
to 0; a pruned neuron or head has its output removed), or the mean ablation of
:mod:`circuitcut.pruning.ablation` (``ablation="mean"``: means over the attribution split).

Kept fractions are snapped to whole component counts: each requested fraction becomes
``round(fraction x n)`` kept components (at least one), and fractions that land on the same count
are evaluated once, so with 8 heads the curve has the points 8, 4, 2, 1 heads and no run of
identical points below 12.5%. Every point records its count and the fraction it really keeps
(Wanda's row-wise scheme keeps a share of each row; its counts are read from the masks).

Faithfulness follows the MIB circuit-localisation convention, f = (m(C) - m(empty)) /
(m(model) - m(empty)), with m(empty) the metric when every selected component is pruned. Over the
points actually evaluated: the area is the trapezoid integral of f over log10(kept fraction),
divided by the span of that axis (a circuit as good as the model at every size scores 1); CPR and
CMD are MIB's areas under f and under |1 - f| over the kept fraction itself (Mueller et al., "MIB:
A Mechanistic Interpretability Benchmark", ICML 2025; higher CPR and lower CMD are better). Every
point carries the answer's probability and the accuracy beside the task metric, so a logit
difference kept while the answer's probability collapses is visible.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from circuitcut import validation
from circuitcut.attribution import METHODS as SCORE_METHODS
from circuitcut.attribution import attribute
from circuitcut.circuits.config import ABLATIONS, SweepConfig
from circuitcut.circuits.monotone import curve_check
from circuitcut.encoding import pad_id
from circuitcut.errors import CircuitcutError
from circuitcut.models.adapter import ModelAdapter
from circuitcut.models.selection import select_linears
from circuitcut.pruning import Mask, masked, unit_mask, unstructured_mask
from circuitcut.pruning.ablation import input_means
from circuitcut.pruning.patching import CounterfactualInputs, counterfactual_inputs
from circuitcut.scores import Scores
from circuitcut.tasks.base import Task, faithfulness, task_metrics

#: what pruned components pass on: nothing (None), mean inputs, or counterfactual inputs
AblationSource = dict[str, torch.Tensor] | CounterfactualInputs | None

#: why a method cannot score a level (the sweep lists it as skipped with this reason)
WHY_NOT = {
    "activation": "activation scores units only (a neuron's or head's output size); a single weight has no "
    "activation of its own to rank it by",
}


def supported(method: str, level: str) -> bool:
    """Whether a method can score a level (activation scores units only)."""
    return level in SCORE_METHODS[method]


def n_components(adapter: ModelAdapter, level: str, layers: str) -> int:
    """How many components a level selects (weight elements of the chosen layers, neurons, heads)."""
    if level == "weight":
        return sum(lin.weight.numel() for lin in select_linears(adapter, layers))
    return adapter.n_layers * (adapter.n_neurons if level == "neuron" else adapter.n_heads)


def kept_count(keep: float, n: int) -> int:
    """A kept fraction snapped to a whole number of components: ``round(keep x n)``, in [1, n]."""
    return min(n, max(1, round(keep * n)))


def mask_keeping(scores: Scores, adapter: ModelAdapter, level: str, layers: str, kept: int, n: int,
                 scheme: str) -> Mask:  # fmt: skip
    """The mask that keeps the ``kept`` highest-scoring of the ``n`` selected components (the row-wise
    scheme keeps the share ``kept / n`` of each row, so its count is close to ``kept``)."""
    if level == "weight":
        if scheme == "global":
            return unstructured_mask(scores, adapter, count=n - kept, scheme="global", layers=layers)
        return unstructured_mask(scores, adapter, 1.0 - kept / n, scheme=scheme, layers=layers)
    return unit_mask(scores, adapter, level, count=n - kept, scheme="global")


def kept_of(mask: Mask, level: str, n: int) -> int:
    """The number of components a mask keeps."""
    return n - (mask.pruned() if level == "weight" else int(mask.meta.get("pruned_units", 0)))


def trapezoid(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The trapezoid integral of ys over xs (any order of xs; 0 for fewer than two points)."""
    return sum(abs(xs[i] - xs[i + 1]) * (ys[i] + ys[i + 1]) / 2 for i in range(len(xs) - 1))


def empty_mask(adapter: ModelAdapter, level: str, layers: str) -> Mask:
    """Every selected component pruned (the empty circuit)."""
    if level == "weight":
        return Mask(
            {lin.name: torch.ones(lin.shape, dtype=torch.bool) for lin in select_linears(adapter, layers)}
        )
    weights = {}
    for i in range(adapter.n_layers):
        lin = adapter.neuron_site(i) if level == "neuron" else adapter.head_site(i)
        weights[lin.name] = torch.ones(lin.shape, dtype=torch.bool)
    return Mask(weights)


@dataclass
class SweepResult:
    """Curves: ``curves[method][seed]`` is a list of metric dicts, one per point of ``points[method]``
    (``{"keep": requested fraction, "count": kept components, "fraction": count / n}``)."""

    config: SweepConfig
    dense: dict[str, float]
    empty: dict[str, float]
    curves: dict[str, list[list[dict[str, float]]]]
    skipped: dict[str, str]
    seconds: dict[str, float]
    points: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    n_components: int = 0
    #: wall time per phase over the whole sweep (attribution, masks, evaluation)
    phases: dict[str, float] = field(default_factory=dict)
    #: under mean ablation, the means the sweep measured (a circuit extracted after it reuses them)
    means: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def mean_curve(self, method: str, metric: str | None = None) -> tuple[list[float], list[float]]:
        """Mean and standard deviation over seeds, per point."""
        metric = metric or self.config.metric
        runs = [[pt[metric] for pt in seed] for seed in self.curves[method]]
        means = [statistics.fmean(col) for col in zip(*runs, strict=True)]
        stds = [statistics.pstdev(col) if len(col) > 1 else 0.0 for col in zip(*runs, strict=True)]
        return means, stds

    def fractions(self, method: str) -> list[float]:
        """The kept fraction of each evaluated point."""
        return [p["fraction"] for p in self.points[method]]

    def faithfulness_curve(self, method: str, metric: str | None = None) -> list[float]:
        """Faithfulness of the mean metric (default: the configured one; any metric the task
        records, e.g. ``prob`` or ``accuracy``), per point."""
        m = metric or self.config.metric
        if m not in self.dense:
            raise CircuitcutError(f"this sweep recorded no {m!r} metric (it has {', '.join(self.dense)})")
        means, _ = self.mean_curve(method, m)
        return [faithfulness(v, self.dense[m], self.empty[m]) for v in means]

    def area(self, method: str, metric: str | None = None) -> float:
        """Normalised area under the faithfulness curve over log10(kept fraction), evaluated points only."""
        xs = [math.log10(k) for k in self.fractions(method)]
        fs = self.faithfulness_curve(method, metric)
        span = max(xs) - min(xs)
        return fs[0] if span == 0 else trapezoid(xs, fs) / span

    def cpr(self, method: str, metric: str | None = None) -> float:
        """MIB's CPR: the area under f over the kept fraction (evaluated points)."""
        return trapezoid(self.fractions(method), self.faithfulness_curve(method, metric))

    def cmd(self, method: str, metric: str | None = None) -> float:
        """MIB's CMD: the area under |1 - f| over the kept fraction (evaluated points)."""
        fs = self.faithfulness_curve(method, metric)
        return trapezoid(self.fractions(method), [abs(1 - f) for f in fs])

    def sparsest(self, method: str, threshold: float | None = None) -> dict[str, Any] | None:
        """The evaluated point (a :meth:`point_table` row) with the fewest components whose faithfulness
        (of the mean metric) is at least ``threshold`` (default: the configured one), or None."""
        t = self.config.threshold if threshold is None else threshold
        ok = [row for row in self.point_table(method) if row["faithfulness"] >= t]
        return min(ok, key=lambda row: row["count"]) if ok else None

    def point_table(self, method: str) -> list[dict[str, Any]]:
        """Per evaluated point: count, fractions, mean (and std) of every metric, faithfulness."""
        f = self.faithfulness_curve(method)
        out = []
        for i, p in enumerate(self.points[method]):
            row: dict[str, Any] = dict(p)
            for metric in self.curves[method][0][i]:
                mean, std = self.mean_curve(method, metric)
                row[metric], row[f"{metric}_std"] = mean[i], std[i]
            row["faithfulness"] = f[i]
            out.append(row)
        return out

    def rows(self) -> list[dict[str, Any]]:
        """Flat rows for CSV: method, seed, requested and kept fraction, count, metrics, faithfulness."""
        out = []
        m = self.config.metric
        for method, seeds in self.curves.items():
            for seed, points in enumerate(seeds):
                for p, pt in zip(self.points[method], points, strict=True):
                    f = faithfulness(pt[m], self.dense[m], self.empty[m])
                    out.append({"method": method, "seed": seed, "keep": p["keep"], "count": p["count"],
                                "fraction": p["fraction"], **pt, "faithfulness": f})  # fmt: skip
        return out

    def summary(self) -> dict[str, Any]:
        """Per method: area, CPR, CMD, the sparsest point at the threshold, every point, and whether
        the mean faithfulness grows with the count (``monotone``; the ``nonmonotone`` pairs where it
        falls by more than :data:`~circuitcut.circuits.monotone.TOLERANCE`)."""
        return {
            method: {
                "faithfulness_area": self.area(method),
                "cpr": self.cpr(method),
                "cmd": self.cmd(method),
                "threshold": self.config.threshold,
                "sparsest": self.sparsest(method),
                "points": self.point_table(method),
                **curve_check([p["count"] for p in self.points[method]], self.faithfulness_curve(method)),
            }
            for method in self.curves
        }

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with the configuration and the ablation used."""
        return {"config": asdict(self.config), "ablation": self.config.ablation, "n_components": self.n_components,
                "dense": self.dense, "empty": self.empty, "points": self.points, "curves": self.curves,
                "skipped": self.skipped, "seconds": self.seconds, "phases": self.phases,
                "summary": self.summary()}  # fmt: skip


def sweep(
    model: torch.nn.Module,
    tokenizer: Any,
    adapter: ModelAdapter,
    attribution: Task,
    evaluation: Task,
    config: SweepConfig | None = None,
    progress: bool = True,
    *,
    dense: dict[str, float] | None = None,
) -> SweepResult:
    """Run the sweep (see the module docstring). ``dense`` passes the full model's metrics on
    ``evaluation`` when the caller measured them already (they are not measured again)."""
    cfg = (config or SweepConfig()).for_task(evaluation)
    pad = pad_id(tokenizer)
    clock = PhaseClock()
    enc = evaluation.encode(tokenizer)
    everything = empty_mask(adapter, cfg.level, cfg.layers)
    with clock("evaluation"):
        dense = dict(dense) if dense is not None else task_metrics(model, enc, cfg.eval_batch_size, pad)
        means = ablation_means(model, tokenizer, adapter, attribution, everything, cfg.ablation,
                               cfg.eval_batch_size, evaluation)  # fmt: skip
    if cfg.metric not in dense:
        raise CircuitcutError(f"the task gives no {cfg.metric!r} metric (it has {', '.join(dense)})")
    with clock("evaluation"):
        empty = task_metrics_under(model, adapter, enc, cfg.eval_batch_size, pad, everything, means)
    n = n_components(adapter, cfg.level, cfg.layers)
    curves: dict[str, list[list[dict[str, float]]]] = {}
    points: dict[str, list[dict[str, float]]] = {}
    skipped: dict[str, str] = {}
    seconds: dict[str, float] = {}
    methods = [m for m in cfg.methods if supported(m, cfg.level)]
    for m in cfg.methods:
        if m not in methods:
            skipped[m] = WHY_NOT.get(
                m, f"{m} cannot score {cfg.level}s (it scores {', '.join(SCORE_METHODS[m])})"
            )
    planned = list(dict.fromkeys((k, kept_count(k, n)) for k in cfg.keep))
    bar = tqdm(total=len(methods) * cfg.seeds, desc=f"sweep ({cfg.level})", unit="run", disable=not progress)
    for method in methods:
        start = time.perf_counter()
        curves[method] = []
        plan = [p for i, p in enumerate(planned) if p[1] not in {q[1] for q in planned[:i]}]
        for seed in range(cfg.seeds):
            ref = attribution.subset(min(cfg.n_ref, len(attribution)), seed)
            with clock("attribution"):
                scores = attribute(model, ref.samples(tokenizer), cfg.scoring_for(method, seed), adapter=adapter,
                                   levels=(cfg.level,), layers=cfg.layers, progress=False)  # fmt: skip
            results, evaluated = [], []
            for keep, kept in plan:
                with clock("masks"):
                    mask = mask_keeping(scores, adapter, cfg.level, cfg.layers, kept, n, cfg.scheme(method))
                actual = kept_of(mask, cfg.level, n)
                if seed == 0 and evaluated and actual == evaluated[-1][2]:
                    continue  # the row-wise scheme can land two requests on one count
                if actual == n:  # nothing pruned: the model is the full model, already measured
                    results.append(dict(dense))
                else:
                    with clock("evaluation"):
                        results.append(
                            task_metrics_under(model, adapter, enc, cfg.eval_batch_size, pad, mask, means)
                        )
                evaluated.append((keep, kept, actual))
            if seed == 0:  # counts do not depend on the scores: the later seeds reuse the evaluated plan
                plan = [(k, kept) for k, kept, _ in evaluated]
                points[method] = [{"keep": k, "count": a, "fraction": a / n} for k, _, a in evaluated]
            curves[method].append(results)
            bar.update(1)
        seconds[method] = round(time.perf_counter() - start, 2)
    bar.close()
    return SweepResult(cfg, dense, empty, curves, skipped, seconds, points, n, clock.seconds, means)


def task_metrics_under(
    model: torch.nn.Module,
    adapter: ModelAdapter,
    enc: Any,
    batch_size: int,
    pad: int,
    mask: Mask,
    means: AblationSource,
) -> dict[str, float]:
    """The task's metrics with ``mask`` applied (reversibly; an empty mask is the full model)."""
    with masked(adapter, mask, means):
        return task_metrics(model, enc, batch_size, pad)


def ablation_means(
    model: torch.nn.Module,
    tokenizer: Any,
    adapter: ModelAdapter,
    reference: Task,
    everything: Mask,
    ablation: str,
    batch_size: int = 64,
    evaluation: Task | None = None,
) -> AblationSource:
    """What the pruned components of ``everything`` pass on: None for zero ablation; their mean
    inputs over ``reference``'s prompts for a mean ablation; their inputs on ``evaluation``'s
    counterfactual prompts, in evaluation batches of ``batch_size``, for counterfactual patching."""
    validation.choice(ablation, "ablation", ABLATIONS)
    pad = pad_id(tokenizer)
    if ablation == "zero":
        return None
    if ablation == "mean":
        return input_means(model, adapter, list(everything.weights), reference.encode(tokenizer).prompts,
                           batch_size, pad)  # fmt: skip
    if ablation != "patch" or evaluation is None:
        raise CircuitcutError(f"ablation {ablation!r} is resolved per task first (SweepConfig.for_task)")
    return counterfactual_inputs(
        model, adapter, list(everything.weights), evaluation.encode(tokenizer), batch_size, pad
    )


class PhaseClock:
    """Wall time per named phase (attribution, masks, evaluation), summed over calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = round(self.seconds.get(phase, 0.0) + time.perf_counter() - start, 3)


def count_grid(n: int, lo: float = 1e-4, points: int = 40) -> list[int]:
    """Distinct kept counts of a fine log-spaced grid of fractions from 1 down to max(lo, 1/n),
    ascending."""
    lo = max(lo, 1.0 / n)
    return sorted({kept_count(10 ** (math.log10(lo) * i / (points - 1)), n) for i in range(points)})
