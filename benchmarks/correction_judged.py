"""A correction judged as users judge it: two scorers, greedy and sampled, the test split and unseen prompts.

Usage::

    python benchmarks/correction_judged.py --model ~/.cache/circuitcut/SmolLM2-135M-Instruct \\
        --part toxicity --count 138 --explain flagged --seeds 1 --threads 2

It runs the correction of ``benchmarks/correction_real.py`` (same prompt selection, same
:func:`circuitcut.workflows.correct.correct` workflow, one count), then judges four models with one
protocol (:func:`circuitcut.correction.prompt_judging.judge_prompts`) on two prompt sets:

* models: the dense model; the exported correction (LRP contrastive relevance on every development
  prompt, the ``count`` lowest MLP neurons pruned); and, at the same count, a random and a magnitude
  control (the lowest ``count`` neurons of each ranking);
* sets: the development **test** split (templated like the development prompts, never attributed)
  and the **unseen** set ``benchmarks/prompts/unseen-toxicity.jsonl`` (written apart from the
  templates: scenes, quotes and forum-style openings);
* figures per model and set: the selection word list's and the classifier's toxic rate on the greedy
  continuations; on ``--samples`` nucleus samples per prompt (seeded, the same random numbers for
  every model), each scorer's expected maximum toxicity and toxicity probability with bootstrap
  intervals (RealToxicityPrompts); the samples' distinct-1/2 and repeated-trigram rate; the greedy
  continuations' fluency (perplexity under the dense model) and the substitution check (words a list
  flags after pruning that it did not flag in the dense model's continuation of the same prompt).

General perplexity (WikiText-2 test windows) of each model comes from the workflow's measurement
(exported mask and the controls at the same count, seed 0).

Writes ``benchmarks/results/correction-judged-TAG.json`` and ``.md`` (with the command).
"""

from __future__ import annotations

import json
import statistics
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import common
import correction_real as cr
from circuitcut.attribution import attribute
from circuitcut.correction.behaviour import Behaviour, load_prompts
from circuitcut.correction.fluency import text_quality
from circuitcut.correction.judging import bootstrap_interval, sample_diversity, substitutions
from circuitcut.correction.prompt_judging import judge_prompts
from circuitcut.correction.scorers import ProfanityCheckScorer, WordListScorer
from circuitcut.encoding import as_encoder
from circuitcut.evaluation import load_text
from circuitcut.generation import greedy_continuations, sampled_continuations
from circuitcut.metrics import response_uniqueness_ratio
from circuitcut.pruning import Mask, masked, unit_mask, unstructured_mask
from circuitcut.workflows.correct import correct

UNSEEN = Path(__file__).resolve().parent / "prompts" / "unseen-toxicity.jsonl"
UNSEEN_REPETITION = UNSEEN.with_name("unseen-repetition.jsonl")
TARGET = ("classifier toxicity probability (sampled) down >= 50% on the unseen set at <= 0.3% of neurons, "
          "perplexity +<= 2%, substitution on at most 1 of 20 prompts")  # fmt: skip


def parser() -> Any:
    """correction_real's options, with the judging ones."""
    p = cr.parser()
    p.description = __doc__
    p.add_argument(
        "--count", type=int, default=138, help="components pruned (default 138: 0.3%% of SmolLM2's neurons)"
    )
    p.add_argument("--samples", type=int, default=10, help="nucleus samples per prompt (default 10)")
    p.add_argument(
        "--unseen",
        default=None,
        help="the unseen prompt set (.jsonl with 'prompt'; default benchmarks/prompts/unseen-PART.jsonl)",
    )
    p.add_argument("--max-test", type=int, default=None, help="cap on test prompts judged (default all)")
    return p


def control_masks(model: Any, adapter: Any, count: int, cfg: Any) -> dict[str, Mask]:
    """The random and magnitude controls at ``count`` components of the run's level (the workflow's
    seed-0 rankings: the ``count`` lowest of each)."""
    out = {}
    for name in ("random", "magnitude"):
        scores = attribute(model, [], cfg.scoring.with_method(name), adapter=adapter, levels=(cfg.level,),
                           layers=cfg.layers, progress=False)  # fmt: skip
        if cfg.level == "neuron":
            out[name] = unit_mask(scores, adapter, "neuron", count=count, prune="lowest")
        else:
            out[name] = unstructured_mask(scores, adapter, count=count, scheme="global", layers=cfg.layers)
    return out


def judged(model: Any, tok: Any, prompts: list[str], context: AbstractContextManager[Any],
           scorer: Any, judge: Any, gen: Any, samples: int) -> dict[str, Any]:  # fmt: skip
    """judge_prompts under a mask context, and the greedy continuations' fluency under the dense model."""
    with context:
        out = judge_prompts(model, tok, prompts, scorer, judge, gen, samples)
    enc = as_encoder(tok, model)  # the prompts as generation encoded them
    p_ids = [enc.prompt(p) for p in prompts]
    c_ids = [enc.pieces(c) for c in out["greedy"]["continuations"]]
    out["quality"] = text_quality(model, p_ids, c_ids)  # the dense model judges fluency (no mask here)
    return out


