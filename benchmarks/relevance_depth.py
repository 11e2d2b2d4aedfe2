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
the number of layers. Gradient x input is given for comparison (not conservative either). The
backward is the library's (:func:`circuitcut.attribution.explain`, whose per-token input relevance
is the ``input`` row); hooks read the gradient of the stream entering each layer.
Writes ``benchmarks/results/relevance-depth-TAG.json`` and ``.md`` (with the command).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

import common
from circuitcut.attribution import explain
from circuitcut.attribution.config import ScoringConfig
from circuitcut.attribution.targets import Sample, collate, explained_outputs

#: the backwards compared: AttnLRP, CP-LRP and the plain gradient, each with value seeds
SCORINGS = {
    "attnlrp": ScoringConfig(method="lrp", variant="attnlrp", seed_mode="value", batch_size=16),
    "cp-lrp": ScoringConfig(method="lrp", variant="cp-lrp", seed_mode="value", batch_size=16),
    "gradient": ScoringConfig(method="gradient", seed_mode="value", batch_size=16),
}


class StreamProbe:
    """Hooks that keep, per forward of the model, its logits and the residual stream entering each
    of ``sites`` with the gradient the backward gives it."""

    def __init__(self, model: torch.nn.Module, sites: Sequence[torch.nn.Module]) -> None:
        self.model, self.sites = model, list(sites)
        self.logits: list[torch.Tensor] = []
        self.streams: list[list[dict[str, torch.Tensor]]] = []
        self._handles: list[Any] = []

    def _start(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        self.streams.append([])

    def _end(self, module: torch.nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
        self.logits.append(out.logits.detach())

    def _grab(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        h = args[0] if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor))
        slot = {"h": h.detach()}
        h.register_hook(lambda g, slot=slot: slot.__setitem__("grad", g))
        self.streams[-1].append(slot)

    def __enter__(self) -> StreamProbe:
        self._handles = [self.model.register_forward_pre_hook(self._start, with_kwargs=True),
                         self.model.register_forward_hook(self._end, with_kwargs=True)]  # fmt: skip
        self._handles += [m.register_forward_pre_hook(self._grab, with_kwargs=True) for m in self.sites]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()


def shares_by_depth(
    model: torch.nn.Module, adapter: Any, samples: list[Sample], scoring: ScoringConfig
) -> list[float]:
    """Mean over samples of (relevance at the input, at each layer's input, then at the final norm's
    input) / the explained value."""
    sites = [layer.module for layer in adapter.layers] + [adapter.final_norm]
    with StreamProbe(model, sites) as probe:
        inputs = explain(model, samples, scoring, adapter=adapter)
    size = scoring.batch_size
    per_sample: list[torch.Tensor] = []
    for b, (logits, streams) in enumerate(zip(probe.logits, probe.streams, strict=True)):
        chunk = samples[b * size : (b + 1) * size]
        _, mask = collate(chunk)
        values, _ = explained_outputs(logits, chunk)
        depth = torch.stack(
            [(s["h"] * s["grad"] * mask[..., None]).sum((1, 2)) for s in streams], 1
        )  # [B, L+1]
        first = torch.stack([r.sum() for r in inputs[b * size : (b + 1) * size]])[:, None]
        per_sample.append(torch.cat([first, depth], 1) / values[:, None])
    return torch.cat(per_sample).mean(0).tolist()


def main() -> None:
    """Measure, print and write the table."""
    p = common.parser(__doc__)
    common.add_model(p)
    p.add_argument("--ioi-lists", default=None, help="IOI lists (ACDC layout); default: the zoo's own")
    p.add_argument("--n-ref", type=int, default=64)
    common.add_results(p)
    args = common.parse(p)
    model, _, adapter, enc = common.load(args.model)
    attribution, _ = common.ioi_splits(enc, args, max(args.n_ref, 16), 16)
    samples = attribution.subset(min(args.n_ref, len(attribution)), 0).samples(enc)
    shares = {name: shares_by_depth(model, adapter, samples, s) for name, s in SCORINGS.items()}
    command = common.command()
    lines = [f"## Share of the explained logit difference reaching each depth: {args.model}", "",
             f"Command: `{command}`", "",
             f"{len(samples)} IOI reference prompts, value seeds; relevance summed over tokens and features of "
             "the residual stream entering each decoder layer (`input` = the token embeddings, `final norm` = "
             "the stream entering the last norm), divided by the explained value, mean over prompts.", "",
             "| depth | " + " | ".join(SCORINGS) + " |", "|---|" + "---|" * len(SCORINGS)]  # fmt: skip
    names = ["input", *[f"layer {i}" for i in range(adapter.n_layers)], "final norm"]
    for i, name in enumerate(names):
        lines.append(f"| {name} | " + " | ".join(f"{shares[m][i]:.3f}" for m in SCORINGS) + " |")
    lines.append("")
    payload = {"command": command, "depths": names, "shares": shares, "n_prompts": len(samples)}
    common.write_results(
        args, f"relevance-depth-{common.tag_of(args, args.model)}", payload, "\n".join(lines)
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
