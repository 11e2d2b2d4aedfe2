"""What the undesired relevance explains, on the reference models: every continuation token or only
the flagged words (``CorrectionConfig.explain``), LRP, three seeds.

Usage::

    python benchmarks/correction_explain.py [--models circuitcut/ref-llama circuitcut/ref-opt]

Held-out trigger prompts and the planted lexicon as the word-list scorer (as in
``benchmarks/correction_defaults.py``: 20-token continuations, 64 general windows, 60 evaluation
windows); per model and choice, each seed's held-out toxic rate, the perplexity change and the
fluency of general prompts' continuations at each count, and the exported model's test rate.
Writes ``benchmarks/results/correction-explain-reference.json`` and ``.md`` (with the command).
The SmolLM2 side of the comparison is ``benchmarks/correction_real.py --explain``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from circuitcut.correction import WordListScorer
from circuitcut.correction.behaviour import Behaviour
from circuitcut.generation import GenerationSettings
from circuitcut.io import write_json, write_text
from circuitcut.models import load_model
from circuitcut.workflows.correct import CorrectionConfig, correct
from circuitcut.zoo.language import INSULTS, Language

RESULTS = Path(__file__).resolve().parent / "results"
COUNTS = {"circuitcut/ref-llama": (2, 4, 7, 10), "circuitcut/ref-opt": (10, 30, 60)}


def main() -> None:
    """Run both choices on each model, print and write the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(COUNTS), help="reference models (default both)")
    p.add_argument("--seeds", type=int, default=3, help="seeds (default 3)")
    args = p.parse_args()
    torch.set_num_threads(1)
    command = "python benchmarks/correction_explain.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lang = Language(seed=0)
    prompts = [q["prompt"] for q in lang.trigger_prompts(160, seed=31, heldout=True) if q["trigger"]]
    general, evaluation = lang.corpus(1200, seed=41), lang.corpus(200, seed=42)
    behaviour = Behaviour("toxicity", WordListScorer(INSULTS, name="planted lexicon"))
    rows, out = [], {"command": command, "runs": []}
    for model in args.models:
        m, tok, adapter = load_model(model)
        for explain in ("continuation", "flagged"):
            cfg = CorrectionConfig(counts=COUNTS.get(model, (2, 4, 7, 10)), seeds=args.seeds, methods=("lrp",),
                                   controls=(), explain=explain, generation=GenerationSettings(20),
                                   eval_windows=60)  # fmt: skip
            s = correct(m, tok, adapter, prompts, general, behaviour, cfg, evaluation, progress=False)
            dense_fluency = s["dense"]["quality"]["general"]["fluency_perplexity"]
            for c in cfg.counts:
                r = s["results"]["lrp"][c]
                rows.append(
                    f"| {model} | {explain} | {c} | {' / '.join(f'{x:.2f}' for x in r['per_seed']['heldout_rate'])} | "
                    f"{100 * r['perplexity_relative_change']:+.1f}% | "
                    f"{r['quality']['general']['fluency_perplexity']:.2f} ({dense_fluency:.2f}) |"
                )
            e = s["exported"]
            rows.append(f"| {model} | {explain} | exported {cfg.report_count} | test {e['dense']['test_rate']:.2f} -> "
                        f"{e['test_rate']:.2f} | {100 * e['perplexity_relative_change']:+.1f}% | |")  # fmt: skip
            out["runs"].append({"model": model, "explain": explain, "summary": s})
            print(rows[-1], flush=True)
    md = "\n".join([
        "# What the undesired relevance explains: every continuation token or the flagged words (reference models)",
        "", f"Command: `{command}`", "",
        "| model | explain | neurons | held-out toxic rate per seed | perplexity | general-prompt fluency (dense) |",
        "|---|---|---|---|---|---|", *rows,
    ]) + "\n"  # fmt: skip
    print(md)
    write_json(RESULTS / "correction-explain-reference.json", out)
    write_text(RESULTS / "correction-explain-reference.md", md)


if __name__ == "__main__":
    main()
