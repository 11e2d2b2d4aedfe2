"""The correction part of a report page, from a ``correct`` run's ``report.json``: the exported
model before and after, the method over seeds with every seed's figure, the curves over the pruned
count (controls dashed), the judging by a second scorer on sampled continuations with the
substituted words, and the continuations before and after side by side with the behaviour's words
marked."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any

from circuitcut.reports.page.base import Page, Raw, esc, num, pct, table
from circuitcut.reports.page.charts import Point, Series, chart_group, line_chart

QUALITY = (("fluency_perplexity", "fluency (perplexity under the dense model)"), ("distinct_1", "distinct-1"),
           ("distinct_2", "distinct-2"), ("distinct_3", "distinct-3"), ("empty_share", "empty share"))  # fmt: skip


def _at(d: dict[Any, Any], n: int) -> Any:
    """``d[n]`` whether keys are ints or, after a JSON round trip, strings."""
    return d[n] if n in d else d[str(n)]


def _rate_name(r: dict[str, Any]) -> str:
    return "toxic rate" if r["behaviour"].startswith("toxicity") else "RUR"


def _p(test: dict[str, Any] | None) -> str:
    return "-" if not test else f"{test['p_value']:.3g}"


def headline(r: dict[str, Any]) -> str:
    """One sentence: the exported model's behaviour and perplexity before and after."""
    e = r["exported"]
    d = e["dense"]
    flags = "quality within bounds" if not e["flags"] else f"{len(e['flags'])} quality flag(s)"
    return esc(f"Exported model ({e['count']} {r['config']['level']}s by {e['method']}): {_rate_name(r)} on "
               f"{len(e['test_prompts'])} test prompts {num(d['test_rate'])} → {num(e['test_rate'])} (paired p = "
               f"{_p(e['paired_test'])}), general perplexity {num(d['perplexity'])} → {num(e['perplexity'])} "
               f"({pct(e['perplexity_relative_change'])}); {flags}.")  # fmt: skip


def exported_table(r: dict[str, Any]) -> str:
    """The exported model against the dense model on the test and general prompts."""
    e, d = r["exported"], r["exported"]["dense"]
    name = _rate_name(r)
    rows = [[f"{name}, test prompts", num(d["test_rate"]), num(e["test_rate"]), pct(e["test_relative_change"])],
            [f"{name}, general prompts", num(d["general_rate"]), num(e["general_rate"]), ""],
            ["perplexity of general text", num(d["perplexity"]), num(e["perplexity"]),
             pct(e["perplexity_relative_change"])]]  # fmt: skip
    for where in ("test", "general"):
        for key, label in QUALITY:
            b, a = d["quality"][where].get(key), e["quality"][where].get(key)
            change = pct((a - b) / b) if a is not None and b else ""
            rows.append([f"{label}, {where} prompts", num(b), num(a), change])
    return table(["", "before (dense)", "after (exported)", "change"], rows, numeric=(1, 2, 3),
                 table_id="correction-table", caption=e["measured_from"])  # fmt: skip


def methods_table(r: dict[str, Any]) -> str:
    """Every method and control at the report count: mean ± SEM over seeds, each seed's figure, the
    combined test and the flags."""
    n = r["config"]["report_count"]
    d = r["dense"]
    rows = [["dense", f"{num(d['heldout_rate'])} ± {num(d['heldout_sem'])}", "",
             " / ".join(num(v) for v in d["per_seed"]["heldout_rate"]), num(d["perplexity"]), "", "-", ""]]  # fmt: skip
    tips = [
        f"dense model\nheld-out rate per seed {' / '.join(num(v) for v in d['per_seed']['heldout_rate'])}"
    ]
    for method, per_count in r["results"].items():
        x = _at(per_count, n)
        seeds = " / ".join(num(v) for v in x["per_seed"]["heldout_rate"])
        rows.append([method, f"{num(x['heldout_rate'])} ± {num(x['heldout_sem'])}", pct(x["heldout_relative_change"]),
                     seeds, num(x["perplexity"]), pct(x["perplexity_relative_change"], digits=2),
                     _p(x["tests"]["combined"]), "; ".join(x["flags"]) or "none"])  # fmt: skip
        tips.append("\n".join([f"{method} at {n}", f"held-out rate per seed {seeds}",
                               "perplexity per seed " + " / ".join(num(v) for v in x["per_seed"]["perplexity"]),
                               "p per seed " + " / ".join(_p(t) for t in x["tests"]["per_seed"]),
                               f"seeds agree: {'yes' if x['agreement']['agree'] else 'no'} "
                               f"(spread {num(x['agreement']['spread'])})"]))  # fmt: skip
    return table(["method", "held-out rate (mean ± SEM)", "change", "per seed", "perplexity", "change",
                  "combined p (Stouffer)", "flags"], rows, numeric=(1, 2, 4, 5, 6), table_id="methods-at-count",
                 row_tips=tips)  # fmt: skip


