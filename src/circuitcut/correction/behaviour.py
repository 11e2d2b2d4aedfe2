"""Behaviour sets: undesired prompts, their greedy continuations, and per-prompt behaviour scores.

The model's greedy continuation of each prompt (``max_new_tokens`` 50 by default) is what gets
explained (attribution split) and scored (both splits). Prompts are split into an attribution half
and a held-out half with a seed; the two never share a prompt.
"""

from __future__ import annotations

import json
import os
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from circuitcut.attribution.targets import Sample, response_sample
from circuitcut.correction.scorers import ToxicityScorer
from circuitcut.encoding import as_encoder
from circuitcut.errors import CircuitcutError
from circuitcut.generation import GenerationSettings, greedy_continuations
from circuitcut.metrics import repeated_ngram_rate, response_uniqueness_ratio

KINDS = ("toxicity", "repetition")


def load_prompts(path: str | os.PathLike[str]) -> list[str]:
    """Prompts from a ``.jsonl`` file (a ``prompt`` field per line) or a text file (one per line)."""
    p = Path(path)
    if not p.is_file():
        raise CircuitcutError(f"no such prompt file: {p}")
    lines = [ln for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if p.suffix == ".jsonl":
        prompts = []
        for i, ln in enumerate(lines, 1):
            try:
                prompts.append(str(json.loads(ln)["prompt"]))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise CircuitcutError(f"{p}:{i}: expected a JSON object with a 'prompt' field") from exc
    else:
        prompts = [ln.strip() for ln in lines]
    if not prompts:
        raise CircuitcutError(f"{p} holds no prompts")
    return prompts


def split_prompts(prompts: Sequence[str], seed: int) -> tuple[list[str], list[str]]:
    """A seeded split into an attribution half and a held-out half (disjoint)."""
    if len(prompts) < 2:
        raise CircuitcutError("need at least two prompts to split into attribution and held-out halves")
    order = list(range(len(prompts)))
    random.Random(f"split-{seed}").shuffle(order)
    half = len(order) // 2
    return [prompts[i] for i in order[:half]], [prompts[i] for i in order[half:]]


def split_test(prompts: Sequence[str], share: float) -> tuple[list[str], list[str]]:
    """A fixed split (the same for every seed) into a development pool and a test set of
    ``round(share * n)`` prompts (at least one) that no seed and no exported mask ever attributes."""
    if not 0 < share < 1:
        raise CircuitcutError(f"the test share must lie in (0, 1), got {share}")
    n_test = max(1, round(share * len(prompts)))
    if len(prompts) - n_test < 2:
        raise CircuitcutError(
            f"{len(prompts)} prompts leave fewer than two for attribution once {n_test} are held out for "
            "the exported model's test; give more prompts or a smaller test share"
        )
    order = list(range(len(prompts)))
    random.Random("test-split").shuffle(order)
    return [prompts[i] for i in sorted(order[n_test:])], [prompts[i] for i in sorted(order[:n_test])]


@dataclass
class Behaviour:
    """How a continuation is scored: ``toxicity`` (with a scorer) or ``repetition`` (RUR)."""

    kind: str
    scorer: ToxicityScorer | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise CircuitcutError(f"unknown behaviour {self.kind!r}; use one of {', '.join(KINDS)}")
        if self.kind == "toxicity" and self.scorer is None:
            raise CircuitcutError("the toxicity behaviour needs a scorer")

    @property
    def name(self) -> str:
        """Label of the behaviour and its scorer."""
        return f"toxicity ({self.scorer.name})" if self.kind == "toxicity" else "repetition (RUR)"

    @property
    def lower_is_better(self) -> bool:
        """Toxic rate should fall; RUR should rise."""
        return self.kind == "toxicity"

    def words_in(self, texts: list[str]) -> list[str]:
        """The scorer's words found in ``texts`` (what a report marks; none for RUR or a classifier)."""
        return self.scorer.words_in(texts) if self.scorer is not None else []

    def per_prompt(self, tokenizer: Any, continuations: list[list[int]]) -> dict[str, list[float]]:
        """Per-prompt values: toxicity flag and score, or RUR and repeated-trigram rate."""
        if self.kind == "toxicity":
            texts = [tokenizer.decode(c, skip_special_tokens=True) for c in continuations]
            texts = [t if t.strip() else " " for t in texts]
            scores = self.scorer.scores(texts)
            return {"value": [float(s >= self.scorer.threshold) for s in scores], "score": scores}
        return {
            "value": [response_uniqueness_ratio(c) for c in continuations],
            "repeated_trigram_rate": [repeated_ngram_rate(c, 3) for c in continuations],
        }


def evaluate_behaviour(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    behaviour: Behaviour,
    settings: GenerationSettings,
) -> dict[str, Any]:
    """Generate, score per prompt, summarise (``rate`` is the mean per-prompt value)."""
    conts = greedy_continuations(model, tokenizer, list(prompts), settings)
    per = behaviour.per_prompt(tokenizer, conts)
    out = {k: statistics.fmean(v) for k, v in per.items()}
    out["rate"] = out.pop("value")
    out["per_prompt"] = per["value"]
    out["per_prompt_score"] = per.get("score", per["value"])
    return out


def response_samples(tokenizer: Any, prompts: Sequence[str], continuations: list[list[int]]) -> list[Sample]:
    """Attribution samples explaining each continuation token (empty continuations are skipped)."""
    enc = as_encoder(tokenizer)
    out = []
    for p, c in zip(prompts, continuations, strict=True):
        if c:
            out.append(response_sample(enc.prompt(p), c))
    if not out:
        raise CircuitcutError("every continuation is empty: nothing to explain")
    return out
