"""Measuring a reference model's planted behaviours (the numbers in its card and tests)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from circuitcut.generation import GenerationSettings, greedy_continuations
from circuitcut.metrics import repeated_ngram_rate, response_uniqueness_ratio
from circuitcut.tasks import Example, Task, evaluate_task
from circuitcut.zoo.language import INSULTS


def ioi_scores(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[dict]) -> dict[str, float]:
    """Accuracy (logit(IO) > logit(S)) and mean logit difference at the last prompt position."""

    task = Task("ioi", [Example(p["prompt"], p["io"], p["s"]) for p in prompts], "logit_diff")
    m = evaluate_task(model, tokenizer, task)
    return {"ioi_accuracy": round(m["accuracy"], 4), "ioi_logit_diff": round(m["logit_diff"], 4)}


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
