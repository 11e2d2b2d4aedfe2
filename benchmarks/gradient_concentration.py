"""How the attribution gradient at a layer's output is spread over the tokens of calibration windows.

Usage::

    python benchmarks/gradient_concentration.py --model ~/.cache/circuitcut/gemma-3-270m \\
        --calibration ../shared/data/wikitext-2/valid.txt --tag gemma3

For every linear of the chosen roles (default the down projections) and every calibration window,
``p_t = sum_i |G_ti| / sum_t' sum_i |G_t'i|`` is token ``t``'s share of the gradient at the layer's
output under the method's backward (LRP by default, the backward that ``token_abs`` weighs tokens
by). The table gives, per layer, the effective number of tokens ``1 / sum_t p_t^2`` (the window's
length when every token weighs the same, 1 when one token carries everything) and the shares of the
first token and of the first four, averaged over windows. This is the measurement behind the
``token_norm`` aggregation (docs/compression.md). Writes ``gradient-concentration-TAG.json`` and
``.md``.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

import common
from circuitcut.attribution import attribute
from circuitcut.attribution.config import ScoringConfig
from circuitcut.data import calibration_samples
from circuitcut.evaluation import load_text


def measure(loaded: common.Loaded, text: str, args: Any) -> dict[str, dict[str, float]]:
    """Per linear: mean effective tokens and first-token shares over the calibration windows."""
    samples = calibration_samples(loaded.encoder, text, args.n_samples, args.seqlen, seed=args.seed)
    stats: dict[str, list[tuple[float, float, float]]] = {}
    linears = [lin for lin in loaded.adapter.linears() if lin.role in args.roles]
    if not linears:
        raise SystemExit(f"no linear has a role in {args.roles}")

    def hook(name: str) -> Any:
        def forward(module: Any, inputs: tuple, out: torch.Tensor) -> None:
            if out.requires_grad:
                out.register_hook(lambda g: record(name, g))

        return forward

    def record(name: str, g: torch.Tensor) -> None:
        mass = g.detach().float().abs().sum(-1).reshape(-1, args.seqlen)  # [windows, tokens]
        p = mass / mass.sum(1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
        for row in p:
            stats.setdefault(name, []).append(
                (float(1 / row.square().sum()), float(row[0]), float(row[:4].sum()))
            )

    # prepend: the gradient at each layer's own output, before any LRP rule wraps it (as the collector)
    handles = [lin.module.register_forward_hook(hook(lin.name), prepend=True) for lin in linears]
    try:
        scoring = ScoringConfig(method=args.method, batch_size=args.batch_size)
        attribute(loaded.model, samples, scoring, adapter=loaded.adapter, levels=("neuron",), progress=False)
    finally:
        for h in handles:
            h.remove()
    return {
        name: {
            "effective_tokens": statistics.fmean(v[0] for v in rows),
            "first_token_share": statistics.fmean(v[1] for v in rows),
            "first_four_share": statistics.fmean(v[2] for v in rows),
        }
        for name, rows in ((lin.name, stats[lin.name]) for lin in linears if lin.name in stats)
    }  # in the model's order


def markdown(payload: dict[str, Any]) -> str:
    """One table per model."""
    lines = [f"## Gradient concentration over tokens ({payload['method']} backward)", "",
             f"Command: `{payload['command']}`", "",
             f"{payload['n_samples']} windows of {payload['seqlen']} tokens of `{payload['calibration']}`; "
             f"per layer, the mean over windows.", ""]  # fmt: skip
    for model, rows in payload["models"].items():
        lines += [f"### {model}", "", "| layer | effective tokens | first token's share | first four's share |",
                  "|---|---|---|---|"]  # fmt: skip
        for name, r in rows.items():
            lines.append(f"| {name} | {r['effective_tokens']:.1f} | {r['first_token_share']:.3f} | "
                         f"{r['first_four_share']:.3f} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    """Measure each model and write the tables."""
    p = common.parser(__doc__)
    common.add_models(p, default=(common.REFERENCE_MODELS[0],))
    common.add_results(p, tag="gradient-concentration")
    p.add_argument("--calibration", required=True, help="calibration text file")
    p.add_argument("--roles", nargs="+", default=["down"], help="projection roles measured (default down)")
    p.add_argument("--method", default="lrp", choices=["lrp", "gradient"], help="the backward (default lrp)")
    p.add_argument("--n-samples", type=int, default=16, help="calibration windows (default 16)")
    p.add_argument("--seqlen", type=int, default=128, help="tokens per window (default 128)")
    p.add_argument("--batch-size", type=int, default=2, help="windows per backward (default 2)")
    p.add_argument("--seed", type=int, default=0, help="calibration draw (default 0)")
    args = common.parse(p)
    text = load_text(args.calibration)
    payload: dict[str, Any] = {
        "command": common.command(), "method": args.method, "n_samples": args.n_samples, "seqlen": args.seqlen,
        "calibration": args.calibration, "roles": args.roles, "models": {},
    }  # fmt: skip
    for name in common.models(args):
        payload["models"][name] = measure(common.load(name), text, args)
    tag = args.tag if args.tag.startswith("gradient-concentration") else f"gradient-concentration-{args.tag}"
    common.write_results(args, tag, payload, markdown(payload))
    print(markdown(payload))


if __name__ == "__main__":
    main()
