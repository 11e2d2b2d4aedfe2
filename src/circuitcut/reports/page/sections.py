"""Sections shared by several run kinds (token heatmaps, provenance) and those of compression and
CircuitLasso runs."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from circuitcut.reports.heatmap import LEGEND, POSITIVE_RGB, heatmap_block
from circuitcut.reports.page.base import Page, esc, now, num, pct, slug, table, versions
from circuitcut.reports.page.charts import Point, Series, chart_group, line_chart

#: at most this many heatmaps on one page (an explain run of many prompts keeps its own heatmap file)
MAX_HEATMAPS = 24
#: at most this many feature cards on a CircuitLasso page (the summary keeps them all)
MAX_FEATURES = 64
#: the circuit graph picture of a CircuitLasso run (written by reports.lasso_plots.plot_graph), best first
GRAPH_IMAGES = (("circuit_graph.svg", "image/svg+xml"), ("circuit_graph.png", "image/png"))


def heatmaps(records: list[dict[str, Any]], note: str = "") -> str:
    """Token relevance of a few prompts (``prompt``, ``tokens``, ``relevance``, optional
    ``explained``) with the heatmap of :mod:`circuitcut.reports.heatmap`."""
    shown = records[:MAX_HEATMAPS]
    blocks = [heatmap_block(f"{r['prompt']}  →  {r['explained']}" if r.get("explained") else r["prompt"],
                            r["tokens"], r["relevance"], level=3) for r in shown]  # fmt: skip
    more = f" The first {len(shown)} of {len(records)} prompts." if len(records) > len(shown) else ""
    return f'<p class="legend">{esc(note + " " + LEGEND + more)}</p>' + "\n".join(blocks)


def _flat(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, (list, tuple)) and len(value) > 12:
        out.append((prefix, f"{len(value)} items"))
    else:
        out.append((prefix, ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)))


def provenance(page: Page, folder: Path, model: str, data: dict[str, Any], settings: dict[str, Any],
               encoding: dict[str, Any] | None, seconds: float | None) -> None:  # fmt: skip
    """Model, data, settings (flattened), encoding, versions, times and the run's files."""
    items = [("model", model)]
    for kind, values in (("data", data), ("setting", settings)):
        flat: list[tuple[str, str]] = []
        _flat("", values, flat)
        items += [(f"{kind}: {k}", v) for k, v in flat]
    if encoding is not None:
        prefix = " ".join(encoding.get("prefix_tokens", [])) or "none"
        items += [("encoding", f"special tokens {'on' if encoding.get('special_tokens') else 'off'}; prefix: "
                               f"{prefix}; context {encoding.get('context')} positions")]  # fmt: skip
    else:
        items.append(("encoding", "not recorded by this run"))
    items += [(f"version: {k}", v) for k, v in versions().items()]
    items += [("run time", f"{seconds} s" if seconds is not None else "-"), ("page written", now())]
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items)
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix in (".md", ".json", ".csv", ".png",
                                                                                   ".svg", ".html") and p.name != "report.html")  # fmt: skip
    links = ", ".join(f'<a href="{esc(f)}">{esc(f)}</a>' for f in files)
    page.add("Provenance", f'<dl class="prov">{dl}</dl><p class="legend">Files of this run: {links or "none"}.</p>',
             "provenance")  # fmt: skip


def add_compress(page: Page, r: dict[str, Any]) -> None:
    """Perplexity before and after pruning."""
    c = r["config"]
    change = (r["pruned"]["perplexity"] - r["dense"]["perplexity"]) / r["dense"]["perplexity"]
    rows = [["dense", num(r["dense"]["perplexity"], 4), r["dense"]["tokens"], ""],
            ["pruned", num(r["pruned"]["perplexity"], 4), r["pruned"]["tokens"], pct(change, digits=2)]]  # fmt: skip
    page.add("Compression",
             f"<p>{esc(c['scoring']['method'])} scores, {esc(c['scheme'])} scheme, target sparsity {c['sparsity']:.0%} of layers "
             f"<code>{esc(c['layers'])}</code>; {r['masked_weights']} weights pruned ({r['sparsity']:.2%} of the "
             "selected layers).</p>"
             + table(["", "perplexity", "tokens", "change"], rows, numeric=(1, 2, 3), table_id="compress-table"),
             "compression")  # fmt: skip


