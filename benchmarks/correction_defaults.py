"""The measurements behind the correction defaults: normalisation of the contrastive sets, the seed
disagreement bound and the text-quality bounds, per seed.

Usage::

    # the reference models (the README's figures): planted toxic behaviour, held-out trigger prompts
    python benchmarks/correction_defaults.py

    # a real model: prompts, a scorer and general text of your own
    python benchmarks/correction_defaults.py --model ~/.cache/circuitcut/SmolLM2-135M-Instruct \\
        --prompts toxic_prompts.txt --scorer wordlist:../shared/data/toxicity/ldnoobw_en.txt \\
        --general wiki.train.txt --general-eval wiki.test.txt --counts 10,20,50,100,200

For each model and each setting of ``--normalize`` the full correction workflow runs (three seeds,
LRP / gradient / Wanda and a random control) and one line per method and count is printed: each
seed's held-out rate and their spread (the disagreement bound is set from these), the general
perplexity change, the fluency and distinct-2 of the held-out continuations and of general prompts'
continuations (the quality bounds), each seed's p-value and Stouffer's combination. Reports go under
``--output``.
"""

from __future__ import annotations

from pathlib import Path

import common
from circuitcut.correction.behaviour import Behaviour, load_prompts
from circuitcut.correction.scorers import WordListScorer, make_scorer
from circuitcut.decoding import GenerationSettings
from circuitcut.evaluation import load_text
from circuitcut.io import write_json, write_text
from circuitcut.reports.correction import correction_markdown
from circuitcut.workflows.correct import CorrectionConfig, correct
from circuitcut.zoo.language import INSULTS, Language


def lines(s: dict) -> list[str]:
    """One line per method and count."""
    d = s["dense"]
    out = [
        f"{s['model']} normalize={s['config']['normalize']} ({s['seconds']} s): dense held-out rate "
        f"{d['heldout_rate']:.2f}, perplexity {d['perplexity']:.3f}, held-out fluency "
        f"{d['quality']['heldout']['fluency_perplexity']:.2f} distinct-2 {d['quality']['heldout']['distinct_2']:.3f}, "
        f"general fluency {d['quality']['general']['fluency_perplexity']:.2f} distinct-2 "
        f"{d['quality']['general']['distinct_2']:.3f}"
    ]
    for method, rows in s["results"].items():
        for c in s["config"]["counts"]:
            r = rows[c]
            h, g = r["quality"]["heldout"], r["quality"]["general"]
            rates = " ".join(format(x, ".2f") for x in r["per_seed"]["heldout_rate"])
            ps = " ".join(format(t["p_value"], ".1g") for t in r["tests"]["per_seed"])
            out.append(
                f"  {method:9s} {c:5d}  rates {rates} (spread {r['agreement']['spread']:.2f})  ppl "
                f"{100 * r['perplexity_relative_change']:+.1f}%  held-out fluency {h['fluency_perplexity']:.2f} "
                f"d2 {h['distinct_2']:.3f}  general fluency {g['fluency_perplexity']:.2f} d2 {g['distinct_2']:.3f}  "
                f"p {ps} -> {r['tests']['combined']['p_value']:.1g}"
            )
    e = s["exported"]
    out.append(
        f"  exported: test rate {e['dense']['test_rate']:.2f} -> {e['test_rate']:.2f}, flags {e['flags']}"
    )
    return out


def main() -> None:
    """Run and print."""
    p = common.parser(__doc__)
    common.add_models(p)  # a model of your own wants --prompts and --scorer too
    p.add_argument(
        "--prompts", default=None, help="undesired prompts (.txt / .jsonl); default: trigger prompts"
    )
    p.add_argument("--scorer", default=None, help="toxicity scorer spec; default: the planted lexicon")
    p.add_argument("--general", default=None, help="general text; default: the synthetic language")
    p.add_argument("--general-eval", default=None, help="held-out general text")
    p.add_argument("--counts", default="2,4,7,10,15,30", help="neuron counts (default 2,4,7,10,15,30)")
    p.add_argument("--seeds", type=int, default=3, help="seeds (default 3)")
    p.add_argument("--max-new-tokens", type=int, default=20, help="continuation length (default 20)")
    p.add_argument(
        "--output", default="runs/correction-defaults", help="reports (default runs/correction-defaults)"
    )
    p.add_argument(
        "--aggregation",
        default="abs",
        choices=["abs", "token_abs", "signed"],
        help="relevance aggregation of both sets (default abs, the workflow's)",
    )
    p.add_argument(
        "--normalize",
        default="both",
        choices=["both", "off", "on"],
        help="unnormalised and/or unit-total normalised sets (default both)",
    )
    p.add_argument("--methods", default="lrp,gradient,wanda", help="methods (default lrp,gradient,wanda)")
    args = common.parse(p)
    lang = Language(seed=0)
    prompts = load_prompts(args.prompts) if args.prompts else [
        q["prompt"] for q in lang.trigger_prompts(160, seed=31, heldout=True) if q["trigger"]]  # fmt: skip
    scorer = make_scorer(args.scorer) if args.scorer else WordListScorer(INSULTS, name="planted lexicon")
    general = load_text(args.general) if args.general else lang.corpus(1200, seed=41)
    general_eval = load_text(args.general_eval) if args.general_eval else (
        None if args.general else lang.corpus(200, seed=42))  # fmt: skip
    counts = tuple(int(c) for c in args.counts.split(","))
    for model in common.models(args):
        m, tok, adapter, _ = common.load(model)
        for normalize in {"both": (False, True), "off": (False,), "on": (True,)}[args.normalize]:
            cfg = CorrectionConfig(counts=counts, seeds=args.seeds, generation=GenerationSettings(args.max_new_tokens),
                                   eval_windows=60, controls=("random",), normalize=normalize,
                                   **common.scoring_of(args.methods.split(","), aggregation=args.aggregation))  # fmt: skip
            s = correct(
                m, tok, adapter, prompts, general, Behaviour("toxicity", scorer), cfg, general_eval, False
            )
            s["model"] = model
            out = Path(args.output) / Path(model).name / f"{args.aggregation}-normalize-{int(normalize)}"
            write_json(out / "report.json", s)
            write_text(out / "report.md", correction_markdown(s))
            print("\n".join(lines(s)), flush=True)


if __name__ == "__main__":
    main()
