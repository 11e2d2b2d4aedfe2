"""One protocol to measure a model for a correction: behaviour, text quality, general perplexity.

The dense model, each pruned model of the sweep (a reversible mask) and the exported model reloaded
from disk are all measured by :meth:`Probe.measure`, so their figures compare. For each named
prompt set the model's greedy continuations are generated, then judged: the behaviour per prompt
(toxic flag and score, or RUR), and the text quality of :func:`~circuitcut.correction.fluency.text_quality`
with the *dense* model as the fluency judge. General-text perplexity is measured once per model.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from circuitcut.correction.behaviour import Behaviour
from circuitcut.correction.fluency import text_quality
from circuitcut.encoding import as_encoder
from circuitcut.errors import CircuitcutError
from circuitcut.evaluation import perplexity
from circuitcut.generation import GenerationSettings, greedy_continuations
from circuitcut.models.adapter import ModelAdapter
from circuitcut.pruning import Mask, masked


def general_prompts(tokenizer: Any, text: str, n: int, tokens: int) -> list[str]:
    """``n`` openings of general text: the first ``tokens`` tokens of consecutive windows of
    ``2 * tokens`` tokens (decoded), from the start of the text (deterministic)."""
    if n < 1 or tokens < 1:
        raise CircuitcutError(f"general prompts need n >= 1 and tokens >= 1 (got {n}, {tokens})")
    ids = as_encoder(tokenizer).pieces(text)
    if len(ids) < n * 2 * tokens:
        raise CircuitcutError(
            f"the general text has {len(ids)} tokens, too few for {n} prompts of {tokens} tokens "
            f"(needs {n * 2 * tokens}); give a longer text or fewer general prompts"
        )
    out = [tokenizer.decode(ids[i * 2 * tokens : i * 2 * tokens + tokens]).strip() for i in range(n)]
    return [p for p in out if p] or [tokenizer.decode(ids[:tokens])]


@dataclass
class Generated:
    """Prompts, their token ids and the model's greedy continuations (new tokens only)."""

    prompts: list[str]
    prompt_ids: list[list[int]]
    continuations: list[list[int]]


@dataclass
class Probe:
    """What a correction measures, fixed for a run (see the module docstring)."""

    tokenizer: Any
    behaviour: Behaviour
    generation: GenerationSettings
    eval_text: str
    seqlen: int = 64
    eval_windows: int | None = 100
    batch_size: int = 16

    def generate(self, model: torch.nn.Module, sets: dict[str, Sequence[str]]) -> dict[str, Generated]:
        """Greedy continuations of each prompt set by the model as it is now (masked or not)."""
        enc = as_encoder(self.tokenizer, model)  # the encoding greedy_continuations applies
        out = {}
        for name, prompts in sets.items():
            prompts = list(prompts)
            ids = [enc.prompt(p) for p in prompts]
            out[name] = Generated(
                prompts, ids, greedy_continuations(model, self.tokenizer, prompts, self.generation)
            )
        return out

    def perplexity(self, model: torch.nn.Module) -> float:
        """Perplexity of the held-out general text (standard protocol)."""
        return perplexity(
            model, self.tokenizer, self.eval_text, self.seqlen, self.batch_size, self.eval_windows
        ).perplexity

    def judge(self, dense: torch.nn.Module, gen: Generated, texts: bool = False) -> dict[str, Any]:
        """Behaviour and text quality of one set's continuations (fluency judged by ``dense``).

        ``rate`` is the mean per-prompt value (toxic share, or mean RUR); ``per_prompt`` the values,
        ``per_prompt_score`` the scorer's scores (toxicity) or the values; with ``texts``, the
        prompts and the decoded continuations too.
        """
        per = self.behaviour.per_prompt(self.tokenizer, gen.continuations)
        values = per["value"]
        out: dict[str, Any] = {"rate": sum(values) / len(values), "n": len(values)}
        for key, vals in per.items():
            if key not in ("value", "score"):
                out[key] = sum(vals) / len(vals)
        out.update(text_quality(dense, gen.prompt_ids, gen.continuations, self.batch_size))
        out["per_prompt"] = values
        out["per_prompt_score"] = per.get("score", values)
        if texts:
            out["prompts"] = list(gen.prompts)
            out["continuations"] = [
                self.tokenizer.decode(c, skip_special_tokens=True) for c in gen.continuations
            ]
        return out

    def measure(
        self,
        model: torch.nn.Module,
        sets: dict[str, Sequence[str]],
        dense: torch.nn.Module | None = None,
        adapter: ModelAdapter | None = None,
        mask: Mask | None = None,
        texts: bool = False,
    ) -> dict[str, Any]:
        """Generate and take perplexity with ``model`` (under ``mask`` when given), then judge every
        set with ``dense`` (default: ``model`` itself once the mask is lifted).

        Returns ``{set name: judge(...), "perplexity": general-text perplexity}``.
        """
        if mask is not None and adapter is None:
            raise CircuitcutError("measuring under a mask needs the model's adapter")
        with masked(adapter, mask) if mask is not None else nullcontext():
            gens = self.generate(model, sets)
            ppl = self.perplexity(model)
        judge_with = dense if dense is not None else model
        out: dict[str, Any] = {name: self.judge(judge_with, g, texts) for name, g in gens.items()}
        out["perplexity"] = ppl
        return out
