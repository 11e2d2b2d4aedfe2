"""Compression: score on calibration text, prune, evaluate perplexity before and after, export."""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from circuitcut import validation
from circuitcut.attribution import attribute
from circuitcut.attribution.config import ScoringConfig
from circuitcut.attribution.memory import check_fits, estimate_compression, format_compression_estimate
from circuitcut.data import calibration_samples
from circuitcut.evaluation import load_text, perplexity_of_ids
from circuitcut.evaluation.cache import cached_perplexity
from circuitcut.io import write_json, write_text
from circuitcut.models import ModelAdapter, ModelOptions, as_loaded
from circuitcut.models.adapter import input_device
from circuitcut.models.selection import select_linears
from circuitcut.pruning import Mask, apply_mask, export_pruned, nm_mask, unstructured_mask
from circuitcut.pruning.budgets import LayerBudget, layer_budget
from circuitcut.reports.compression import compression_markdown
from circuitcut.reports.page import write_report
from circuitcut.run_folder import writes_run
from circuitcut.scores import Scores
from circuitcut.workflows.compress_config import BUDGETS, DEFAULT_SEQLEN, METHODS, SCHEMES, CompressConfig

__all__ = ["BUDGETS", "METHODS", "SCHEMES", "CompressConfig", "compress", "make_budget", "prune_model"]


def make_mask(
    scores: Any, adapter: ModelAdapter, cfg: CompressConfig, layers: str | list[str],
    budget: LayerBudget | None = None,
) -> Mask:  # fmt: skip
    """The mask of a scheme at the configured sparsity (each layer at its budgeted count if a
    ``budget`` is given; :func:`make_budget`)."""
    if cfg.scheme in ("2:4", "4:8"):
        n, m = (int(x) for x in cfg.scheme.split(":"))
        return nm_mask(scores, adapter, n, m, layers=layers)
    return unstructured_mask(scores, adapter, cfg.sparsity, scheme=cfg.scheme, layers=layers, budget=budget)


def make_budget(
    model: torch.nn.Module, adapter: ModelAdapter, samples: list, cfg: CompressConfig, scores: Scores | None,
    progress: bool = False,
) -> LayerBudget | None:  # fmt: skip
    """The configured layer budget over the whole selection (None for ``uniform``), from the dense
    model: OWL from Wanda scores (``scores`` if the method is Wanda, else one Wanda pass), the
    relevance budget from ``scores`` (the ranking method's, scored here when None)."""
    if cfg.budget == "uniform":
        return None
    if cfg.budget == "owl" and cfg.scoring.method != "wanda":
        wanda = ScoringConfig(method="wanda", batch_size=cfg.scoring.batch_size, seed=cfg.scoring.seed)
        scores = attribute(model, samples, wanda, adapter=adapter, levels=("weight",), layers=cfg.layers,
                           progress=progress)  # fmt: skip
    elif scores is None:
        scores = attribute(model, samples, cfg.scoring, adapter=adapter, levels=("weight",), layers=cfg.layers,
                           progress=progress)  # fmt: skip
    chosen = [lin for lin in select_linears(adapter, cfg.layers) if lin.name in scores.weights]
    return layer_budget(cfg.budget, scores, chosen, cfg.sparsity)


def prune_model(
    model: torch.nn.Module, adapter: ModelAdapter, samples: list, cfg: CompressConfig, progress: bool = True
) -> Mask:
    """Score and prune the model in place; returns the mask.

    With ``cfg.sequential`` (Wanda's protocol) each decoder layer is scored on the outputs of the
    already-pruned layers before it, then pruned, in order; a layer budget is then fixed first, on
    the dense model (as OWL does).
    """
    if not cfg.sequential:
        scores = attribute(model, samples, cfg.scoring, adapter=adapter, levels=("weight",), layers=cfg.layers,
                           progress=progress)  # fmt: skip
        mask = make_mask(scores, adapter, cfg, cfg.layers, make_budget(model, adapter, samples, cfg, scores))
        apply_mask(adapter, mask)
        return mask
    budget = make_budget(model, adapter, samples, cfg, None, progress)
    chosen = {lin.name for lin in select_linears(adapter, cfg.layers)}
    mask = Mask(meta={"sequential": True})
    for layer in adapter.layers:
        names = [lin.name for lin in layer.linears.values() if lin.name in chosen]
        if not names:
            continue
        scores = attribute(model, samples, cfg.scoring, adapter=adapter, levels=("weight",), layers=names,
                           progress=False)  # fmt: skip
        part = make_mask(scores, adapter, cfg, names, budget)
        apply_mask(adapter, part)
        mask = mask.union(part)
    mask.meta = {
        "sequential": True,
        "scheme": cfg.scheme,
        "sparsity": cfg.sparsity,
        "method": cfg.scoring.method,
        **({"budget": budget.as_dict()} if budget else {}),
    }
    return mask


