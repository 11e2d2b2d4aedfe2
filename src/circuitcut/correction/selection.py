"""Choosing behaviour prompts by what the dense model does with them.

A correction explains and measures an undesired behaviour on prompts that actually elicit it. As in
Hatefi et al. (arXiv 2506.13727, Sec. 4.3), candidate prompts are kept only where the *dense*
model's greedy continuation shows the behaviour: a toxic flag from the scorer, or a Response
Uniqueness Ratio below a bound (the paper keeps repetition prompts with RUR < 0.5).
:func:`select_prompts` returns the kept prompts together with every candidate's value and decoded
continuation, so a benchmark can save what the filter saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from circuitcut.correction.behaviour import Behaviour
from circuitcut.errors import CircuitcutError
from circuitcut.generation import GenerationSettings, greedy_continuations


@dataclass
class Selection:
    """The outcome of filtering candidate prompts by the dense model's behaviour.

    ``kept`` are the prompts that show the behaviour, in candidate order; ``values`` the per-candidate
    behaviour value (toxic flag 0/1, or RUR) and ``continuations`` the decoded greedy continuations,
    both aligned with ``candidates``; ``rule`` says in words what was kept.
    """

    candidates: list[str]
    values: list[float]
    continuations: list[str]
    kept: list[str]
    rule: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, one record per candidate."""
        return {
            "rule": self.rule,
            "n_candidates": len(self.candidates),
            "n_kept": len(self.kept),
            "candidates": [
                {"prompt": p, "value": v, "continuation": c, "kept": p in set(self.kept)}
                for p, v, c in zip(self.candidates, self.values, self.continuations, strict=True)
            ],
        }


def shows_behaviour(behaviour: Behaviour, value: float, rur_below: float = 0.5) -> bool:
    """Whether one per-prompt value shows the behaviour: a toxic flag of 1, or RUR below ``rur_below``."""
    if behaviour.kind == "toxicity":
        return value >= 1.0
    return value < rur_below


def select_prompts(
    model: torch.nn.Module,
    tokenizer: Any,
    candidates: Sequence[str],
    behaviour: Behaviour,
    settings: GenerationSettings | None = None,
    rur_below: float = 0.5,
) -> Selection:
    """Keep the candidates whose dense greedy continuation shows ``behaviour`` (see :func:`shows_behaviour`).

    ``model`` should be the unpruned model; duplicates among the candidates are refused, since a
    prompt that appears twice could land in both the attribution and the held-out half.
    """
    candidates = list(candidates)
    if not candidates:
        raise CircuitcutError("no candidate prompts to select from")
    if len(set(candidates)) != len(candidates):
        dup = next(p for p in candidates if candidates.count(p) > 1)
        raise CircuitcutError(f"the candidate prompt {dup!r} appears more than once; give each prompt once")
    if not 0 < rur_below <= 1:
        raise CircuitcutError(f"the RUR bound must lie in (0, 1], got {rur_below}")
    conts = greedy_continuations(model, tokenizer, candidates, settings)
    values = behaviour.per_prompt(tokenizer, conts)["value"]
    kept = [p for p, v in zip(candidates, values, strict=True) if shows_behaviour(behaviour, v, rur_below)]
    rule = (
        f"dense greedy continuation flagged by {behaviour.scorer.name}"
        if behaviour.kind == "toxicity"
        else f"dense greedy continuation's RUR < {rur_below}"
    )
    texts = [tokenizer.decode(c, skip_special_tokens=True) for c in conts]
    return Selection(candidates, [float(v) for v in values], texts, kept, rule)
