"""The circuit part of a report page, from a circuit run's ``summary.json``: the curves of every
method with their values on hover, the methods' table, the circuit against its random control, and
the circuit as a map (kept units per layer; a click lists a layer's kept units and its top scores)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from circuitcut.circuits.monotone import curve_sentences, search_sentence
from circuitcut.reports.page.base import Page, Raw, esc, json_script, num, table
from circuitcut.reports.page.charts import Point, Series, chart_group, fmt_share, line_chart

#: the colour of a kept unit in the map
KEPT = "#0072b2"


def _label(metric: str) -> str:
    return metric.replace("_", " ")


def point_tip(method: str, p: dict[str, Any], metric: str, level: str) -> str:
    """The values of one evaluated point, one a line (the tooltip of its markers)."""
    lines = [method, f"kept {fmt_share(p['fraction'])} ({p['count']} {level}s)",
             f"{_label(metric)} {num(p[metric])} ± {num(p.get(metric + '_std', 0.0))}",
             f"answer probability {num(p['prob'])}", f"accuracy {num(p['accuracy'])}",
             f"faithfulness {num(p['faithfulness'])}"]  # fmt: skip
    return "\n".join(lines)


def curves(s: dict[str, Any], group_id: str = "circuit-curves") -> str:
    """Metric, answer probability and faithfulness against the kept fraction, every method, with the
    random circuit of the extracted count as the control."""
    metric, level = s["metric"], s["level"]
    c = s["circuit"]

    def series(key: str) -> list[Series]:
        out = []
        for method, r in s["sweep"].items():
            pts = [Point(p["fraction"], p[key], point_tip(method, p, metric, level), p.get(f"{key}_std", 0.0))
                   for p in r["points"]]  # fmt: skip
            out.append(Series(method, pts))
        return out

    control = "random control"
    rc = c["random_control"]
    tip = "\n".join([f"{control}: {c['kept']} {level}s at random (mean of {rc['seeds']})",
                     f"kept {fmt_share(c['keep'])}", f"{_label(metric)} {num(rc['metric'])}",
                     f"answer probability {num(rc['prob'])}", f"accuracy {num(rc['accuracy'])}",
                     f"faithfulness {num(c['random_faithfulness'])}"])  # fmt: skip
    ctrl = {metric: rc["metric"], "prob": rc["prob"], "faithfulness": c["random_faithfulness"]}
    axis = f"kept share of {s['n_components']} {level}s (log)"
    figures = []
    for key, title, refs in (
        (metric, _label(metric), [(s["dense"][metric], "full model"), (s["empty"][metric], "empty")]),
        ("prob", "answer probability", [(s["dense"]["prob"], "full model")]),
        (
            "faithfulness",
            "faithfulness",
            [(s["threshold"]["value"], f"threshold {s['threshold']['value']:g}")],
        ),
    ):
        ss = [*series(key), Series(control, [Point(c["keep"], ctrl[key], tip)], dashed=True)]
        figures.append((f"{title} against the kept share (mean ± std over reference sets)",
                        line_chart(ss, axis, title, log_x=True, x_format=fmt_share, refs=refs, label=title)))  # fmt: skip
    names = [*s["sweep"], control]
    note = ("Hover or focus a point (Tab, then arrow keys) for its kept share, count, metric, answer probability, "
            "accuracy and faithfulness. Controls are dashed; the random control is the extracted circuit's "
            "count chosen at random.")  # fmt: skip
    return chart_group(group_id, names, figures, note)


def methods_table(s: dict[str, Any]) -> str:
    """Area, CPR, CMD and the sparsest point of each method, and the skipped ones with the reason."""
    t = s["threshold"]["value"]
    rows = []
    for method, r in s["sweep"].items():
        k = r["sparsest"]
        best = "-" if k is None else f"{k['count']} {s['level']}s ({fmt_share(k['fraction'])})"
        rows.append([method, num(r["faithfulness_area"]), num(r["cpr"]), num(r["cmd"]), best])
    rows += [
        [method, Raw(f"<em>skipped: {esc(why)}</em>"), "", "", ""] for method, why in s["skipped"].items()
    ]
    return table(["method", "faithfulness area (log axis)", "CPR (area under f)", "CMD (area under |1 - f|)",
                  f"sparsest point with f ≥ {t:g}"], rows, numeric=(1, 2, 3), table_id="methods-table")  # fmt: skip


def circuit_table(s: dict[str, Any]) -> str:
    """The full model, the circuit, the random control and the empty circuit."""
    c, m = s["circuit"], s["metric"]
    rc = c["random_control"]
    rows = [
        ["full model", num(c["model"][m]), num(c["model"]["prob"]), num(c["model"]["accuracy"]), "1"],
        [f"circuit ({c['kept']} {s['level']}s)", num(c["circuit"][m]), num(c["circuit"]["prob"]),
         num(c["circuit"]["accuracy"]), num(c["faithfulness"])],
        [f"same count at random (mean of {rc['seeds']})", num(rc["metric"]), num(rc["prob"]), num(rc["accuracy"]),
         num(c["random_faithfulness"])],
        ["empty", num(c["empty"][m]), num(c["empty"]["prob"]), num(c["empty"]["accuracy"]), "0"],
    ]  # fmt: skip
    return table(["", _label(m), "answer probability", "accuracy", "faithfulness"], rows, numeric=(1, 2, 3, 4),
                 table_id="circuit-table")  # fmt: skip


def ranges(indices: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2, 5, 7-8"``."""
    out: list[str] = []
    idx = sorted(indices)
    i = 0
    while i < len(idx):
        j = i
        while j + 1 < len(idx) and idx[j + 1] == idx[j] + 1:
            j += 1
        out.append(str(idx[i]) if i == j else f"{idx[i]}-{idx[j]}")
        i = j + 1
    return ", ".join(out)