def seeds_table(r: dict[str, Any]) -> str:
    """Each seed's split sizes, dense figures and, per method, held-out rate / perplexity / p at the
    report count."""
    n = r["config"]["report_count"]
    seeds = r["seeds"]
    head = ["", *(f"seed {s['seed']}" for s in seeds)]
    rows = [["attribution / held-out prompts", *(f"{s['n_attribution']} / {s['n_heldout']}" for s in seeds)],
            ["dense: held-out rate / perplexity",
             *(f"{num(s['dense']['heldout']['rate'])} / {num(s['dense']['perplexity'])}" for s in seeds)]]  # fmt: skip
    for method, per_count in r["results"].items():
        x = _at(per_count, n)
        rows.append([f"{method}: held-out rate / perplexity / p",
                     *(f"{num(h)} / {num(p)} / {_p(t)}" for h, p, t in
                       zip(x["per_seed"]["heldout_rate"], x["per_seed"]["perplexity"], x["tests"]["per_seed"], strict=True))])  # fmt: skip
    return table(head, rows, numeric=tuple(range(1, len(head))), table_id="per-seed")


def curves(r: dict[str, Any], group_id: str = "correction-curves") -> str:
    """Held-out rate and general perplexity against the number of pruned components (0 = dense), mean ±
    SEM over seeds, every method and control."""
    counts = r["config"]["counts"]
    level = r["config"]["level"]
    d = r["dense"]

    def tip(method: str, n: int, x: dict[str, Any]) -> str:
        share = _at(r["share_of_components"], n) if n else "dense"
        return "\n".join([f"{method}: {n} {level}s pruned ({share})",
                          f"held-out rate {num(x['heldout_rate'])} ± {num(x['heldout_sem'])}",
                          "per seed " + " / ".join(num(v) for v in x["per_seed"]["heldout_rate"]),
                          f"perplexity {num(x['perplexity'])} ({pct(x.get('perplexity_relative_change'), digits=2)})"])  # fmt: skip

    figures = []
    for key, title in (
        ("heldout_rate", f"held-out {_rate_name(r)}"),
        ("perplexity", "perplexity of general text"),
    ):
        sem = key.replace("_rate", "") + "_sem"
        ss = []
        for method, per_count in r["results"].items():
            pts = [Point(0, d[key], tip(method, 0, d), d[sem])]
            pts += [Point(n, _at(per_count, n)[key], tip(method, n, _at(per_count, n)), _at(per_count, n)[sem])
                    for n in counts]  # fmt: skip
            ss.append(Series(method, pts))
        figures.append((f"{title} against the pruned count (mean ± SEM over {r['config']['seeds']} seeds)",
                        line_chart(ss, f"pruned {level}s", title, label=title)))  # fmt: skip
    return chart_group(group_id, list(r["results"]), figures,
                       "Controls (random, magnitude) dashed. Hover or focus a point for its values.")  # fmt: skip


