"""Circuit discovery: sweep methods over sparsity, extract the circuit, write curves, plots, report."""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from circuitcut.circuits.circuit import Circuit, extract_circuit
from circuitcut.circuits.sweep import SweepConfig, SweepResult, sweep
from circuitcut.encoding import pad_id
from circuitcut.io import write_json, write_text
from circuitcut.models import as_loaded
from circuitcut.reports.circuit import circuit_markdown
from circuitcut.reports.page import write_report
from circuitcut.reports.plots import plot_circuit, plot_sweep
from circuitcut.run_folder import writes_run
from circuitcut.tasks import Task, task_metrics, task_splits
from circuitcut.workflows.circuit_config import DiscoveryConfig
from circuitcut.workflows.explain import explain_examples

#: below this held-out accuracy of the full model, the run warns before the sweep
MIN_ACCURACY = 0.6
log = logging.getLogger(__name__)


@writes_run("circuit")
def discover_circuit(
    model: str | torch.nn.Module,
    task: str | Task = "ioi",
    output: str | Path | None = None,
    config: DiscoveryConfig | None = None,
    *,
    eval_task: str | Task | None = None,
    tokenizer: Any = None,
    progress: bool = True,
    model_id: str | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Sweep the scoring method and the baselines, extract the method's circuit, write everything
    to ``output``.

    ``config.sweep`` holds the scoring (:class:`~circuitcut.attribution.config.ScoringConfig`: the
    method whose circuit is extracted, LRP rules, aggregation, seeds), the baselines, the level,
    the ablation (``"zero"`` or ``"mean"``, :mod:`circuitcut.pruning.ablation`) and the threshold.
    The attribution and evaluation prompts come from :func:`task_splits` (``eval_task``,
    ``config.ioi_lists`` and ``config.heldout_templates`` are its options). ``output`` is a run folder
    (:mod:`circuitcut.run_folder`), checked first and written when the run has ended. Before the
    sweep, the full model's held-out accuracy and metric are logged (and passed to ``echo``, the
    CLI's ``print``), with a warning under ``"warnings"`` when the accuracy is below
    :data:`MIN_ACCURACY` (:func:`full_model_check`). Returns the summary (also written as
    ``summary.json``).
    """
    run = config or DiscoveryConfig()
    start = time.time()
    model, tokenizer, adapter, loaded_id = as_loaded(model, tokenizer, "circuit discovery")
    model_id = model_id or loaded_id
    attribution, evaluation = task_splits(task, tokenizer, run.n_attribution, run.n_evaluation, eval_task, run.ioi_lists,
                                          run.heldout_templates)  # fmt: skip
    cfg = replace(
        run.sweep, n_ref=min(run.sweep.n_ref, len(attribution)), metric=attribution.metric
    ).for_task(evaluation)
    dense, warnings = full_model_check(model, tokenizer, evaluation, cfg, echo)
    result = sweep(model, tokenizer, adapter, attribution, evaluation, cfg, progress, dense=dense)
    sweep_seconds = round(time.time() - start, 1)
    circuit = extract_circuit(model, tokenizer, adapter, attribution, evaluation, cfg,
                              reference=(result.dense, result.empty), means=result.means)  # fmt: skip
    summary = _summary(model_id, attribution, evaluation, tokenizer, cfg, result, circuit)
    summary["warnings"] = warnings
    summary["reference_relevance"] = explain_examples(model, tokenizer, adapter, evaluation, 3)
    summary["sweep_seconds"] = sweep_seconds
    summary["seconds"] = round(time.time() - start, 1)
    if output is not None:
        write_outputs(Path(output), result, circuit, summary, adapter)
    return summary


def full_model_check(
    model: torch.nn.Module,
    tokenizer: Any,
    evaluation: Task,
    cfg: SweepConfig,
    echo: Callable[[str], None] | None = None,
) -> tuple[dict[str, float], list[str]]:
    """The full model's metrics on the held-out split, measured once (the sweep takes them as its
    ``dense``) and said before the sweep starts: logged at INFO and passed to ``echo``. Returns them
    and the warnings: one when the accuracy is below :data:`MIN_ACCURACY` (logged as a warning)."""
    dense = task_metrics(model, evaluation.encode(tokenizer), cfg.eval_batch_size, pad_id(tokenizer))
    said = [f"full model on {len(evaluation)} held-out prompts: accuracy {dense['accuracy']:.3f}"
            + (f", {cfg.metric.replace('_', ' ')} {dense[cfg.metric]:.3f}" if cfg.metric in dense else "")
            + f", answer probability {dense['prob']:.3f}"]  # fmt: skip
    log.info(said[0])
    warnings = []
    if dense["accuracy"] < MIN_ACCURACY:
        warnings.append(f"the full model's held-out accuracy is {dense['accuracy']:.3f}, below {MIN_ACCURACY:g}: a "
                        "missing BOS token or a task the model cannot do shows up here, and the circuit of a "
                        "task the model does not do means little")  # fmt: skip
        log.warning(warnings[0])
        said.append(f"warning: {warnings[0]}")
    for line in said if echo is not None else ():
        echo(line)
    return dense, warnings


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
        "seed_mode": cfg.scoring.effective_seed_mode,
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
    write_text(out / "report.md", circuit_markdown(summary, result))
    write_report(out)
