"""Perplexity after unstructured pruning: LRP (and its open choices) against Wanda, gradient,
magnitude and random, on the reference models or on a real checkpoint.

Usage::

    # the reference models, their own language (the README's figures)
    python benchmarks/compression.py

    # a real model, Wanda's protocol scaled to a CPU: calibration windows from WikiText-2 valid,
    # perplexity on WikiText-2 test, row-wise and global schemes, 50% sparsity
    python benchmarks/compression.py --model ~/.cache/circuitcut/SmolLM2-135M-Instruct \\
        --calibration ../shared/data/wikitext-2/valid.txt --eval ../shared/data/wikitext-2/test.txt \\
        --n-samples 32 --seqlen 256 --eval-seqlen 512 --eval-windows 32 --sparsities 0.5 \\
        --methods lrp lrp/token_abs wanda --tag smollm2-variants

Methods are ``lrp``, ``gradient``, ``wanda``, ``magnitude``, ``random``, and LRP/gradient variants
written ``METHOD/OPTION+OPTION`` with options ``token_abs``, ``token_norm``, ``token_l2`` or ``signed`` (aggregation; default
per-sample ``abs``), ``value`` (value seeds; default unit seeds), ``logprob`` (explain the true next
token's log-probability; default its logit), ``cp`` (CP-LRP rules), ``noattn`` / ``nonorm`` (LRP without its attention / norm rules); a suffix ``@owl`` or ``@relevance``
sets the layer budget of the ``layer`` and ``rowwise`` schemes (:mod:`circuitcut.pruning.budgets`;
``wanda@owl`` is Wanda+OWL, ``lrp/token_abs@relevance`` LRP with its relevance-mass budget). Each method is scored once per
calibration seed; masks at every scheme and sparsity are then applied reversibly and the perplexity
measured on non-overlapping evaluation windows (the tokenizer's BOS before each window where it adds
one, :mod:`circuitcut.encoding`). Every phase is timed (attribution, mask building, evaluation).
Writes ``benchmarks/results/compression-TAG.json`` and ``.md`` (with the command) unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import statistics
from functools import partial
from pathlib import Path
from typing import Any

import common
from circuitcut.attribution import attribute, next_token_sample
from circuitcut.attribution.config import ScoringConfig
from circuitcut.data import calibration_samples
from circuitcut.evaluation import load_text, perplexity_of_ids
from circuitcut.pruning import masked, nm_mask, unstructured_mask
from circuitcut.pruning.budgets import KINDS, layer_budget

BASE_METHODS = ("lrp", "gradient", "wanda", "magnitude", "random")
OPTIONS = {
    "token_abs": {"aggregation": "token_abs"},
    "token_norm": {"aggregation": "token_norm"},
    "token_l2": {"aggregation": "token_l2"},
    "signed": {"aggregation": "signed"},
    "value": {"seed_mode": "value"},
    "cp": {"variant": "cp-lrp"},
    "noattn": {"lrp_rules": ("activation", "norm", "gate")},
    "nonorm": {"lrp_rules": ("activation", "attention_scores", "attention_values", "gate")},
    "logprob": {},  # the sample kind, not a scoring option
}


def parse_method(spec: str) -> tuple[str, dict[str, Any], str]:
    """``"lrp/token_abs+logprob@owl"`` -> ``("lrp", {ScoringConfig fields}, sample kind)`` (the budget:
    :func:`budget_of`)."""
    base, _, opts = spec.partition("@")[0].partition("/")
    if base not in BASE_METHODS:
        raise SystemExit(f"unknown method {base!r}; use one of {', '.join(BASE_METHODS)}")
    kwargs: dict[str, Any] = {}
    kind = "logit"
    for opt in filter(None, opts.split("+")):
        if opt not in OPTIONS:
            raise SystemExit(f"unknown option {opt!r} in {spec!r}; use {', '.join(OPTIONS)}")
        if opt == "logprob":
            kind = "logprob"
        kwargs.update(OPTIONS[opt])
    if kwargs and base not in ("lrp", "gradient"):
        raise SystemExit(f"{spec!r}: options apply to lrp and gradient only")
    return base, kwargs, kind


def budget_of(spec: str) -> str | None:
    """The layer budget a method spec asks for after ``@`` (None: uniform)."""
    budget = spec.partition("@")[2] or None
    if budget is not None and budget not in KINDS:
        raise SystemExit(f"unknown budget {budget!r} in {spec!r}; use {', '.join(KINDS)}")
    return budget


def synthetic_texts() -> tuple[str, str]:
    """Calibration and evaluation text of the reference language (disjoint seeds)."""
    from circuitcut.zoo.language import Language

    lang = Language(seed=0)
    return lang.corpus(800, seed=101), lang.corpus(400, seed=202)


def make_mask(
    scores: Any,
    adapter: Any,
    scheme: str,
    sparsity: float,
    budget: tuple[str, Any] | None = None,
    role: str | None = None,
) -> Any:
    """A mask over all decoder linears, or only those of one ``role`` (``2:4`` ignores the sparsity and
    any budget); ``budget`` is the budget's kind and the scores it is computed from (Wanda's for OWL)."""
    if role is not None:
        names = [lin.name for lin in adapter.linears() if lin.role == role]
        if not names:
            raise SystemExit(
                f"no linear has role {role!r}; roles: {sorted({x.role for x in adapter.linears()})}"
            )
        if scheme == "2:4":
            return nm_mask(scores, adapter, 2, 4, layers=names)
        return unstructured_mask(scores, adapter, sparsity, scheme=scheme, layers=names)
    if scheme == "2:4":
        return nm_mask(scores, adapter, 2, 4)
    if budget is None or scheme == "global":
        return unstructured_mask(scores, adapter, sparsity, scheme=scheme)
    plan = layer_budget(budget[0], budget[1], adapter.linears(), sparsity)
    return unstructured_mask(scores, adapter, sparsity, scheme=scheme, budget=plan)


def calibration(enc: Any, text: str, args: argparse.Namespace, seed: int, kind: str) -> list:
    """The calibration windows of one seed, explaining the next token's logit or ``kind``."""
    samples = calibration_samples(enc, text, args.n_samples, args.seqlen, seed=seed)
    return samples if kind == "logit" else [next_token_sample(s.input_ids, kind=kind) for s in samples]