def check_memory(adapter: ModelAdapter, cfg: CompressConfig, eval_seqlen: int) -> dict[str, float]:
    """Print the run's memory estimate (scoring and perplexity passes) and refuse, naming the fixes,
    when it cannot fit (:func:`circuitcut.attribution.memory.check_fits`)."""
    parts = estimate_compression(adapter, cfg.scoring.batch_size, cfg.seqlen, cfg.scoring.batch_size, eval_seqlen,
                                 cfg.scoring.method, cfg.layers)  # fmt: skip
    print(format_compression_estimate(parts))
    check_fits(parts, input_device(adapter.model), "compression")
    return parts


@writes_run("compress")
def compress(
    model: str | torch.nn.Module,
    calibration: str,
    output: str | Path | None = None,
    config: CompressConfig | None = None,
    evaluation: str | None = None,
    tokenizer: Any = None,
    progress: bool = True,
    model_options: ModelOptions | None = None,
) -> dict[str, Any]:
    """Compress a model and report perplexity before and after.

    Args:
        model: a model name/path/alias, or a loaded model (then give ``tokenizer``).
        calibration: calibration text: a file or a corpus name (see :func:`circuitcut.evaluation.load_text`).
        output: folder for the pruned model, mask and report (nothing written if ``None``): a run
            folder (:mod:`circuitcut.run_folder`), checked first, written when the run has ended.
        config: method, sparsity, scheme and sample settings.
        evaluation: perplexity corpus (default: the calibration corpus).
        model_options: how a model given by name is loaded (revision, dtype, device, allow_pickle,
            trust_remote_code, special_tokens; see :class:`~circuitcut.models.ModelOptions`).
    """
    cfg = config or CompressConfig()
    validation.text_source(calibration, "calibration")
    if evaluation is not None:
        validation.text_source(evaluation, "evaluation")
    start = time.time()
    model, enc, adapter, model_id = as_loaded(model, tokenizer, "compression", model_options)
    if cfg.seqlen is None:  # the caller's config stays as given
        cfg = replace(cfg, seqlen=min(DEFAULT_SEQLEN, enc.context or DEFAULT_SEQLEN))
    cal_text = load_text(calibration)
    eval_text = cal_text if evaluation is None else load_text(evaluation)
    eval_ids = enc.pieces(eval_text)
    eval_seqlen = cfg.eval_seqlen or cfg.seqlen
    check_memory(adapter, cfg, eval_seqlen)
    dense, cached = cached_perplexity(model, eval_ids, eval_seqlen, cfg.scoring.batch_size, cfg.eval_windows,
                                      progress, enc.prefix)  # fmt: skip
    if cached is not None:
        print(f"dense perplexity from cache: {dense.perplexity:.4f} ({cached})")

    def ppl() -> Any:
        return perplexity_of_ids(model, eval_ids, eval_seqlen, cfg.scoring.batch_size, cfg.eval_windows,
                                 progress, enc.prefix)  # fmt: skip

    samples = calibration_samples(enc, cal_text, cfg.n_samples, cfg.seqlen, cfg.scoring.seed)
    mask = prune_model(model, adapter, samples, cfg, progress)
    pruned = ppl()
    report = {
        "model": model_id,
        "config": asdict(cfg),
        "encoding": enc.provenance(),
        "calibration": str(calibration),
        "evaluation": str(evaluation or calibration),
        "dense": dense.as_dict(),
        "dense_from_cache": cached is not None,
        "pruned": pruned.as_dict(),
        "sparsity": mask.sparsity(),
        "masked_weights": mask.pruned(),
        "seconds": round(time.time() - start, 1),
    }
    if output is not None:
        out = Path(output)
        export_pruned(model, enc.tokenizer, adapter, mask, out, {"compression": report})
        write_json(out / "report.json", report)
        write_text(out / "report.md", compression_markdown(report))
        write_report(out)
    return report
