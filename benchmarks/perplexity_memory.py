"""Peak memory and time of perplexity before and after chunking the LM head, on a 262k vocabulary.

Usage::

    python benchmarks/perplexity_memory.py [--batch 8] [--seqlen 128] [--batches 2] [--repeats 2]
        [--family llama] [--compress]

A tiny randomly initialised model of ``--family`` (hidden 32, 2 layers) with a 262,144-token
vocabulary, as Gemma 3 has, makes the logits the whole cost: the full-logits perplexity (the
implementation before issue 22, copied here) holds a batch's ``[B, T, V]`` float32 logits, their
shifted copy and the log-softmax; the chunked one (:func:`circuitcut.evaluation.perplexity_of_ids`)
runs the LM head on :data:`~circuitcut.evaluation.perplexity.CHUNK_ELEMENTS` logits at a time. Both
run in one process, alternated ``--repeats`` times; each pass's peak resident memory above what was
resident before it (``VmHWM`` after a reset) and its wall time are reported, with their ratios and
the two perplexities. ``--compress`` adds one ``compress`` run per method (Wanda, LRP) on the same
model, its measured peak beside the printed estimate.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
from typing import Any

import torch

import common

VOCAB = 262144


@torch.no_grad()
def full_logits_perplexity(model: torch.nn.Module, ids: list[int], seqlen: int, batch_size: int) -> float:
    """Perplexity as computed before chunking: every batch's full logits, then cross-entropy."""
    n = len(ids) // seqlen
    windows = torch.tensor(ids[: n * seqlen]).view(n, seqlen)
    total = 0.0
    for i in range(0, n, batch_size):
        x = windows[i : i + batch_size]
        logits = model(input_ids=x, use_cache=False).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten(), reduction="none")
        total += nll.double().sum().item()
    return math.exp(total / (n * (seqlen - 1)))


def perplexity_passes(
    args: argparse.Namespace, model: torch.nn.Module, ids: list[int] | None = None
) -> dict[str, Any]:
    """Both perplexities, alternated: peak added (MiB), seconds, the values (on ``ids``, else random ids)."""
    from circuitcut.evaluation import perplexity_of_ids

    vocab = model.get_output_embeddings().weight.shape[0]
    if ids is None:
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(3, vocab, (args.batch * args.batches * args.seqlen,), generator=g).tolist()
    runs = {
        "full_logits": lambda: full_logits_perplexity(model, ids, args.seqlen, args.batch),
        "chunked": lambda: perplexity_of_ids(model, ids, args.seqlen, args.batch, progress=False).perplexity,
    }
    seen: dict[str, list[dict[str, float]]] = {k: [] for k in runs}
    values: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            values[name], mem = common.peak_memory(fn)
            seen[name].append(mem)
    out: dict[str, Any] = {}
    for name, mems in seen.items():
        out[name] = {
            "perplexity": values[name],
            "peak_added_mib": round(max(m["added_mib"] for m in mems), 1),
            "median_seconds": round(statistics.median(m["seconds"] for m in mems), 3),
        }
    full, chunked = out["full_logits"], out["chunked"]
    out["peak_ratio_chunked_over_full"] = round(chunked["peak_added_mib"] / full["peak_added_mib"], 4)
    out["time_ratio_chunked_over_full"] = round(chunked["median_seconds"] / full["median_seconds"], 3)
    out["relative_difference"] = abs(chunked["perplexity"] - full["perplexity"]) / full["perplexity"]
    out["batch_logits_mib"] = round(args.batch * args.seqlen * vocab * 4 / 2**20, 1)
    out["vocab"] = vocab
    return out


def compress_runs(args: argparse.Namespace, model_of: Any) -> dict[str, Any]:
    """One ``compress`` per method on the huge-vocabulary model: measured peak beside the estimate."""
    import tempfile
    from pathlib import Path

    from circuitcut.attribution.config import ScoringConfig
    from circuitcut.attribution.memory import estimate_compression
    from circuitcut.models import get_adapter
    from circuitcut.workflows.compress import CompressConfig, compress
    from circuitcut.zoo.tokenizer import build_tokenizer

    os.environ["CIRCUITCUT_PERPLEXITY_CACHE"] = "0"  # every run measures its dense perplexity
    tok = build_tokenizer()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        cal = Path(tmp) / "cal.txt"
        cal.write_text(" ".join(["Mary went to the store . Tom sang : la la la ."] * 200))
        for method in ("wanda", "lrp"):
            cfg = CompressConfig(ScoringConfig(method=method, batch_size=4, aggregation="token_abs"),
                                 n_samples=8, seqlen=64, eval_seqlen=args.seqlen)  # fmt: skip
            model = model_of()
            est = estimate_compression(get_adapter(model), 4, 64, 4, args.seqlen, method)
            report, mem = common.peak_memory(lambda m=model, c=cfg: compress(m, str(cal), None, c, tokenizer=tok,
                                                                             progress=False))  # fmt: skip
            out[method] = {
                "peak_added_mib": round(mem["added_mib"], 1),
                "estimate_added_mib": round((est["total"] - est["weights"]) * 1024, 1),
                "scoring_logits_estimate_mib": round(est["scoring_logits"] * 1024, 1),
                "evaluation_estimate_mib": round(est["evaluation"] * 1024, 1),
                "seconds": round(mem["seconds"], 2),
                "dense": report["dense"]["perplexity"],
            }
    return out