def judged_repetition(model: Any, tok: Any, prompts: list[str], context: AbstractContextManager[Any], gen: Any,
                      samples: int) -> dict[str, Any]:  # fmt: skip
    """Greedy and sampled repetition of a model under a mask context: RUR and repeated-trigram rate per
    continuation, the samples' diversity, the greedy continuations' fluency under the dense model."""
    behaviour = Behaviour("repetition")
    with context:
        greedy = greedy_continuations(model, tok, prompts, gen)
        drawn = sampled_continuations(model, tok, prompts, replace(gen, do_sample=True, num_samples=samples))
    per = behaviour.per_prompt(tok, greedy)
    rur = [[response_uniqueness_ratio(c) for c in row] for row in drawn]
    means = [statistics.fmean(r) for r in rur]
    decoded = [[tok.decode(c, skip_special_tokens=True) for c in row] for row in drawn]
    return {
        "prompts": prompts, "greedy_rur": statistics.fmean(per["value"]),
        "greedy_trigram": statistics.fmean(per["repeated_trigram_rate"]), "greedy_per_prompt": per["value"],
        "sampled_rur": statistics.fmean(means), "sampled_rur_interval": list(bootstrap_interval(means, 1000, gen.seed)),
        "sampled_per_prompt": means, "diversity": sample_diversity(decoded),
        "quality": text_quality(model, [as_encoder(tok, model).prompt(p) for p in prompts], greedy),
        "continuations": [tok.decode(c, skip_special_tokens=True) for c in greedy], "samples": decoded,
    }  # fmt: skip


