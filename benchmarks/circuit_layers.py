"""Why LRP's neuron circuits trail gradient's on a real model: rules, layer budgets, within-layer order.

Usage::

    python benchmarks/circuit_layers.py --model ~/.cache/circuitcut/SmolLM2-135M-Instruct \\
        --ioi-lists ../shared/data/ioi/acdc_ioi_lists.json --tag smollm2

Three measurements on one reference set of IOI prompts, each a faithfulness curve of MLP-neuron
circuits (zero ablation) on held-out templates, summarised by the sweep's faithfulness area:

1. **Rules.** Gradient x input with one AttnLRP rule at a time (``+norm``, ``+gate``, ...) and LRP
   with one rule left out (``-norm``, ...), scored by the library's LRP with only those rules
   (``ScoringConfig.lrp_rules``; no rule is the plain gradient): which rule moves LRP's ranking away
   from gradient's, and whether that helps.
2. **Layer budget against within-layer order.** A global ranking decides two things: how many
   neurons each layer keeps (the budget) and which ones (the order). ``A|B`` keeps, at every size,
   the layer counts of B's global ranking and, in each layer, A's highest-scoring neurons. If
   ``lrp|gradient`` matches gradient, LRP's order is as good and its cross-layer calibration is
   what loses; if ``gradient|lrp`` falls to LRP's level, the budget is the culprit.
3. **Comparable layers.** Each layer's scores divided by their layer total before ranking
   (``A/layer``), and the same share kept in every layer (``A=layer``).

Also printed: each score set's share of the total per layer, the layer counts at a 5% circuit and the
rank correlation of the score sets (first reference set). With ``--seeds N`` every curve is the
faithfulness of the logit difference averaged over N reference sets, and its area the sweep's
(:class:`~circuitcut.circuits.sweep.SweepResult` of the measured curves).
Writes ``benchmarks/results/circuit-layers-TAG.json`` and ``.md`` (with the command).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import torch

import common
from circuitcut.attribution import attribute
from circuitcut.attribution.config import ScoringConfig
from circuitcut.attribution.methods import LRP_RULES
from circuitcut.circuits.config import DEFAULT_KEEP, SweepConfig
from circuitcut.circuits.sweep import SweepResult, empty_mask, kept_count
from circuitcut.pruning import masked, unit_mask
from circuitcut.scores import Scores
from circuitcut.tasks.base import task_metrics

#: rule names a score set may add or remove; ``attention`` is both attention rules
RULES = {**{r: (r,) for r in LRP_RULES}, "attention": ("attention_scores", "attention_values")}


def rule_sets(names: list[str], base: ScoringConfig) -> dict[str, ScoringConfig]:
    """Score-set names -> their scoring (``base`` with the method and LRP rules of the name).

    ``lrp`` and ``gradient`` are the methods; a name may go on with ``+RULE`` / ``-RULE`` steps
    (``gradient+norm``, ``lrp-attention-gate``, ``lrp-attention_scores``; ``attention`` is both
    attention rules); a name that starts with a step starts from gradient for ``+`` and from LRP
    for ``-`` (``+norm``, ``-attention``). A rule set is LRP with those rules only; none is the gradient.
    """
    out: dict[str, ScoringConfig] = {}
    for name in names:
        if name in ("lrp", "gradient"):
            out[name] = base.with_method(name)
            continue
        base_name, steps = {"+": ("gradient", name), "-": ("lrp", name)}.get(name[0], ("", name))
        for start in ("lrp", "gradient"):
            if not base_name and name.startswith(start):
                base_name, steps = start, name[len(start) :]
        parts = re.findall(r"([+-])([a-z_]+)", steps)
        if (
            not base_name
            or not parts
            or "".join(a + b for a, b in parts) != steps
            or any(r not in RULES for _, r in parts)
        ):
            raise SystemExit(
                f"unknown score set {name!r}: lrp or gradient, then +RULE / -RULE with RULE in {tuple(RULES)}"
            )
        rules = set(LRP_RULES) if base_name == "lrp" else set()
        for sign, rule in parts:
            for one in RULES[rule]:
                (rules.add if sign == "+" else rules.discard)(one)
        kept = tuple(r for r in LRP_RULES if r in rules)
        out[name] = replace(base.with_method("lrp"), lrp_rules=kept) if kept else base.with_method("gradient")
    return out


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean [L, N]: the k highest scores over the whole matrix."""
    keep = torch.zeros(scores.numel(), dtype=torch.bool)
    keep[torch.topk(scores.flatten(), k).indices] = True
    return keep.view_as(scores)