def add_lasso(page: Page, s: dict[str, Any], folder: Path | None = None) -> None:
    """SAE quality, faithfulness at matched sizes (random ranking as the control), the circuit graph
    (its picture in ``folder``, when given and there), the circuit's features (the summary's
    ``"features"``, cards of :func:`circuitcut.lasso.contexts.feature_cards`), the toxic ablation."""
    ev = s["evaluation"]
    rows = [[site, num(q["explained_variance"]), num(q["dead_fraction"]), num(q["l0"], 1),
             f"{num(q['loss_clean'])} / {num(q['loss_spliced'])} / {num(q['loss_zero_ablated'])}"]
            for site, q in s["sae_quality"].items()]  # fmt: skip
    page.add("SAE quality", table(["site", "explained variance", "dead features", "L0",
                                   "loss clean / spliced / zeroed"], rows, numeric=(1, 2, 3)), "saes")  # fmt: skip
    _faithfulness(page, ev, s["ablation"], "curves", "Faithfulness at matched sizes")
    if "evaluation_counterfactual" in s:
        _faithfulness(page, s["evaluation_counterfactual"], s["ablation_counterfactual"], "curves-counterfactual",
                      "Faithfulness under counterfactual ablation")  # fmt: skip
    if s.get("costs"):
        crows = [[name, num(c["seconds"], 2), str(c["passes"])] for name, c in s["costs"].items()]
        page.add("Cost", table(["ranking", "wall seconds", "model passes"], crows, numeric=(1, 2))
                 + "<p>Forward and backward passes over a batch count separately.</p>", "cost")  # fmt: skip
    graph = graph_figure(folder) if folder is not None else ""
    if graph:
        page.add("Circuit graph", graph, "graph")
    if s.get("features"):
        page.add("Circuit features", feature_cards_html(s["features"]), "features")
    if "toxic" in s:
        t = s["toxic"]
        b = t["spliced_unablated"]
        trows = [["none (SAEs spliced)", "0", num(b["toxic_rate_trigger"]), num(b["toxic_rate_no_trigger"]),
                  num(b["perplexity"])]]  # fmt: skip
        for name, per in t["ablated"].items():
            trows += [[name, n, num(x["toxic_rate_trigger"]), num(x["toxic_rate_no_trigger"]), num(x["perplexity"])]
                      for n, x in per.items()]  # fmt: skip
        page.add("Ablating the toxic features",
                 table(["ranking", "features ablated", "toxic rate after trigger", "without", "perplexity"], trows,
                       numeric=(1, 2, 3, 4)) + f"<p>Top features: {esc(', '.join(t['features'][:8]))}.</p>", "toxic")  # fmt: skip


def graph_figure(folder: Path) -> str:
    """The run's circuit graph picture, inline as a data URI (the page stays one file); ``""`` when
    the folder has none."""
    for name, mime in GRAPH_IMAGES:
        path = Path(folder) / name
        if path.is_file():
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            return (f'<figure><img src="data:{mime};base64,{data}" alt="CircuitLasso feature graph" '
                    f'style="max-width:100%;height:auto"><figcaption class="legend">Features by site (columns), '
                    f"retained edges red for a positive, blue for a negative coefficient ({esc(name)}).</figcaption></figure>")  # fmt: skip
    return ""


def _shaded(token: str, value: float, scale: float, focus: bool) -> str:
    """One token, its background opacity ``value / scale``; the focus token outlined."""
    alpha = min(1.0, max(0.0, value / scale)) if scale > 0 else 0.0
    shown = esc(token.replace("\n", "↵")) if token.strip() else "&#9251;"  # an open box for blank tokens
    ring = ";outline:2px solid #1b1b1b" if focus else ""
    cls = "tok focus" if focus else "tok"
    return (f'<span class="{cls}" style="background:rgba({POSITIVE_RGB},{alpha:.3f}){ring}" '
            f'title="{esc(token)}: {value:.4g}">{shown}</span>')  # fmt: skip


