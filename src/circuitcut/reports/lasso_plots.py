"""Pictures of CircuitLasso results: faithfulness against circuit size, and the feature graph."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from circuitcut.reports.plots import _save

COLORS = {"circuitlasso": "#d62728", "attribution_patching": "#1f77b4", "random": "#7f7f7f"}


def plot_faithfulness(s: dict[str, Any], base: str | os.PathLike[str]) -> list[Path]:
    """Faithfulness of each ranking's top-K circuit against K."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, row in s["evaluation"]["faithfulness"].items():
        ks = [int(k) for k in row]
        ax.plot(ks, list(row.values()), marker="o", ms=3, label=name, color=COLORS.get(name))
    ax.axhline(1.0, color="k", ls="--", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("features kept (all sites)")
    ax.set_ylabel("faithfulness (zero ablation, error terms kept)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{s['task']} on {s['model']}", fontsize=10)
    return _save(fig, base)


def plot_graph(graph: dict[str, Any], base: str | os.PathLike[str]) -> list[Path]:
    """Features as nodes in one column per site (plus the output), retained edges as lines."""
    sites = graph["sites"]
    by_site: dict[int, list[dict]] = {}
    for node in graph["nodes"]:
        by_site.setdefault(sites.index(node["site"]), []).append(node)
    pos = {}
    for k, nodes in by_site.items():
        for r, node in enumerate(sorted(nodes, key=lambda n: -n["score"])):
            pos[(k, node["feature"])] = (k, -r)
    out_x = len(sites)
    fig, ax = plt.subplots(
        figsize=(2.4 * (len(sites) + 1), 0.35 * max([len(v) for v in by_site.values()] + [4]) + 1.5)
    )
    top = max((abs(e["coef"]) for e in graph["edges"]), default=1.0) or 1.0
    for e in graph["edges"]:
        src = pos.get((e["source_site"], e["source"]))
        dst = (out_x, 0) if e["target_site"] == "output" else pos.get((e["target_site"], e["target"]))
        if src and dst:
            ax.plot([src[0], dst[0]], [src[1], dst[1]], color="#d62728" if e["coef"] > 0 else "#1f77b4",
                    alpha=0.25 + 0.75 * abs(e["coef"]) / top, lw=0.5 + 2 * abs(e["coef"]) / top)  # fmt: skip
    for (k, feat), (x, y) in pos.items():
        node = next(n for n in by_site[k] if n["feature"] == feat)
        ax.scatter([x], [y], s=30, color="k", zorder=3)
        ax.annotate(
            f"#{feat} {node['label'][:18]}", (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points"
        )
    ax.scatter([out_x], [0], s=80, color="#2ca02c", zorder=3)
    ax.annotate("output", (out_x, 0), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set_xticks(list(range(len(sites) + 1)), [s.replace("blocks.", "").replace(".hook_", "\n") for s in sites] + ["output"],
                  fontsize=7)  # fmt: skip
    ax.set_yticks([])
    ax.set_title("CircuitLasso feature graph (red: positive, blue: negative coefficient)", fontsize=9)
    return _save(fig, base)
