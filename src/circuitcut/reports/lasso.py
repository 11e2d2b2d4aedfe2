"""The Markdown report of a CircuitLasso run (``report.md``), from its summary, and the tables it
shares with ``benchmarks/lasso_real.py``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def size_value(row: dict, k: int) -> float:
    """A circuit size's value in a faithfulness row (int keys in memory, str once read back from JSON)."""
    return row[k] if k in row else row[str(k)]


def sizes_of(evaluation: dict[str, Any]) -> list[int]:
    """The circuit sizes an evaluation (:func:`evaluate_circuits`) holds, smallest first (int keys in
    memory, str once read back from JSON)."""
    return sorted(int(k) for k in next(iter(evaluation["faithfulness"].values())))


def faithfulness_table(faithfulness: dict[str, dict], sizes: Sequence[int]) -> list[str]:
    """Markdown table lines: each ranking's faithfulness at each circuit size (features kept)."""
    return ["| ranking | " + " | ".join(str(k) for k in sizes) + " |", "|---|" + "---|" * len(sizes),
            *(f"| {name} | " + " | ".join(f"{size_value(row, k):.3f}" for k in sizes) + " |"
              for name, row in faithfulness.items())]  # fmt: skip


def cost_table(costs: dict[str, dict[str, float]]) -> list[str]:
    """Markdown table lines: each ranking's wall seconds and model passes."""
    return ["| ranking | wall seconds | model passes |", "|---|---|---|",
            *(f"| {name} | {c['seconds']:.2f} | {c['passes']} |" for name, c in costs.items())]  # fmt: skip


def feature_lines(cards: list[dict[str, Any]], n: int = 16) -> list[str]:
    """One Markdown line per feature card (the first ``n``): its label, promoted tokens, top context."""
    lines = []
    for card in cards[:n]:
        promoted = ", ".join(repr(p["token"]) for p in card["promoted"][:6])
        top = card["contexts"][0] if card["contexts"] else None
        where = "".join(top["tokens"]) if top else "(never fires on the text)"
        lines.append(f"- `{card['id']}` {card['label']}: promotes {promoted}; fires most on {where!r}")
    return lines


def report(s: dict[str, Any]) -> str:
    """The Markdown report."""
    ev = s["evaluation"]
    sizes = sizes_of(ev)
    lines = [
        f"# CircuitLasso on {s['model']} ({s['task']})",
        "",
        f"Sites: {', '.join(s['sites'])}. Attribution split {s['n_attribution']} prompts, evaluation {s['n_evaluation']} "
        f"held-out prompts; {s['ablation']}. Full model metric {ev['full']:.3f}, all features ablated {ev['empty']:.3f}.",
        "",
        "## SAE quality",
        "",
        "| site | explained variance | dead features | L0 | loss clean / spliced / zeroed |",
        "|---|---|---|---|---|",
    ]
    for site, q in s["sae_quality"].items():
        lines.append(f"| {site} | {q['explained_variance']:.3f} | {q['dead_fraction']:.3f} | {q['l0']:.1f} | "
                     f"{q['loss_clean']:.3f} / {q['loss_spliced']:.3f} / {q['loss_zero_ablated']:.3f} |")  # fmt: skip
    rule = {"activation": "mean per-prompt |coef x activation|", "coef": "|coef|"}[
        s.get("importance", "activation")
    ]
    lines += ["", "## Faithfulness at matched circuit sizes (features kept)", "",
              f"CircuitLasso ranks features by {rule}, traced back from the output.", "",
              *faithfulness_table(ev["faithfulness"], sizes)]  # fmt: skip
    if "evaluation_counterfactual" in s:
        cf = s["evaluation_counterfactual"]
        lines += ["", "## Faithfulness under counterfactual ablation", "",
                  f"{s['ablation_counterfactual']}. Full model metric {cf['full']:.3f}, every feature patched "
                  f"{cf['empty']:.3f}.", "", *faithfulness_table(cf["faithfulness"], sizes)]  # fmt: skip
    lines += ["", "## Cost on the attribution prompts", "", *cost_table(s.get("costs", {}))]
    lines += ["", "Passes count forward and backward passes over a batch separately; CircuitLasso's seconds include "
              f"its regressions; integrated gradients take {s.get('ig_steps', 5)} steps.", "",
              "![faithfulness](faithfulness.png)", "", "![graph](circuit_graph.png)", ""]  # fmt: skip
    lines += [*feature_lines(s.get("features", [])), ""]
    if "toxic" in s:
        t = s["toxic"]
        b = t["spliced_unablated"]
        lines += ["## Ablating the features tied to the planted toxic behaviour", "",
                  f"SAEs spliced, nothing ablated: toxic rate after trigger {b['toxic_rate_trigger']:.2f}, without "
                  f"{b['toxic_rate_no_trigger']:.2f}, perplexity {b['perplexity']:.3f}.", "",
                  "| ranking | features ablated | toxic rate after trigger | without | perplexity |", "|---|---|---|---|---|"]  # fmt: skip
        for name, rows in t["ablated"].items():
            for n, r in rows.items():
                lines.append(f"| {name} | {n} | {r['toxic_rate_trigger']:.2f} | {r['toxic_rate_no_trigger']:.2f} | "
                             f"{r['perplexity']:.3f} |")  # fmt: skip
        lines += ["", f"Top features: {', '.join(t['features'][:8])}.", ""]
    return "\n".join(lines)