def markdown(report: dict[str, Any]) -> str:
    """The results table."""
    p, a = report["perplexity"], report["args"]
    lines = [
        f"## Perplexity in bounded memory: {a['model'] or 'a tiny ' + a['family']} with a {p['vocab']:,}-token "
        "vocabulary" + (f", windows of `{a['text']}`" if a["model"] else ", random ids"),
        "",
        f"Command: `{report['command']}`",
        "",
        f"{a['batch']} windows of {a['seqlen']} tokens a batch, {a['batches']} batches, {a['repeats']} rounds "
        f"alternated in one process; a batch's float32 logits are {p['batch_logits_mib']} MiB. Peak: the most "
        "resident memory a pass added over its rounds (VmHWM after a reset); time: the median.",
        "",
        "| perplexity pass | perplexity | peak added (MiB) | time (s) |",
        "|---|---|---|---|",
    ]
    for name in ("full_logits", "chunked"):
        r = p[name]
        lines.append(
            f"| {name.replace('_', ' ')} | {r['perplexity']:.6f} | {r['peak_added_mib']} | {r['median_seconds']} |"
        )
    lines += [
        "",
        f"Chunked / full: peak **{p['peak_ratio_chunked_over_full']}x**, time {p['time_ratio_chunked_over_full']}x; "
        f"relative difference of the perplexities {p['relative_difference']:.1e}.",
    ]
    if "compress" in report:
        lines += ["", "`compress` on the same model (8 x 64 calibration, batch 4; evaluation batch 4 of "
                  f"{a['seqlen']}; perplexity cache off): peak added beside the printed estimate (MiB). The "
                  "scoring pass's own logits (the engine's, kept for its backward) set the peak; the perplexity "
                  "passes add one chunk of logits whatever the batch.", "",
                  "| method | peak added | estimate | of which scoring logits | perplexity pass | s |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for m, r in report["compress"].items():
            lines.append(f"| {m} | {r['peak_added_mib']} | {r['estimate_added_mib']} | "
                         f"{r['scoring_logits_estimate_mib']} | {r['evaluation_estimate_mib']} | {r['seconds']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    """Measure, print and write the report."""
    p = common.parser(__doc__)
    p.add_argument("--family", default="llama", help="tiny model family (default llama)")
    p.add_argument("--batch", type=int, default=8, help="windows per batch (default 8)")
    p.add_argument("--seqlen", type=int, default=128, help="tokens per window (default 128)")
    p.add_argument("--batches", type=int, default=2, help="batches per pass (default 2)")
    p.add_argument("--repeats", type=int, default=2, help="rounds of both passes (default 2)")
    p.add_argument("--compress", action="store_true", help="add compress runs (Wanda, LRP) with estimates")
    p.add_argument("--model", default=None, help="a real model instead of the tiny one (then --text is read)")
    p.add_argument(
        "--text", default="../shared/data/wikitext-2/test.txt", help="text of the real model's windows"
    )
    common.add_results(p, tag="perplexity-memory")
    args = common.parse(p)
    from circuitcut.models.tiny import tiny_model

    def model_of() -> torch.nn.Module:
        return tiny_model(args.family, vocab_size=VOCAB)

    report: dict[str, Any] = {"command": common.command(), "args": {k: v for k, v in vars(args).items()
                                                                    if k != "results_dir"}}  # fmt: skip
    if args.model:
        from circuitcut.evaluation import load_text

        loaded = common.load(args.model)
        ids = loaded.encoder.pieces(load_text(args.text))[: args.batch * args.batches * args.seqlen]
        report["perplexity"] = perplexity_passes(args, loaded.model, ids)
    else:
        report["perplexity"] = perplexity_passes(args, model_of())
    if args.compress:
        report["compress"] = compress_runs(args, model_of)
    md = markdown(report)
    print(md)
    common.write_results(args, args.tag, report, md)


if __name__ == "__main__":
    main()
