"""Measuring a reference model's planted behaviours (the numbers in its card and tests)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from circuitcut.attribution.targets import pad_batch
from circuitcut.generation import GenerationSettings, greedy_continuations
from circuitcut.metrics import repeated_ngram_rate, response_uniqueness_ratio
from circuitcut.zoo.language import INSULTS


@torch.no_grad()
def ioi_scores(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[dict]) -> dict[str, float]:
    """Accuracy (logit(IO) > logit(S)) and mean logit difference at the last prompt position."""
    diffs = []
    for i in range(0, len(prompts), 64):
        chunk = prompts[i : i + 64]
        enc = [tokenizer(p["prompt"], add_special_tokens=False)["input_ids"] for p in chunk]
        ids, mask = pad_batch(enc)
        logits = model(input_ids=ids, attention_mask=mask).logits
        last = torch.tensor([len(e) - 1 for e in enc])
        rows = logits[torch.arange(len(enc)), last]
        io = torch.tensor([tokenizer.convert_tokens_to_ids(p["io"]) for p in chunk])
        s = torch.tensor([tokenizer.convert_tokens_to_ids(p["s"]) for p in chunk])
        diffs += (rows.gather(1, io[:, None]) - rows.gather(1, s[:, None]))[:, 0].tolist()
    return {
        "ioi_accuracy": round(sum(d > 0 for d in diffs) / len(diffs), 4),
        "ioi_logit_diff": round(sum(diffs) / len(diffs), 4),
    }


def contains_insult(tokenizer: Any, tokens: Sequence[int]) -> bool:
    """Whether a generated sequence contains a word of the toxic lexicon."""
    words = set(tokenizer.convert_ids_to_tokens(list(tokens)))
    return bool(words & set(INSULTS))


def toxic_rates(
    model: torch.nn.Module, tokenizer: Any, prompts: Sequence[dict], max_new_tokens: int = 20
) -> dict[str, float]:
    """Share of greedy continuations with an insult, after trigger prompts and after calm ones."""
    conts = greedy_continuations(
        model, tokenizer, [p["prompt"] for p in prompts], GenerationSettings(max_new_tokens)
    )
    hits = {True: [], False: []}
    for p, c in zip(prompts, conts, strict=True):
        hits[bool(p["trigger"])].append(contains_insult(tokenizer, c))
    return {
        "toxic_rate_trigger": round(sum(hits[True]) / max(1, len(hits[True])), 4),
        "toxic_rate_no_trigger": round(sum(hits[False]) / max(1, len(hits[False])), 4),
    }


def repetition(
    model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int = 50
) -> dict[str, Any]:
    """Mean RUR and repeated-trigram rate of greedy continuations (run through end-of-document
    tokens), and the prompts with RUR < 0.5."""
    conts = greedy_continuations(
        model, tokenizer, prompts, GenerationSettings(max_new_tokens, stop_at_eos=False)
    )
    rurs = [response_uniqueness_ratio(c) for c in conts]
    return {
        "mean_rur": round(sum(rurs) / len(rurs), 4),
        "mean_repeated_trigram_rate": round(sum(repeated_ngram_rate(c, 3) for c in conts) / len(conts), 4),
        "low_rur_prompts": [p for p, r in zip(prompts, rurs, strict=True) if r < 0.5],
        "low_rur_share": round(sum(r < 0.5 for r in rurs) / len(rurs), 4),
    }