def _layer_index(key: str) -> str:
    return key.split()[-1] if key.startswith("layer ") else key


def circuit_map(s: dict[str, Any], map_id: str = "circuit-map") -> str:
    """Kept units per layer as bars (neurons), squares (heads) or per-projection counts (weights);
    each layer is a button that lists its kept units and its top components."""
    c, level = s["circuit"], s["level"]
    per_layer: dict[str, Any] = c["kept_per_layer"]
    kept_units: dict[str, list[int]] = c.get(f"kept_{level}s", {})
    top = c.get("top_components", [])
    n_layers = max(1, len(per_layer))
    per = s["n_components"] // n_layers if level != "weight" else None
    biggest = max((sum(v.values()) if isinstance(v, dict) else v for v in per_layer.values()), default=1) or 1
    rows, data = [], {}
    for key, value in per_layer.items():
        ident = _layer_index(key)
        units = kept_units.get(ident, [])
        mine = [t for t in top if str(t.get("layer")) == ident]
        if isinstance(value, dict):  # weights: kept weights per projection
            count = sum(value.values())
            middle = f'<span class="bar"><span style="width:{100 * count / biggest:.1f}%"></span></span>'
            text = f"{count} weights"
            lines = [f"{proj}: {n} kept weights" for proj, n in value.items()]
        elif level == "head":
            count = value
            cells = "".join(f'<span style="display:inline-block;width:.9rem;height:.9rem;margin-right:2px;border:1px '
                            f'solid {KEPT};background:{KEPT if j in units else "#fff"}"></span>'
                            for j in range(per or 0))  # fmt: skip
            middle = f"<span>{cells}</span>"
            text = f"{count} of {per} heads"
            lines = [f"kept heads: {ranges(units) or 'none'}"]
        else:
            count = value
            middle = (
                f'<span class="bar"><span style="width:{100 * count / (per or biggest):.1f}%"></span></span>'
            )
            text = f"{count} of {per} {level}s"
            lines = [f"kept {level}s: {ranges(units) or 'none'}"]
        lines += [
            f"{t['component']}: {s.get('circuit', {}).get('method', '')} score {t['score']:.4g}" for t in mine
        ]
        data[ident] = {"title": f"{key}: {text}", "lines": lines}
        rows.append(f'<button type="button" class="layer" aria-pressed="false" data-layer="{esc(ident)}">'
                    f"<span>{esc(key)}</span>{middle}<span class=\"legend\">{esc(text)}</span></button>")  # fmt: skip
    detail = f"{map_id}-detail"
    return (f'<div class="map" id="{esc(map_id)}" data-map="{esc(map_id)}-data" data-detail="{esc(detail)}">'
            + "".join(rows) + f'</div><div class="detail" id="{esc(detail)}" aria-live="polite">'
            "Choose a layer (click, or Tab and Enter) to list its kept units.</div>"
            + json_script(f"{map_id}-data", data))  # fmt: skip


