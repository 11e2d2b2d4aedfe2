"""Explain prompts token by token: which input tokens drive the logit of a chosen (or the predicted)
next token, written as an HTML heatmap plus a JSON of the values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from circuitcut.attribution import answer_sample, explain
from circuitcut.errors import CircuitcutError
from circuitcut.io import write_json
from circuitcut.models.adapter import ModelAdapter
from circuitcut.reports.heatmap import display_tokens, save_token_heatmap


def single_token(tokenizer: Any, text: str, what: str) -> int:
    """The id of ``text`` if the tokenizer makes exactly one token of it, else a clear error."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = display_tokens(tokenizer, ids)
        raise CircuitcutError(
            f"{what} {text!r} is {len(ids)} tokens for this tokenizer ({pieces}); give a single token "
            "(byte-level tokenizers usually need the leading space, e.g. ' Mary')"
        )
    return int(ids[0])


@torch.no_grad()
def _predicted(model: torch.nn.Module, ids: list[int]) -> int:
    device = model.get_input_embeddings().weight.device
    logits = model(input_ids=torch.tensor([ids], device=device)).logits
    return int(logits[0, -1].argmax())


def explain_prompts(
    model: torch.nn.Module,
    tokenizer: Any,
    adapter: ModelAdapter,
    prompts: list[str],
    target: str | None = None,
    contrast: str | None = None,
    method: str = "lrp",
    variant: str = "attnlrp",
    output: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Per-token relevance of each prompt for the logit of ``target`` (default: the model's own
    greedy next token), minus that of ``contrast`` when given. With ``output`` (an ``.html`` path),
    writes the heatmap there and the values beside it as JSON. Returns one record per prompt (prompt,
    tokens, target, contrast, relevance, and ``explained``: what was explained, in words)."""
    if not prompts:
        raise CircuitcutError("no prompts to explain")
    if tokenizer is None:
        raise CircuitcutError("explaining text needs a tokenizer; the model was loaded without one")
    target_id = single_token(tokenizer, target, "--target") if target is not None else None
    contrast_id = single_token(tokenizer, contrast, "--contrast") if contrast is not None else None
    samples, records = [], []
    for prompt in prompts:
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if not ids:
            raise CircuitcutError("an empty prompt cannot be explained")
        answer = target_id if target_id is not None else _predicted(model, ids)
        samples.append(answer_sample(ids, answer, contrast_id))
        records.append({"prompt": prompt, "tokens": display_tokens(tokenizer, ids),
                        "target": tokenizer.decode([answer]),
                        "contrast": None if contrast_id is None else tokenizer.decode([contrast_id])})  # fmt: skip
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    relevance = explain(model, samples, adapter=adapter, method=method, variant=variant, pad_id=pad)
    for rec, rel in zip(records, relevance, strict=True):
        rec["relevance"] = [round(float(v), 6) for v in rel]
        contrast = f" - {rec['contrast']!r}" if rec["contrast"] is not None else ""
        rec["explained"] = f"logit {rec['target']!r}{contrast}"
    if output is not None:
        out = Path(output)
        if out.suffix != ".html":
            raise CircuitcutError(
                f"the heatmap is HTML: give an output path ending in .html, not {out.name!r}"
            )
        rows = [
            (f"{rec['prompt']}  ->  {rec['explained']}", rec["tokens"], rec["relevance"]) for rec in records
        ]
        save_token_heatmap(out, rows, title=f"{method.upper()} ({variant}) token relevance")
        write_json(out.with_suffix(".json"), {"method": method, "variant": variant, "samples": records})
    return records
