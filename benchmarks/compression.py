"""Perplexity after unstructured pruning: LRP against Wanda, gradient, magnitude and random.

Usage::

    python benchmarks/compression.py [--models circuitcut/ref-llama circuitcut/ref-opt]
        [--schemes rowwise global] [--n-samples 128] [--seqlen 64] [--threads 1]
        [--calibration FILE --eval FILE]   # any local model and text, e.g. WikiText-2

For each model, each method is scored once on the calibration windows; masks at 10, 30, 50 and 70%
sparsity of all decoder linears are then applied reversibly and the perplexity measured on the
evaluation text (non-overlapping windows). Without --calibration/--eval, the reference models'
own language is used: calibration from training-distribution documents, evaluation on unseen ones.
Prints a Markdown table per model and scheme, and writes JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from circuitcut.evaluation import load_text, perplexity_of_ids
from circuitcut.models import load_model
from circuitcut.pruning import masked, unstructured_mask
from circuitcut.workflows.compress import calibration_samples

METHODS = ("lrp", "wanda", "gradient", "magnitude", "random")
SPARSITIES = (0.1, 0.3, 0.5, 0.7)


def synthetic_texts() -> tuple[str, str]:
    """Calibration and evaluation text of the reference language (disjoint seeds)."""
    from circuitcut.zoo.language import Language

    lang = Language(seed=0)
    return lang.corpus(800, seed=101), lang.corpus(400, seed=202)


def run_model(name: str, args: argparse.Namespace) -> dict:
    """The table of one model."""
    from circuitcut.attribution import attribute

    model, tok, adapter = load_model(name)
    if args.calibration:
        cal_text, eval_text = load_text(args.calibration), load_text(args.eval or args.calibration)
    else:
        cal_text, eval_text = synthetic_texts()
    eval_ids = tok(eval_text, add_special_tokens=False)["input_ids"]
    samples = calibration_samples(tok, cal_text, args.n_samples, args.seqlen, seed=0)
    dense = perplexity_of_ids(model, eval_ids, args.seqlen, 16, args.eval_windows).perplexity
    out: dict = {
        "model": name,
        "dense": dense,
        "n_samples": args.n_samples,
        "seqlen": args.seqlen,
        "results": {},
    }
    for method in METHODS:
        t = time.perf_counter()
        scores = attribute(model, samples, method, adapter=adapter, levels=("weight",), batch_size=16,
                           pad_id=tok.pad_token_id or 0, progress=False)  # fmt: skip
        out.setdefault("score_seconds", {})[method] = round(time.perf_counter() - t, 2)
        for scheme in args.schemes:
            row = {}
            for s in SPARSITIES:
                mask = unstructured_mask(scores, adapter, s, scheme=scheme)
                with masked(adapter, mask):
                    row[s] = perplexity_of_ids(model, eval_ids, args.seqlen, 16, args.eval_windows).perplexity
            out["results"].setdefault(scheme, {})[method] = row
    return out


def markdown(res: dict) -> str:
    """Tables of one model's results."""
    lines = []
    for scheme, table in res["results"].items():
        lines += [
            f"### {res['model']}: {scheme} unstructured pruning of all decoder linears "
            f"(dense perplexity {res['dense']:.3f})",
            "",
            "| method | " + " | ".join(f"{int(s * 100)}%" for s in SPARSITIES) + " |",
            "|---|" + "---|" * len(SPARSITIES),
        ]
        for method, row in table.items():
            lines.append(f"| {method} | " + " | ".join(f"{row[s]:.3f}" for s in SPARSITIES) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    """Run and print."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["circuitcut/ref-llama", "circuitcut/ref-opt"])
    p.add_argument(
        "--schemes", nargs="+", default=["rowwise", "global"], choices=["global", "layer", "rowwise"]
    )
    p.add_argument("--n-samples", type=int, default=128, help="calibration windows (default 128)")
    p.add_argument("--seqlen", type=int, default=64, help="tokens per window (default 64)")
    p.add_argument("--eval-windows", type=int, default=None, help="cap on evaluation windows")
    p.add_argument(
        "--calibration", default=None, help="calibration text file (default: the reference language)"
    )
    p.add_argument("--eval", default=None, help="evaluation text file (default: --calibration)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results = [run_model(m, args) for m in args.models]
    for r in results:
        print(markdown(r))
        print("scoring seconds:", r["score_seconds"], "\n")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
