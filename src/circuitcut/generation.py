"""Greedy continuation of prompts, batched, with the settings recorded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from circuitcut.attribution.targets import pad_batch
from circuitcut.decoding import GenerationSettings
from circuitcut.encoding import as_encoder, pad_id
from circuitcut.errors import CircuitcutError
from circuitcut.models.adapter import input_device

__all__ = ["GenerationSettings", "greedy_continuations"]


@torch.no_grad()
def greedy_continuations(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    settings: GenerationSettings | None = None,
) -> list[list[int]]:
    """The greedy continuation (new token ids only) of each prompt.

    Prompts are encoded by :mod:`circuitcut.encoding`'s policy (the tokenizer's BOS where it adds one)
    and left-padded in batches; generation stops at ``max_new_tokens`` or, with
    ``stop_at_eos``, at the end-of-text token, which is then not included.
    """
    import copy

    settings = settings or GenerationSettings()
    if not prompts:
        raise CircuitcutError("no prompts to continue")
    if tokenizer is None:
        raise CircuitcutError("generation needs a tokenizer; the model was loaded without one")
    device = input_device(model)
    pad = pad_id(tokenizer)
    eos = tokenizer.eos_token_id
    gen_config = copy.deepcopy(model.generation_config)
    gen_config.eos_token_id = eos if settings.stop_at_eos else []
    gen_config.pad_token_id = pad
    gen_config.max_new_tokens = settings.max_new_tokens
    gen_config.do_sample = False  # greedy; sampling settings in the model's own config are ignored
    for name in ("temperature", "top_p", "top_k"):
        if hasattr(gen_config, name):
            setattr(gen_config, name, None)
    enc = as_encoder(tokenizer, model)
    out: list[list[int]] = []
    for i in range(0, len(prompts), settings.batch_size):
        chunk = [enc.prompt(p) for p in prompts[i : i + settings.batch_size]]
        for c in chunk:
            enc.check_length(len(c) + settings.max_new_tokens, "a prompt with its continuation",
                             fix="shorten the prompt or generate fewer tokens")  # fmt: skip
        ids, mask = pad_batch(chunk, pad, left=True)
        width = ids.shape[1]
        gen = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            generation_config=gen_config,
        )
        for row in gen[:, width:].tolist():
            if settings.stop_at_eos and eos is not None and eos in row:
                row = row[: row.index(eos)]
            out.append(row)
    return out