def marked(text: str, words: Sequence[str]) -> str:
    """``text`` escaped, with every occurrence of ``words`` (case-insensitive, whole words) in <mark>."""
    if not words:
        return html.escape(text)
    pattern = re.compile(r"(?<!\w)(" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
                         + r")(?!\w)", re.IGNORECASE)  # fmt: skip
    out, last = [], 0
    for m in pattern.finditer(text):
        out += [html.escape(text[last : m.start()]), f"<mark>{html.escape(m.group(0))}</mark>"]
        last = m.end()
    return "".join([*out, html.escape(text[last:])])


def continuations(r: dict[str, Any], where: str, limit: int = 40) -> str:
    """The continuations of one prompt set before and after, side by side."""
    e = r["exported"]
    words = e.get("marked_words", [])
    items = e["continuations"][where][:limit]
    flags = e.get("per_prompt", {}) if where == "test" else {}
    binary = r["behaviour"].startswith("toxicity")
    rows = []
    for i, c in enumerate(items):
        cells = [c["before"], c["after"]]
        shown = []
        for key, text in zip(("before", "after"), cells, strict=True):
            badge = ""
            if flags and binary and flags[key][i] >= 1:
                badge = '<span class="flag">flagged</span>'
            shown.append(Raw(marked(text, words) + badge))
        rows.append([Raw(f'<span class="prompt">{html.escape(c["prompt"])}</span>'), *shown])
    note = (
        f"{len(items)} of {len(e['continuations'][where])}" if len(e["continuations"][where]) > limit else ""
    )
    return (f"<h3>{'Test' if where == 'test' else 'General'} prompts {esc(note)}</h3>"
            + table(["prompt", "before (dense)", "after (exported)"], rows, table_id=f"continuations-{where}"))  # fmt: skip


def _ci(fig: dict[str, Any], key: str, interval: str) -> str:
    lo, hi = fig[interval]
    return f"{num(fig[key])} [{num(lo)}, {num(hi)}]"


def _emt(t: dict[str, Any]) -> str:
    """The name of the expected maximum of one scorer's scores (a word list's are numbers of matches)."""
    return "expected maximum toxicity" + (" (matches)" if t.get("scale") == "matches" else "")


def judging_table(j: dict[str, Any]) -> str:
    """The judge's greedy toxic rates, the RealToxicityPrompts pair per scorer (bootstrap intervals in
    brackets) and the samples' diversity, dense against exported."""
    rows = []
    for where in ("test", "general"):
        g = j["greedy"].get(where)
        if g:
            rows.append([f"judge {j['judge']}: toxic rate, {where} prompts (greedy)", num(g["dense"]),
                         num(g["corrected"]), pct((g["corrected"] - g["dense"]) / g["dense"]) if g["dense"] else ""])  # fmt: skip
    sampled = j.get("sampled") or {}
    k = sampled.get("settings", {}).get("num_samples")
    for role, t in sampled.get("toxicity", {}).items():
        for where in ("test", "general"):
            d, c = t[where]["dense"], t[where]["corrected"]
            for key, interval, label in (("expected_max_toxicity", "emt_interval", _emt(t)),
                                         ("toxicity_probability", "tp_interval", "toxicity probability")):  # fmt: skip
                rows.append([f"{role} {t['scorer']}: {label}, {where} prompts ({k} samples)", _ci(d, key, interval),
                             _ci(c, key, interval), pct((c[key] - d[key]) / d[key]) if d[key] else ""])  # fmt: skip
    for where, div in sampled.get("diversity", {}).items():
        for key, label in (("distinct_1", "distinct-1"), ("distinct_2", "distinct-2"),
                           ("repeated_trigram_rate", "repeated-trigram rate")):  # fmt: skip
            d, c = div["dense"][key], div["corrected"][key]
            rows.append(
                [f"{label} of the samples, {where} prompts", num(d), num(c), pct((c - d) / d) if d else ""]
            )
    return table(["", "before (dense)", "after (exported)", "change"], rows, numeric=(1, 2, 3),
                 table_id="judging-table")  # fmt: skip


