"""Performance-versus-sparsity sweeps: prune by each method's scores at log-spaced rates, evaluate.

For each method and seed, a reference set of ``n_ref`` attribution examples (drawn with that seed)
is scored; the model is then pruned, reversibly, to keep a log-spaced series of fractions of the
selected components (weights of chosen layers, MLP neurons or attention heads) and the task is
evaluated on the held-out evaluation split. Ablation is zeroing (pruned weights are set to 0;
a pruned neuron or head has its output removed).

Faithfulness follows the MIB circuit-localisation convention, f = (m(C) - m(empty)) /
(m(model) - m(empty)), with m(empty) the metric when every selected component is pruned. Its area
is the trapezoid integral of f over log10(kept fraction), divided by the span of that axis (so a
circuit as good as the model at every size scores 1).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from circuitcut.attribution import METHODS as SCORE_METHODS
from circuitcut.attribution import attribute
from circuitcut.attribution.engine import select_linears
from circuitcut.errors import CircuitcutError
from circuitcut.models.adapter import ModelAdapter
from circuitcut.pruning import Mask, masked, unit_mask, unstructured_mask
from circuitcut.scores import Scores
from circuitcut.tasks.base import Task, faithfulness, task_metrics

LEVELS = ("weight", "neuron", "head")
#: kept fractions: 100% down to 0.1% (the MIB circuit sizes, log-spaced)
DEFAULT_KEEP = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001)
DEFAULT_METHODS = ("lrp", "gradient", "wanda", "activation", "random")


@dataclass
class SweepConfig:
    """What a sweep does (recorded in its outputs)."""

    methods: tuple[str, ...] = DEFAULT_METHODS
    level: str = "weight"
    layers: str = "all"
    keep: tuple[float, ...] = DEFAULT_KEEP
    seeds: int = 3
    n_ref: int = 64
    metric: str = "logit_diff"
    #: pruning scheme per method at weight level; the paper's best: global, Wanda row-wise
    schemes: dict[str, str] = field(default_factory=lambda: {"wanda": "rowwise"})
    default_scheme: str = "global"
    variant: str = "attnlrp"
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise CircuitcutError(f"unknown level {self.level!r}; use one of {', '.join(LEVELS)}")
        bad = [m for m in self.methods if m not in SCORE_METHODS]
        if bad:
            raise CircuitcutError(f"unknown method(s) {bad}; use among {', '.join(SCORE_METHODS)}")
        if not self.keep or any(not 0 < k <= 1 for k in self.keep):
            raise CircuitcutError("kept fractions must lie in (0, 1]")
        if self.seeds < 1 or self.n_ref < 1:
            raise CircuitcutError("seeds and n_ref must be >= 1")
        self.keep = tuple(sorted(set(self.keep), reverse=True))

    def scheme(self, method: str) -> str:
        """The weight-level scheme a method is pruned with."""
        return self.schemes.get(method, self.default_scheme)


def supported(method: str, level: str) -> bool:
    """Whether a method can score a level (Wanda and magnitude score weights only, activation units only)."""
    return level in SCORE_METHODS[method]


def mask_at(scores: Scores, adapter: ModelAdapter, level: str, layers: str, keep: float, scheme: str) -> Mask:
    """The mask keeping a fraction ``keep`` of the selected components by ``scores``."""
    sparsity = 1.0 - keep
    if level == "weight":
        return unstructured_mask(scores, adapter, sparsity, scheme=scheme, layers=layers)
    return unit_mask(scores, adapter, level, sparsity, scheme="global")


def empty_mask(adapter: ModelAdapter, level: str, layers: str) -> Mask:
    """Every selected component pruned (the empty circuit)."""
    if level == "weight":
        return Mask(
            {
                lin.name: torch.ones_like(lin.weight, dtype=torch.bool)
                for lin in select_linears(adapter, layers)
            }
        )
    weights = {}
    for i in range(adapter.n_layers):
        lin = adapter.neuron_site(i) if level == "neuron" else adapter.head_site(i)
        weights[lin.name] = torch.ones_like(lin.weight, dtype=torch.bool)
    return Mask(weights)


@dataclass
class SweepResult:
    """Curves: ``curves[method][seed]`` is a list of metric dicts, one per kept fraction."""

    config: SweepConfig
    dense: dict[str, float]
    empty: dict[str, float]
    curves: dict[str, list[list[dict[str, float]]]]
    skipped: dict[str, str]
    seconds: dict[str, float]

    def mean_curve(self, method: str, metric: str | None = None) -> tuple[list[float], list[float]]:
        """Mean and standard deviation over seeds, per kept fraction."""
        metric = metric or self.config.metric
        runs = [[pt[metric] for pt in seed] for seed in self.curves[method]]
        means = [statistics.fmean(col) for col in zip(*runs, strict=True)]
        stds = [statistics.pstdev(col) if len(col) > 1 else 0.0 for col in zip(*runs, strict=True)]
        return means, stds

    def faithfulness_curve(self, method: str) -> list[float]:
        """Mean faithfulness per kept fraction."""
        m = self.config.metric
        means, _ = self.mean_curve(method)
        return [faithfulness(v, self.dense[m], self.empty[m]) for v in means]

    def area(self, method: str) -> float:
        """Normalised area under the faithfulness curve over log10(kept fraction)."""
        xs = [math.log10(k) for k in self.config.keep]
        fs = self.faithfulness_curve(method)
        if len(xs) < 2:
            return fs[0]
        total = sum((xs[i] - xs[i + 1]) * (fs[i] + fs[i + 1]) / 2 for i in range(len(xs) - 1))
        return total / (xs[0] - xs[-1])

    def sparsest_keep(self, method: str, threshold: float = 0.9) -> float | None:
        """The smallest kept fraction whose mean metric is at least ``threshold`` x the model's."""
        means, _ = self.mean_curve(method)
        target = threshold * self.dense[self.config.metric]
        ok = [k for k, v in zip(self.config.keep, means, strict=True) if v >= target]
        return min(ok) if ok else None

    def rows(self) -> list[dict[str, Any]]:
        """Flat rows for CSV: method, seed, keep, sparsity, metrics, faithfulness."""
        out = []
        m = self.config.metric
        for method, seeds in self.curves.items():
            for seed, points in enumerate(seeds):
                for k, pt in zip(self.config.keep, points, strict=True):
                    f = faithfulness(pt[m], self.dense[m], self.empty[m])
                    out.append({"method": method, "seed": seed, "keep": k, "sparsity": round(1 - k, 6), **pt,
                                "faithfulness": f})  # fmt: skip
        return out

    def summary(self) -> dict[str, Any]:
        """Per method: area under faithfulness, sparsest kept fraction at 90%, mean curve."""
        return {
            method: {
                "faithfulness_area": self.area(method),
                "sparsest_keep_90": self.sparsest_keep(method, 0.9),
                "mean": self.mean_curve(method)[0],
                "std": self.mean_curve(method)[1],
            }
            for method in self.curves
        }

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with the configuration and the ablation used."""
        return {"config": asdict(self.config), "ablation": "zero", "dense": self.dense, "empty": self.empty,
                "curves": self.curves, "skipped": self.skipped, "seconds": self.seconds,
                "summary": self.summary()}  # fmt: skip


def sweep(
    model: torch.nn.Module,
    tokenizer: Any,
    adapter: ModelAdapter,
    attribution: Task,
    evaluation: Task,
    config: SweepConfig | None = None,
    progress: bool = True,
) -> SweepResult:
    """Run the sweep (see the module docstring)."""
    cfg = config or SweepConfig()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    enc = evaluation.encode(tokenizer)
    dense = task_metrics(model, enc, cfg.batch_size, pad)
    if cfg.metric not in dense:
        raise CircuitcutError(f"the task gives no {cfg.metric!r} metric (it has {', '.join(dense)})")
    with masked(adapter, empty_mask(adapter, cfg.level, cfg.layers)):
        empty = task_metrics(model, enc, cfg.batch_size, pad)
    curves: dict[str, list[list[dict[str, float]]]] = {}
    skipped: dict[str, str] = {}
    seconds: dict[str, float] = {}
    methods = [m for m in cfg.methods if supported(m, cfg.level)]
    for m in cfg.methods:
        if m not in methods:
            skipped[m] = f"{m} cannot score {cfg.level}s (it scores {', '.join(SCORE_METHODS[m])})"
    total = len(methods) * cfg.seeds
    bar = tqdm(total=total, desc=f"sweep ({cfg.level})", unit="run", disable=not progress)
    for method in methods:
        start = time.perf_counter()
        curves[method] = []
        for seed in range(cfg.seeds):
            ref = attribution.subset(min(cfg.n_ref, len(attribution)), seed)
            scores = attribute(model, ref.samples(tokenizer), method, adapter=adapter, levels=(cfg.level,),
                               layers=cfg.layers, batch_size=cfg.batch_size, pad_id=pad, seed=seed,
                               variant=cfg.variant, progress=False)  # fmt: skip
            points = []
            for keep in cfg.keep:
                mask = mask_at(scores, adapter, cfg.level, cfg.layers, keep, cfg.scheme(method))
                with masked(adapter, mask):
                    points.append(task_metrics(model, enc, cfg.batch_size, pad))
            curves[method].append(points)
            bar.update(1)
        seconds[method] = round(time.perf_counter() - start, 2)
    bar.close()
    return SweepResult(cfg, dense, empty, curves, skipped, seconds)


def keep_grid(n: int, lo: float = 1e-4, points: int = 40) -> Sequence[float]:
    """A fine log-spaced grid of kept fractions from 1 down to max(lo, 1/n)."""
    lo = max(lo, 1.0 / n)
    return sorted({10 ** (math.log10(lo) * i / (points - 1)) for i in range(points)}, reverse=True)