def _logit_tokens(tokens: list[dict[str, Any]]) -> str:
    return ", ".join(f"<code>{esc(t['token'])}</code> {num(t['logit'], 2)}" for t in tokens) or "-"


def feature_card_html(card: dict[str, Any]) -> str:
    """One feature: site and index, label, the tokens it promotes (and suppresses), and its top
    contexts with each token shaded by the feature's activation relative to the largest shown."""
    head = f"{card['site']} #{card['feature']}"
    label = f' <span class="legend">{esc(card["label"])}</span>' if card.get("label") else ""
    parts = [f"<h3>{esc(head)}{label}</h3>", f"<p>Promotes: {_logit_tokens(card.get('promoted', []))}</p>"]
    if "suppressed" in card:
        parts.append(f"<p>Suppresses: {_logit_tokens(card['suppressed'])}</p>")
    contexts = card.get("contexts", [])
    scale = max((a for c in contexts for a in c["activations"]), default=0.0)
    for c in contexts:
        spans = "".join(_shaded(t, a, scale, i == c["focus"])
                        for i, (t, a) in enumerate(zip(c["tokens"], c["activations"], strict=True)))  # fmt: skip
        parts.append(f'<p class="ctx">{spans} <span class="legend">{num(c["activation"], 2)} '
                     f'(window {c["window"]}, position {c["position"]})</span></p>')  # fmt: skip
    if not contexts:
        parts.append('<p class="legend">Never fires on the text searched.</p>')
    return f'<div class="feature" id="feature-{esc(slug(card.get("id") or head))}">{"".join(parts)}</div>'


def feature_cards_html(cards: list[dict[str, Any]]) -> str:
    """The circuit's features (at most :data:`MAX_FEATURES`), each with its top contexts and logit tokens."""
    shown = cards[:MAX_FEATURES]
    more = f" The first {len(shown)} of {len(cards)} features." if len(cards) > len(shown) else ""
    legend = ("Top-activating contexts from text: each token shaded by the feature's activation there relative "
              "to the largest shown for that feature, the token where it peaks outlined; hover for the value. "
              "Promoted / suppressed tokens: the direct logit effect of the feature's decoder direction "
              "(W_dec · W_U, the final norm skipped)." + more)  # fmt: skip
    return f'<p class="legend">{esc(legend)}</p>' + "\n".join(feature_card_html(c) for c in shown)


def _faithfulness(page: Page, ev: dict[str, Any], ablation: str, anchor: str, title: str) -> None:
    """One faithfulness section: the curves of every ranking against the features kept, and their table."""
    series = []
    for name, row in ev["faithfulness"].items():
        pts = [
            Point(float(k), v, f"{name}\n{k} features kept\nfaithfulness {num(v)}") for k, v in row.items()
        ]
        series.append(Series(name, pts))
    chart = line_chart(series, "features kept (log)", "faithfulness", log_x=True, refs=[(1.0, "full model")],
                       label="faithfulness")  # fmt: skip
    sizes = list(next(iter(ev["faithfulness"].values())))
    frows = [[name, *(num(row[k]) for k in sizes)] for name, row in ev["faithfulness"].items()]
    page.add(title,
             f"<p>Full model metric {num(ev['full'])}, all features ablated {num(ev['empty'])}; {esc(ablation)}.</p>"
             + chart_group(f"lasso-{anchor}", list(ev["faithfulness"]), [("faithfulness against the features kept", chart)],
                           "random is the control ranking. Hover or focus a point for its values.")
             + table(["ranking", *sizes], frows, numeric=tuple(range(1, len(sizes) + 1)), table_id=f"lasso-{anchor}-table"),
             anchor)  # fmt: skip
