"""Runs on disk and their pages: what kind of run a folder holds (from the JSON it wrote), its
headline, and its ``report.html``, built from that JSON alone.

Kinds, by the file each run writes:

* ``circuit``: ``summary.json`` with ``sweep`` and ``circuit``;
* ``correct``: ``report.json`` with ``exported`` and ``results``;
* ``compress``: ``report.json`` with ``dense`` and ``pruned``;
* ``lasso``: ``summary.json`` with ``sae_quality``;
* ``demo``: ``summary.json`` with ``parts`` (its ``circuit/`` and ``correction/`` are runs too);
* ``explain``: any ``NAME.json`` of format ``circuitcut.explain/1``; its page is ``NAME.report.html``
  (the heatmap ``NAME.html`` is the run's own output).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from circuitcut.errors import CircuitcutError
from circuitcut.reports.page.base import PAGE_NAME, Page, esc, num, pct, write_page
from circuitcut.reports.page.charts import fmt_share
from circuitcut.reports.page.circuit import add_circuit, head_grid
from circuitcut.reports.page.correction import add_correction
from circuitcut.reports.page.correction import headline as correction_headline
from circuitcut.reports.page.sections import add_compress, add_lasso, heatmaps, provenance

EXPLAIN_FORMAT = "circuitcut.explain/1"
KINDS = ("demo", "circuit", "correct", "compress", "lasso", "explain")


@dataclass
class Run:
    """One run: its kind, the JSON it wrote, and where its page goes."""

    kind: str
    source: Path
    data: dict[str, Any]

    @property
    def folder(self) -> Path:
        """The run's folder."""
        return self.source.parent

    @property
    def page_path(self) -> Path:
        """Where its page is written."""
        return explain_page(self.source) if self.kind == "explain" else self.folder / PAGE_NAME

    @property
    def model(self) -> str:
        """The model the run used (``-`` when not recorded)."""
        return str(self.data.get("model", "-"))

    def headline(self) -> str:
        """One line: what the run found."""
        return headline(self)


def explain_page(json_path: str | os.PathLike[str]) -> Path:
    """The page of an explain run whose values are in ``json_path`` (``NAME.json`` ->
    ``NAME.report.html``)."""
    p = Path(json_path)
    return p.with_name(p.stem + ".report.html")


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _kind(name: str, data: dict[str, Any]) -> str | None:
    if data.get("format") == EXPLAIN_FORMAT:
        return "explain"
    if name == "summary.json":
        if "parts" in data:
            return "demo"
        if "sweep" in data and "circuit" in data:
            return "circuit"
        if "sae_quality" in data:
            return "lasso"
    if name == "report.json":
        if "exported" in data and "results" in data:
            return "correct"
        if "pruned" in data and "dense" in data:
            return "compress"
    return None


