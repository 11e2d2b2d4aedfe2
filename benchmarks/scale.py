"""Scale: the 2-process speed-up of LRP scoring, and its peak memory against a plain forward+backward.

Usage::

    python benchmarks/scale.py [--samples 32] [--seqlen 128] [--skip-speedup] [--skip-memory]

* Speed-up: the same LRP scoring (reference model, ``--samples`` windows) in one process and in two
  processes launched by ``torchrun`` (gloo), each with ``torch.set_num_threads(1)``; the time is the
  slowest rank's ``attribute`` call, model loading excluded; median of ``--repeats`` launches.
* Memory: each measurement runs in a fresh process; after loading and one warm-up pass the
  kernel's peak-RSS mark is reset, then one pass runs and the peak is read. "Added" is the peak
  minus the resident memory before the pass. Compared: a plain forward+backward of the next-token
  loss (weight gradients included), LRP scoring of the same batch, and LRP with gradient checkpointing.
  Models: the two reference models and a Llama-style model of about 100M parameters built from a config.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import torch

import common
from circuitcut.attribution.config import Execution, ScoringConfig

HERE = os.path.abspath(__file__)


def _model(name: str) -> torch.nn.Module:
    if name == "llama-100m":
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=32000, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                          num_key_value_heads=4, intermediate_size=2048, max_position_embeddings=1024)  # fmt: skip
        return LlamaForCausalLM(cfg).eval()
    from circuitcut.models import load_model

    return load_model(name)[0]


def _samples(vocab: int, n: int, seqlen: int) -> list:
    from circuitcut.attribution import next_token_sample

    g = torch.Generator().manual_seed(0)
    return [next_token_sample(torch.randint(3, vocab, (seqlen,), generator=g).tolist()) for _ in range(n)]


def speed_child(args: argparse.Namespace) -> None:
    """One process of the speed-up measurement (single or under torchrun)."""
    from circuitcut.attribution import attribute
    from circuitcut.distributed import init_from_env, is_main_process, shutdown

    torch.set_num_threads(1)
    init_from_env(backend="gloo")
    model = _model(args.model)
    data = _samples(model.config.vocab_size, args.samples, args.seqlen)
    scoring = ScoringConfig(batch_size=4)
    attribute(model, data[:8], scoring, progress=False)  # warm-up: two batches, one per rank
    elapsed = torch.tensor([common.timed(lambda: attribute(model, data, scoring, progress=False)).seconds])
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(elapsed, op=torch.distributed.ReduceOp.MAX)
    if is_main_process():
        print(json.dumps({"seconds": float(elapsed)}))
    shutdown()


def memory_child(args: argparse.Namespace) -> None:
    """One memory measurement in a fresh process."""
    from circuitcut.attribution import attribute
    from circuitcut.attribution.memory import estimate_memory
    from circuitcut.models import get_adapter

    model = _model(args.model)
    args.seqlen = min(args.seqlen, getattr(model.config, "max_position_embeddings", args.seqlen))
    data = _samples(model.config.vocab_size, args.batch, args.seqlen)
    ids = torch.tensor([s.input_ids for s in data])

    def plain() -> None:
        """A forward + backward of the next-token loss."""
        logits = model(input_ids=ids).logits
        torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).backward()
        model.zero_grad(set_to_none=True)

    def lrp(ckpt: bool) -> None:
        """LRP scoring of the batch (``ckpt``: with gradient checkpointing)."""
        execution = Execution(gradient_checkpointing=ckpt)
        attribute(model, data, ScoringConfig(batch_size=args.batch), progress=False, execution=execution)

    run = {"plain": plain, "lrp": lambda: lrp(False), "lrp_checkpointing": lambda: lrp(True)}[args.kind]
    run()  # warm-up: allocator pools, accumulators
    _, fig = common.peak_memory(run)
    est = estimate_memory(
        get_adapter(model), args.batch, args.seqlen, checkpointing=args.kind == "lrp_checkpointing"
    )
    print(json.dumps({"seqlen": args.seqlen, **fig, "estimate_gib": est["total"],
                      "params": sum(p.numel() for p in model.parameters())}))  # fmt: skip


def _child(extra: list[str], torchrun: int = 0) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable]
    if torchrun:
        base += ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(torchrun)]
    return common.child_json([*base, HERE, *extra], env)


def main() -> None:
    """Run the measurements and print a JSON report."""
    p = common.parser(__doc__)
    common.add_model(p)
    p.add_argument("--samples", type=int, default=32, help="windows scored in the speed-up test (default 32)")
    p.add_argument("--seqlen", type=int, default=128, help="tokens per window (default 128)")
    p.add_argument("--batch", type=int, default=4, help="batch of the memory test (default 4)")
    p.add_argument("--repeats", type=int, default=3, help="launches per speed measurement (default 3)")
    p.add_argument("--kind", default=None, help=argparse.SUPPRESS)
    p.add_argument("--role", default=None, help=argparse.SUPPRESS)
    p.add_argument("--skip-speedup", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    args = common.parse(p)
    if args.role == "speed":
        return speed_child(args)
    if args.role == "memory":
        return memory_child(args)
    report: dict = {}
    shared = ["--samples", str(args.samples), "--seqlen", str(args.seqlen), "--model", args.model]
    if not args.skip_speedup:
        one, two = [], []
        for _ in range(args.repeats):  # interleaved launches
            one.append(_child(["--role", "speed", *shared])["seconds"])
            two.append(_child(["--role", "speed", *shared], torchrun=2)["seconds"])
        report["speedup"] = {"model": args.model, "samples": args.samples, "seqlen": args.seqlen,
                             "one_process_s": one, "two_processes_s": two,
                             "median_speedup": round(statistics.median(a / b for a, b in zip(one, two, strict=True)), 3)}  # fmt: skip
    if not args.skip_memory:
        report["memory"] = {}
        for model in ("circuitcut/ref-llama", "circuitcut/ref-opt", "llama-100m"):
            row = {}
            for kind in ("plain", "lrp", "lrp_checkpointing"):
                row[kind] = _child(["--role", "memory", "--kind", kind, "--model", model, "--batch", str(args.batch),
                                    "--seqlen", str(args.seqlen), "--threads", str(args.threads)])  # fmt: skip
            row["lrp_over_plain_peak"] = round(row["lrp"]["peak_mib"] / row["plain"]["peak_mib"], 3)
            row["lrp_over_plain_added"] = round(row["lrp"]["added_mib"] / row["plain"]["added_mib"], 3)
            row["checkpointing_over_lrp_added"] = round(
                row["lrp_checkpointing"]["added_mib"] / row["lrp"]["added_mib"], 3
            )
            report["memory"][model] = row
            print(model, json.dumps(row), flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