def substitution_table(sub: dict[str, Any]) -> str:
    """The test prompts whose corrected continuation gained a word a list flags, with the words marked."""
    if not sub["word_lists"]:
        return "<p>Substitutions: no word list among the scorers, so no word-level check.</p>"
    head = (f"<p>Substitutions: {sub['count']} of {sub['n']} test prompts gain, after correction, a word that a list "
            f"flags ({esc(', '.join(sub['word_lists']))}) and that the dense model's greedy continuation did not "
            "have.</p>")  # fmt: skip
    if not sub["prompts"]:
        return head
    rows = []
    for r in sub["prompts"]:
        words = sorted({w for ws in r["new_words"].values() for w in ws})
        rows.append([Raw(f'<span class="prompt">{html.escape(r["prompt"])}</span>'), ", ".join(words),
                     Raw(marked(r["before"], words)), Raw(marked(r["after"], words))])  # fmt: skip
    return head + table(["prompt", "new flagged words", "before (dense)", "after (exported)"], rows,
                        table_id="substitutions")  # fmt: skip


def judging_section(r: dict[str, Any]) -> str:
    """The exported model judged by a second scorer, on sampled continuations, and for substitutions
    (empty for a report written before judging existed)."""
    j = r["exported"].get("judging")
    if not j:
        return ""
    parts = [f"<p>Selection scorer: {esc(j['selection'] or 'none (repetition)')}. Second scorer: "
             f"{esc(j['judge_choice'])}.</p>"]  # fmt: skip
    sampled = j.get("sampled")
    if sampled:
        g, b = sampled["settings"], sampled["bootstrap"]
        parts.append(f'<p class="legend">{g["num_samples"]} samples per prompt, nucleus sampling (top-p {g["top_p"]}, '
                     f"temperature {g['temperature']}, seed {g['seed']}). Expected maximum toxicity: mean over prompts "
                     "of the highest score among a prompt's samples; toxicity probability: share of prompts with at "
                     f"least one sample flagged. Brackets: {100 * b['level']:.0f}% bootstrap over prompts "
                     f"({b['resamples']} resamples, seed {b['seed']}).</p>")  # fmt: skip
    else:
        parts.append("<p>No sampled continuations (sampling off): greedy figures only.</p>")
    if j["greedy"] or sampled:
        parts.append(judging_table(j))
    if j["greedy"]:
        parts.append(f"<p>Judge's paired test on the test prompts: p = {_p(j['greedy']['paired_test'])}.</p>")
    return "".join(parts) + substitution_table(j["substitution"])


def add_correction(page: Page, r: dict[str, Any]) -> None:
    """The correction's sections on ``page``."""
    e = r["exported"]
    n = r["config"]["report_count"]
    warn = "".join(
        f'<p class="warn" role="note"><strong>Warning:</strong> {esc(w)}</p>' for w in r["warnings"]
    )
    flags = "".join(f'<p class="warn" role="note">{esc(f)}</p>' for f in e["flags"])
    page.add("Correction: before and after",
             f"<p>{esc(r['behaviour'])}. Mask: {esc(e['statement'])}. Measured from {esc(e['measured_from'])}.</p>"
             + warn + flags + exported_table(r), "correction")  # fmt: skip
    judged = judging_section(r)
    if judged:
        page.add("Correction: judged independently", judged, "judging")
    page.add(f"Correction: methods and controls at {n} {r['config']['level']}s",
             f"<p>Each seed splits the {r['prompts']['development']} development prompts into attribution and "
             "held-out halves; figures are on the held-out half. Focus a row for its per-seed values.</p>"
             + methods_table(r) + "<h3>Per seed</h3>" + seeds_table(r) + curves(r), "methods")  # fmt: skip
    words = e.get("marked_words", [])
    legend = (f"Marked: the scorer's words ({', '.join(words)})." if words else
              "The scorer has no word list; flagged continuations carry a badge.")  # fmt: skip
    page.add("Continuations before and after",
             f'<p class="legend">{esc(legend)}</p>' + continuations(r, "test") + continuations(r, "general"),
             "continuations")  # fmt: skip