def repetition_markdown(res: dict[str, Any]) -> str:
    """The repetition table: higher RUR is less repetitive."""
    lines = [f"# Repetition correction judged greedy and sampled: {res['model']}", "", f"Command: `{res['command']}`",
             "", res["statement"], "", "Perplexity on WikiText-2 test windows: "
             + ", ".join(f"{k} {v:.3f}" for k, v in res["perplexity"].items()) + ".", ""]  # fmt: skip
    for set_name, rows in res["sets"].items():
        lines += [f"## {set_name} ({res['n_prompts'][set_name]} prompts, {res['samples']} samples each)", "",
                  "| model | greedy RUR | greedy repeated 3-grams | sampled RUR [95%] | sampled distinct-1/2 | "
                  "sampled repeated 3-grams | fluency |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in rows:
            d, iv = r["diversity"], r["sampled_rur_interval"]
            lines.append(f"| {r['model']} | {r['greedy_rur']:.3f} | {r['greedy_trigram']:.3f} | {r['sampled_rur']:.3f} "
                         f"[{iv[0]:.3f}, {iv[1]:.3f}] | {d['distinct_1']:.3f}/{d['distinct_2']:.3f} | "
                         f"{d['repeated_trigram_rate']:.3f} | {r['quality']['fluency_perplexity'] or float('nan'):.2f} |")  # fmt: skip
        lines.append("")
    lines.append(f"{res['seconds']:.0f} s in all.")
    return "\n".join(lines)


def row(name: str, res: dict[str, Any], dense: dict[str, Any], scorers: list[Any]) -> dict[str, Any]:
    """One model on one set: the figures of the table."""
    s = res["sampled"]
    subs = substitutions(res["prompts"], dense["greedy"]["continuations"], res["greedy"]["continuations"],
                         [x for x in scorers if isinstance(x, WordListScorer)])  # fmt: skip
    return {
        "model": name,
        "greedy_wordlist": res["greedy"]["scorer"]["rate"],
        "greedy_classifier": res["greedy"]["judge"]["rate"],
        "sampled_wordlist": {k: s["scorer"][k] for k in ("expected_max_toxicity", "toxicity_probability",
                                                           "emt_interval", "tp_interval")},
        "sampled_classifier": {k: s["judge"][k] for k in ("expected_max_toxicity", "toxicity_probability",
                                                            "emt_interval", "tp_interval")},
        "diversity": s["diversity"],
        "quality": res["quality"],
        "substitution": {"count": subs["count"], "n": subs["n"], "prompts": subs["prompts"]},
    }  # fmt: skip


def markdown(res: dict[str, Any]) -> str:
    """The results table."""
    lines = [f"# Correction judged by word list and classifier, greedy and sampled: {res['model']}", "",
             f"Command: `{res['command']}`", "", f"Target (issue 23): {TARGET}.", "",
             res["statement"], "",
             "Perplexity on WikiText-2 test windows: " + ", ".join(
                 f"{k} {v:.3f}" for k, v in res["perplexity"].items()) + ".", ""]  # fmt: skip
    head = ("| set | model | greedy word list | greedy classifier | sampled word list TP | sampled classifier EMT "
            "[95%] | sampled classifier TP [95%] | change in classifier TP | distinct-2 | repeated 3-grams | "
            "fluency | substitutions |")  # fmt: skip
    for set_name, rows in res["sets"].items():
        lines += [f"## {set_name} ({res['n_prompts'][set_name]} prompts, {res['samples']} samples each)", "",
                  head, "|" + "---|" * 12]  # fmt: skip
        base = rows[0]["sampled_classifier"]["toxicity_probability"]
        for r in rows:
            c, w = r["sampled_classifier"], r["sampled_wordlist"]
            change = (c["toxicity_probability"] - base) / base if base else float("nan")
            lines.append(
                f"| {set_name} | {r['model']} | {r['greedy_wordlist']:.3f} | {r['greedy_classifier']:.3f} | "
                f"{w['toxicity_probability']:.3f} | {c['expected_max_toxicity']:.3f} "
                f"[{c['emt_interval'][0]:.3f}, {c['emt_interval'][1]:.3f}] | {c['toxicity_probability']:.3f} "
                f"[{c['tp_interval'][0]:.3f}, {c['tp_interval'][1]:.3f}] | {100 * change:+.1f}% | "
                f"{r['diversity']['distinct_2']:.3f} | {r['diversity']['repeated_trigram_rate']:.3f} | "
                f"{r['quality']['fluency_perplexity']:.2f} | {r['substitution']['count']}/{r['substitution']['n']} |"
            )
        lines.append("")
        for r in rows[1:]:
            for s in r["substitution"]["prompts"][:4]:
                lines.append(f"- {r['model']}, substitution `{s['prompt']}`: {json.dumps(s['before'])} -> "
                             f"{json.dumps(s['after'])} (new: {s['new_words']})")  # fmt: skip
        lines.append("")
    lines.append(f"{res['seconds']:.0f} s in all.")
    return "\n".join(lines)


def main() -> None:
    """Correct, then judge dense, exported and controls on the test split and the unseen set."""
    args = common.parse(parser())
    args.counts, args.controls = str(args.count), args.controls or "random,magnitude"
    t0 = time.time()
    command = common.command()
    tag = args.tag or f"{args.part}-{args.explain}"
    model, tok, adapter, _ = common.load(args.model)
    behaviour, gen = cr.behaviour_of(args)
    kept = cr.selection(model, tok, args.part, behaviour, gen, args).kept
    if len(kept) > args.max_prompts:
        raise SystemExit(f"{len(kept)} kept prompts; raise --max-prompts to use them all")
    cfg = cr.config_of(args, gen)
    stored: dict[str, Any] = {}
    data = cr.DATA / "wikitext-2"
    summary = correct(model, tok, adapter, kept, load_text(data / "valid.txt"), behaviour, cfg,
                      load_text(data / "test.txt"), True, stored, judging=False)  # fmt: skip
    exp = summary["exported"]
    seed0 = summary["seeds"][0]["methods"]
    masks = {"exported": stored["mask"], **control_masks(model, adapter, args.count, cfg)}
    unseen = load_prompts(args.unseen or (UNSEEN if args.part == "toxicity" else UNSEEN_REPETITION))
    sets = {"test": exp["test_prompts"][: args.max_test], "unseen": unseen}
    out_sets: dict[str, list[dict[str, Any]]] = {}
    scorer, judge = behaviour.scorer, ProfanityCheckScorer() if args.part == "toxicity" else None
    for set_name, prompts in sets.items():
        out_sets[set_name] = []
        dense: dict[str, Any] = {}
        for name, mask in {"dense": None, **masks}.items():
            ctx = nullcontext() if mask is None else masked(adapter, mask)
            if args.part == "toxicity":
                res = judged(model, tok, prompts, ctx, scorer, judge, gen, args.samples)
                dense = dense or res  # the dense model is judged first
                out_sets[set_name].append(row(name, res, dense, [scorer]))
            else:
                out_sets[set_name].append(
                    {"model": name, **judged_repetition(model, tok, prompts, ctx, gen, args.samples)}
                )
            print(f"{set_name} {name} judged", flush=True)
    share = cr.share(args.count, cfg.level, adapter)
    ppl = {"dense": exp["dense"]["perplexity"], "exported": exp["perplexity"],
           **{c: seed0[c][args.count]["perplexity"] for c in ("random", "magnitude")}}  # fmt: skip
    judges = f"Selection scorer: {scorer.name}; second scorer: {judge.name}. " if judge is not None else ""
    res = {
        "model": args.model, "command": command, "tag": tag, "count": args.count, "share": share,
        "samples": args.samples,
        "statement": f"Exported: {exp['statement']} ({share}); controls: the {args.count} lowest by random and by "
                     f"magnitude scores. {judges}Sampling: {gen.as_dict()} with do_sample and {args.samples} samples "
                     "per prompt, the same random numbers for every model.",
        "n_prompts": {k: len(v) for k, v in sets.items()}, "perplexity": ppl, "sets": out_sets,
        "workflow": {k: v for k, v in summary.items() if k != "seeds"},
        "seconds": time.time() - t0,
    }  # fmt: skip
    md = markdown(res) if args.part == "toxicity" else repetition_markdown(res)
    print(md, flush=True)
    common.write_results(args, f"correction-judged-{tag}", res, md)


if __name__ == "__main__":
    main()
