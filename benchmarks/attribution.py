"""Attribution cost: LRP scoring against a plain forward+backward and against Wanda, and memory.

Usage::

    python benchmarks/attribution.py [--repeats 7] [--threads 1] [--vocab 32000] [--model PATH]

Prints, for a Llama-style model (hidden 256, 4 layers, built from a config; or ``--model``: a
folder, .gguf file, alias or hub id) on a batch of 4 x 128 tokens:

* the median ratio of an LRP scoring pass to a plain forward+backward (next-token loss, weight
  gradients) of the same batch, measured interleaved in one process;
* the median ratio of LRP to Wanda scoring of the same batch;
* the peak resident memory added by LRP scoring of 8 versus 64 reference samples (each in a fresh
  subprocess; the peak is the kernel's high-water mark, reset before the run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

import common
from circuitcut.attribution.config import ScoringConfig


def build(vocab: int, model: str | None = None) -> torch.nn.Module:
    """The benchmark model: ``model`` loaded, or Llama-style, hidden 256, 4 layers, 8 heads (4 kv),
    MLP 688."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if model is not None:
        from circuitcut.models import load_model

        return load_model(model)[0]
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        intermediate_size=688,
        max_position_embeddings=512,
    )
    return LlamaForCausalLM(cfg).eval()


def samples(n: int, vocab: int, length: int = 128) -> list:
    """``n`` random next-token samples of ``length`` tokens."""
    from circuitcut.attribution import next_token_sample

    g = torch.Generator().manual_seed(1)
    return [next_token_sample(torch.randint(0, vocab, (length,), generator=g).tolist()) for _ in range(n)]


def plain_step(model: torch.nn.Module, ids: torch.Tensor) -> None:
    """Forward + backward of the next-token loss, weight gradients included."""
    logits = model(input_ids=ids).logits
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    model.zero_grad(set_to_none=True)


def timing(repeats: int, vocab: int, name: str | None = None) -> dict:
    """Interleaved timings of plain, LRP and Wanda passes over one 4 x 128 batch."""
    from circuitcut.attribution import attribute
    from circuitcut.models import get_adapter

    model = build(vocab, name)
    adapter = get_adapter(model)
    batch = samples(4, vocab)
    ids = torch.tensor([s.input_ids for s in batch])
    scorings = {
        "lrp": ScoringConfig(method="lrp", batch_size=4),
        "lrp_signed": ScoringConfig(method="lrp", aggregation="signed", batch_size=4),
        "wanda": ScoringConfig(method="wanda", batch_size=4),
    }
    runs = {"plain": lambda: plain_step(model, ids)}
    runs.update(
        {
            k: (lambda s=s: attribute(model, batch, s, adapter=adapter, progress=False))
            for k, s in scorings.items()
        }
    )
    timed = common.interleaved(runs, repeats, warmup=True)
    times = {k: [t.seconds for t in v] for k, v in timed.items()}
    return {
        "median_seconds": {k: round(statistics.median(v), 4) for k, v in times.items()},
        "lrp_over_plain": round(common.median_ratio(times["lrp"], times["plain"]), 3),
        "lrp_signed_over_plain": round(common.median_ratio(times["lrp_signed"], times["plain"]), 3),
        "lrp_over_wanda": round(common.median_ratio(times["lrp"], times["wanda"]), 3),
    }


def memory_child(n: int, vocab: int, name: str | None = None) -> dict:
    """Run in a subprocess: peak RSS added by LRP scoring of ``n`` samples (batches of 4)."""
    from circuitcut.attribution import attribute

    model = build(vocab, name)
    data = samples(n, vocab)
    scoring = ScoringConfig(batch_size=4)
    attribute(model, data[:4], scoring, progress=False)  # allocator warm-up
    _, fig = common.peak_memory(lambda: attribute(model, data, scoring, progress=False))
    return {"samples": n, **fig}


def memory(vocab: int, threads: int, name: str | None = None) -> dict:
    """Peak memory for 8 and 64 samples, each in a fresh process."""
    out = {}
    for n in (8, 64):
        cmd = [sys.executable, __file__, "--memory-child", str(n), "--vocab", str(vocab), "--threads", str(threads),
               *(["--model", name] if name else [])]  # fmt: skip
        out[n] = common.child_json(cmd)
    out["peak_ratio_64_over_8"] = round(out[64]["peak_mib"] / out[8]["peak_mib"], 4)
    out["added_ratio_64_over_8"] = round(out[64]["added_mib"] / max(out[8]["added_mib"], 1e-9), 4)
    return out


def main() -> None:
    """Run the benchmark and print a JSON report."""
    p = common.parser(__doc__)
    p.add_argument("--repeats", type=int, default=7, help="timed repetitions of each pass (default 7)")
    p.add_argument("--vocab", type=int, default=32000, help="vocabulary size (default 32000, Llama's)")
    common.add_model(p, None, text="a real model instead (folder, .gguf, alias, hub id)")
    p.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = common.parse(p)
    if args.model is not None:  # token ids must be the model's
        from circuitcut.models import load_config

        args.vocab = int(load_config(args.model).get_text_config().vocab_size)
    if args.memory_child is not None:
        print(json.dumps(memory_child(args.memory_child, args.vocab, args.model)))
        return
    report = {
        "model": args.model or "llama hidden 256, 4 layers, batch 4 x 128",
        "threads": args.threads,
        "vocab": args.vocab,
    }
    report["timing"] = timing(args.repeats, args.vocab, args.model)
    report["memory"] = memory(args.vocab, args.threads, args.model)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