def prune_and_measure(scores: Any, adapter: Any, ppl: Any, spec: str, seed: int, args: argparse.Namespace,
                      out: dict[str, Any], budget: tuple[str, Any] | None = None) -> None:  # fmt: skip
    """Every scheme and sparsity of one score set: its perplexity, and the seconds of each phase."""
    phases = out["phases"][spec]
    for scheme, role in [(sc, r) for sc in args.schemes for r in (args.roles or [None])]:
        for s in [0.5] if scheme == "2:4" else args.sparsities:
            mask = common.timed(partial(make_mask, scores, adapter, scheme, s, budget, role))
            phases["masks"].append(round(mask.seconds, 2))
            if "budget" in mask.value.meta:  # the rates each block got, per seed
                rates = out.setdefault("budgets", {}).setdefault(spec, {}).setdefault(f"{scheme}/{s}", [])
                rates.append(mask.value.meta["budget"]["rates"])
            with masked(adapter, mask.value):
                value = common.timed(ppl)
            phases["evaluation"].append(round(value.seconds, 2))
            where = scheme if role is None else f"{scheme}:{role}"
            out["results"].setdefault(spec, {}).setdefault(where, {}).setdefault(str(s), []).append(
                value.value
            )
            print(f"  seed {seed} {spec:<28} {where:<8} {s:.0%}: {value.value:.3f}", flush=True)


def run_seed(model: Any, adapter: Any, enc: Any, cal_text: str, ppl: Any, seed: int, args: argparse.Namespace,
             out: dict[str, Any]) -> None:  # fmt: skip
    """Every method of one calibration seed; a method and its budgeted variants share one scoring."""
    windows: dict[str, list] = {}
    scored: dict[str, Any] = {}
    last_use = {}  # score set -> the last method that needs it (then it is freed)
    for i, spec in enumerate(args.methods):
        last_use[spec.partition("@")[0]] = i
        if budget_of(spec) == "owl" and parse_method(spec)[0] != "wanda":
            last_use["wanda"] = i
    for i, spec in enumerate(args.methods):
        base, fields, kind = parse_method(spec)
        if kind not in windows:
            windows[kind] = calibration(enc, cal_text, args, seed, kind)
        phases = out["phases"].setdefault(spec, {"attribution": [], "masks": [], "evaluation": []})
        key = spec.partition("@")[0]
        if key not in scored:
            scoring = ScoringConfig(method=base, batch_size=args.batch_size, seed=seed, **fields)
            timed = common.timed(partial(attribute, model, windows[kind], scoring, adapter=adapter, levels=("weight",),
                                         progress=False))  # fmt: skip
            scored[key] = timed.value
            phases["attribution"].append(round(timed.seconds, 2))
        budget, plan = budget_of(spec), None
        if budget is not None:
            signal = key
            if budget == "owl" and base != "wanda":  # OWL's outlier ratios come from Wanda scores
                signal = "wanda"
                if signal not in scored:
                    wanda = ScoringConfig(method="wanda", batch_size=args.batch_size, seed=seed)
                    scored[signal] = attribute(model, windows[kind], wanda, adapter=adapter, levels=("weight",),
                                               progress=False)  # fmt: skip
            plan = (budget, scored[signal])
        prune_and_measure(scored[key], adapter, ppl, spec, seed, args, out, plan)
        for done in [k for k in scored if last_use[k] <= i]:
            del scored[done]


