"""Tasks: prompts with an answer token, an optional contrast token, and task metrics.

A :class:`Task` is a list of :class:`Example` (prompt, answer, optional contrast, optional
candidates). Metrics, computed at the last prompt position:

* ``accuracy``: the answer's logit beats the contrast's; without a contrast, the answer is the
  argmax among the candidates (or over the whole vocabulary when there are none);
* ``logit_diff``: mean of logit(answer) - logit(contrast);
* ``prob``: mean softmax probability of the answer;
* ``prob_diff``: mean of the probability mass on the example's ``above`` tokens minus the mass on
  its ``below`` tokens (greater-than's probability difference, Hanna et al. 2023: the years after
  the start minus the others); with ``above`` tokens, ``accuracy`` is whether the argmax over
  ``above`` and ``below`` is one of ``above``.

Answers, contrasts, candidates and the above/below tokens must be single tokens after their prompt
(checked with a clear error), after a space or, with ``space=False``, glued to the prompt.
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

METRICS = ("logit_diff", "accuracy", "prob", "prob_diff")


@dataclass(frozen=True)
class Example:
    """One task prompt.

    ``corrupt`` is its counterfactual: the same prompt with what the task depends on changed (IOI:
    every name replaced by another), of the same token count, whose activations a component outside
    a circuit takes under counterfactual patching (:mod:`circuitcut.pruning.patching`).

    ``above`` and ``below`` are the answers that count for and against the example under the
    ``prob_diff`` metric (greater-than: the two-digit years after the start, and the others).
    ``space`` says how the answer words run on from the prompt: after a space (words: ``"Mary"`` is
    ``" Mary"``), or glued to its last character with ``space=False`` (``"32"`` after ``"... 17"``).
    """

    prompt: str
    answer: str
    contrast: str | None = None
    candidates: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict, compare=False)
    corrupt: str | None = None
    above: tuple[str, ...] = ()
    below: tuple[str, ...] = ()
    space: bool = True


@dataclass
class Encoded:
    """A task tokenised for one model: prompt ids, answer, contrast and candidate token ids."""

    prompts: list[list[int]]
    answers: list[int]
    contrasts: list[int | None]
    candidates: list[list[int]]
    #: the counterfactual prompts' ids (each as long as its prompt), when every example has one
    corrupts: list[list[int]] | None = None
    #: the ``prob_diff`` metric's token ids for and against each example, when every example has them
    above: list[list[int]] | None = None
    below: list[list[int]] | None = None

    def rows(self, start: int, stop: int) -> Encoded:
        """The prompts ``start:stop`` with their answers, contrasts, candidates and counterfactuals."""
        corrupts = None if self.corrupts is None else self.corrupts[start:stop]
        above = None if self.above is None else self.above[start:stop]
        below = None if self.below is None else self.below[start:stop]
        return Encoded(self.prompts[start:stop], self.answers[start:stop], self.contrasts[start:stop],
                       self.candidates[start:stop], corrupts, above, below)  # fmt: skip

    def corrupted(self) -> Encoded:
        """The counterfactual prompts with the clean answers and contrasts (the corrupted model's
        metric is measured on these)."""
        if self.corrupts is None:
            raise CircuitcutError(
                "the task has no counterfactual prompts (give each example a 'corrupt' prompt)"
            )
        return Encoded(
            self.corrupts, self.answers, self.contrasts, self.candidates, None, self.above, self.below
        )


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
        if self.metric == "prob_diff" and not self.has_answer_sets:
            raise CircuitcutError(
                "the prob_diff metric needs 'above' and 'below' answers for every example; give them "
                "or use accuracy or prob"
            )
        for i, e in enumerate(self.examples, 1):
            if set(e.above) & set(e.below):
                raise CircuitcutError(
                    f"task {self.name!r}, example {i}: {sorted(set(e.above) & set(e.below))} are both above "
                    "and below; each answer counts for the example or against it, not both"
                )

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def has_counterfactuals(self) -> bool:
        """Whether every example has a counterfactual prompt (counterfactual patching needs them)."""
        return all(e.corrupt is not None for e in self.examples)

    @property
    def has_answer_sets(self) -> bool:
        """Whether every example has ``above`` and ``below`` answers (the ``prob_diff`` metric's)."""
        return all(e.above and e.below for e in self.examples)

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
        Encoder); every answer, contrast, candidate, above and below word must be one known token."""
        coder = as_encoder(tokenizer)
        sets = self.has_answer_sets
        enc = Encoded([], [], [], [], [] if self.has_counterfactuals else None, [] if sets else None,
                      [] if sets else None)  # fmt: skip
        for i, e in enumerate(self.examples, 1):
            try:
                enc.prompts.append(coder.prompt(e.prompt))
                if enc.corrupts is not None:
                    enc.corrupts.append(_counterfactual_ids(coder, e, enc.prompts[-1]))
                tok = lambda word, what, e=e: coder.token(e.prompt, word, what, e.space)  # noqa: E731
                enc.answers.append(tok(e.answer, "answer"))
                enc.contrasts.append(None if e.contrast is None else tok(e.contrast, "contrast"))
                enc.candidates.append([tok(c, "candidate") for c in e.candidates])
                if sets:
                    enc.above.append([tok(w, "'above' answer") for w in e.above])
                    enc.below.append([tok(w, "'below' answer") for w in e.below])
            except CircuitcutError as exc:
                raise CircuitcutError(f"task {self.name!r}, example {i}: {exc}") from exc
        return enc

    def samples(self, tokenizer: Any) -> list[Sample]:
        """Attribution samples: explain the logit difference (or the answer logit) at the end; each
        carries its counterfactual prompt where the task has them."""
        enc = self.encode(tokenizer)
        bases = enc.corrupts or [None] * len(enc.prompts)
        return [answer_sample(p, a, c, baseline_ids=b)
                for p, a, c, b in zip(enc.prompts, enc.answers, enc.contrasts, bases, strict=True)]  # fmt: skip


def _counterfactual_ids(coder: Any, e: Example, ids: list[int]) -> list[int]:
    """The counterfactual prompt's ids, which must be as many as the prompt's (patching is position by
    position)."""
    out = coder.prompt(e.corrupt, "counterfactual prompt")
    if len(out) != len(ids):
        raise CircuitcutError(
            f"the counterfactual prompt {e.corrupt!r} has {len(out)} tokens, the prompt {e.prompt!r} {len(ids)}: "
            "counterfactual patching is position by position, so they must have the same token count "
            "(change words for words of the same length in tokens)"
        )
    return out


def last_position_logits(
    model: torch.nn.Module,
    ids: torch.Tensor | None,
    mask: torch.Tensor,
    last: torch.Tensor,
    inputs_embeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """The logits at position ``last[b]`` of each row ``[B, V]``, running the LM head only there.

    The decoder (``model.base_model``, final norm included) runs on every token; the output
    embedding, a fifth of a small LM's forward on short prompts, runs on one position per row, and
    the final logit soft-capping (Gemma 2) is applied as the full model does. Models without a
    separate base model or output embedding take the full forward. ``inputs_embeds`` (with ``ids``
    None) feeds input embeddings instead of token ids.
    """
    rows = torch.arange(mask.shape[0], device=mask.device)
    inputs = {"input_ids": ids} if inputs_embeds is None else {"inputs_embeds": inputs_embeds}
    base, head = getattr(model, "base_model", model), model.get_output_embeddings()
    if base is model or head is None:
        return model(**inputs, attention_mask=mask, use_cache=False).logits[rows, last]
    hidden = base(**inputs, attention_mask=mask, use_cache=False)[0]
    logits = head(hidden[rows, last])
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    cap = getattr(config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


@torch.no_grad()
def task_metrics(
    model: torch.nn.Module, enc: Encoded, batch_size: int = 64, pad_id: int = 0
) -> dict[str, float]:
    """Accuracy, mean answer probability, and the mean logit difference (with contrasts) and
    probability difference (with above/below answers) of a tokenised task."""
    device = input_device(model)
    correct, diffs, probs, prob_diffs = [], [], [], []
    for i in range(0, len(enc.prompts), batch_size):
        chunk = enc.prompts[i : i + batch_size]
        ids, mask = pad_batch(chunk, pad_id)
        ends = torch.tensor([len(p) - 1 for p in chunk], device=device)
        last = last_position_logits(model, ids.to(device), mask.to(device), ends).float().cpu()
        for j in range(len(chunk)):
            k = i + j
            row, ans, con, cands = last[j], enc.answers[k], enc.contrasts[k], enc.candidates[k]
            p = torch.softmax(row, -1)
            probs.append(p[ans].item())
            if con is not None:
                diffs.append((row[ans] - row[con]).item())
            if enc.above is not None:
                up, down = enc.above[k], enc.below[k]
                prob_diffs.append((p[up].sum() - p[down].sum()).item())
                correct.append(max(up + down, key=lambda c: row[c].item()) in up)
            elif con is not None:
                correct.append(diffs[-1] > 0)
            elif cands:
                correct.append(max(cands, key=lambda c: row[c].item()) == ans)
            else:
                correct.append(int(row.argmax()) == ans)
    out = {"accuracy": sum(correct) / len(correct), "prob": sum(probs) / len(probs)}
    if diffs:
        out["logit_diff"] = sum(diffs) / len(diffs)
    if prob_diffs:
        out["prob_diff"] = sum(prob_diffs) / len(prob_diffs)
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
    """Examples from dicts with ``prompt``, ``answer`` and optional ``contrast``, ``candidates``,
    ``corrupt``, ``above``, ``below`` and ``space`` (the task-file format, docs/circuits.md#task-files):
    word lists are JSON lists of strings or one string separated by ``|`` (CSV)."""
    out = []
    for i, r in enumerate(records, 1):
        where = f"{source}: record {i}"
        if "prompt" not in r or "answer" not in r:
            raise CircuitcutError(f"{source}: record {i} needs 'prompt' and 'answer' (has {sorted(r)})")
        validation.string_fields(r, ("prompt", "answer"), ("contrast", "corrupt"), where=where)
        words = {key: _record_words(r, key, where) for key in ("candidates", "above", "below")}
        out.append(Example(str(r["prompt"]), str(r["answer"]), r.get("contrast") or None, words["candidates"],
                           corrupt=r.get("corrupt") or None, above=words["above"], below=words["below"],
                           space=_record_flag(r, "space", where)))  # fmt: skip
    return out


def _record_words(record: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    """A record's word list: a JSON list of strings, or one string of words separated by ``|``."""
    value = record.get(key) or ()
    if isinstance(value, str):
        return tuple(w.strip() for w in value.split("|") if w.strip())
    if not isinstance(value, list | tuple) or not all(isinstance(w, str) for w in value):
        raise CircuitcutError(
            f"{where}: field {key!r} must be a list of strings or one string with the words separated "
            f"by '|', got {value!r:.60}"
        )
    return tuple(value)


def _record_flag(record: dict[str, Any], key: str, where: str) -> bool:
    """A record's yes/no field (JSON true/false, CSV true/false/1/0); absent or empty: true."""
    value = record.get(key)
    if value is None or value == "" or isinstance(value, bool):
        return True if value in (None, "") else value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise CircuitcutError(f"{where}: field {key!r} must be true or false, got {value!r:.40}")
