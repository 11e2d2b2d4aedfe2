"""Reading reference samples from files: JSONL of prompts and targets, or plain text.

JSONL, one object per line, any of:

* ``{"text": "..."}``: explain every next token of the text (language-model target);
* ``{"prompt": "...", "answer": "...", "contrast": "..."}``: explain the answer at the end of the
  prompt (``contrast`` optional: then a logit difference; it must be one token);
* ``{"prompt": "...", "response": "..."}``: explain each response token after the prompt.

A ``.txt`` file is joined and cut into non-overlapping windows of ``seqlen`` tokens, each a
language-model sample.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from circuitcut.attribution.targets import Sample, answer_sample, next_token_sample, response_sample
from circuitcut.errors import CircuitcutError


def continuation_ids(tokenizer: Any, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of a prompt and of its continuation as the tokenizer splits the joined text.

    A space is inserted between them unless the continuation starts with one, so word-level and
    BPE tokenizers both see the continuation as in running text.
    """
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    joined = prompt + (continuation if continuation[:1].isspace() else " " + continuation)
    full = tokenizer(joined, add_special_tokens=False)["input_ids"]
    if full[: len(p)] != p or len(full) == len(p):
        raise CircuitcutError(
            f"cannot separate the continuation {continuation!r} from its prompt after tokenisation"
        )
    return p, full[len(p) :]


def single_token(tokenizer: Any, prompt: str, word: str, what: str) -> int:
    """The one token ``word`` becomes after ``prompt``; a clear error if it is several tokens."""
    _, ids = continuation_ids(tokenizer, prompt, word)
    if len(ids) != 1:
        raise CircuitcutError(
            f"the {what} {word!r} is {len(ids)} tokens for this tokenizer; it must be one token"
        )
    return ids[0]


def sample_from_record(record: dict[str, Any], tokenizer: Any, seqlen: int | None = None) -> Sample:
    """Turn one JSONL record into a :class:`Sample` (see the module docstring)."""
    if "text" in record:
        ids = tokenizer(record["text"], add_special_tokens=False)["input_ids"]
        return next_token_sample(ids[:seqlen] if seqlen else ids)
    if "prompt" not in record:
        raise CircuitcutError(
            f"a sample record needs 'text', or 'prompt' with 'answer' or 'response'; got keys {sorted(record)}"
        )
    prompt = record["prompt"]
    if "answer" in record:
        p, ans = continuation_ids(tokenizer, prompt, record["answer"])
        contrast = record.get("contrast")
        if contrast is None:
            return answer_sample(p, ans[0]) if len(ans) == 1 else response_sample(p, ans)
        if len(ans) != 1:
            raise CircuitcutError(f"answer {record['answer']!r} must be one token when a contrast is given")
        return answer_sample(p, ans[0], single_token(tokenizer, prompt, contrast, "contrast"))
    if "response" in record:
        p, resp = continuation_ids(tokenizer, prompt, record["response"])
        return response_sample(p, resp)
    raise CircuitcutError("a 'prompt' record needs an 'answer' or a 'response'")


def load_samples(
    path: str | os.PathLike[str],
    tokenizer: Any,
    seqlen: int = 128,
    n_samples: int | None = None,
) -> list[Sample]:
    """Read samples from a ``.jsonl`` or ``.txt`` file (see the module docstring)."""
    path = Path(path)
    if tokenizer is None:
        raise CircuitcutError("reading samples needs the model's tokenizer; none was loaded")
    if not path.is_file():
        raise CircuitcutError(f"no such data file: {path}")
    samples: list[Sample] = []
    if path.suffix == ".jsonl":
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CircuitcutError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
            try:
                samples.append(sample_from_record(record, tokenizer, seqlen))
            except CircuitcutError as exc:
                raise CircuitcutError(f"{path}:{lineno}: {exc}") from exc
            if n_samples is not None and len(samples) >= n_samples:
                break
    else:
        ids = tokenizer(path.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"]
        for i in range(0, len(ids) - seqlen + 1, seqlen):
            samples.append(next_token_sample(ids[i : i + seqlen]))
            if n_samples is not None and len(samples) >= n_samples:
                break
    if not samples:
        raise CircuitcutError(
            f"{path} gave no samples (empty file, or a text shorter than one window of {seqlen} tokens)"
        )
    return samples
