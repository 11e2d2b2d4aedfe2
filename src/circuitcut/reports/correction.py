"""Plots and Markdown of a correction run.

The report opens with the exported model's own figures (measured as written) and its judging by a
second scorer, on sampled continuations and for substituted words, then the warnings,
then the method's estimate over seeds (each seed's figure, mean and SEM, tests within seeds and
their combination), the text quality over the sweep, and the relevance totals, all as tables.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from circuitcut.reports.plots import COLORS, _save

#: how many continuations of each set the Markdown shows (report.json holds them all)
N_EXAMPLES = 6


def _at(d: dict, n: int) -> Any:
    """``d[n]`` whether keys are ints or, after a JSON round trip, strings."""
    return d[n] if n in d else d[str(n)]


def plot_correction_curves(s: dict[str, Any], base: str | os.PathLike[str]) -> list[Path]:
    """Held-out behaviour rate, general perplexity, and the fluency and distinct-2 of the held-out
    continuations against the number of pruned components (mean +/- SEM over seeds)."""
    counts = s["config"]["counts"]
    d = s["dense"]
    panels = [
        ("held-out rate", lambda r: (r["heldout_rate"], r["heldout_sem"]), (d["heldout_rate"], 0.0)),
        ("perplexity on general text", lambda r: (r["perplexity"], r["perplexity_sem"]), (d["perplexity"], 0.0)),
        ("fluency: held-out continuations' perplexity\nunder the dense model",
         lambda r: _quality(r, "fluency_perplexity"), _quality(d, "fluency_perplexity")),
        ("distinct-2 of held-out continuations", lambda r: _quality(r, "distinct_2"), _quality(d, "distinct_2")),
    ]  # fmt: skip
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for method, rows in s["results"].items():
        c = COLORS.get(method)
        for ax, (_, get, dense) in zip(axes.flat, panels, strict=True):
            vals = [get(_at(rows, n)) for n in counts]
            ax.errorbar([0, *counts], [dense[0], *(v[0] for v in vals)], yerr=[0, *(v[1] for v in vals)],
                        marker="o", ms=3, capsize=2, label=method, color=c,
                        ls="--" if method in ("random", "magnitude") else "-")  # fmt: skip
    kind = s["behaviour"].split(" (")[0]
    for ax, (label, _, _) in zip(axes.flat, panels, strict=True):
        ax.set_ylabel(
            label.replace("held-out rate", "held-out toxic rate" if kind == "toxicity" else "held-out RUR")
        )
        ax.set_xlabel(f"pruned {s['config']['level']}s")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{s['behaviour']}: lowest R_general - R_undesired pruned first; controls dashed; "
                 f"mean +/- SEM over {s['config']['seeds']} seeds", fontsize=10)  # fmt: skip
    fig.tight_layout()
    return _save(fig, base)


def _quality(row: dict[str, Any], key: str) -> tuple[float, float]:
    """Mean and SEM over seeds of a held-out text-quality figure (NaN when undefined)."""
    vals = [v for v in row["quality"]["heldout"]["per_seed"][key] if v is not None]
    if not vals:
        return float("nan"), 0.0
    return float(np.mean(vals)), float(np.std(vals, ddof=1) / np.sqrt(len(vals))) if len(vals) > 1 else 0.0


def plot_per_prompt(s: dict[str, Any], base: str | os.PathLike[str]) -> list[Path]:
    """Per held-out prompt: behaviour score before against after pruning (report count), per method;
    one marker per seed (each seed has its own held-out half)."""
    n = s["config"]["report_count"]
    methods = list(s["per_prompt"][0]["after"])
    fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 3.8), squeeze=False)
    values = [
        v for r in s["per_prompt"] for v in (*r["before"], *(x for m in methods for x in r["after"][m]))
    ]
    lo, hi = min(values), max([*values, 1.0])
    span = max(hi - lo, 1e-9)
    rng = np.random.default_rng(0)  # jitter only: many prompts share the same (before, after) values
    markers = "os^Dv<>p"
    for ax, method in zip(axes[0], methods, strict=True):
        for r in s["per_prompt"]:
            before, after = r["before"], r["after"][method]
            jit = rng.uniform(-0.015, 0.015, size=(2, len(before))) * span
            ax.scatter(np.add(before, jit[0]), np.add(after, jit[1]), s=10, alpha=0.4, color=COLORS.get(method),
                       marker=markers[r["seed"] % len(markers)], label=f"seed {r['seed']}")  # fmt: skip
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, ls="--")
        t = _at(s["results"][method], n)["tests"]
        ps = ", ".join(f"{x['p_value']:.2g}" for x in t["per_seed"])
        ax.set_title(f"{method}: per-seed p {ps}\ncombined p={t['combined']['p_value']:.2g}", fontsize=8)
        ax.set_xlabel("before")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"after pruning {n}")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"per held-out prompt: {s['behaviour']} score (jittered)", fontsize=10)
    fig.subplots_adjust(top=0.78, wspace=0.3)
    return _save(fig, base)


def _cell(text: str, limit: int = 160) -> str:
    """Text made safe for a Markdown table cell."""
    text = " ".join(text.split()).replace("|", "\\|")
    return (text[: limit - 3] + "...") if len(text) > limit else (text or "(empty)")


def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:+.{digits}f}%"


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def _exported(s: dict[str, Any], lower: bool) -> list[str]:
    e = s["exported"]
    d = e["dense"]
    rate = "toxic rate" if lower else "mean RUR"
    rows = [
        (f"behaviour ({rate}) on the test prompts", d["test_rate"], e["test_rate"], ".3f"),
        (f"behaviour ({rate}) on general prompts", d["general_rate"], e["general_rate"], ".3f"),
        ("general-text perplexity", d["perplexity"], e["perplexity"], ".3f"),
    ]
    for name, where in (("test", "test"), ("general", "general")):
        dq, q = d["quality"][name], e["quality"][name]
        rows.append((f"fluency on {where} prompts (perplexity under the dense model)", dq["fluency_perplexity"],
                     q["fluency_perplexity"], ".3f"))  # fmt: skip
        for k in (1, 2, 3):
            rows.append((f"distinct-{k} on {where} prompts", dq[f"distinct_{k}"], q[f"distinct_{k}"], ".3f"))
        rows.append((f"empty continuations on {where} prompts", dq["empty_share"], q["empty_share"], ".2f"))
    t = e["paired_test"]
    lines = [
        f"## The exported model: {e['count']} {s['config']['level']}s pruned ({e['share']})",
        "",
        f"Mask: {e['statement']}. Measured from **{e['measured_from']}** on {len(e['test_prompts'])} test prompts "
        f"that no attribution saw and {len(e['general_prompts'])} general prompts; greedy continuations of "
        f"{s['config']['generation']['max_new_tokens']} tokens.",
        "",
        "| | dense | corrected | change |",
        "|---|---|---|---|",
    ]
    for label, before, after, fmt in rows:
        change = None if before in (None, 0) or after is None else (after - before) / before
        lines.append(f"| {label} | {_num(before, fmt)} | {_num(after, fmt)} | {_pct(change)} |")
    lines += [
        "",
        f"Paired test on the test prompts ({t['test']}): {t['improved']} improved, {t['worsened']} worsened of "
        f"{t['n']}, p = {t['p_value']:.3g}.",
        "",
        "Quality checks (bounds: general perplexity "
        f"+{100 * s['config']['quality']['perplexity']:.0f}%, fluency +{100 * s['config']['quality']['fluency']:.0f}% on general "
        f"and +{100 * s['config']['quality']['behaviour_fluency']:.0f}% on behaviour prompts, "
        f"distinct-2 -{100 * s['config']['quality']['diversity']:.0f}%): "
        + ("all within bounds." if not e["flags"] else ""),
    ]
    lines += [f"- **flag**: {f}" for f in e["flags"]]
    for name, title in (("test", "test prompts"), ("general", "general prompts")):
        lines += ["", f"Continuations of {title} (first {N_EXAMPLES}; all in report.json):", "",
                  "| prompt | dense | corrected |", "|---|---|---|"]  # fmt: skip
        for ex in e["continuations"][name][:N_EXAMPLES]:
            lines.append(f"| {_cell(ex['prompt'], 80)} | {_cell(ex['before'])} | {_cell(ex['after'])} |")
    return lines


def _interval(fig: dict[str, Any], key: str, interval: str) -> str:
    lo, hi = fig[interval]
    return f"{fig[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def _emt(t: dict[str, Any]) -> str:
    """The name of the expected maximum of one scorer's scores (a word list's are numbers of matches)."""
    return "expected maximum toxicity" + (" (matches)" if t.get("scale") == "matches" else "")


def _judging_rows(j: dict[str, Any]) -> list[str]:
    """Table rows: the judge's greedy rates, the RealToxicityPrompts pair and the samples' diversity."""
    rows = []
    for where, g in ((w, j["greedy"].get(w)) for w in ("test", "general")):
        if g:
            change = _pct(None if not g["dense"] else (g["corrected"] - g["dense"]) / g["dense"])
            rows.append(f"| judge {_cell(j['judge'], 80)}: toxic rate on {where} prompts (greedy) | {g['dense']:.3f} | "
                        f"{g['corrected']:.3f} | {change} |")  # fmt: skip
    sampled = j.get("sampled")
    if not sampled:
        return rows
    k = sampled["settings"]["num_samples"]
    for role, t in sampled["toxicity"].items():
        for where in ("test", "general"):
            d, c = t[where]["dense"], t[where]["corrected"]
            for key, interval, label in (("expected_max_toxicity", "emt_interval", _emt(t)),
                                         ("toxicity_probability", "tp_interval", "toxicity probability")):  # fmt: skip
                change = None if not d[key] else (c[key] - d[key]) / d[key]
                rows.append(f"| {role} {_cell(t['scorer'], 80)}: {label} on {where} prompts ({k} samples) | "
                            f"{_interval(d, key, interval)} | {_interval(c, key, interval)} | {_pct(change)} |")  # fmt: skip
    for where, div in sampled["diversity"].items():
        for key, label in (("distinct_1", "distinct-1"), ("distinct_2", "distinct-2"),
                           ("repeated_trigram_rate", "repeated-trigram rate")):  # fmt: skip
            d, c = div["dense"][key], div["corrected"][key]
            rows.append(f"| {label} of the samples on {where} prompts | {d:.3f} | {c:.3f} | "
                        f"{_pct(None if not d else (c - d) / d)} |")  # fmt: skip
    return rows


def _judging(s: dict[str, Any]) -> list[str]:
    """The exported model judged by a second scorer, on samples, and for substituted words."""
    j = s["exported"].get("judging")
    if not j:
        return []
    lines = ["## Judged independently", "",
             f"Selection scorer: {j['selection'] or 'none (repetition)'}. Second scorer: {j['judge_choice']}.", ""]  # fmt: skip
    rows = _judging_rows(j)
    if rows:
        lines += ["| | dense | corrected | change |", "|---|---|---|---|", *rows, ""]
    if j["greedy"]:
        t = j["greedy"]["paired_test"]
        lines += [f"Judge's paired test on the test prompts ({t['test']}): {t['improved']} improved, "
                  f"{t['worsened']} worsened of {t['n']}, p = {t['p_value']:.3g}.", ""]  # fmt: skip
    sampled = j.get("sampled")
    if sampled:
        g, b = sampled["settings"], sampled["bootstrap"]
        lines += [f"Samples: {g['num_samples']} per prompt, nucleus sampling (top-p {g['top_p']}, temperature "
                  f"{g['temperature']}, seed {g['seed']}, up to {g['max_new_tokens']} tokens). Expected maximum "
                  "toxicity: the mean over prompts of the highest score among a prompt's samples; toxicity "
                  "probability: the share of prompts with at least one sample flagged (a classifier's score >= 0.5, a "
                  "word list's matches >= 1; a word list's score is its number of matches). Brackets: "
                  f"{100 * b['level']:.0f}% percentile bootstrap over prompts ({b['resamples']} resamples, seed "
                  f"{b['seed']}). Distinct-n: a prompt's samples pooled, whitespace words, mean over prompts.", ""]  # fmt: skip
    else:
        lines += ["No sampled continuations (sampling off): greedy figures only.", ""]
    return [*lines, *_substitutions(j["substitution"])]


def _substitutions(sub: dict[str, Any]) -> list[str]:
    """The substitution check's sentence and its prompts."""
    if not sub["word_lists"]:
        return ["Substitutions: no word list among the scorers, so no word-level check.", ""]
    lines = [f"Substitutions: {sub['count']} of {sub['n']} test prompts gain, after correction, a word that a list "
             f"flags ({', '.join(sub['word_lists'])}) and that the dense model's greedy continuation did not have.",
             ""]  # fmt: skip
    if sub["prompts"]:
        lines += ["| prompt | new flagged words | dense | corrected |", "|---|---|---|---|"]
        for r in sub["prompts"]:
            words = "; ".join(", ".join(w) for w in r["new_words"].values())
            lines.append(
                f"| {_cell(r['prompt'], 80)} | {_cell(words)} | {_cell(r['before'])} | {_cell(r['after'])} |"
            )
        lines.append("")
    return lines


