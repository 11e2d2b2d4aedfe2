"""Judging one model on a prompt file of its own: an exported correction on unseen prompts.

A correction report judges the dense and exported models on the test split of the prompts it was
given (:mod:`circuitcut.correction.judging`). To judge a model on prompts the run never saw (such as
``benchmarks/prompts/unseen-toxicity.jsonl``), load it and call :func:`judge_prompts` once for the
dense and once for the exported model, with the same settings; the figures are those of the report:

* greedy: each scorer's toxic rate over the prompts' greedy continuations;
* sampled (``samples`` per prompt, seeded nucleus sampling of ``settings``): each scorer's expected
  maximum toxicity and toxicity probability with bootstrap intervals over prompts
  (:func:`~circuitcut.correction.judging.rtp_figures`), and the samples' diversity
  (:func:`~circuitcut.correction.judging.sample_diversity`).

The same settings give the same samples, and the dense and the exported model draw the same random
numbers, so their figures compare prompt by prompt;
:func:`~circuitcut.correction.judging.substitutions` compares their greedy continuations.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from circuitcut.correction.judging import rtp_figures, sample_diversity
from circuitcut.correction.scorers import ToxicityScorer
from circuitcut.decoding import GenerationSettings
from circuitcut.errors import CircuitcutError
from circuitcut.generation import greedy_continuations, sampled_continuations


def _scored(texts: Sequence[str]) -> list[str]:
    return [t if t.strip() else " " for t in texts]


def judge_prompts(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    scorer: ToxicityScorer,
    judge: ToxicityScorer | None = None,
    settings: GenerationSettings | None = None,
    samples: int | None = 10,
    resamples: int = 1000,
) -> dict[str, Any]:
    """Greedy and sampled toxicity of ``model`` on ``prompts``, by ``scorer`` and ``judge``.

    ``settings`` (default :class:`~circuitcut.decoding.GenerationSettings`) give the greedy decoding
    and the sampling (``top_p``, ``temperature``, ``seed``; ``samples`` per prompt, none sampled when
    ``samples`` is None); the bootstrap intervals take ``resamples`` resamples seeded with
    ``settings.seed``. Returns ``{"prompts", "settings", "scorers", "greedy", "sampled"}``:
    ``greedy[role]`` (role ``scorer`` or ``judge``) holds ``rate`` and ``per_prompt`` flags,
    ``greedy["continuations"]`` the decoded continuations; ``sampled[role]`` the RealToxicityPrompts
    pair, ``sampled["diversity"]`` and ``sampled["samples"]`` (``[prompt][sample]``).
    """
    prompts = list(prompts)
    if not prompts:
        raise CircuitcutError("no prompts to judge; give at least one (a .jsonl with 'prompt' fields, say)")
    if samples is not None and samples < 1:
        raise CircuitcutError(f"samples must be >= 1 (or None to skip sampling), got {samples}")
    settings = settings or GenerationSettings()
    roles = {"scorer": scorer, "judge": judge}
    scorers = {role: s for role, s in roles.items() if s is not None}
    conts = greedy_continuations(model, tokenizer, prompts, settings)
    texts = [tokenizer.decode(c, skip_special_tokens=True) for c in conts]
    greedy: dict[str, Any] = {"continuations": texts}
    for role, s in scorers.items():
        flags = [float(f) for f in s.flags(_scored(texts))]
        greedy[role] = {"rate": statistics.fmean(flags), "per_prompt": flags}
    out: dict[str, Any] = {
        "prompts": prompts,
        "settings": settings.as_dict(),
        "scorers": {role: {"name": s.name, "threshold": s.threshold} for role, s in scorers.items()},
        "greedy": greedy,
        "sampled": None,
    }
    if samples is not None:
        sampling = replace(settings, do_sample=True, num_samples=samples)
        drawn = sampled_continuations(model, tokenizer, prompts, sampling)
        decoded = [[tokenizer.decode(c, skip_special_tokens=True) for c in row] for row in drawn]
        sampled: dict[str, Any] = {"settings": sampling.as_dict(), "samples": decoded,
                                   "diversity": sample_diversity(decoded)}  # fmt: skip
        for role, s in scorers.items():
            flat = s.scores(_scored([t for row in decoded for t in row]))
            rows = [flat[i * samples : (i + 1) * samples] for i in range(len(prompts))]
            sampled[role] = rtp_figures(rows, s.threshold, resamples, settings.seed)
        out["sampled"] = sampled
    return out
