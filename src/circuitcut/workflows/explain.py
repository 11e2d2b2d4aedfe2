"""Explain prompts token by token: which input tokens drive the logit of a chosen (or the predicted)
next token, written as an HTML heatmap plus a JSON of the values."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from circuitcut import validation
from circuitcut.attribution import answer_sample, explain
from circuitcut.attribution.config import ScoringConfig
from circuitcut.encoding import as_encoder
from circuitcut.errors import CircuitcutError
from circuitcut.io import read_jsonl, write_json
from circuitcut.models.adapter import ModelAdapter, input_device
from circuitcut.reports.heatmap import display_tokens, save_token_heatmap
from circuitcut.reports.page import write_report
from circuitcut.reports.page.base import check_page_path
from circuitcut.reports.page.runs import explain_page
from circuitcut.tasks.base import Task

#: the ``format`` of the JSON written beside a heatmap
FORMAT = "circuitcut.explain/1"


@torch.no_grad()
def _predicted(model: torch.nn.Module, ids: list[int]) -> int:
    device = input_device(model)
    logits = model(input_ids=torch.tensor([ids], device=device)).logits
    return int(logits[0, -1].argmax())


def explain_prompts(
    model: torch.nn.Module,
    tokenizer: Any,
    adapter: ModelAdapter,
    prompts: Sequence[str | dict[str, Any]],
    target: str | None = None,
    contrast: str | None = None,
    method: str = "lrp",
    variant: str = "attnlrp",
    output: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Per-token relevance of each prompt for the logit of its target (default: the model's own
    greedy next token), minus that of its contrast when given.

    ``prompts`` are strings (then ``target`` / ``contrast`` apply to all) or records
    ``{"prompt": ..., "target": ..., "contrast": ...}`` (``target`` and ``contrast`` optional, falling
    back to the arguments). Targets and contrasts are the word as it runs on from its prompt, and must
    be one known token. With ``output`` (an ``.html`` path), writes the heatmap there, the values
    beside it as JSON and the report page as ``NAME.report.html``. Returns one record per prompt
    (prompt, tokens, target, contrast, relevance, and ``explained``: what was explained, in words)."""
    if not prompts:
        raise CircuitcutError("no prompts to explain")
    enc = as_encoder(tokenizer, model)
    if output is not None:  # before any work: an .html path, and never over a JSON circuitcut did not write
        validation.output_file(output, "output", ".html", FORMAT)
        check_page_path(explain_page(Path(output).with_suffix(".json")))
    samples, records = [], []
    for i, item in enumerate(prompts, 1):
        rec = explain_record(item, target, contrast, where=f"prompt {i}")
        ids = enc.prompt(rec["prompt"])
        answer = (
            _predicted(model, ids)
            if rec["target"] is None
            else enc.token(rec["prompt"], rec["target"], "target")
        )
        con = None if rec["contrast"] is None else enc.token(rec["prompt"], rec["contrast"], "contrast")
        samples.append(answer_sample(ids, answer, con))
        records.append({"prompt": rec["prompt"], "tokens": display_tokens(enc, ids),
                        "target": enc.decode([answer]),
                        "contrast": None if con is None else enc.decode([con])})  # fmt: skip
    relevance = explain(
        model, samples, ScoringConfig(method=method, variant=variant, seed_mode="value"), adapter=adapter
    )
    for rec, rel in zip(records, relevance, strict=True):
        rec["relevance"] = [round(float(v), 6) for v in rel]
        contrast_text = f" - {rec['contrast']!r}" if rec["contrast"] is not None else ""
        rec["explained"] = f"logit {rec['target']!r}{contrast_text}"
    if output is not None:
        out = Path(output)
        rows = [
            (f"{rec['prompt']}  ->  {rec['explained']}", rec["tokens"], rec["relevance"]) for rec in records
        ]
        save_token_heatmap(out, rows, title=f"{method.upper()} ({variant}) token relevance")
        write_json(out.with_suffix(".json"), {"format": FORMAT, "method": method, "variant": variant,
                                              "encoding": enc.provenance(), "samples": records})  # fmt: skip
        write_report(out.with_suffix(".json"))
    return records


def explain_examples(
    model: torch.nn.Module, tokenizer: Any, adapter: ModelAdapter, task: Task, n: int = 3
) -> list[dict[str, Any]]:
    """AttnLRP token relevance of the first ``n`` examples of a task for what the task explains (the
    answer's logit, minus the contrast's when there is one), as :func:`explain_prompts`' records:
    the reference prompts a run report shows as heatmaps."""
    enc = as_encoder(tokenizer, model)
    part = Task(task.name, task.examples[:n], task.metric, dict(task.meta))
    samples = part.samples(enc)
    relevance = explain(model, samples, adapter=adapter)
    records = []
    for ex, sample, rel in zip(part.examples, samples, relevance, strict=True):
        contrast = f" - {ex.contrast!r}" if ex.contrast is not None else ""
        records.append({"prompt": ex.prompt, "tokens": display_tokens(enc, sample.input_ids), "target": ex.answer,
                        "contrast": ex.contrast, "relevance": [round(float(v), 6) for v in rel],
                        "explained": f"logit {ex.answer!r}{contrast}"})  # fmt: skip
    return records


def explain_record(
    item: str | dict[str, Any], target: str | None, contrast: str | None, where: str
) -> dict[str, Any]:
    """One prompt to explain as ``{"prompt", "target", "contrast"}``, checked (strings only)."""
    rec = {"prompt": item, "target": target, "contrast": contrast} if isinstance(item, str) else item
    if not isinstance(rec, dict):
        raise CircuitcutError(f"{where}: expected a prompt string or a record, got {type(item).__name__}")
    if not isinstance(rec.get("prompt"), str) or not rec["prompt"].strip():
        raise CircuitcutError(f"{where}: needs a non-empty 'prompt' string, got {rec.get('prompt')!r}")
    out = {
        "prompt": rec["prompt"],
        "target": rec.get("target", target),
        "contrast": rec.get("contrast", contrast),
    }
    for key in ("target", "contrast"):
        if out[key] is not None and not isinstance(out[key], str):
            raise CircuitcutError(f"{where}: {key!r} must be a string, got {out[key]!r}")
    return out


def load_explain_file(
    path: str | Path, target: str | None = None, contrast: str | None = None
) -> list[dict[str, Any]]:
    """Prompts to explain from a JSONL file of ``{"prompt", "target"?, "contrast"?}`` records; a
    record without a target or contrast takes ``target`` / ``contrast``."""
    return [explain_record(r, target, contrast, where=f"{path}:{i}") for i, r in read_jsonl(path)]
