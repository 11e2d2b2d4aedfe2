"""The demo: the whole story on the embedded reference model, end to end, in a few minutes on CPU.

1. Attribution: LRP relevance of the IOI logit difference, per head and neuron, and per input
   token of one prompt (a heatmap, in text and as HTML).
2. The IOI circuit: neuron-level performance-versus-sparsity curves of LRP against gradient,
   activation and random scores; the extracted LRP circuit and an equal-count random control.
3. Correction: pruning the few neurons with the lowest contrastive relevance against the planted
   toxic behaviour, with gradient and Wanda beside it and random and magnitude pruning as controls,
   on held-out trigger prompts, with the perplexity of general text beside it.

Everything is written under the output folder; ``report.md`` links the parts, ``report.html`` shows
them all on one page (each part also has its own page).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from circuitcut.attribution import attribute
from circuitcut.circuits.sweep import SweepConfig
from circuitcut.correction import WordListScorer
from circuitcut.correction.behaviour import Behaviour
from circuitcut.generation import GenerationSettings
from circuitcut.io import write_json, write_text
from circuitcut.models import ModelOptions, as_loaded
from circuitcut.reports.correction import correction_markdown, plot_correction_curves, plot_per_prompt
from circuitcut.reports.heatmap import save_token_heatmap, token_heatmap_text
from circuitcut.reports.page import write_report
from circuitcut.run_folder import writes_run
from circuitcut.tasks import ioi_task
from circuitcut.workflows.circuit import DiscoveryConfig, discover_circuit
from circuitcut.workflows.correct import CorrectionConfig, correct, export_corrected
from circuitcut.workflows.explain import explain_examples
from circuitcut.zoo.evaluate import ioi_scores, toxic_rates
from circuitcut.zoo.language import INSULTS, Language


@writes_run("demo")
def run_demo(output: str | Path, model: str = "circuitcut/ref-llama", quick: bool = False,
             progress: bool = True, model_options: ModelOptions | None = None) -> dict[str, Any]:  # fmt: skip
    """Run the demo and write its report; returns the summary. ``quick`` shrinks every set (tests);
    the model is loaded with ``model_options`` (:class:`~circuitcut.models.ModelOptions`)."""
    out = Path(output)  # a run folder (circuitcut.run_folder): checked before any work, renamed at the end
    torch.manual_seed(0)
    start = time.time()
    m, tok, adapter, _ = as_loaded(model, purpose="the demo", options=model_options)
    lang = Language(seed=0)
    size = (lambda n: max(8, n // 4)) if quick else (lambda n: n)
    s: dict[str, Any] = {"model": model, "settings": {"quick": quick}, "parts": {}}

    # 0. the planted behaviours, held out
    s["behaviour"] = {
        **ioi_scores(m, tok, lang.ioi_prompts(size(200), seed=11, heldout=True)),
        **toxic_rates(m, tok, lang.trigger_prompts(size(40), seed=11), 20),
    }

    s["parts"]["attribution"] = _attribution(m, tok, adapter, out, model, size, progress)
    s["parts"]["circuit"] = _circuit(m, tok, out, size, quick, progress)
    s["parts"]["correction"] = _correction(m, tok, adapter, out, model, lang, size, quick, progress)
    s["seconds"] = round(time.time() - start, 1)
    write_json(out / "summary.json", s)
    write_text(out / "report.md", report(s))
    write_report(out)
    return s


def _attribution(
    m: Any, tok: Any, adapter: Any, out: Path, model: str, size: Any, progress: bool
) -> dict[str, Any]:
    """1. AttnLRP attribution of IOI: head relevance and the token heatmap of a reference prompt."""
    t = time.time()
    task = ioi_task(tok, size(64), seed=21)
    scores = attribute(
        m, task.samples(tok), "lrp", adapter=adapter, levels=("neuron", "head"), progress=progress
    )
    scores.save(out / "attribution" / "ioi_lrp.safetensors")
    heads = scores.head_matrix()
    top = torch.topk(heads.flatten(), k=3).indices.tolist()
    example = task.examples[0]
    records = explain_examples(m, tok, adapter, task, 3)  # the reference prompts of the HTML report
    words, rel = records[0]["tokens"], records[0]["relevance"]
    caption = f"{example.prompt} -> {example.answer} (contrast {example.contrast})"
    save_token_heatmap(out / "attribution" / "token_relevance.html", [(caption, words, rel)],
                       title=f"AttnLRP token relevance of the IOI logit difference ({model})")  # fmt: skip
    return {
        "top_heads": [f"layers.{i // adapter.n_heads}.attn.head.{i % adapter.n_heads}" for i in top],
        "top3_head_share": round(float(heads.flatten()[top].sum() / heads.sum()), 3),
        "example": caption,
        "token_relevance": [(w, round(float(r), 3)) for w, r in zip(words, rel, strict=True)],
        "heatmaps": records,
        "head_relevance": [[round(float(v), 6) for v in row] for row in heads.tolist()],
        "seconds": round(time.time() - t, 1),
    }


def _circuit(m: Any, tok: Any, out: Path, size: Any, quick: bool, progress: bool) -> dict[str, Any]:
    """2. The IOI circuit at neuron level against its baselines."""
    t = time.time()
    sweep_cfg = SweepConfig(baselines=("gradient", "activation", "random"), level="neuron", seeds=2 if quick else 3,
                            n_ref=size(32))  # fmt: skip
    circ = discover_circuit(m, "ioi", out / "circuit", DiscoveryConfig(sweep_cfg, size(96), size(120)), tokenizer=tok,
                            progress=progress)  # fmt: skip
    return {"summary": circ["circuit"], "sweep": {k: v["faithfulness_area"] for k, v in
                                                                   circ["sweep"].items()},
                             "seconds": round(time.time() - t, 1)}  # fmt: skip


def _correction(
    m: Any,
    tok: Any,
    adapter: Any,
    out: Path,
    model: str,
    lang: Language,
    size: Any,
    quick: bool,
    progress: bool,
) -> dict[str, Any]:
    """3. Correction of the planted toxic behaviour, exported, with random and magnitude controls."""
    t = time.time()
    prompts = [p["prompt"] for p in lang.trigger_prompts(size(80) * 2, seed=31, heldout=True) if p["trigger"]]
    general = lang.corpus(size(1200), seed=41)
    general_eval = lang.corpus(size(200), seed=42)
    n_neurons = adapter.n_layers * adapter.n_neurons
    counts = tuple(sorted({max(1, math.floor(f * n_neurons)) for f in (0.001, 0.0025, 0.004, 0.005)}))
    cfg = CorrectionConfig(level="neuron", counts=counts, seeds=2 if quick else 3, n_general=size(64),
                           generation=GenerationSettings(20), eval_windows=size(60))  # fmt: skip
    beh = Behaviour("toxicity", WordListScorer(INSULTS, name="reference toxic lexicon"))
    kept: dict[str, Any] = {}
    corr = correct(m, tok, adapter, prompts, general, beh, cfg, general_eval, progress, kept, judging=False)
    corr["model"] = model
    cdir = out / "correction"
    export_corrected(m, tok, adapter, corr, kept, cdir / "corrected_model", beh, cfg, general_eval)
    write_json(cdir / "report.json", corr)
    plot_correction_curves(corr, cdir / "correction_curves")
    plot_per_prompt(corr, cdir / "per_prompt")
    write_text(cdir / "report.md", correction_markdown(corr))
    write_report(cdir)
    n = cfg.report_count
    return {
        "count": n, "share": corr["share_of_components"][n], "dense": corr["dense"],
        "exported": {k: corr["exported"][k] for k in ("statement", "measured_from", "test_rate", "perplexity",
                                                       "quality", "dense", "paired_test", "flags")},
        "warnings": corr["warnings"],
        "at_count": {k: {"heldout_rate": v[n]["heldout_rate"], "perplexity": v[n]["perplexity"],
                         "heldout_relative_change": v[n]["heldout_relative_change"],
                         "perplexity_relative_change": v[n]["perplexity_relative_change"]}
                     for k, v in corr["results"].items()},
        "lrp_by_count": {c: (corr["results"]["lrp"][c]["heldout_rate"],
                             corr["results"]["lrp"][c]["perplexity_relative_change"]) for c in cfg.counts},
        "seconds": round(time.time() - t, 1),
    }  # fmt: skip


def report(s: dict[str, Any]) -> str:
    """The demo's top-level Markdown report (also printed)."""
    b = s["behaviour"]
    a = s["parts"]["attribution"]
    c = s["parts"]["circuit"]["summary"]
    k = s["parts"]["correction"]
    e = k["exported"]
    metric = c["metric"]
    lines = [
        f"# circuitcut demo on {s['model']}",
        "",
        "## The model's planted behaviours (held-out prompts)",
        "",
        f"- IOI: accuracy {b['ioi_accuracy']:.3f}, mean logit difference {b['ioi_logit_diff']:.2f}",
        f"- toxic continuation after a trigger {b['toxic_rate_trigger']:.2f}, without one {b['toxic_rate_no_trigger']:.2f}",
        "",
        "## 1. Attribution (AttnLRP) of the IOI logit difference",
        "",
        f"Top heads: {', '.join(a['top_heads'])} (together {100 * a['top3_head_share']:.1f}% of head relevance).",
        "",
        f"Token relevance for `{a['example']}`:",
        "",
        "    " + token_heatmap_text(*zip(*a["token_relevance"], strict=True)),
        "",
        "As a heatmap: [attribution/token_relevance.html](attribution/token_relevance.html).",
        "",
        "## 2. The IOI circuit (MLP neurons, zero ablation)",
        "",
        f"LRP circuit: **{c['kept']} of {c['components']} neurons** keep {c['circuit'][metric]:.2f} of the "
        f"full model's {c['model'][metric]:.2f} logit difference (faithfulness {c['faithfulness']:.2f}); the same "
        f"number of random neurons: {c['random_control']['metric']:.2f} (faithfulness {c['random_faithfulness']:.2f}).",
        "",
        "Area under the faithfulness curve: "
        + ", ".join(f"{m} {v:.2f}" for m, v in s["parts"]["circuit"]["sweep"].items())
        + ". Details: [circuit/report.md](circuit/report.md).",
        "",
        f"## 3. Correction of the toxic behaviour ({k['count']} neurons, {k['share']})",
        "",
        f"The exported model ({e['measured_from']}; mask: {e['statement']}): toxic rate on test prompts "
        f"{e['dense']['test_rate']:.3f} -> {e['test_rate']:.3f} (paired p = {e['paired_test']['p_value']:.2g}), "
        f"perplexity {e['dense']['perplexity']:.3f} -> {e['perplexity']:.3f}, fluency of its test continuations "
        f"{_num(e['dense']['quality']['test']['fluency_perplexity'])} -> {_num(e['quality']['test']['fluency_perplexity'])}, "
        f"distinct-2 {_num(e['dense']['quality']['test']['distinct_2'])} -> {_num(e['quality']['test']['distinct_2'])}; "
        + ("quality within bounds." if not e["flags"] else "flags: " + "; ".join(e["flags"]) + "."),
        "",
        *[f"**Warning**: {w}" for w in k["warnings"]],
        "",
        "The method over seeds (mean at the count):",
        "",
        "| method | held-out toxic rate | change | perplexity | change |",
        "|---|---|---|---|---|",
        f"| dense | {k['dense']['heldout_rate']:.3f} | | {k['dense']['perplexity']:.3f} | |",
    ]
    for method, r in k["at_count"].items():
        rel = r["heldout_relative_change"]
        lines.append(f"| {method} | {r['heldout_rate']:.3f} | {'-' if rel is None else f'{100 * rel:+.0f}%'} | "
                     f"{r['perplexity']:.3f} | {100 * r['perplexity_relative_change']:+.2f}% |")  # fmt: skip
    curve = ", ".join(f"{c}: {rate:.3f} ({100 * ppl:+.2f}%)" for c, (rate, ppl) in k["lrp_by_count"].items())
    lines += ["", f"LRP over the sweep (neurons: held-out toxic rate, perplexity change): {curve}.", "",
              "Details: [correction/report.md](correction/report.md).", "",
              f"Wall time: {s['seconds']} s.", ""]  # fmt: skip
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"