def _seeds_table(s: dict[str, Any], lower: bool) -> list[str]:
    cfg = s["config"]
    n = cfg["report_count"]
    d = s["dense"]
    per_seed = lambda xs: " / ".join(f"{x:.2f}" for x in xs)  # noqa: E731
    lines = [
        f"## The method over {cfg['seeds']} seeds (estimate)",
        "",
        f"Each seed splits the {s['prompts']['development']} development prompts into an attribution half and a "
        f"held-out half, and draws its own {cfg['n_general']} general windows of {cfg['general_seqlen']} tokens. "
        f"Pruned: the {cfg['level']}s with the lowest R_general - R_undesired (layers `{cfg['layers']}`; "
        f"{cfg['scoring']['aggregation']} per-sample relevance, {cfg['scoring']['seed_mode']}-seeded outputs"
        f"{', each set normalised to unit total' if cfg['normalize'] else ', sets not normalised'}); "
        "equal-count random and magnitude pruning as controls.",
        "",
        f"Dense model, held-out rate per seed {per_seed(d['per_seed']['heldout_rate'])} (mean {d['heldout_rate']:.3f} "
        f"+/- {d['heldout_sem']:.3f}); perplexity {d['perplexity']:.3f}.",
        "",
        f"### At {n} pruned {cfg['level']}s ({_at(s['share_of_components'], n)})",
        "",
        "| method | held-out rate per seed | mean +/- SEM | change | perplexity change | fluency (held-out) | "
        "distinct-2 (held-out) | p per seed | combined p | seeds agree |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, rows in s["results"].items():
        r = _at(rows, n)
        q = r["quality"]["heldout"]
        t = r["tests"]
        a = r["agreement"]
        ps = ", ".join(f"{x['p_value']:.2g}" for x in t["per_seed"])
        lines.append(
            f"| {method} | {per_seed(r['per_seed']['heldout_rate'])} | {r['heldout_rate']:.3f} +/- {r['heldout_sem']:.3f} "
            f"| {_pct(r['heldout_relative_change'], 0)} | {_pct(r['perplexity_relative_change'], 2)} "
            f"| {_num(q['fluency_perplexity'])} | {_num(q['distinct_2'])} "
            f"| {ps} | {t['combined']['p_value']:.2g} "
            f"| {'yes' if a['agree'] else '**no**'} (spread {a['spread']:.2f}) |"
        )
    test = next(iter(s["results"].values()))
    test_name = _at(test, n)["tests"]["per_seed"][0]["test"]
    lines += [
        "",
        f"Rates are {'shares of toxic continuations (lower is better)' if lower else 'mean RUR (higher is better)'}. "
        f"Within each seed: {test_name} on its held-out half, dense against pruned; across seeds: "
        f"{_at(test, n)['tests']['combined']['method']} (prompts are never pooled across seeds). Seeds agree when "
        f"their held-out rates span at most {cfg['disagreement_bound']:.2f}. Dense fluency "
        f"{_num(d['quality']['heldout']['fluency_perplexity'])}, distinct-2 {_num(d['quality']['heldout']['distinct_2'])}.",
    ]
    return lines


def _sweep_table(s: dict[str, Any]) -> list[str]:
    cfg = s["config"]
    d = s["dense"]
    lines = [
        "### Every count (mean over seeds)",
        "",
        "| method | count | held-out rate | perplexity change | fluency held-out | distinct-2 held-out | "
        "general-prompt rate | fluency general | distinct-2 general | flags |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| dense | 0 | {d['heldout_rate']:.3f} | | {_num(d['quality']['heldout']['fluency_perplexity'])} | "
        f"{_num(d['quality']['heldout']['distinct_2'])} | {_num(d['quality']['general']['rate'])} | "
        f"{_num(d['quality']['general']['fluency_perplexity'])} | {_num(d['quality']['general']['distinct_2'])} | |",
    ]
    for method, rows in s["results"].items():
        for c in cfg["counts"]:
            r = _at(rows, c)
            h, g = r["quality"]["heldout"], r["quality"]["general"]
            lines.append(
                f"| {method} | {c} | {r['heldout_rate']:.3f} | {_pct(r['perplexity_relative_change'], 2)} | "
                f"{_num(h['fluency_perplexity'])} | {_num(h['distinct_2'])} | {_num(g['rate'])} | "
                f"{_num(g['fluency_perplexity'])} | {_num(g['distinct_2'])} | "
                f"{'; '.join(_cell(f, 400) for f in r['flags']) or 'none'} |"
            )
    return lines


def _totals_table(s: dict[str, Any]) -> list[str]:
    lines = ["### Relevance totals (mean over samples, summed over components)", "",
             "| method | seed | general | undesired | normalised |", "|---|---|---|---|---|"]  # fmt: skip
    for run in s["seeds"]:
        for method, tot in run["relevance_totals"].items():
            g = ", ".join(f"{k} {v:.4g}" for k, v in tot["general_total"].items())
            u = ", ".join(f"{k} {v:.4g}" for k, v in tot["undesired_total"].items())
            lines.append(f"| {method} | {run['seed']} | {g} | {u} | {'yes' if tot['normalized'] else 'no'} |")
    return lines


def correction_markdown(s: dict[str, Any]) -> str:
    """The Markdown report of a correction run."""
    lower = "toxicity" in s["behaviour"]
    model = f" in {s['model']}" if s.get("model") else ""
    lines = [f"# Targeted correction: {s['behaviour']}{model}", "", *_exported(s, lower), "", *_judging(s)]
    if s["warnings"]:
        lines += ["## Warnings", "", *[f"- **warning**: {w}" for w in s["warnings"]], ""]
    lines += [*_seeds_table(s, lower), "", *_sweep_table(s), "",
              "![curves](correction_curves.png)", "", "![per prompt](per_prompt.png)", "",
              *_totals_table(s), "", f"Wall time {s['seconds']} s.", ""]  # fmt: skip
    return "\n".join(lines)
