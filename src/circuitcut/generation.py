"""Continuations of prompts, batched, with the settings recorded: greedy, or seeded nucleus samples.

Sampling is reproducible by construction: every sample draws its tokens from its own stream of
uniform numbers (a :class:`torch.Generator` on the CPU, seeded from the settings' seed, the prompt's
text and the sample's index), and picks the token whose cumulative nucleus probability first
exceeds the step's number (inverse-CDF sampling). The pick is made by a logits processor inside
transformers' ``generate`` run greedily, so the model's own decoding (cache, padding, stopping) is
unchanged. The same prompt thus gets the same random numbers under the dense and the corrected
model (common random numbers: samples differ only where the models do), and the samples do not
depend on the batch size or on the other prompts of the set.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from circuitcut.attribution.targets import pad_batch
from circuitcut.decoding import GenerationSettings
from circuitcut.encoding import as_encoder, pad_id
from circuitcut.errors import CircuitcutError
from circuitcut.models.adapter import input_device

__all__ = ["GenerationSettings", "greedy_continuations", "sample_seed", "sampled_continuations"]


def _greedy_config(model: torch.nn.Module, tokenizer: Any, settings: GenerationSettings) -> Any:
    """The model's generation config, made greedy, with the settings' length and stopping."""
    eos = tokenizer.eos_token_id
    gen_config = copy.deepcopy(model.generation_config)
    gen_config.eos_token_id = eos if settings.stop_at_eos else []
    gen_config.pad_token_id = pad_id(tokenizer)
    gen_config.max_new_tokens = settings.max_new_tokens
    gen_config.do_sample = False  # greedy; sampling settings in the model's own config are ignored
    for name in ("temperature", "top_p", "top_k"):
        if hasattr(gen_config, name):
            setattr(gen_config, name, None)
    return gen_config


def _check(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str]) -> None:
    if not prompts:
        raise CircuitcutError("no prompts to continue")
    if tokenizer is None:
        raise CircuitcutError("generation needs a tokenizer; the model was loaded without one")


def _generate(
    model: torch.nn.Module,
    tokenizer: Any,
    rows: Sequence[list[int]],
    settings: GenerationSettings,
    processor: Any = None,
) -> Iterator[list[int]]:
    """Continue encoded prompts in batches of ``settings.batch_size`` rows (left-padded); yields the
    new tokens of each row, cut at the end-of-text token with ``stop_at_eos``. ``processor(rows of
    the batch, prompt width)`` gives a logits processor for the batch, or None."""
    enc = as_encoder(tokenizer, model)
    gen_config = _greedy_config(model, tokenizer, settings)
    device, eos = input_device(model), tokenizer.eos_token_id
    for i in range(0, len(rows), settings.batch_size):
        chunk = list(rows[i : i + settings.batch_size])
        for c in chunk:
            enc.check_length(len(c) + settings.max_new_tokens, "a prompt with its continuation",
                             fix="shorten the prompt or generate fewer tokens")  # fmt: skip
        ids, mask = pad_batch(chunk, pad_id(tokenizer), left=True)
        width = ids.shape[1]
        extra = (
            {}
            if processor is None
            else {"logits_processor": LogitsProcessorList([processor(range(i, i + len(chunk)), width)])}
        )
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=gen_config,
                             **extra)  # fmt: skip
        for row in gen[:, width:].tolist():
            if settings.stop_at_eos and eos is not None and eos in row:
                row = row[: row.index(eos)]
            yield row


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
    ``stop_at_eos``, at the end-of-text token, which is then not included. Sampling fields of the
    settings are ignored.
    """
    settings = settings or GenerationSettings()
    _check(model, tokenizer, prompts)
    enc = as_encoder(tokenizer, model)
    return list(_generate(model, tokenizer, [enc.prompt(p) for p in prompts], settings))


def sample_seed(seed: int, prompt: str, index: int) -> int:
    """The seed of one sample's random stream: a 63-bit hash of the settings' seed, the prompt's text
    and the sample's index (stable across runs, machines and Python versions)."""
    digest = hashlib.sha256(f"{seed}\x00{index}\x00{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class SeededNucleus(LogitsProcessor):
    """Picks each row's next token by nucleus sampling with the row's own uniform numbers, and
    returns logits that make greedy decoding choose exactly that token.

    ``uniforms[r, t]`` is row ``r``'s number at generation step ``t``; ``width`` is the padded
    prompt length of the batch (the step is the number of tokens generated so far).
    """

    def __init__(self, uniforms: torch.Tensor, width: int, top_p: float, temperature: float) -> None:
        self.uniforms, self.width, self.top_p, self.temperature = uniforms, width, top_p, temperature

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """One step: the chosen token gets 0, every other token -inf."""
        step = input_ids.shape[1] - self.width
        u = self.uniforms[:, step].to(scores.device)
        probs = torch.softmax(scores.double() / self.temperature, dim=-1)
        sorted_p, order = torch.sort(probs, dim=-1, descending=True, stable=True)
        keep = (sorted_p.cumsum(-1) - sorted_p) < self.top_p  # the mass before the token is below top_p
        cum = (sorted_p * keep).cumsum(-1)
        pick = torch.searchsorted(cum, u[:, None] * cum[:, -1:], right=True).clamp(max=cum.shape[-1] - 1)
        chosen = order.gather(-1, pick)
        return torch.full_like(scores, float("-inf")).scatter_(-1, chosen, 0.0)


@torch.no_grad()
def sampled_continuations(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    settings: GenerationSettings | None = None,
) -> list[list[list[int]]]:
    """``settings.num_samples`` seeded nucleus samples (new token ids only) per prompt: ``out[i][j]``
    is prompt ``i``'s sample ``j``.

    Encoding, padding and stopping are those of :func:`greedy_continuations`; the samples are drawn
    as the module docstring says (``top_p``, ``temperature``, ``seed`` of the settings; rows of all
    prompts' samples are batched ``batch_size`` at a time). The same settings give the same samples.
    """
    settings = settings or GenerationSettings(do_sample=True)
    _check(model, tokenizer, prompts)
    enc = as_encoder(tokenizer, model)
    k = settings.num_samples
    rows, uniforms = [], []
    for p in prompts:
        ids = enc.prompt(p)
        for j in range(k):
            rows.append(ids)
            g = torch.Generator().manual_seed(sample_seed(settings.seed, p, j))
            uniforms.append(torch.rand(settings.max_new_tokens, generator=g, dtype=torch.float64))
    table = torch.stack(uniforms)

    def processor(batch_rows: range, width: int) -> SeededNucleus:
        return SeededNucleus(
            table[batch_rows.start : batch_rows.stop], width, settings.top_p, settings.temperature
        )

    flat = list(_generate(model, tokenizer, rows, settings, processor))
    return [flat[i * k : (i + 1) * k] for i in range(len(prompts))]
