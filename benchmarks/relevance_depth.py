"""How much of the explained value LRP's relevance keeps at each depth of a model.

Usage::

    python benchmarks/relevance_depth.py --model ~/.cache/circuitcut/SmolLM2-135M-Instruct \\
        --ioi-lists ../shared/data/ioi/acdc_ioi_lists.json --tag smollm2

Each IOI reference prompt explains its logit difference (IO minus S), seeded with its own value.
The residual stream entering decoder layer ``l`` carries everything the later layers use, so the
relevance summed over its tokens and features, ``sum(h_l * dF/dh_l)`` under the LRP backward, is the
share of the explained value that reaches that depth. An exactly conservative rule set (CP-LRP on
a bias-free model) keeps 1 at every depth; AttnLRP's softmax and uniform rules are not conservative
(Achtibat et al., ICML 2024, report input sums below the logit), and what they lose compounds with
the number of layers. Gradient x input is given for comparison (not conservative either).
Writes ``benchmarks/results/relevance-depth-TAG.json`` and ``.md`` (with the command).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

from circuitcut.attribution.rules import LRPRules, eval_mode
from circuitcut.attribution.targets import collate, explained_outputs
from circuitcut.encoding import as_encoder
from circuitcut.models import load_model
from circuitcut.workflows.circuit import task_splits

RESULTS = Path(__file__).resolve().parent / "results"


def shares_by_depth(
    model: torch.nn.Module, adapter, samples, pad: int, method: str, batch: int = 16
) -> list[float]:
    """Mean over samples of (relevance at each layer's input, then at the final norm's input) / value."""
    per_sample: list[torch.Tensor] = []
    # ``method`` is an LRP variant, or "gradient" for the plain backward
    ctx = (lambda: eval_mode(model)) if method == "gradient" else (lambda: LRPRules(adapter, method))
    sites = [layer.module for layer in adapter.layers] + [adapter.final_norm]
    for start in range(0, len(samples), batch):
        chunk = samples[start : start + batch]
        ids, mask = collate(chunk, pad)
        captured: list[torch.Tensor] = []

        def grab(module, args, kwargs, captured=captured):
            h = args[0] if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor))
            h.retain_grad()
            captured.append(h)

        handles = [m.register_forward_pre_hook(grab, with_kwargs=True) for m in sites]
        try:
            with ctx():
                embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
                logits = model(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits
                values, _ = explained_outputs(logits, chunk)
                values.sum().backward()
        finally:
            for h in handles:
                h.remove()
        rel = torch.stack(
            [(h.detach() * h.grad * mask[..., None]).sum((1, 2)) for h in captured], 1
        )  # [B, L+1]
        inputs = (embeds.detach() * embeds.grad * mask[..., None]).sum((1, 2))[:, None]
        per_sample.append(torch.cat([inputs, rel], 1) / values.detach()[:, None])
        model.zero_grad(set_to_none=True)
    return torch.cat(per_sample).mean(0).tolist()


def main() -> None:
    """Measure, print and write the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="circuitcut/ref-llama")
    p.add_argument("--ioi-lists", default=None, help="IOI lists (ACDC layout); default: the zoo's own")
    p.add_argument("--n-ref", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tag", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, tok, adapter = load_model(args.model, progress=False)
    enc = as_encoder(tok, model)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    attribution, _ = task_splits("ioi", enc, max(args.n_ref, 16), 16, ioi_lists=args.ioi_lists)
    samples = attribution.subset(min(args.n_ref, len(attribution)), 0).samples(enc)
    methods = ("attnlrp", "cp-lrp", "gradient")
    shares = {m: shares_by_depth(model, adapter, samples, pad, m) for m in methods}
    command = "python benchmarks/relevance_depth.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = [f"## Share of the explained logit difference reaching each depth: {args.model}", "",
             f"Command: `{command}`", "",
             f"{len(samples)} IOI reference prompts, value seeds; relevance summed over tokens and features of "
             "the residual stream entering each decoder layer (`input` = the token embeddings, `final norm` = "
             "the stream entering the last norm), divided by the explained value, mean over prompts.", "",
             "| depth | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]  # fmt: skip
    names = ["input", *[f"layer {i}" for i in range(adapter.n_layers)], "final norm"]
    for i, name in enumerate(names):
        lines.append(f"| {name} | " + " | ".join(f"{shares[m][i]:.3f}" for m in methods) + " |")
    lines.append("")
    tag = args.tag or Path(args.model).name
    RESULTS.mkdir(exist_ok=True)
    payload = {"command": command, "depths": names, "shares": shares, "n_prompts": len(samples)}
    (RESULTS / f"relevance-depth-{tag}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / f"relevance-depth-{tag}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