def top_table(s: dict[str, Any]) -> str:
    """The components with the highest scores of the circuit's method (empty when not recorded)."""
    top = s["circuit"].get("top_components", [])
    if not top:
        return ""
    rows = [
        [i, t["component"], "yes" if t.get("kept", True) else "no", f"{t['score']:.4g}"]
        for i, t in enumerate(top, 1)
    ]
    return (f"<h3>Top {len(top)} components by {esc(s['circuit']['method'])} score</h3>"
            + table(["rank", "component", "in the circuit", "score"], rows, numeric=(0, 3), table_id="top-components"))  # fmt: skip


def head_grid(matrix: Sequence[Sequence[float]], title: str, grid_id: str = "head-map") -> str:
    """A layers x heads grid of scores, shaded by |score| / max (orange positive, blue negative),
    each cell focusable with its value."""
    scale = max((abs(v) for row in matrix for v in row), default=0.0) or 1.0
    head = "<tr><th scope=\"col\">layer</th>" + "".join(f'<th scope="col" class="num">{j}</th>'
                                                       for j in range(len(matrix[0]) if matrix else 0)) + "</tr>"  # fmt: skip
    body = []
    for i, row in enumerate(matrix):
        cells = []
        for j, v in enumerate(row):
            rgb = "230,97,1" if v >= 0 else "33,102,172"
            cells.append(f'<td class="cell" tabindex="0" style="background:rgba({rgb},{abs(v) / scale:.2f})" '
                         f'data-tip="layer {i} head {j}: {v:.4g}" aria-label="layer {i} head {j}: {v:.4g}"></td>')  # fmt: skip
        body.append(f'<tr><th scope="row">{i}</th>{"".join(cells)}</tr>')
    return (f'<h3>{esc(title)}</h3><div class="scroll"><table class="grid-map" id="{esc(grid_id)}"><thead>{head}</thead>'
            f'<tbody>{"".join(body)}</tbody></table></div><p class="legend">orange: positive, blue: negative; '
            "shade: |score| relative to the largest; hover or focus a cell for its value.</p>")  # fmt: skip


def add_circuit(page: Page, s: dict[str, Any], prefix: str = "") -> None:
    """The curves, the methods, the circuit and its map as sections of ``page``."""
    c, m, level = s["circuit"], s["metric"], s["level"]
    intro = (f"<p>{esc(_label(m))} on {c['n_evaluation']} held-out prompts (attribution: a disjoint split of "
             f"{c['n_attribution']}); ablation: {esc(s['ablation'])}. Faithfulness f = (m(C) − m(empty)) / "
             f"(m(model) − m(empty)); the threshold {s['threshold']['value']:g} applies to f.</p>")  # fmt: skip
    warned = "".join(f'<p class="warn" role="note"><strong>Warning:</strong> {esc(w)}</p>'
                     for w in s.get("warnings", []))  # fmt: skip
    notes = "".join(f'<p class="warn" role="note">{esc(n)}</p>' for n in curve_sentences(s["sweep"], level))
    page.add(f"{prefix}Curves", warned + intro + curves(s) + methods_table(s) + notes, "curves")
    summary = (f"<p>The {esc(c['method'])} circuit: <strong>{c['kept']} of {c['components']} {esc(level)}s "
               f"({fmt_share(c['keep'])})</strong>, the sparsest count on a fine grid ({esc(c.get('search', 'scan'))}) "
               f"with f ≥ {c['threshold']:g}{'' if c['met_threshold'] else ' (threshold not met: the full model)'}. "
               f"{esc(search_sentence(c, level))}</p>")  # fmt: skip
    page.add(f"{prefix}Circuit", summary + circuit_table(s), "circuit")
    page.add(f"{prefix}Circuit map", circuit_map(s) + top_table(s), "map")
