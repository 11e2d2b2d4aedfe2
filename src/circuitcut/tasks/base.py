"""Tasks: prompts with an answer token, an optional contrast token, and task metrics.

A :class:`Task` is a list of :class:`Example` (prompt, answer, optional contrast, optional
candidates). Metrics, computed at the last prompt position:

* ``accuracy``: the answer's logit beats the contrast's; without a contrast, the answer is the
  argmax among the candidates (or over the whole vocabulary when there are none);
* ``logit_diff``: mean of logit(answer) - logit(contrast);
* ``prob``: mean softmax probability of the answer.

Answers and contrasts must be single tokens after their prompt (checked with a clear error).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from circuitcut import validation
from circuitcut.attribution.targets import Sample, answer_sample, pad_batch
from circuitcut.encoding import as_encoder, pad_id
from circuitcut.errors import CircuitcutError
from circuitcut.models.adapter import input_device

METRICS = ("logit_diff", "accuracy", "prob")


@dataclass(frozen=True)
class Example:
    """One task prompt."""

    prompt: str
    answer: str
    contrast: str | None = None
    candidates: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict, compare=False)


@dataclass
class Encoded:
    """A task tokenised for one model: prompt ids, answer, contrast and candidate token ids."""

    prompts: list[list[int]]
    answers: list[int]
    contrasts: list[int | None]
    candidates: list[list[int]]

    def rows(self, start: int, stop: int) -> Encoded:
        """The prompts ``start:stop`` with their answers, contrasts and candidates."""
        return Encoded(self.prompts[start:stop], self.answers[start:stop], self.contrasts[start:stop],
                       self.candidates[start:stop])  # fmt: skip


@dataclass
class Task:
    """A named list of examples with the metric that summarises it."""

    name: str
    examples: list[Example]
    metric: str = "logit_diff"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.examples:
            raise CircuitcutError(f"task {self.name!r} has no examples")
        if self.metric not in METRICS:
            raise CircuitcutError(f"unknown metric {self.metric!r}; use one of {', '.join(METRICS)}")
        if self.metric == "logit_diff" and any(e.contrast is None for e in self.examples):
            raise CircuitcutError(
                "the logit_diff metric needs a contrast for every example; use accuracy or prob"
            )

    def __len__(self) -> int:
        return len(self.examples)

    def split(self, n_attribution: int, seed: int = 0) -> tuple[Task, Task]:
        """A seeded split into an attribution part and a disjoint evaluation part."""
        if not 0 < n_attribution < len(self.examples):
            raise CircuitcutError(
                f"cannot put {n_attribution} of {len(self.examples)} examples in the attribution split; "
                "both splits need at least one"
            )
        order = list(range(len(self.examples)))
        random.Random(seed).shuffle(order)
        first = [self.examples[i] for i in order[:n_attribution]]
        rest = [self.examples[i] for i in order[n_attribution:]]
        return (Task(f"{self.name}/attribution", first, self.metric, dict(self.meta)),
                Task(f"{self.name}/evaluation", rest, self.metric, dict(self.meta)))  # fmt: skip

    def subset(self, n: int, seed: int) -> Task:
        """A seeded random subset of ``n`` examples (a reference set)."""
        if n > len(self.examples):
            raise CircuitcutError(f"asked for {n} examples, the task has {len(self.examples)}")
        picked = random.Random(seed).sample(self.examples, n)
        return Task(f"{self.name}/seed{seed}", picked, self.metric, dict(self.meta))

    def encode(self, tokenizer: Any) -> Encoded:
        """Token ids for a model (by :mod:`circuitcut.encoding`'s policy: ``tokenizer`` may be an
        Encoder); every answer, contrast and candidate must be one known token."""
        coder = as_encoder(tokenizer)
        enc = Encoded([], [], [], [])
        for i, e in enumerate(self.examples, 1):
            try:
                enc.prompts.append(coder.prompt(e.prompt))
                enc.answers.append(coder.token(e.prompt, e.answer, "answer"))
                enc.contrasts.append(
                    None if e.contrast is None else coder.token(e.prompt, e.contrast, "contrast")
                )
                enc.candidates.append([coder.token(e.prompt, c, "candidate") for c in e.candidates])
            except CircuitcutError as exc:
                raise CircuitcutError(f"task {self.name!r}, example {i}: {exc}") from exc
        return enc

    def samples(self, tokenizer: Any) -> list[Sample]:
        """Attribution samples: explain the logit difference (or the answer logit) at the end."""
        enc = self.encode(tokenizer)
        return [
            answer_sample(p, a, c) for p, a, c in zip(enc.prompts, enc.answers, enc.contrasts, strict=True)
        ]


def last_position_logits(
    model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, last: torch.Tensor
) -> torch.Tensor:
    """The logits at position ``last[b]`` of each row ``[B, V]``, running the LM head only there.

    The decoder (``model.base_model``, final norm included) runs on every token; the output
    embedding, a fifth of a small LM's forward on short prompts, runs on one position per row, and
    the final logit soft-capping (Gemma 2) is applied as the full model does. Models without a
    separate base model or output embedding take the full forward.
    """
    rows = torch.arange(ids.shape[0], device=ids.device)
    base, head = getattr(model, "base_model", model), model.get_output_embeddings()
    if base is model or head is None:
        return model(input_ids=ids, attention_mask=mask, use_cache=False).logits[rows, last]
    hidden = base(input_ids=ids, attention_mask=mask, use_cache=False)[0]
    logits = head(hidden[rows, last])
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    cap = getattr(config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


@torch.no_grad()
def task_metrics(
    model: torch.nn.Module, enc: Encoded, batch_size: int = 64, pad_id: int = 0
) -> dict[str, float]:
    """Accuracy, mean logit difference and mean answer probability of a tokenised task."""
    device = input_device(model)
    correct, diffs, probs = [], [], []
    for i in range(0, len(enc.prompts), batch_size):
        chunk = enc.prompts[i : i + batch_size]
        ids, mask = pad_batch(chunk, pad_id)
        ends = torch.tensor([len(p) - 1 for p in chunk], device=device)
        last = last_position_logits(model, ids.to(device), mask.to(device), ends).float().cpu()
        for j in range(len(chunk)):
            k = i + j
            row, ans, con, cands = last[j], enc.answers[k], enc.contrasts[k], enc.candidates[k]
            probs.append(torch.softmax(row, -1)[ans].item())
            if con is not None:
                d = (row[ans] - row[con]).item()
                diffs.append(d)
                correct.append(d > 0)
            elif cands:
                correct.append(max(cands, key=lambda c: row[c].item()) == ans)
            else:
                correct.append(int(row.argmax()) == ans)
    out = {"accuracy": sum(correct) / len(correct), "prob": sum(probs) / len(probs)}
    if diffs:
        out["logit_diff"] = sum(diffs) / len(diffs)
    return out


def evaluate_task(
    model: torch.nn.Module, tokenizer: Any, task: Task, batch_size: int = 64
) -> dict[str, float]:
    """:func:`task_metrics` of a task on a model."""
    pad = pad_id(tokenizer)
    return task_metrics(model, task.encode(tokenizer), batch_size, pad)


def faithfulness(m_circuit: float, m_model: float, m_empty: float) -> float:
    """f = (m(C) - m(empty)) / (m(model) - m(empty)) (the MIB circuit-localisation convention)."""
    denom = m_model - m_empty
    if abs(denom) < 1e-12:
        raise CircuitcutError(
            "faithfulness is undefined: the full model and the empty circuit score the same"
        )
    return (m_circuit - m_empty) / denom


def examples_from_records(records: Sequence[dict[str, Any]], source: str) -> list[Example]:
    """Examples from dicts with ``prompt``, ``answer`` and optional ``contrast`` / ``candidates``."""
    out = []
    for i, r in enumerate(records, 1):
        if "prompt" not in r or "answer" not in r:
            raise CircuitcutError(f"{source}: record {i} needs 'prompt' and 'answer' (has {sorted(r)})")
        validation.string_fields(r, ("prompt", "answer"), ("contrast",), where=f"{source}: record {i}")
        cands = r.get("candidates") or ()
        if isinstance(cands, str):
            cands = tuple(c.strip() for c in cands.split("|") if c.strip())
        out.append(Example(str(r["prompt"]), str(r["answer"]), r.get("contrast") or None, tuple(cands)))
    return out
