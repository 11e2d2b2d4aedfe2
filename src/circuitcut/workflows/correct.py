"""Targeted correction: prune what drives an undesired behaviour but matters little for general text.

For each seed: the undesired prompts are split into an attribution half and a held-out half; the
dense model's greedy continuations of the attribution half are explained (undesired relevance);
``n_general`` windows of general text are explained with next-token targets (general relevance);
the components with the lowest ``R_general - R_undesired`` are pruned (Hatefi et al., Sec. 3.4), at
each count of a sweep. Equal-count random and magnitude pruning are the controls; gradient and Wanda
contrastive scores are compared the same way. Each pruned model is scored on both halves (behaviour
rate) and on held-out general text (perplexity). Across seeds: mean and standard error; per prompt:
a paired test of before versus after on the held-out half (McNemar's exact test for toxic flags,
Wilcoxon's signed-rank test for RUR).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from scipy import stats
from tqdm.auto import tqdm

from circuitcut.attribution import attribute
from circuitcut.correction.behaviour import Behaviour, evaluate_behaviour, response_samples, split_prompts
from circuitcut.correction.contrastive import contrastive
from circuitcut.encoding import as_encoder
from circuitcut.errors import CircuitcutError
from circuitcut.evaluation import perplexity_of_ids
from circuitcut.generation import GenerationSettings, greedy_continuations
from circuitcut.models.adapter import ModelAdapter
from circuitcut.pruning import Mask, masked, unit_mask, unstructured_mask
from circuitcut.scores import Scores
from circuitcut.workflows.compress import calibration_samples

CONTRASTIVE = ("lrp", "gradient", "wanda")
CONTROLS = ("random", "magnitude")


@dataclass
class CorrectionConfig:
    """What a correction run does (recorded in its report)."""

    level: str = "neuron"
    layers: str = "all"
    counts: tuple[int, ...] = (10, 20, 50)
    report_count: int | None = None
    methods: tuple[str, ...] = CONTRASTIVE
    controls: tuple[str, ...] = CONTROLS
    seeds: int = 3
    n_general: int = 64
    general_seqlen: int = 64
    eval_windows: int | None = 100
    normalize: bool = False
    aggregation: str = "abs"
    variant: str = "attnlrp"
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.level not in ("neuron", "weight"):
            raise CircuitcutError(f"correction prunes 'neuron' or 'weight' components, got {self.level!r}")
        if not self.counts or any(c < 1 for c in self.counts):
            raise CircuitcutError("counts must be positive numbers of components")
        self.counts = tuple(sorted(set(self.counts)))
        if self.report_count is None:
            self.report_count = self.counts[-1]
        if self.report_count not in self.counts:
            raise CircuitcutError(f"report_count {self.report_count} is not among the counts {self.counts}")


def _mask(scores: Scores, adapter: ModelAdapter, cfg: CorrectionConfig, count: int) -> Mask:
    if cfg.level == "neuron":
        return unit_mask(scores, adapter, "neuron", count=count, prune="lowest")
    return unstructured_mask(scores, adapter, count=count, scheme="global", layers=cfg.layers, prune="lowest")


def _sem(values: list[float]) -> float:
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0


def paired_test(before: list[float], after: list[float], binary: bool) -> dict[str, Any]:
    """McNemar's exact test (binary flags) or Wilcoxon's signed-rank test, two-sided."""
    if binary:
        b = sum(1 for x, y in zip(before, after, strict=True) if x > y)
        c = sum(1 for x, y in zip(before, after, strict=True) if x < y)
        p = stats.binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
        return {"test": "McNemar exact", "improved": b, "worsened": c, "p_value": float(p)}
    diffs = [y - x for x, y in zip(before, after, strict=True)]
    if not any(diffs):
        return {"test": "Wilcoxon signed-rank", "p_value": 1.0, "n": len(diffs)}
    res = stats.wilcoxon(before, after)
    return {"test": "Wilcoxon signed-rank", "p_value": float(res.pvalue), "n": len(diffs)}


def correct(
    model: torch.nn.Module,
    tokenizer: Any,
    adapter: ModelAdapter,
    prompts: list[str],
    general_text: str,
    behaviour: Behaviour,
    config: CorrectionConfig | None = None,
    general_eval_text: str | None = None,
    progress: bool = True,
    keep_scores: dict[str, Scores] | None = None,
) -> dict[str, Any]:
    """Run the correction experiment; returns every number the report needs (JSON-ready).

    With ``keep_scores`` (a dict), the first method's seed-0 general, undesired and contrastive
    Scores are stored in it (keys ``general``, ``undesired``, ``contrastive``) for export.
    """
    cfg = config or CorrectionConfig()
    start = time.time()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    enc = as_encoder(tokenizer, model)
    eval_ids = enc.pieces(general_eval_text or general_text)

    def ppl() -> float:
        return perplexity_of_ids(
            model, eval_ids, cfg.general_seqlen, cfg.batch_size, cfg.eval_windows, prefix=enc.prefix
        ).perplexity

    def measure(attr_p: list[str], held_p: list[str]) -> dict[str, Any]:
        return {"heldout": evaluate_behaviour(model, tokenizer, held_p, behaviour, cfg.generation),
                "attribution": evaluate_behaviour(model, tokenizer, attr_p, behaviour, cfg.generation),
                "perplexity": ppl()}  # fmt: skip

    kw = dict(adapter=adapter, levels=(cfg.level,), layers=cfg.layers, batch_size=cfg.batch_size, pad_id=pad,
              progress=False, aggregation=cfg.aggregation, variant=cfg.variant)  # fmt: skip
    runs: list[dict[str, Any]] = []
    totals: dict[str, Any] = {}
    n_steps = cfg.seeds * (len(cfg.methods) + len(cfg.controls)) * len(cfg.counts)
    bar = tqdm(total=n_steps, desc="correction", unit="model", disable=not progress)
    for seed in range(cfg.seeds):
        attr_p, held_p = split_prompts(prompts, seed)
        conts = greedy_continuations(model, tokenizer, attr_p, cfg.generation)
        undesired = response_samples(tokenizer, attr_p, conts)
        general = calibration_samples(tokenizer, general_text, cfg.n_general, cfg.general_seqlen, seed)
        run: dict[str, Any] = {"seed": seed, "n_attribution": len(attr_p), "n_heldout": len(held_p),
                               "dense": measure(attr_p, held_p), "methods": {}}  # fmt: skip
        for method in (*cfg.methods, *cfg.controls):
            if method in cfg.methods:
                g = attribute(model, general, method, **kw)
                u = attribute(model, undesired, method, **kw)
                scores, tot = contrastive(g, u, cfg.normalize)
                totals.setdefault(method, []).append(tot)
                if keep_scores is not None and seed == 0 and method == cfg.methods[0]:
                    keep_scores.update(general=g, undesired=u, contrastive=scores)
            elif method == "random":
                scores = attribute(model, [], "random", **{**kw, "progress": False}, seed=seed)
            else:
                scores = attribute(model, [], "magnitude", **kw)
            per_count = {}
            for count in cfg.counts:
                with masked(adapter, _mask(scores, adapter, cfg, count)):
                    per_count[count] = measure(attr_p, held_p)
                bar.update(1)
            run["methods"][method] = per_count
        runs.append(run)
    bar.close()
    return _summarise(runs, cfg, behaviour, adapter, totals, time.time() - start)


def _summarise(runs: list[dict], cfg: CorrectionConfig, behaviour: Behaviour, adapter: ModelAdapter,
               totals: dict, seconds: float) -> dict[str, Any]:  # fmt: skip
    """Means and SEMs over seeds, relative changes, paired tests at the report count."""
    n = cfg.report_count
    dense_rate = [r["dense"]["heldout"]["rate"] for r in runs]
    dense_ppl = [r["dense"]["perplexity"] for r in runs]
    table: dict[str, Any] = {}
    for method in runs[0]["methods"]:
        rows = {}
        for count in cfg.counts:
            held = [r["methods"][method][count]["heldout"]["rate"] for r in runs]
            attr = [r["methods"][method][count]["attribution"]["rate"] for r in runs]
            ppl = [r["methods"][method][count]["perplexity"] for r in runs]
            rows[count] = {
                "heldout_rate": statistics.fmean(held), "heldout_sem": _sem(held),
                "attribution_rate": statistics.fmean(attr), "attribution_sem": _sem(attr),
                "perplexity": statistics.fmean(ppl), "perplexity_sem": _sem(ppl),
                "heldout_relative_change": _rel(statistics.fmean(held), statistics.fmean(dense_rate)),
                "perplexity_relative_change": _rel(statistics.fmean(ppl), statistics.fmean(dense_ppl)),
            }  # fmt: skip
        before = [v for r in runs for v in r["dense"]["heldout"]["per_prompt"]]
        after = [v for r in runs for v in r["methods"][method][n]["heldout"]["per_prompt"]]
        rows["paired_test"] = paired_test(before, after, behaviour.kind == "toxicity")
        table[method] = rows
    units = adapter.n_layers * adapter.n_neurons
    return {
        "behaviour": behaviour.name,
        "config": {**asdict(cfg), "generation": cfg.generation.as_dict()},
        "share_of_components": {
            c: (adapter.fraction(c, "neuron") if cfg.level == "neuron" else f"{c} weights")
            for c in cfg.counts
        },
        "neurons_total": units,
        "dense": {
            "heldout_rate": statistics.fmean(dense_rate),
            "heldout_sem": _sem(dense_rate),
            "attribution_rate": statistics.fmean(r["dense"]["attribution"]["rate"] for r in runs),
            "perplexity": statistics.fmean(dense_ppl),
        },
        "results": table,
        "relevance_totals": totals,
        "per_prompt": {
            "before": [v for r in runs for v in r["dense"]["heldout"]["per_prompt_score"]],
            "after": {
                m: [v for r in runs for v in r["methods"][m][n]["heldout"]["per_prompt_score"]]
                for m in runs[0]["methods"]
            },
        },
        "seconds": round(seconds, 1),
    }


def _rel(x: float, ref: float) -> float | None:
    return None if abs(ref) < 1e-12 else (x - ref) / ref


def run_correction(
    model: str,
    undesired: str | list[str],
    general: str,
    output: str | None,
    behaviour: str = "toxicity",
    scorer: str | None = None,
    config: CorrectionConfig | None = None,
    general_eval: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Load, run :func:`correct`, and write the corrected model (LRP at the report count, attributed on
    the seed-0 attribution half), its mask, the report (Markdown + JSON) and the plots."""
    from pathlib import Path

    from circuitcut.correction.behaviour import load_prompts
    from circuitcut.correction.scorers import make_scorer
    from circuitcut.evaluation import load_text
    from circuitcut.io import write_json, write_text
    from circuitcut.models import load_model
    from circuitcut.pruning import export_pruned
    from circuitcut.reports.correction import correction_markdown, plot_correction_curves, plot_per_prompt

    cfg = config or CorrectionConfig()
    m, tok, adapter = load_model(model)
    prompts = load_prompts(undesired) if isinstance(undesired, str) else list(undesired)
    if behaviour == "toxicity" and scorer is None:
        raise CircuitcutError(
            "the toxicity behaviour needs --scorer (wordlist:FILE, profanity-check or hf:MODEL)"
        )
    beh = Behaviour(behaviour, make_scorer(scorer) if behaviour == "toxicity" else None)
    general_text = load_text(general)
    eval_text = load_text(general_eval) if general_eval else None
    kept: dict[str, Scores] = {}
    summary = correct(m, tok, adapter, prompts, general_text, beh, cfg, eval_text, progress, kept)
    summary["model"] = model
    if output is None:
        return summary
    out = Path(output)
    write_json(out / "report.json", summary)
    plot_correction_curves(summary, out / "correction_curves")
    plot_per_prompt(summary, out / "per_prompt")
    write_text(out / "report.md", correction_markdown(summary))
    # the corrected model: the first contrastive method, seed-0 attribution half, report count
    method = cfg.methods[0]
    diff = kept["contrastive"]
    kept["general"].save(out / "scores_general.safetensors")
    kept["undesired"].save(out / "scores_undesired.safetensors")
    mask = _mask(diff, adapter, cfg, cfg.report_count)
    mask.meta = {**mask.meta, "purpose": f"correction of {beh.name}", "method": method, "scores": diff.meta}
    export_pruned(m, tok, adapter, mask, out / "corrected_model", {"correction": summary["results"][method]})
    return summary
