"""Statistics of a correction run: paired tests within a seed, their combination across seeds, and
whether the seeds agree.

Each seed is its own experiment (its own attribution prompts, general windows and held-out prompts),
so prompts are never pooled across seeds: a prompt held out in two seeds would count twice, and
seeds where nothing happened would be drowned by one where it did. Instead:

* within a seed, the held-out prompts before and after pruning are compared with a paired test:
  McNemar's exact test for binary flags (a two-sided binomial test on the discordant pairs), or
  Wilcoxon's signed-rank test for continuous scores (RUR);
* each seed's two-sided p-value becomes a signed z-score, positive when the change goes the desired
  way: ``z = sign * Phi^-1(1 - p / 2)`` (0 when nothing changed);
* the seeds are combined with Stouffer's method, ``Z = sum(z) / sqrt(k)`` with equal weights (the
  seeds have equal held-out halves), two-sided ``p = 2 * Phi(-|Z|)`` (Stouffer et al., 1949;
  Whitlock, J. Evol. Biol. 2005). Unlike Fisher's method on two-sided p-values, opposite effects
  cancel instead of adding up.

Seeds disagree when their held-out rates span more than a stated bound (:func:`seed_agreement`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from scipy import stats

from circuitcut.errors import CircuitcutError


def sem(values: Sequence[float]) -> float:
    """Standard error of the mean (sample standard deviation / sqrt(n)); 0 for fewer than two values."""
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0


def paired_test(
    before: Sequence[float], after: Sequence[float], binary: bool, lower_is_better: bool = True
) -> dict[str, Any]:
    """Two-sided paired test of one seed's held-out prompts, with a signed z-score.

    McNemar's exact test for binary flags, Wilcoxon's signed-rank test otherwise. ``improved`` /
    ``worsened`` count the prompts that moved in the desired / the other direction; ``z`` is
    positive when the change is in the desired direction (``lower_is_better`` says which).
    """
    if len(before) != len(after):
        raise CircuitcutError(f"paired test: {len(before)} values before but {len(after)} after")
    if not before:
        raise CircuitcutError("paired test: no prompts")
    sign = -1.0 if lower_is_better else 1.0
    diffs = [sign * (y - x) for x, y in zip(before, after, strict=True)]  # > 0: desired direction
    improved = sum(d > 0 for d in diffs)
    worsened = sum(d < 0 for d in diffs)
    if binary:
        name = "McNemar exact"
        p = stats.binomtest(improved, improved + worsened, 0.5).pvalue if improved + worsened else 1.0
        direction = improved - worsened
    else:
        name = "Wilcoxon signed-rank"
        p = stats.wilcoxon(before, after).pvalue if any(diffs) else 1.0
        direction = sum(diffs)
    p = float(min(1.0, p))
    z = 0.0 if direction == 0 else math.copysign(float(stats.norm.isf(p / 2)), direction)
    return {"test": name, "n": len(diffs), "improved": improved, "worsened": worsened, "p_value": p, "z": z}


def combine_seeds(tests: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stouffer's combination of the seeds' signed z-scores (see the module docstring)."""
    if not tests:
        raise CircuitcutError("no per-seed tests to combine")
    zs = [t["z"] for t in tests]
    z = sum(zs) / math.sqrt(len(zs))
    return {
        "method": "Stouffer (equal weights) of signed per-seed z-scores",
        "seeds": len(zs),
        "z": z,
        "p_value": float(min(1.0, 2 * stats.norm.sf(abs(z)))),
    }


def seed_agreement(
    rates: Sequence[float], tests: Sequence[dict[str, Any]], bound: float, alpha: float = 0.05
) -> dict[str, Any]:
    """Whether the seeds tell the same story at one count.

    They disagree when the per-seed held-out rates span more than ``bound`` (max - min, in the
    rate's own units). The count of seeds whose own test is significant in the desired direction
    at ``alpha`` is reported beside it.
    """
    spread = max(rates) - min(rates)
    significant = sum(1 for t in tests if t["p_value"] < alpha and t["z"] > 0)
    return {
        "rates": list(rates),
        "spread": spread,
        "bound": bound,
        "agree": spread <= bound,
        "significant_seeds": significant,
        "alpha": alpha,
    }
