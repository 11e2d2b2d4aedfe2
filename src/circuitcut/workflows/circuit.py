"""Circuit discovery: sweep methods over sparsity, extract the circuit, write curves, plots, report."""

from __future__ import annotations

import csv
import io
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from circuitcut.attribution.methods import LRP_RULES
from circuitcut.circuits.circuit import Circuit, extract_circuit
from circuitcut.circuits.config import ABLATION_WORDS
from circuitcut.circuits.sweep import SweepConfig, SweepResult, sweep
from circuitcut.errors import CircuitcutError
from circuitcut.io import write_json, write_text
from circuitcut.models import as_loaded
from circuitcut.reports.page import write_report
from circuitcut.reports.plots import plot_circuit, plot_sweep
from circuitcut.run_folder import writes_run
from circuitcut.tasks import Task, ioi_splits, ioi_task, load_ioi_lists, load_task
from circuitcut.workflows.circuit_config import DiscoveryConfig
from circuitcut.workflows.explain import explain_examples


def build_task(task: str | Task, tokenizer: Any, n_total: int, seed: int = 0) -> Task:
    """``"ioi"`` (generated), a task file (.jsonl/.csv), or a :class:`Task` as is."""
    if isinstance(task, Task):
        return task
    if task == "ioi":
        return ioi_task(tokenizer, n_total, seed=seed)
    return load_task(task)