def with_budget(order: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Boolean [L, N]: in layer l, the counts[l] highest neurons by ``order``."""
    keep = torch.zeros(order.shape, dtype=torch.bool)
    for layer, c in enumerate(counts.tolist()):
        if c:
            keep[layer, torch.topk(order[layer], int(c)).indices] = True
    return keep


def uniform_counts(n_layers: int, k: int) -> torch.Tensor:
    """k spread over the layers as evenly as whole counts allow."""
    return torch.tensor([k // n_layers + (1 if i < k % n_layers else 0) for i in range(n_layers)])


def ranking(kind: str, sets: dict[str, torch.Tensor]) -> Callable[[int], torch.Tensor]:
    """A function k -> kept [L, N] for a ranking name (see the module docstring)."""
    if "|" in kind:
        order, budget = kind.split("|")
        return lambda k: with_budget(sets[order], top_k(sets[budget], k).sum(1))
    if kind.endswith("/layer"):
        s = sets[kind[: -len("/layer")]]
        normed = s / s.sum(1, keepdim=True).clamp_min(1e-30)
        return lambda k: top_k(normed, k)
    if kind.endswith("=layer"):
        s = sets[kind[: -len("=layer")]]
        return lambda k: with_budget(s, uniform_counts(s.shape[0], k))
    return lambda k: top_k(sets[kind], k)


@dataclass
class HeldOut:
    """The held-out IOI prompts, the full model's and the empty circuit's logit difference, and the
    planned circuit sizes (the sweep's kept fractions as neuron counts)."""

    model: torch.nn.Module
    adapter: Any
    prompts: Any
    pad: int
    dense: float = 0.0
    empty: float = 0.0

    def __post_init__(self) -> None:
        self.n_layers, width = self.adapter.n_layers, self.adapter.n_neurons
        self.n = self.n_layers * width
        self.plan = sorted({kept_count(k, self.n) for k in DEFAULT_KEEP}, reverse=True)
        self.dense = self.measure()
        with masked(self.adapter, empty_mask(self.adapter, "neuron", "all")):
            self.empty = self.measure()

    def measure(self) -> float:
        """The mean logit difference of the model as it is now (masks applied)."""
        return task_metrics(self.model, self.prompts, 64, self.pad)["logit_diff"]

    def curve(self, keep_of: Callable[[int], torch.Tensor]) -> list[float]:
        """The logit difference of the circuit ``keep_of(k)`` at every planned size k."""
        values = []
        for k in self.plan:
            if k == self.n:
                values.append(self.dense)
                continue
            kept = keep_of(k)
            chosen = Scores(neurons={i: kept[i].float() for i in range(self.n_layers)}, n_samples=1)
            with masked(self.adapter, unit_mask(chosen, self.adapter, "neuron", count=self.n - k)):
                values.append(self.measure())
        return values

    def as_sweep(self, curves: dict[str, list[list[float]]]) -> SweepResult:
        """Curves (per ranking, per reference set) as the sweep's result, for its summary figures."""
        points = [{"keep": k / self.n, "count": k, "fraction": k / self.n} for k in self.plan]
        seeds = len(next(iter(curves.values())))
        return SweepResult(SweepConfig(level="neuron", seeds=seeds), {"logit_diff": self.dense},
                           {"logit_diff": self.empty},
                           {kind: [[{"logit_diff": v} for v in run] for run in runs] for kind, runs in curves.items()},
                           {}, {}, {kind: points for kind in curves}, self.n)  # fmt: skip


def measure(
    held: HeldOut, attribution: Any, enc: Any, args: argparse.Namespace
) -> tuple[dict[str, list[list[float]]], dict[str, float], dict[str, torch.Tensor]]:
    """Per reference set, score every set, then evaluate every ranking. Returns the logit differences
    (per ranking, per set), the attribution seconds per score set and the first set's score matrices."""
    base = ScoringConfig(aggregation=args.aggregation, seed_mode=args.seed_mode, batch_size=16)
    scorings = rule_sets(args.sets, base)
    kinds = [*scorings, *args.rankings]
    metric: dict[str, list[list[float]]] = {kind: [] for kind in kinds}
    seconds: dict[str, float] = {}
    first: dict[str, torch.Tensor] = {}
    n_ref = min(args.n_ref, len(attribution))
    for seed in range(args.seeds):
        ref = attribution.subset(n_ref, seed).samples(enc)
        sets: dict[str, torch.Tensor] = {}
        for name, scoring in scorings.items():
            run = common.timed(partial(attribute, held.model, ref, scoring.with_seed(seed), adapter=held.adapter,
                                       levels=("neuron",), progress=False))  # fmt: skip
            sets[name] = run.value.neuron_matrix().float()
            seconds[name] = round(seconds.get(name, 0.0) + run.seconds, 1)
        first = first or dict(sets)
        for kind in kinds:
            metric[kind].append(held.curve(ranking(kind, sets)))
            print(f"seed {seed} {kind}: " + " ".join(f"{v:.2f}" for v in metric[kind][-1]), flush=True)
    return metric, seconds, first


def ranking_table(held: HeldOut, metric: dict[str, list[list[float]]]) -> tuple[list[str], dict[str, Any]]:
    """The table of rankings (faithfulness area, per size, per reference set) and its rows."""
    plan, n = held.plan, held.n
    lines = ["| ranking | faithfulness area | " + " | ".join(f"{100 * k / n:.2g}%" for k in plan) + " | per set |",
             "|---|---|" + "---|" * len(plan) + "---|"]  # fmt: skip
    result = held.as_sweep(metric)
    rows: dict[str, Any] = {}
    for kind, runs in metric.items():
        area, f = result.area(kind), result.faithfulness_curve(kind)
        each = [held.as_sweep({kind: [run]}).area(kind) for run in runs]
        rows[kind] = {"area": area, "faithfulness": f, "area_per_set": each, "logit_diff": runs}
        line = (f"| {kind} | {area:.3f} | " + " | ".join(f"{v:.2f}" for v in f)
                + " | " + ", ".join(f"{a:.3f}" for a in each) + " |")  # fmt: skip
        lines.append(line)
        print(line, flush=True)
    return lines, rows


def profile_table(sets: dict[str, torch.Tensor], n: int) -> tuple[list[str], dict[str, Any]]:
    """Each score set's share per layer, the layer counts of its 5% circuit, and the rank correlations."""
    five = kept_count(0.05, n)
    lines = ["", "Share of each score set's total per layer (%), and layer counts of the 5% circuit, on the first "
             f"reference set ({five} neurons):", "",
             "| layer | " + " | ".join(f"{s} share | {s} 5%" for s in sets) + " |", "|---|" + "---|---|" * len(sets)]  # fmt: skip
    profile: dict[str, Any] = {}
    for s, m in sets.items():
        profile[s] = {
            "share": (100 * m.sum(1) / m.sum()).tolist(),
            "counts_5pct": top_k(m, five).sum(1).tolist(),
        }
    for layer in range(next(iter(sets.values())).shape[0]):
        cells = [f"{profile[s]['share'][layer]:.1f} | {profile[s]['counts_5pct'][layer]}" for s in sets]
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    names = list(sets)
    lines += ["", "Spearman correlation of the neuron scores (all layers):", ""]
    ranks = {s: m.flatten().argsort().argsort().float() for s, m in sets.items()}
    for a in names:
        cells = [f"{torch.corrcoef(torch.stack([ranks[a], ranks[b]]))[0, 1].item():.3f}" for b in names]
        lines.append(f"- {a}: " + ", ".join(f"{b} {c}" for b, c in zip(names, cells, strict=True)))
    lines.append("")
    return lines, profile


def main() -> None:
    """Score, rank, evaluate, print and write the tables."""
    p = common.parser(__doc__)
    common.add_model(p)
    common.add_ioi(p, n_eval=100)
    p.add_argument("--sets", nargs="+", default=["lrp", "gradient", "+activation", "+norm", "+attention", "+gate",
                                                 "-norm", "-attention", "-gate"],
                   help="score sets: lrp, gradient, +RULE (gradient with one rule), -RULE (LRP without it)")  # fmt: skip
    p.add_argument("--rankings", nargs="*", default=["lrp|gradient", "gradient|lrp", "lrp/layer", "gradient/layer",
                                                     "lrp=layer", "gradient=layer"],
                   help="extra rankings: A|B (A's order, B's layer budget), A/layer, A=layer")  # fmt: skip
    p.add_argument("--aggregation", default="abs")
    p.add_argument("--seed-mode", default="unit", choices=["unit", "value"])
    common.add_results(p)
    args = common.parse(p)
    model, _, adapter, enc = common.load(args.model)
    attribution, evaluation = common.ioi_splits(enc, args)
    held = HeldOut(model, adapter, evaluation.encode(enc), enc.pad_id)
    metric, seconds, first = measure(held, attribution, enc, args)
    command = common.command()
    n_ref = min(args.n_ref, len(attribution))
    lines = [f"## Why LRP's IOI neuron circuits trail gradient's: {args.model}", "", f"Command: `{command}`", "",
             f"{len(held.prompts.prompts)} held-out prompts, {args.seeds} reference set(s) of {n_ref}, zero ablation, "
             f"aggregation `{args.aggregation}`, {args.seed_mode} seeds; faithfulness of the logit difference "
             f"averaged over reference sets; full model {held.dense:.3f}, empty circuit {held.empty:.3f}. Area per "
             "reference set in the last column.", ""]  # fmt: skip
    table, rows = ranking_table(held, metric)
    profile_lines, profile = profile_table(first, held.n)
    lines += table + profile_lines
    payload = {"command": command, "dense": held.dense, "empty": held.empty, "plan": held.plan, "n": held.n,
               "rows": rows, "profile": profile, "attribution_seconds": seconds}  # fmt: skip
    common.write_results(args, f"circuit-layers-{common.tag_of(args, args.model)}", payload, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
