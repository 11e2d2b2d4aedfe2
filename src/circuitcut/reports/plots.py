"""Pictures: performance-versus-sparsity curves and where a circuit lives (PNG and SVG)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from circuitcut.io import _atomic

COLORS = {"lrp": "#d62728", "gradient": "#1f77b4", "wanda": "#2ca02c", "activation": "#9467bd",
          "random": "#7f7f7f", "magnitude": "#8c564b", "gradient_magnitude": "#17becf"}  # fmt: skip


def _save(fig: Any, base: str | os.PathLike[str]) -> list[Path]:
    base = Path(base)
    paths = []
    for ext in ("png", "svg"):
        path = base.with_suffix(f".{ext}")
        _atomic(path, lambda tmp, e=ext: fig.savefig(tmp, format=e, dpi=150, bbox_inches="tight"))
        paths.append(path)
    plt.close(fig)
    return paths


def plot_sweep(result: Any, base: str | os.PathLike[str], title: str = "") -> list[Path]:
    """Task metric, answer probability and faithfulness against the kept fraction actually evaluated,
    one line per method (mean over seeds, band = +/- 1 std); the threshold on faithfulness dotted."""
    cfg = result.config
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for method in result.curves:
        keep = [100 * k for k in result.fractions(method)]
        c = COLORS.get(method)
        for ax, metric in zip(axes[:2], (cfg.metric, "prob"), strict=True):
            mean, std = result.mean_curve(method, metric)
            ax.plot(keep, mean, marker="o", ms=3, label=method, color=c)
            ax.fill_between(keep, [m - s for m, s in zip(mean, std, strict=True)],
                            [m + s for m, s in zip(mean, std, strict=True)], alpha=0.15, color=c)  # fmt: skip
        axes[2].plot(keep, result.faithfulness_curve(method), marker="o", ms=3, color=c,
                     label=f"{method} (area {result.area(method):.2f}, CPR {result.cpr(method):.2f})")  # fmt: skip
    axes[0].axhline(result.dense[cfg.metric], color="k", ls="--", lw=1, label="full model")
    axes[1].axhline(result.dense["prob"], color="k", ls="--", lw=1, label="full model")
    axes[2].axhline(1.0, color="k", ls="--", lw=1)
    axes[2].axhline(cfg.threshold, color="k", ls=":", lw=1, label=f"threshold {cfg.threshold:.0%}")
    labels = (cfg.metric.replace("_", " "), "answer probability", "faithfulness")
    for ax, ylabel in zip(axes, labels, strict=True):
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}%"))
        ax.set_xlabel(f"kept {cfg.level}s (% of selection, zero ablation)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or f"{cfg.level}-level circuits, {cfg.seeds} reference sets of {cfg.n_ref}")
    return _save(fig, base)


def plot_circuit(
    info: dict[str, Any], base: str | os.PathLike[str], n_per_layer: int | None = None
) -> list[Path]:
    """Kept components per layer (stacked by component for weight circuits)."""
    per_layer = info["kept_per_layer"]
    layers = list(per_layer)
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(layers) + 3), 3.8))
    if info["level"] == "weight":
        parts = sorted({p for v in per_layer.values() for p in v})
        bottom = [0] * len(layers)
        for part in parts:
            vals = [per_layer[layer].get(part, 0) for layer in layers]
            ax.bar(layers, vals, bottom=bottom, label=part)
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        ax.set_ylabel("kept weights")
        ax.legend(fontsize=8)
    else:
        ax.bar(layers, [per_layer[layer] for layer in layers], color=COLORS.get(info["method"]))
        if n_per_layer:
            ax.axhline(n_per_layer, color="k", ls="--", lw=1, label=f"{info['level']}s per layer")
            ax.legend(fontsize=8)
        ax.set_ylabel(f"kept {info['level']}s")
    ax.set_title(f"{info['method']} circuit: {info['kept']} of {info['components']} {info['level']}s kept "
                 f"({100 * info['kept'] / info['components']:.2f}%)")  # fmt: skip
    ax.tick_params(axis="x", rotation=45)
    return _save(fig, base)
