"""Plots and Markdown of a correction run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from circuitcut.reports.plots import COLORS, _save


def plot_correction_curves(s: dict[str, Any], base: str | os.PathLike[str]) -> list[Path]:
    """Held-out behaviour rate and general perplexity against the number of pruned components."""
    counts = s["config"]["counts"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for method, rows in s["results"].items():
        c = COLORS.get(method)
        for ax, key in zip(axes, ("heldout_rate", "perplexity"), strict=True):
            mean = [rows[n][key] for n in counts]
            sem = [rows[n][key.replace("rate", "sem") if "rate" in key else "perplexity_sem"] for n in counts]
            ax.errorbar([0, *counts], [s["dense"][key], *mean], yerr=[0, *sem], marker="o", ms=3, capsize=2,
                        label=method, color=c, ls="--" if method in ("random", "magnitude") else "-")  # fmt: skip
    level = s["config"]["level"]
    kind = s["behaviour"].split(" (")[0]
    axes[0].set_ylabel("held-out toxic rate" if kind == "toxicity" else "held-out RUR")
    axes[1].set_ylabel("perplexity on general text")
    for ax in axes:
        ax.set_xlabel(f"pruned {level}s")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"{s['behaviour']}: lowest R_general - R_undesired pruned first; controls dashed; "
        f"mean +/- SEM over {s['config']['seeds']} seeds",
        fontsize=10,
    )
    return _save(fig, base)


def plot_per_prompt(s: dict[str, Any], base: str | os.PathLike[str]) -> list[Path]:
    """Per held-out prompt: behaviour score before against after pruning (report count), per method."""
    methods = list(s["per_prompt"]["after"])
    fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 3.8), squeeze=False)
    before = s["per_prompt"]["before"]
    lo, hi = min(before + [v for m in methods for v in s["per_prompt"]["after"][m]]), max([*before, 1.0])
    span = max(hi - lo, 1e-9)
    rng = np.random.default_rng(0)  # jitter only: many prompts share the same (before, after) values
    jitter = rng.uniform(-0.015, 0.015, size=(2, len(before))) * span
    for ax, method in zip(axes[0], methods, strict=True):
        after = s["per_prompt"]["after"][method]
        ax.scatter(
            np.add(before, jitter[0]), np.add(after, jitter[1]), s=10, alpha=0.4, color=COLORS.get(method)
        )
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, ls="--")
        test = s["results"][method]["paired_test"]
        down = sum(a < b for a, b in zip(after, before, strict=True))
        up = sum(a > b for a, b in zip(after, before, strict=True))
        ax.set_title(
            f"{method}: {down} down, {up} up of {len(before)}\n{test['test']} p={test['p_value']:.2g}",
            fontsize=8,
        )
        ax.set_xlabel("before")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"after pruning {s['config']['report_count']}")
    fig.suptitle(f"per held-out prompt: {s['behaviour']} score (jittered)", fontsize=10)
    fig.subplots_adjust(top=0.78, wspace=0.3)
    return _save(fig, base)


def _at(d: dict, n: int) -> Any:
    """``d[n]`` whether keys are ints or, after a JSON round trip, strings."""
    return d[n] if n in d else d[str(n)]


def correction_markdown(s: dict[str, Any]) -> str:
    """The Markdown report of a correction run."""
    cfg = s["config"]
    n = cfg["report_count"]
    lower = "toxicity" in s["behaviour"]
    d = s["dense"]
    lines = [
        f"# Targeted correction: {s['behaviour']}",
        "",
        f"Prune the {cfg['level']}s with the lowest contrastive relevance R_general - R_undesired "
        f"(layers `{cfg['layers']}`; {cfg['aggregation']} per-sample relevance, unit-seeded outputs"
        f"{', each set normalised to unit total' if cfg['normalize'] else ''}). Undesired prompts split into an "
        "attribution half and a held-out half per seed; equal-count random and magnitude pruning as controls. "
        f"Generation: greedy, {cfg['generation']['max_new_tokens']} new tokens. {cfg['seeds']} seeds.",
        "",
        f"Dense model: held-out rate {d['heldout_rate']:.3f} (attribution half {d['attribution_rate']:.3f}), "
        f"perplexity {d['perplexity']:.3f}.",
        "",
        f"## At {n} pruned {cfg['level']}s ({_at(s['share_of_components'], n)})",
        "",
        "| method | held-out rate | relative change | attribution-half rate | perplexity | ppl change | paired test p |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, rows in s["results"].items():
        r = _at(rows, n)
        t = rows["paired_test"]
        rel = r["heldout_relative_change"]
        lines.append(
            f"| {method} | {r['heldout_rate']:.3f} +/- {r['heldout_sem']:.3f} | "
            f"{'-' if rel is None else f'{100 * rel:+.1f}%'} | {r['attribution_rate']:.3f} | "
            f"{r['perplexity']:.3f} | {100 * r['perplexity_relative_change']:+.2f}% | {t['p_value']:.2g} ({t['test']}) |"
        )
    lines += [
        "",
        f"Rates are {'shares of toxic continuations (lower is better)' if lower else 'mean RUR (higher is better)'}; "
        "+/- is the standard error over seeds.",
        "",
        "![curves](correction_curves.png)",
        "",
        "![per prompt](per_prompt.png)",
        "",
        "Total relevance of each set (mean over samples, summed over components), per method and seed: "
        f"`{s['relevance_totals']}`.",
        "",
        f"Wall time {s['seconds']} s.",
        "",
    ]
    return "\n".join(lines)