def run_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every method, seed, scheme and sparsity on one model."""
    model, _, adapter, enc = common.load(name)
    if args.calibration:
        cal_text, eval_text = load_text(args.calibration), load_text(args.eval or args.calibration)
    else:
        cal_text, eval_text = synthetic_texts()
    eval_ids = enc.pieces(eval_text)
    eval_seqlen = args.eval_seqlen or args.seqlen

    def ppl() -> float:
        """The perplexity of the model as it is now (masks applied)."""
        return perplexity_of_ids(model, eval_ids, eval_seqlen, args.eval_batch, args.eval_windows,
                                 prefix=enc.prefix).perplexity  # fmt: skip

    dense = ppl()
    out: dict[str, Any] = {
        "model": name,
        "dense": dense,
        "calibration": args.calibration or "reference language",
        "evaluation": args.eval or args.calibration or "reference language",
        "n_samples": args.n_samples,
        "seqlen": args.seqlen,
        "eval_seqlen": eval_seqlen,
        "eval_windows": args.eval_windows,
        "seeds": list(args.seeds),
        "encoding": enc.provenance(),
        "results": {},
        "phases": {},
    }
    print(f"{name}: dense perplexity {dense:.3f}", flush=True)
    for seed in args.seeds:
        run_seed(model, adapter, enc, cal_text, ppl, seed, args, out)
    return out


def markdown(res: dict[str, Any], command: str) -> str:
    """The tables of one model: mean over seeds (and each seed) per method, scheme, sparsity."""
    lines = [
        f"## {res['model']}: unstructured pruning of all decoder linears",
        "",
        f"Dense perplexity {res['dense']:.3f} on {res['eval_windows'] or 'all'} windows of {res['eval_seqlen']} "
        f"tokens of `{res['evaluation']}`; calibration {res['n_samples']} windows of {res['seqlen']} tokens of "
        f"`{res['calibration']}`; encoding {res['encoding']['prefix_tokens'] or 'no prefix'}.",
        "",
        f"Command: `{command}`",
        "",
    ]
    schemes = sorted({sc for r in res["results"].values() for sc in r})
    for scheme in schemes:
        sparsities = sorted({s for r in res["results"].values() for s in r.get(scheme, {})}, key=float)
        lines += [f"### {scheme}", "", "| method | " + " | ".join(f"{float(s):.0%}" for s in sparsities) + " |",
                  "|---|" + "---|" * len(sparsities)]  # fmt: skip
        for method, r in res["results"].items():
            if scheme not in r:
                continue
            cells = []
            for s in sparsities:
                v = r[scheme].get(s)
                if not v:
                    cells.append("")
                elif len(v) == 1:
                    cells.append(f"{v[0]:.3f}")
                else:
                    sem = statistics.stdev(v) / len(v) ** 0.5
                    cells.append(
                        f"{statistics.fmean(v):.3f} ± {sem:.3f} ({', '.join(f'{x:.2f}' for x in v)})"
                    )
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["### Cost per phase (seconds, median per call)", "", "| method | attribution | one mask | one evaluation |",
              "|---|---|---|---|"]  # fmt: skip
    for method, ph in res["phases"].items():
        lines.append(f"| {method} | " + " | ".join(f"{statistics.median(ph[k]):.2f}" if ph[k] else "-"
                                                     for k in ("attribution", "masks", "evaluation")) + " |")  # fmt: skip
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    """Run, print, write."""
    p = common.parser(__doc__)
    common.add_models(p)
    p.add_argument("--methods", nargs="+", default=["lrp", "wanda", "gradient", "magnitude", "random"])
    p.add_argument(
        "--schemes", nargs="+", default=["rowwise", "global"], choices=["global", "layer", "rowwise", "2:4"]
    )
    p.add_argument("--sparsities", nargs="+", type=float, default=[0.1, 0.3, 0.5, 0.7])
    p.add_argument("--roles", nargs="+", default=None,
                   help="prune one projection role at a time (q k v o gate up down ...), the rest dense: where a "
                        "method loses perplexity (default: every decoder linear at once)")  # fmt: skip
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="calibration seeds (default 0)")
    p.add_argument("--n-samples", type=int, default=128, help="calibration windows (default 128)")
    p.add_argument("--seqlen", type=int, default=64, help="tokens per calibration window (default 64)")
    p.add_argument(
        "--eval-seqlen", type=int, default=None, help="tokens per evaluation window (default --seqlen)"
    )
    p.add_argument("--eval-windows", type=int, default=None, help="cap on evaluation windows (default all)")
    p.add_argument("--batch-size", type=int, default=16, help="calibration windows per attribution batch")
    p.add_argument("--eval-batch", type=int, default=16, help="evaluation windows per forward")
    p.add_argument(
        "--calibration", default=None, help="calibration text file (default: the reference language)"
    )
    p.add_argument("--eval", default=None, help="evaluation text file (default: --calibration)")
    common.add_results(p, text="results file name: compression-TAG.json/.md")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = common.parse(p)
    command = common.command()
    names = common.models(args)
    for name in names:
        res = run_model(name, args)
        res["command"] = command
        md = markdown(res, command)
        print(md, flush=True)
        if not args.no_write:
            tag = common.tag_of(args, name)
            if args.tag and len(names) > 1:
                tag = f"{args.tag}-{Path(name).name}"
            common.write_results(args, f"compression-{tag}", res, md)


if __name__ == "__main__":
    main()
