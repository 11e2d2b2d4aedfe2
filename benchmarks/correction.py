"""Targeted correction on the reference models: the planted toxic behaviour and natural repetition.

Usage::

    python benchmarks/correction.py [--models circuitcut/ref-llama circuitcut/ref-opt]
        [--parts toxic repetition] [--seeds 3] [--output runs/correction] [--threads 1]

* toxic: held-out trigger prompts (angry speech openers with held-out speaker/verb pairs); the
  scorer is the model's own planted lexicon; MLP neurons pruned at 0.1-0.5% (and beyond, to show
  where each method starts to work);
* repetition: the card's story prompts, whose greedy 50-token continuations loop (RUR < 0.5);
  decoding runs through end-of-document tokens; fc1 / up-projection weights pruned (the paper's
  setting) and MLP neurons.

* oracle (a diagnostic for the toxic part): every MLP neuron is ablated alone and ranked by how much
  that lowers the log-probability of producing a lexicon word where the dense model generated one on
  the attribution half (teacher-forced); the top-ranked neurons are then pruned together at the toxic part's counts.
  It asks whether the behaviour *can* be removed by so few neurons, whatever chooses them.

Each run writes its report (Markdown + JSON) and plots under --output, and the tables are printed.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch

import common
from circuitcut.attribution.targets import pad_batch
from circuitcut.correction import WordListScorer
from circuitcut.correction.behaviour import Behaviour, evaluate_behaviour, split_prompts
from circuitcut.decoding import GenerationSettings
from circuitcut.evaluation import perplexity_of_ids
from circuitcut.generation import greedy_continuations
from circuitcut.io import write_json, write_text
from circuitcut.pruning import masked, unit_mask
from circuitcut.reports.correction import correction_markdown, plot_correction_curves, plot_per_prompt
from circuitcut.scores import Scores
from circuitcut.workflows.correct import CorrectionConfig, correct
from circuitcut.zoo.language import INSULTS, Language


def _toxic_setup(adapter: Any) -> tuple[list[str], Behaviour, GenerationSettings, list[int]]:
    lang = Language(seed=0)
    prompts = [p["prompt"] for p in lang.trigger_prompts(160, seed=31, heldout=True) if p["trigger"]]
    neurons = adapter.n_layers * adapter.n_neurons
    counts = sorted({math.floor(f * neurons) for f in (0.001, 0.0025, 0.004, 0.005, 0.01, 0.025)})
    return (
        prompts,
        Behaviour("toxicity", WordListScorer(INSULTS, name="planted lexicon")),
        GenerationSettings(20),
        counts,
    )


@torch.no_grad()
def oracle(model: str) -> str:
    """Single-neuron ablation ranking of the toxic behaviour, then joint pruning at the toxic counts."""
    m, tok, adapter, _ = common.load(model)
    prompts, behaviour, gen, counts = _toxic_setup(adapter)
    attr_p, held_p = split_prompts(prompts, 0)
    conts = greedy_continuations(m, tok, attr_p, gen)
    ids, mask = pad_batch(
        [tok(p, add_special_tokens=False)["input_ids"] + c for p, c in zip(attr_p, conts, strict=True)]
    )
    insult = torch.tensor(
        sorted({i for w in INSULTS for i in tok(" " + w, add_special_tokens=False)["input_ids"]})
    )
    where = torch.zeros_like(ids, dtype=torch.bool)  # positions whose next token is a generated insult
    where[:, :-1] = torch.isin(ids[:, 1:], insult) & mask[:, 1:].bool()

    def insult_logprob() -> float:
        """The mean log-probability of producing any lexicon word where the dense model did."""
        lp = m(input_ids=ids, attention_mask=mask).logits.log_softmax(-1)[where]
        return float(lp[:, insult].logsumexp(-1).mean())

    base = insult_logprob()
    effects = {}
    for layer in range(adapter.n_layers):
        site = adapter.neuron_site(layer).module
        eff = torch.zeros(adapter.n_neurons)
        for j in range(adapter.n_neurons):
            col = torch.tensor([j])
            hook = site.register_forward_pre_hook(lambda _m, a, col=col: (a[0].index_fill(-1, col, 0.0),))
            eff[j] = base - insult_logprob()
            hook.remove()
        effects[layer] = -eff  # lowest first = the largest drop of the insult log-probability
    ranking = Scores(neurons=effects, n_samples=1, meta={"method": "single-neuron ablation"})
    eval_ids = tok(Language(seed=0).corpus(200, seed=42), add_special_tokens=False)["input_ids"]
    dense_ppl = perplexity_of_ids(m, eval_ids, 64, 16, 60).perplexity
    dense = evaluate_behaviour(m, tok, held_p, behaviour, gen)["rate"]
    lines = [f"### {model}: single-neuron ablation oracle (seed-0 split; dense held-out rate {dense:.2f}, "
             f"perplexity {dense_ppl:.3f}; {int(where.sum())} insult tokens explained)", "",
             "| neurons | share | held-out rate | perplexity change |", "|---|---|---|---|"]  # fmt: skip
    for c in counts:
        with masked(adapter, unit_mask(ranking, adapter, "neuron", count=c, prune="lowest")):
            rate = evaluate_behaviour(m, tok, held_p, behaviour, gen)["rate"]
            ppl = perplexity_of_ids(m, eval_ids, 64, 16, 60).perplexity
        lines.append(
            f"| {c} | {adapter.fraction(c, 'neuron').split(' = ')[1]} | {rate:.2f} | {100 * (ppl / dense_ppl - 1):+.1f}% |"
        )
    return "\n".join(lines) + "\n"


def run(model: str, part: str, level: str, args: argparse.Namespace) -> dict:
    """One correction experiment, written to disk."""
    m, tok, adapter, _ = common.load(model)
    lang = Language(seed=0)
    general = lang.corpus(1200, seed=41)  # a wide pool: general windows vary more
    general_eval = lang.corpus(200, seed=42)
    neurons = adapter.n_layers * adapter.n_neurons
    if part == "toxic":
        prompts, behaviour, gen, counts = _toxic_setup(adapter)
        layers = "all"
    else:
        prompts = lang.story_prompts(100)
        behaviour = Behaviour("repetition")
        gen = GenerationSettings(50, stop_at_eos=False)
        up = adapter.layers[0].linears.get("up") or adapter.layers[0].linears["gate_up"]
        layers = f"*.mlp.{up.name.rsplit('.', 1)[-1]}"
        if level == "neuron":
            layers = "all"
        if level == "weight":
            total = sum(
                layer.linears["up" if "up" in layer.linears else "gate_up"].weight.numel()
                for layer in adapter.layers
            )
            counts = sorted({math.floor(f * total) for f in (0.0003, 0.001, 0.003, 0.01)})
        else:
            counts = sorted({math.floor(f * neurons) for f in (0.0025, 0.005, 0.01, 0.025)})
    cfg = CorrectionConfig(level=level, layers=layers, counts=tuple(c for c in counts if c > 0), seeds=args.seeds,
                           n_general=64, generation=gen, eval_windows=60)  # fmt: skip
    r = correct(m, tok, adapter, prompts, general, behaviour, cfg, general_eval, progress=False)
    r["model"] = model
    out = Path(args.output) / model.split("/")[-1] / f"{part}-{level}"
    write_json(out / "report.json", r)
    plot_correction_curves(r, out / "correction_curves")
    plot_per_prompt(r, out / "per_prompt")
    write_text(out / "report.md", correction_markdown(r))
    return r


def table(r: dict) -> str:
    """Held-out rate and perplexity change per method and count."""
    counts = r["config"]["counts"]
    head = f"### {r['model']}: {r['behaviour']}, {r['config']['level']}s in `{r['config']['layers']}` "
    head += (
        f"(dense held-out rate {r['dense']['heldout_rate']:.3f}, perplexity {r['dense']['perplexity']:.3f}; "
    )
    head += f"{r['config']['seeds']} seeds, {r['seconds']} s)"
    lines = [
        head,
        "",
        "| method | " + " | ".join(str(c) for c in counts) + " |",
        "|---|" + "---|" * len(counts),
    ]
    for method, rows in r["results"].items():
        cells = [
            f"{rows[c]['heldout_rate']:.2f} ({100 * rows[c]['perplexity_relative_change']:+.1f}%)"
            for c in counts
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "cells: held-out rate (perplexity change)", ""]
    return "\n".join(lines)


def main() -> None:
    """Run and print."""
    p = common.parser(__doc__)
    common.add_models(p)
    p.add_argument(
        "--parts", nargs="+", default=["toxic", "repetition"], choices=["toxic", "repetition", "oracle"]
    )
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--output", default="runs/correction")
    args = common.parse(p)
    for model in common.models(args):
        for part in args.parts:
            if part == "oracle":
                print(oracle(model), flush=True)
                continue
            for level in ("neuron",) if part == "toxic" else ("weight", "neuron"):
                print(table(run(model, part, level, args)), flush=True)


if __name__ == "__main__":
    main()
