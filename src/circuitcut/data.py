"""Reading reference samples from files: JSONL of prompts and targets, or plain text.

JSONL, one object per line, any of:

* ``{"text": "..."}``: explain every next token of the text (language-model target);
* ``{"prompt": "...", "answer": "...", "contrast": "..."}``: explain the answer at the end of the
  prompt (``contrast`` optional: then a logit difference; it must be one token);
* ``{"prompt": "...", "response": "..."}``: explain each response token after the prompt.

A ``.txt`` file is joined and cut into non-overlapping windows of ``seqlen`` tokens, each a
language-model sample. A ``text`` record longer than ``seqlen`` tokens is refused (naming its line),
or, with ``truncate``, cut to its first ``seqlen`` tokens with a warning; prompts longer than the
model's context are refused. Text becomes ids by :mod:`circuitcut.encoding`'s policy (the tokenizer's
leading special tokens on every prompt and window, nothing added to answers and responses).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch

from circuitcut import validation
from circuitcut.attribution.targets import Sample, answer_sample, next_token_sample, response_sample
from circuitcut.encoding import as_encoder, short_text, window_body
from circuitcut.errors import CircuitcutError, InputError
from circuitcut.io import read_jsonl, read_text_file


def check_record(record: dict[str, Any]) -> None:
    """A sample record's kind and field types (see the module docstring); no tokenizer needed."""
    if "text" in record:
        validation.string_fields(record, ("text",))
        return
    if "prompt" not in record:
        raise CircuitcutError(
            f"a sample record needs 'text', or 'prompt' with 'answer' or 'response'; got keys {sorted(record)}"
        )
    second = "answer" if "answer" in record else "response" if "response" in record else None
    if second is None:
        raise CircuitcutError("a 'prompt' record needs an 'answer' or a 'response'")
    validation.string_fields(record, ("prompt", second), ("contrast",))


def check_sample_file(path: str | os.PathLike[str]) -> None:
    """A samples file (:data:`~circuitcut.validation.SAMPLE_SUFFIXES`) checked without a model: a
    readable UTF-8 file, and for JSONL every line an object of a known kind with text fields; so a bad
    file is refused before a model is loaded."""
    path = validation.data_file(path, "data", validation.SAMPLE_SUFFIXES, "samples")
    if path.suffix == ".jsonl":
        for lineno, record in read_jsonl(path, "data file"):
            try:
                check_record(record)
            except CircuitcutError as exc:
                raise InputError(f"{path}:{lineno}: {exc}") from exc


def sample_from_record(
    record: dict[str, Any], tokenizer: Any, seqlen: int | None = None, truncate: bool = False, where: str = ""
) -> Sample:
    """Turn one JSONL record into a :class:`Sample` (see the module docstring).

    A ``text`` longer than ``seqlen`` tokens (prefix included) is refused, or with ``truncate``
    keeps its first ``seqlen`` with a warning (opened by ``where``, e.g. ``FILE:LINE``).
    """
    check_record(record)
    enc = as_encoder(tokenizer)
    if "text" in record:
        return next_token_sample(_text_ids(enc, record["text"], seqlen, truncate, where))
    prompt = record["prompt"]
    if "answer" in record:
        p, ans = enc.continuation(prompt, record["answer"])
        contrast = record.get("contrast")
        if contrast is None:
            return answer_sample(p, ans[0]) if len(ans) == 1 else response_sample(p, ans)
        if len(ans) != 1:
            raise CircuitcutError(f"answer {record['answer']!r} must be one token when a contrast is given")
        return answer_sample(p, ans[0], enc.token(prompt, contrast, "contrast"))
    if "response" in record:
        p, resp = enc.continuation(prompt, record["response"])
        return response_sample(p, resp)
    raise CircuitcutError("a 'prompt' record needs an 'answer' or a 'response'")


def _text_ids(enc: Any, text: str, seqlen: int | None, truncate: bool, where: str) -> list[int]:
    """A text record's ids (the prefix, then its tokens), at most ``seqlen`` of them: a longer text is
    refused, or cut with a warning when ``truncate`` is set; never longer than the model's context."""
    ids = list(enc.prefix) + enc.pieces(text)
    if seqlen and len(ids) > seqlen:
        what = f"a text record of {len(ids)} tokens ({short_text(text)!r})"
        if not truncate:
            most = f", at most the model's context of {enc.context} positions" if enc.context else ""
            raise InputError(
                f"{what} is longer than seqlen={seqlen}; shorten it, raise seqlen (--seqlen{most}), or pass "
                f"truncate=True (--truncate) to keep its first {seqlen} tokens"
            )
        warnings.warn(f"{where}{': ' if where else ''}{what} cut to its first {seqlen} tokens (truncate)",
                      UserWarning, stacklevel=4)  # fmt: skip
        ids = ids[:seqlen]
    enc.check_length(len(ids), "a text record", fix="pass a smaller seqlen")
    return ids


def load_samples(
    path: str | os.PathLike[str],
    tokenizer: Any,
    seqlen: int = 128,
    n_samples: int | None = None,
    truncate: bool = False,
) -> list[Sample]:
    """Read samples from a ``.jsonl`` or ``.txt`` file (see the module docstring).

    ``tokenizer`` may be an :class:`~circuitcut.encoding.Encoder` (its policy is then used). A JSONL
    ``text`` longer than ``seqlen`` tokens is refused unless ``truncate`` (then it is cut, with a
    warning naming its line).
    """
    path = validation.data_file(path, "data", validation.SAMPLE_SUFFIXES, "samples")
    seqlen = validation.positive_int(seqlen, "seqlen")
    n_samples = validation.optional_positive_int(n_samples, "n_samples")
    if tokenizer is None:
        raise CircuitcutError("reading samples needs the model's tokenizer; none was loaded")
    enc = as_encoder(tokenizer)
    samples: list[Sample] = []
    if path.suffix == ".jsonl":
        for lineno, record in read_jsonl(path, "data file"):
            try:
                samples.append(sample_from_record(record, enc, seqlen, truncate, f"{path}:{lineno}"))
            except CircuitcutError as exc:
                raise type(exc)(f"{path}:{lineno}: {exc}") from exc
            if n_samples is not None and len(samples) >= n_samples:
                break
    else:
        stream = enc.pieces(read_text_file(path, "data file"))
        samples = [next_token_sample(w) for w in enc.windows(stream, seqlen, n_samples)]
    if not samples:
        raise CircuitcutError(
            f"{path} gave no samples (empty file, or a text shorter than one window of {seqlen} tokens)"
        )
    return samples


def calibration_samples(tokenizer: Any, text: str, n_samples: int, seqlen: int, seed: int = 0) -> list:
    """``n_samples`` random windows of ``seqlen`` tokens from a text (seeded), as LM samples; each
    window starts with the tokenizer's prefix (:mod:`circuitcut.encoding`), as Wanda's calibration
    windows start at random offsets of the encoded corpus."""
    enc = as_encoder(tokenizer)
    ids = enc.pieces(text)
    body = window_body(seqlen, enc.prefix, enc.context)
    if len(ids) < body + 1:
        raise CircuitcutError(
            f"the calibration text has {len(ids)} tokens, fewer than one window of {seqlen}"
        )
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - body, (n_samples,), generator=g).tolist()
    return [next_token_sample(enc.window(ids, s, seqlen)) for s in starts]