def task_splits(
    task: str | Task,
    tokenizer: Any,
    n_attribution: int,
    n_evaluation: int,
    eval_task: str | Task | None = None,
    ioi_lists: str | None = None,
    heldout_templates: float = 0.3,
) -> tuple[Task, Task]:
    """The attribution and held-out evaluation tasks of a run.

    * ``eval_task`` given: ``task`` is all attribution (at most ``n_attribution`` examples), the
      evaluation is that task (file or Task) as is;
    * ``task="ioi"`` with ``ioi_lists`` (the ACDC lists' JSON layout): generated from those lists,
      evaluation on held-out sentence templates (:func:`~circuitcut.tasks.ioi_splits`);
    * otherwise one task split at random into disjoint attribution and evaluation prompts.
    """
    if ioi_lists is not None and task != "ioi":
        raise CircuitcutError("ioi_lists (--ioi-lists) builds the IOI task: use it with task 'ioi'")
    if ioi_lists is not None and eval_task is None:
        lists = load_ioi_lists(ioi_lists)
        return ioi_splits(tokenizer, lists, n_attribution, n_evaluation, heldout_templates)
    if eval_task is not None:
        if ioi_lists is not None:
            attribution = ioi_task(tokenizer, n_attribution, **load_ioi_lists(ioi_lists))
        else:
            attribution = build_task(task, tokenizer, n_attribution)
        if len(attribution) > n_attribution:
            attribution = attribution.subset(n_attribution, seed=0)
        evaluation = eval_task if isinstance(eval_task, Task) else load_task(eval_task, attribution.metric)
        if evaluation.metric != attribution.metric:
            raise CircuitcutError(
                f"the evaluation task's metric ({evaluation.metric}) differs from the attribution task's "
                f"({attribution.metric}); give both a contrast (logit_diff) or neither"
            )
        return attribution, evaluation
    full = build_task(task, tokenizer, n_attribution + n_evaluation)
    n_attr = n_attribution if len(full) > n_attribution else max(1, len(full) // 2)
    return full.split(n_attr, seed=0)


@writes_run("circuit")
def discover_circuit(
    model: str | torch.nn.Module,
    task: str | Task = "ioi",
    output: str | Path | None = None,
    config: DiscoveryConfig | None = None,
    *,
    eval_task: str | Task | None = None,
    ioi_lists: str | None = None,
    tokenizer: Any = None,
    progress: bool = True,
    model_id: str | None = None,
) -> dict[str, Any]:
    """Sweep the scoring method and the baselines, extract the method's circuit, write everything
    to ``output``.

    ``config.sweep`` holds the scoring (:class:`~circuitcut.attribution.config.ScoringConfig`: the
    method whose circuit is extracted, LRP rules, aggregation, seeds), the baselines, the level,
    the ablation (``"zero"`` or ``"mean"``, :mod:`circuitcut.pruning.ablation`) and the threshold.
    The attribution and evaluation prompts come from :func:`task_splits` (``eval_task``,
    ``ioi_lists`` and ``config.heldout_templates`` are its options). ``output`` is a run folder
    (:mod:`circuitcut.run_folder`), checked first and written when the run has ended. Returns the
    summary (also written as ``summary.json``).
    """
    run = config or DiscoveryConfig()
    start = time.time()
    model, tokenizer, adapter, loaded_id = as_loaded(model, tokenizer, "circuit discovery")
    model_id = model_id or loaded_id
    attribution, evaluation = task_splits(task, tokenizer, run.n_attribution, run.n_evaluation, eval_task, ioi_lists,
                                          run.heldout_templates)  # fmt: skip
    cfg = replace(run.sweep, n_ref=min(run.sweep.n_ref, len(attribution)), metric=attribution.metric)
    result = sweep(model, tokenizer, adapter, attribution, evaluation, cfg, progress)
    sweep_seconds = round(time.time() - start, 1)
    circuit = extract_circuit(model, tokenizer, adapter, attribution, evaluation, cfg,
                              reference=(result.dense, result.empty), means=result.means)  # fmt: skip
    summary = _summary(model_id, attribution, evaluation, tokenizer, cfg, result, circuit)
    summary["reference_relevance"] = explain_examples(model, tokenizer, adapter, evaluation, 3)
    summary["sweep_seconds"] = sweep_seconds
    summary["seconds"] = round(time.time() - start, 1)
    if output is not None:
        write_outputs(Path(output), result, circuit, summary, adapter)
    return summary


def _summary(
    model_id: str,
    attribution: Task,
    evaluation: Task,
    tokenizer: Any,
    cfg: SweepConfig,
    result: SweepResult,
    circuit: Circuit,
) -> dict[str, Any]:
    """The run's summary (``summary.json``): what ran on which prompts, the curves, the circuit."""
    phases = {f"sweep {k}": v for k, v in result.phases.items()}
    phases.update({f"circuit {k}": v for k, v in circuit.info["phases"].items()})
    return {
        "model": model_id,
        "task": attribution.name.split("/")[0],
        "tasks": {
            "attribution": {"name": attribution.name, "examples": len(attribution), "meta": attribution.meta},
            "evaluation": {"name": evaluation.name, "examples": len(evaluation), "meta": evaluation.meta},
        },
        "encoding": tokenizer.provenance(),
        "level": cfg.level,
        "layers": cfg.layers,
        "metric": attribution.metric,
        "ablation": cfg.ablation,
        "scoring": cfg.scoring.as_dict(),
        "lrp_rules": list(cfg.scoring.with_method("lrp").lrp_rules or ()),
        "aggregation": cfg.scoring.aggregation,
        "seed_mode": cfg.scoring.seed_mode,
        "threshold": {"value": cfg.threshold, "applies_to": "faithfulness"},
        "n_components": result.n_components,
        "sweep": result.summary(),
        "skipped": result.skipped,
        "dense": result.dense,
        "empty": result.empty,
        "circuit": circuit.info,
        "phases": phases,
    }


def write_outputs(out: Path, result: SweepResult, circuit: Circuit, summary: dict, adapter: Any) -> None:
    """Curves (CSV, JSON), plots, the circuit, the Markdown report and the HTML page."""
    rows = result.rows()
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text(out / "curves.csv", buf.getvalue())
    write_json(out / "curves.json", result.as_dict())
    write_json(out / "summary.json", summary)
    plot_sweep(result, out / "curves")
    per_layer = {"neuron": adapter.n_neurons, "head": adapter.n_heads}.get(summary["level"])
    plot_circuit(circuit.info, out / "circuit_layers", per_layer)
    circuit.save(out / "circuit")
    write_text(out / "report.md", report(summary, result))
    write_report(out)


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


def report(s: dict[str, Any], result: SweepResult) -> str:
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
    lines += [
        "",
        f"## The {c['method']} circuit",
        "",
        f"Sparsest on a fine grid of counts with faithfulness >= {c['threshold']:.0%}: "
        f"**{c['kept']} of {c['components']} {s['level']}s ({100 * c['kept'] / c['components']:.3f}%)**.",
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
