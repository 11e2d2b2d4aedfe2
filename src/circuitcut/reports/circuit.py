"""The Markdown report of a circuit discovery run (``report.md``), from its summary."""

from __future__ import annotations

from typing import Any

from circuitcut.attribution.methods import LRP_RULES
from circuitcut.circuits.config import ABLATION_WORDS
from circuitcut.circuits.monotone import curve_sentences, search_sentence
from circuitcut.circuits.sweep import SweepResult


def _points_table(method: str, r: dict[str, Any], metric: str, level: str) -> list[str]:
    """Every evaluated point of one method: count, share, metric, answer probability, accuracy, f."""
    lines = [f"#### {method}", "", f"| kept {level}s | kept share | {metric.replace('_', ' ')} | answer probability "
             "| accuracy | faithfulness |", "|---|---|---|---|---|---|"]  # fmt: skip
    for p in r["points"]:
        lines.append(f"| {p['count']} | {100 * p['fraction']:.3g}% | {p[metric]:.3f} | {p['prob']:.3f} | "
                     f"{p['accuracy']:.3f} | {p['faithfulness']:.3f} |")  # fmt: skip
    return [*lines, ""]


def rules_note(s: dict[str, Any]) -> str:
    """A sentence naming the LRP rules left out, when some were (older summaries have none)."""
    left_out = [r for r in LRP_RULES if r not in s.get("lrp_rules", LRP_RULES)]
    return f" LRP ran without its rule(s) {', '.join(left_out)}." if left_out else ""


def circuit_markdown(s: dict[str, Any], result: SweepResult) -> str:
    """The Markdown report of a circuit discovery run."""
    c = s["circuit"]
    m = s["metric"]
    t = s["threshold"]["value"]
    lines = [
        f"# {s['level'].capitalize()}-level circuit for {s['task']} in {s['model']}",
        "",
        f"Metric: {m.replace('_', ' ')} on {c['n_evaluation']} held-out prompts (attribution used a disjoint split of "
        f"{c['n_attribution']}); ablation: {ABLATION_WORDS[s['ablation']]}. Full model {s['dense'][m]:.3f} (answer probability "
        f"{s['dense']['prob']:.3f}, accuracy {s['dense']['accuracy']:.3f}), empty circuit {s['empty'][m]:.3f} "
        f"(answer probability {s['empty']['prob']:.3f}). Faithfulness f = (m(C) - m(empty)) / (m(model) - m(empty)); "
        f"the threshold {t:.0%} applies to f. Kept shares are snapped to whole counts of the "
        f"{s['n_components']} {s['level']}s; every point listed below was evaluated.{rules_note(s)}",
        "",
        *(f"**Warning:** {w}\n" for w in s.get("warnings", [])),
        "![curves](curves.png)",
        "",
        f"| method | faithfulness area (log axis) | CPR (area under f) | CMD (area under abs(1 - f)) | sparsest "
        f"point with f >= {t:.0%} | time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for method, r in s["sweep"].items():
        k = r["sparsest"]
        best = "-" if k is None else f"{k['count']} {s['level']}s ({100 * k['fraction']:.3g}%)"
        lines.append(f"| {method} | {r['faithfulness_area']:.3f} | {r['cpr']:.3f} | {r['cmd']:.3f} | {best} "
                     f"| {result.seconds[method]} |")  # fmt: skip
    for method, why in s["skipped"].items():
        lines.append(f"| {method} | skipped: {why} | | | | |")
    lines += ["", *(f"{note}\n" for note in curve_sentences(s["sweep"], s["level"]))]
    lines += [
        f"## The {c['method']} circuit",
        "",
        f"Sparsest on a fine grid of counts with faithfulness >= {c['threshold']:.0%}: "
        f"**{c['kept']} of {c['components']} {s['level']}s ({100 * c['kept'] / c['components']:.3f}%)**. "
        f"{search_sentence(c, s['level'])}".rstrip(),
        "",
        "| | " + m.replace("_", " ") + " | answer probability | accuracy | faithfulness |",
        "|---|---|---|---|---|",
        f"| full model | {c['model'][m]:.3f} | {c['model']['prob']:.3f} | {c['model']['accuracy']:.3f} | 1 |",
        f"| circuit | {c['circuit'][m]:.3f} | {c['circuit']['prob']:.3f} | {c['circuit']['accuracy']:.3f} | "
        f"{c['faithfulness']:.3f} |",
        f"| same count at random (mean of {c['random_control']['seeds']}) | {c['random_control']['metric']:.3f} | "
        f"{c['random_control']['prob']:.3f} | {c['random_control']['accuracy']:.3f} | {c['random_faithfulness']:.3f} |",
        f"| empty | {c['empty'][m]:.3f} | {c['empty']['prob']:.3f} | {c['empty']['accuracy']:.3f} | 0 |",
        "",
        "![where the circuit lives](circuit_layers.png)",
        "",
        "## Every evaluated point (mean over reference sets)",
        "",
    ]
    for method, r in s["sweep"].items():
        lines += _points_table(method, r, m, s["level"])
    lines += [
        f"Files: `curves.csv`, `curves.json`, `curves.png/svg`, `circuit/` (mask + summary), `circuit_layers.png/svg`. "
        f"Sweep wall time {s['sweep_seconds']} s, total {s['seconds']} s; by phase: {phase_text(s['phases'])}.",
        "",
    ]
    return "\n".join(lines)


def phase_text(phases: dict[str, float]) -> str:
    """``"sweep attribution 12.3 s, sweep evaluation 40.1 s, ..."``."""
    return ", ".join(f"{k} {v:.1f} s" for k, v in phases.items())
