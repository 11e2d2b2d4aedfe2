"""What a correction run reports: per-seed figures with their means, tests, warnings, and the headline
of the exported model.

:func:`summarise` turns the seeds' raw measurements (:meth:`~circuitcut.correction.measure.Probe.measure`
of the dense model and of each method at each count) into the report's tables: every seed's figure,
mean and standard error over seeds, the within-seed paired tests and their combination, seed
agreement, and the quality flags of :mod:`circuitcut.correction.fluency`. :func:`headline` does the
same for one model against the dense model on the test prompts (the exported model).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from circuitcut.correction.fluency import QualityBounds, perplexity_flag, quality_flags, relative
from circuitcut.correction.statistics import combine_seeds, paired_test, seed_agreement, sem

#: the text-quality figures averaged over seeds
QUALITY_KEYS = ("rate", "fluency_perplexity", "distinct_1", "distinct_2", "distinct_3", "empty_share",
                "mean_length")  # fmt: skip
#: what the sets are called in messages
SET_NAMES = {"heldout": "held-out behaviour prompts", "general": "general prompts", "test": "test prompts"}


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


def mean_quality(figs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean over seeds of each text-quality figure of one prompt set, with the seeds' values."""
    out: dict[str, Any] = {k: _mean([f.get(k) for f in figs]) for k in QUALITY_KEYS}
    out["per_seed"] = {k: [f.get(k) for f in figs] for k in QUALITY_KEYS}
    return out


def _flags(
    dense: dict[str, Any], fig: dict[str, Any], bounds: QualityBounds, sets: Sequence[str]
) -> list[str]:
    flags = perplexity_flag(dense["perplexity"], fig["perplexity"], bounds)
    for name in sets:
        flags += quality_flags(dense["quality"][name], fig["quality"][name], bounds, SET_NAMES[name],
                               name != "general")  # fmt: skip
    return flags


def summarise(
    seeds: list[dict[str, Any]],
    counts: Sequence[int],
    report_count: int,
    binary: bool,
    lower_is_better: bool,
    bounds: QualityBounds,
    disagreement_bound: float,
    alpha: float,
) -> dict[str, Any]:
    """Dense figures, per-method results per count, warnings and per-prompt values (see the module
    docstring). ``seeds[i]`` holds ``dense`` and ``methods[method][count]`` measurements."""
    sets = ("heldout", "general")
    per = {k: [s["dense"][k]["rate"] for s in seeds] for k in ("heldout", "attribution")}
    ppl = [s["dense"]["perplexity"] for s in seeds]
    dense = {
        "heldout_rate": statistics.fmean(per["heldout"]), "heldout_sem": sem(per["heldout"]),
        "attribution_rate": statistics.fmean(per["attribution"]),
        "perplexity": statistics.fmean(ppl), "perplexity_sem": sem(ppl),
        "per_seed": {"heldout_rate": per["heldout"], "attribution_rate": per["attribution"], "perplexity": ppl},
        "quality": {name: mean_quality([s["dense"][name] for s in seeds]) for name in sets},
    }  # fmt: skip
    results: dict[str, Any] = {}
    warnings: list[str] = []
    for method in seeds[0]["methods"]:
        rows: dict[int, Any] = {}
        for count in counts:
            figs = [s["methods"][method][count] for s in seeds]
            held = [f["heldout"]["rate"] for f in figs]
            attr = [f["attribution"]["rate"] for f in figs]
            p = [f["perplexity"] for f in figs]
            tests = [
                paired_test(s["dense"]["heldout"]["per_prompt"], f["heldout"]["per_prompt"], binary, lower_is_better)
                for s, f in zip(seeds, figs, strict=True)
            ]  # fmt: skip
            row = {
                "heldout_rate": statistics.fmean(held), "heldout_sem": sem(held),
                "attribution_rate": statistics.fmean(attr), "attribution_sem": sem(attr),
                "perplexity": statistics.fmean(p), "perplexity_sem": sem(p),
                "heldout_relative_change": relative(statistics.fmean(held), dense["heldout_rate"]),
                "perplexity_relative_change": relative(statistics.fmean(p), dense["perplexity"]),
                "per_seed": {"heldout_rate": held, "attribution_rate": attr, "perplexity": p},
                "quality": {name: mean_quality([f[name] for f in figs]) for name in sets},
                "tests": {"per_seed": tests, "combined": combine_seeds(tests)},
                "agreement": seed_agreement(held, tests, disagreement_bound, alpha),
            }  # fmt: skip
            row["flags"] = _flags(dense, row, bounds, sets)
            rows[count] = row
        agreement = rows[report_count]["agreement"]
        if not agreement["agree"]:
            warnings.append(
                f"{method} at {report_count}: the seeds disagree: held-out rates "
                f"{', '.join(f'{r:.2f}' for r in agreement['rates'])} span {agreement['spread']:.2f}, more than "
                f"the bound {disagreement_bound:.2f}; significant (p < {alpha}) in {agreement['significant_seeds']} "
                f"of {len(seeds)} seeds"
            )
        results[method] = rows
    per_prompt = [
        {"seed": s["seed"], "before": s["dense"]["heldout"]["per_prompt_score"],
         "after": {m: s["methods"][m][report_count]["heldout"]["per_prompt_score"] for m in s["methods"]}}
        for s in seeds
    ]  # fmt: skip
    return {"dense": dense, "results": results, "warnings": warnings, "per_prompt": per_prompt}


def headline(
    dense: dict[str, Any], model: dict[str, Any], binary: bool, lower_is_better: bool, bounds: QualityBounds
) -> dict[str, Any]:
    """One model's figures against the dense model's on the same test and general prompts: rates,
    perplexity, text quality, their relative changes, the paired test on the test prompts, the quality
    flags and the continuations side by side."""
    q = lambda fig: {k: fig.get(k) for k in QUALITY_KEYS}  # noqa: E731
    flags = perplexity_flag(dense["perplexity"], model["perplexity"], bounds)
    for name in ("test", "general"):
        flags += quality_flags(dense[name], model[name], bounds, SET_NAMES[name], name != "general")
    examples = {
        name: [{"prompt": pr, "before": b, "after": a} for pr, b, a in
               zip(dense[name]["prompts"], dense[name]["continuations"], model[name]["continuations"], strict=True)]
        for name in ("test", "general")
    }  # fmt: skip
    return {
        "test_rate": model["test"]["rate"],
        "general_rate": model["general"]["rate"],
        "perplexity": model["perplexity"],
        "quality": {"test": q(model["test"]), "general": q(model["general"])},
        "dense": {"test_rate": dense["test"]["rate"], "general_rate": dense["general"]["rate"],
                  "perplexity": dense["perplexity"], "quality": {"test": q(dense["test"]), "general": q(dense["general"])}},
        "test_relative_change": relative(model["test"]["rate"], dense["test"]["rate"]),
        "perplexity_relative_change": relative(model["perplexity"], dense["perplexity"]),
        "paired_test": paired_test(dense["test"]["per_prompt"], model["test"]["per_prompt"], binary, lower_is_better),
        "per_prompt": {"before": dense["test"]["per_prompt"], "after": model["test"]["per_prompt"]},
        "flags": flags,
        "continuations": examples,
    }  # fmt: skip