def _is_explain(path: Path) -> bool:
    """A JSON whose opening names the explain format (json.dump writes ``format`` first)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return f'"format": "{EXPLAIN_FORMAT}"' in fh.read(256)
    except OSError:
        return False


def runs_in(folder: str | os.PathLike[str]) -> list[Run]:
    """The runs whose JSON lies directly in ``folder``."""
    out = []
    folder = Path(folder)
    for name in ("summary.json", "report.json"):
        data = _read(folder / name) if (folder / name).is_file() else None
        kind = _kind(name, data) if data else None
        if kind:
            out.append(Run(kind, folder / name, data))  # type: ignore[arg-type]
    for path in sorted(folder.glob("*.json")):
        if path.name not in ("summary.json", "report.json") and _is_explain(path):
            data = _read(path)
            if data:
                out.append(Run("explain", path, data))
    return out


def load_run(path: str | os.PathLike[str]) -> Run:
    """The run of a folder (or of an explain JSON file); a clear error when there is none."""
    p = Path(path)
    if p.is_file():
        data = _read(p)
        kind = _kind(p.name, data) if data else None
        if kind is None:
            raise CircuitcutError(f"{p} is not the JSON of a circuitcut run")
        return Run(kind, p, data)  # type: ignore[arg-type]
    found = runs_in(p) if p.is_dir() else []
    if not found:
        raise CircuitcutError(f"no circuitcut run in {p} (no summary.json or report.json of a run)")
    return found[0]


def _sub(run: Run, name: str, file: str, kind: str) -> dict[str, Any] | None:
    data = _read(run.folder / name / file)
    return data if data is not None and _kind(file, data) == kind else None


def headline(run: Run) -> str:
    """What the run found, in one line of text."""
    d = run.data
    if run.kind == "circuit":
        c = d["circuit"]
        return (f"{d['level']} circuit of {d['task']}: {c['kept']} of {c['components']} {d['level']}s "
                f"({fmt_share(c['keep'])}), faithfulness {num(c['faithfulness'], 2)} (random {num(c['random_faithfulness'], 2)})")  # fmt: skip
    if run.kind == "correct":
        e = d["exported"]
        return (f"{d['behaviour']}: test rate {num(e['dense']['test_rate'])} → {num(e['test_rate'])}, "
                f"perplexity {pct(e['perplexity_relative_change'])} ({e['count']} {d['config']['level']}s)")  # fmt: skip
    if run.kind == "compress":
        c = d["config"]
        return (f"{c['scoring']['method']} {c['scheme']} at {d['sparsity']:.1%}: perplexity {num(d['dense']['perplexity'])} → "
                f"{num(d['pruned']['perplexity'])}")  # fmt: skip
    if run.kind == "lasso":
        f = d["evaluation"]["faithfulness"]
        sizes = list(next(iter(f.values())))
        k = sizes[len(sizes) // 2]
        return "CircuitLasso: faithfulness at " + str(k) + " features: " + ", ".join(
            f"{name} {num(row[k], 2)}" for name, row in f.items())  # fmt: skip
    if run.kind == "explain":
        return f"token relevance of {len(d['samples'])} prompt(s) by {d['method']} ({d['variant']})"
    c = d["parts"]["circuit"]["summary"]
    k = d["parts"]["correction"]
    e = k["exported"]
    return (f"demo: IOI circuit {c['kept']} of {c['components']} neurons (faithfulness {num(c['faithfulness'], 2)}); "
            f"toxic rate {num(e['dense']['test_rate'])} → {num(e['test_rate'])} with {k['count']} neurons pruned")  # fmt: skip


def build_page(run: Run) -> Page:
    """The page of a run, from its JSON (and, for the demo, its parts' JSON)."""
    d = run.data
    page = Page(f"circuitcut {run.kind}: {run.model}", esc(headline(run)))
    settings: dict[str, Any] = {}
    data: dict[str, Any] = {}
    encoding = d.get("encoding")
    if run.kind == "circuit":
        add_circuit(page, d)
        if d.get("reference_relevance"):
            page.add("Token relevance", heatmaps(d["reference_relevance"], "AttnLRP relevance of a few evaluation prompts "
                                                 "for the task's logit (difference)."), "relevance")  # fmt: skip
        data = {k: f"{v['name']} ({v['examples']} examples)" for k, v in d["tasks"].items()}
        settings = {k: d[k] for k in ("level", "layers", "metric", "ablation", "threshold", "n_components")}
    elif run.kind == "correct":
        add_correction(page, d)
        data = {"prompts": d["prompts"]}
        settings = d["config"]
    elif run.kind == "compress":
        add_compress(page, d)
        data = {"calibration": d["calibration"], "evaluation": d["evaluation"]}
        settings = d["config"]
    elif run.kind == "lasso":
        add_lasso(page, d, run.folder)
        data = {"task": d["task"], "attribution": d["n_attribution"], "evaluation": d["n_evaluation"]}
        settings = {"sites": d["sites"], "importance": d.get("importance"), "ablation": d["ablation"]}
    elif run.kind == "explain":
        page.add("Token relevance", heatmaps(d["samples"], f"{d['method']} ({d['variant']})."), "relevance")
        data = {"prompts": len(d["samples"])}
        settings = {"method": d["method"], "variant": d["variant"]}
    else:
        encoding = _add_demo(page, run)
        settings = {"seconds by part": {k: v.get("seconds") for k, v in d["parts"].items()}}
        data = {"behaviour": d.get("behaviour", {})}
    seconds = d.get("seconds")
    provenance(page, run.folder, run.model, data, settings, encoding,
               seconds if isinstance(seconds, (int, float)) else None)  # fmt: skip
    return page


def _add_demo(page: Page, run: Run) -> dict[str, Any] | None:
    """The demo's parts; returns the encoding provenance its circuit run recorded."""
    d = run.data
    a = d["parts"]["attribution"]
    b = d.get("behaviour", {})
    intro = (f"<p>Planted behaviours on held-out prompts: IOI accuracy {num(b.get('ioi_accuracy'))}, mean logit "
             f"difference {num(b.get('ioi_logit_diff'), 2)}; toxic continuation after a trigger "
             f"{num(b.get('toxic_rate_trigger'), 2)}, without {num(b.get('toxic_rate_no_trigger'), 2)}.</p>"
             f"<p>Top heads by AttnLRP relevance of the IOI logit difference: {esc(', '.join(a['top_heads']))} "
             f"(together {100 * a['top3_head_share']:.1f}% of head relevance).</p>")  # fmt: skip
    grid = (
        head_grid(a["head_relevance"], "Head relevance (layers x heads)") if a.get("head_relevance") else ""
    )
    records = a.get("heatmaps") or [{"prompt": a["example"], "tokens": [t for t, _ in a["token_relevance"]],
                                     "relevance": [v for _, v in a["token_relevance"]]}]  # fmt: skip
    page.add(
        "Attribution",
        intro + grid + heatmaps(records, "AttnLRP token relevance of IOI prompts."),
        "attribution",
    )
    circuit = _sub(run, "circuit", "summary.json", "circuit")
    if circuit is not None:
        add_circuit(page, circuit, "IOI neuron circuit: ")
    correction = _sub(run, "correction", "report.json", "correct")
    if correction is not None:
        page.headline += f"<br>{correction_headline(correction)}"
        add_correction(page, correction)
    links = [f'<a href="{p}/{PAGE_NAME}">{p}/{PAGE_NAME}</a>' for p in ("circuit", "correction")
             if (run.folder / p / PAGE_NAME).is_file()]  # fmt: skip
    if links:
        page.add("Parts", f"<p>Each part's own page: {', '.join(links)}.</p>", "parts")
    return None if circuit is None else circuit.get("encoding")


def write_report(path: str | os.PathLike[str]) -> Path:
    """Write the ``report.html`` of the run in folder ``path`` (or ``NAME.report.html`` beside an
    explain run's ``NAME.json``), built from its JSON; returns the page's path."""
    run = load_run(path)
    return write_page(run.page_path, build_page(run))
