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

from typing import Any

import common
from circuitcut.correction import WordListScorer
from circuitcut.correction.behaviour import Behaviour
from circuitcut.decoding import GenerationSettings
from circuitcut.workflows.correct import CorrectionConfig, correct
from circuitcut.zoo.language import INSULTS, Language

COUNTS = {"circuitcut/ref-llama": (2, 4, 7, 10), "circuitcut/ref-opt": (10, 30, 60)}


def rows_of(model: str, explain: str, s: dict[str, Any], cfg: CorrectionConfig) -> list[str]:
    """The table rows of one run: each count's per-seed rates, perplexity and fluency, and the export."""
    dense_fluency = s["dense"]["quality"]["general"]["fluency_perplexity"]
    rows = []
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
    return rows


def main() -> None:
    """Run both choices on each model, print and write the table."""
    p = common.parser(__doc__)
    common.add_models(p, default=tuple(COUNTS))
    p.add_argument("--seeds", type=int, default=3, help="seeds (default 3)")
    common.add_results(p)
    args = common.parse(p)
    command = common.command()
    lang = Language(seed=0)
    prompts = [q["prompt"] for q in lang.trigger_prompts(160, seed=31, heldout=True) if q["trigger"]]
    general, evaluation = lang.corpus(1200, seed=41), lang.corpus(200, seed=42)
    behaviour = Behaviour("toxicity", WordListScorer(INSULTS, name="planted lexicon"))
    rows: list[str] = []
    out: dict[str, Any] = {"command": command, "runs": []}
    for model in common.models(args):
        m, tok, adapter, _ = common.load(model)
        for explain in ("continuation", "flagged"):
            cfg = CorrectionConfig(counts=COUNTS.get(model, (2, 4, 7, 10)), seeds=args.seeds, baselines=(),
                                   controls=(), explain=explain, generation=GenerationSettings(20),
                                   eval_windows=60)  # fmt: skip
            s = correct(m, tok, adapter, prompts, general, behaviour, cfg, evaluation, progress=False)
            rows += rows_of(model, explain, s, cfg)
            out["runs"].append({"model": model, "explain": explain, "summary": s})
            print(rows[-1], flush=True)
    md = "\n".join([
        "# What the undesired relevance explains: every continuation token or the flagged words (reference models)",
        "", f"Command: `{command}`", "",
        "| model | explain | neurons | held-out toxic rate per seed | perplexity | general-prompt fluency (dense) |",
        "|---|---|---|---|---|---|", *rows,
    ]) + "\n"  # fmt: skip
    print(md)
    common.write_results(args, "correction-explain-reference", out, md)


if __name__ == "__main__":
    main()
