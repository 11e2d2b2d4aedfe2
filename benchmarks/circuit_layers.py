"""Why LRP's neuron circuits trail gradient's on a real model: rules, layer budgets, within-layer order.

Usage::

    python benchmarks/circuit_layers.py --model ~/.cache/circuitcut/SmolLM2-135M-Instruct \\
        --ioi-lists ../shared/data/ioi/acdc_ioi_lists.json --tag smollm2

Three measurements on one reference set of IOI prompts, each a faithfulness curve of MLP-neuron
circuits (zero ablation) on held-out templates, summarised by the sweep's faithfulness area:

1. **Rules.** Gradient x input with one AttnLRP rule at a time (``+norm``, ``+gate``, ...) and LRP
   with one rule left out (``-norm``, ...), via :class:`~circuitcut.attribution.rules.LRPRules`'
   ``rules`` argument: which rule moves LRP's ranking away from gradient's, and whether that helps.
2. **Layer budget against within-layer order.** A global ranking decides two things: how many
   neurons each layer keeps (the budget) and which ones (the order). ``A|B`` keeps, at every size,
   the layer counts of B's global ranking and, in each layer, A's highest-scoring neurons. If
   ``lrp|gradient`` matches gradient, LRP's order is as good and its cross-layer calibration is
   what loses; if ``gradient|lrp`` falls to LRP's level, the budget is the culprit.
3. **Comparable layers.** Each layer's scores divided by their layer total before ranking
   (``A/layer``), and the same share kept in every layer (``A=layer``).

Also printed: each score set's share of the total per layer, the layer counts at a 5% circuit and the
rank correlation of the score sets (first reference set). With ``--seeds N`` every curve is the
faithfulness of the logit difference averaged over N reference sets, as in the sweep.
Writes ``benchmarks/results/circuit-layers-TAG.json`` and ``.md`` (with the command).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from circuitcut.attribution import attribute
from circuitcut.attribution.methods import LRP_RULES
from circuitcut.attribution.rules import LRPRules
from circuitcut.circuits.sweep import DEFAULT_KEEP, empty_mask, kept_count, trapezoid
from circuitcut.encoding import as_encoder
from circuitcut.models import load_model
from circuitcut.pruning import masked, unit_mask
from circuitcut.scores import Scores
from circuitcut.tasks.base import faithfulness, task_metrics
from circuitcut.workflows.circuit import task_splits

RESULTS = Path(__file__).resolve().parent / "results"
#: rule names a score set may add or remove; ``attention`` is both attention rules
RULES = {**{r: (r,) for r in LRP_RULES}, "attention": ("attention_scores", "attention_values")}


def rule_sets(names: list[str]) -> dict[str, tuple[str, frozenset[str] | None]]:
    """Score-set names -> (attribution method, LRP rules installed around it or None).

    ``lrp`` and ``gradient`` are the methods; a name may go on with ``+RULE`` / ``-RULE`` steps
    (``gradient+norm``, ``lrp-attention-gate``, ``lrp-attention_scores``; ``attention`` is both
    attention rules); a name that starts with a step starts from gradient for ``+`` and from LRP
    for ``-`` (``+norm``, ``-attention``).
    """
    out: dict[str, tuple[str, frozenset[str] | None]] = {}
    for name in names:
        if name in ("lrp", "gradient"):
            out[name] = (name, None)
            continue
        base, steps = {"+": ("gradient", name), "-": ("lrp", name)}.get(name[0], ("", name))
        for start in ("lrp", "gradient"):
            if not base and name.startswith(start):
                base, steps = start, name[len(start) :]
        parts = re.findall(r"([+-])([a-z_]+)", steps)
        if (
            not base
            or not parts
            or "".join(a + b for a, b in parts) != steps
            or any(r not in RULES for _, r in parts)
        ):
            raise SystemExit(
                f"unknown score set {name!r}: lrp or gradient, then +RULE / -RULE with RULE in {tuple(RULES)}"
            )
        rules = set(LRP_RULES) if base == "lrp" else set()
        for sign, rule in parts:
            for one in RULES[rule]:
                (rules.add if sign == "+" else rules.discard)(one)
        out[name] = ("gradient", frozenset(rules))
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


def ranking(kind: str, sets: dict[str, torch.Tensor]):
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


def main() -> None:
    """Score, rank, evaluate, print and write the tables."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="circuitcut/ref-llama")
    p.add_argument("--ioi-lists", default=None, help="IOI lists (ACDC layout); default: the zoo's own")
    p.add_argument("--sets", nargs="+", default=["lrp", "gradient", "+activation", "+norm", "+attention", "+gate",
                                                 "-norm", "-attention", "-gate"],
                   help="score sets: lrp, gradient, +RULE (gradient with one rule), -RULE (LRP without it)")  # fmt: skip
    p.add_argument("--rankings", nargs="*", default=["lrp|gradient", "gradient|lrp", "lrp/layer", "gradient/layer",
                                                     "lrp=layer", "gradient=layer"],
                   help="extra rankings: A|B (A's order, B's layer budget), A/layer, A=layer")  # fmt: skip
    p.add_argument("--aggregation", default="abs")
    p.add_argument("--seed-mode", default="unit", choices=["unit", "value"])
    p.add_argument("--seeds", type=int, default=1, help="reference sets (drawn with seeds 0..N-1)")
    p.add_argument("--n-ref", type=int, default=64)
    p.add_argument("--n-attribution", type=int, default=128)
    p.add_argument("--n-eval", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tag", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, tok, adapter = load_model(args.model, progress=False)
    enc = as_encoder(tok, model)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    attribution, evaluation = task_splits(
        "ioi", enc, args.n_attribution, args.n_eval, ioi_lists=args.ioi_lists
    )
    held = evaluation.encode(enc)
    dense = task_metrics(model, held, 64, pad)["logit_diff"]
    with masked(adapter, empty_mask(adapter, "neuron", "all")):
        empty = task_metrics(model, held, 64, pad)["logit_diff"]
    n_layers, width = adapter.n_layers, adapter.n_neurons
    n = n_layers * width
    plan = sorted({kept_count(k, n) for k in DEFAULT_KEEP}, reverse=True)
    xs = [math.log10(k / n) for k in plan]
    span = max(xs) - min(xs)
    kinds = [*rule_sets(args.sets), *args.rankings]
    #: per ranking, per seed, the held-out logit difference at every planned size
    metric: dict[str, list[list[float]]] = {kind: [] for kind in kinds}
    seconds: dict[str, float] = {}
    n_ref = min(args.n_ref, len(attribution))
    for seed in range(args.seeds):
        ref = attribution.subset(n_ref, seed).samples(enc)
        sets: dict[str, torch.Tensor] = {}
        for name, (method, rules) in rule_sets(args.sets).items():
            start = time.perf_counter()
            ctx = LRPRules(adapter, rules=rules) if rules is not None else nullcontext()
            with ctx:
                scores = attribute(model, ref, method, adapter=adapter, levels=("neuron",),
                                   aggregation=args.aggregation, seed_mode=args.seed_mode, batch_size=16,
                                   pad_id=pad, seed=seed, progress=False)  # fmt: skip
            sets[name] = scores.neuron_matrix().float()
            seconds[name] = round(seconds.get(name, 0.0) + time.perf_counter() - start, 1)
        if seed == 0:
            first = dict(sets)
        for kind in kinds:
            keep_of = ranking(kind, sets)
            values = []
            for k in plan:
                if k == n:
                    values.append(dense)
                    continue
                kept = keep_of(k)
                chosen = Scores(neurons={i: kept[i].float() for i in range(n_layers)}, n_samples=1)
                with masked(adapter, unit_mask(chosen, adapter, "neuron", count=n - k)):
                    values.append(task_metrics(model, held, 64, pad)["logit_diff"])
            metric[kind].append(values)
            print(f"seed {seed} {kind}: " + " ".join(f"{v:.2f}" for v in values), flush=True)

    command = "python benchmarks/circuit_layers.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = [f"## Why LRP's IOI neuron circuits trail gradient's: {args.model}", "", f"Command: `{command}`", "",
             f"{len(held.prompts)} held-out prompts, {args.seeds} reference set(s) of {n_ref}, zero ablation, "
             f"aggregation `{args.aggregation}`, {args.seed_mode} seeds; faithfulness of the logit difference "
             f"averaged over reference sets; full model {dense:.3f}, empty circuit {empty:.3f}. Area per "
             "reference set in the last column.", "",
             "| ranking | faithfulness area | " + " | ".join(f"{100 * k / n:.2g}%" for k in plan) + " | per set |",
             "|---|---|" + "---|" * len(plan) + "---|"]  # fmt: skip
    rows: dict[str, Any] = {}
    for kind in kinds:
        mean = [sum(col) / len(col) for col in zip(*metric[kind], strict=True)]
        f = [faithfulness(v, dense, empty) for v in mean]
        area = trapezoid(xs, f) / span
        each = [trapezoid(xs, [faithfulness(v, dense, empty) for v in run]) / span for run in metric[kind]]
        rows[kind] = {"area": area, "faithfulness": f, "area_per_set": each, "logit_diff": metric[kind]}
        line = (f"| {kind} | {area:.3f} | " + " | ".join(f"{v:.2f}" for v in f)
                + " | " + ", ".join(f"{a:.3f}" for a in each) + " |")  # fmt: skip
        lines.append(line)
        print(line, flush=True)
    sets = first

    five = kept_count(0.05, n)
    lines += ["", "Share of each score set's total per layer (%), and layer counts of the 5% circuit, on the first "
              "reference set "
              f"({five} neurons):", "",
              "| layer | " + " | ".join(f"{s} share | {s} 5%" for s in sets) + " |",
              "|---|" + "---|---|" * len(sets)]  # fmt: skip
    profile: dict[str, Any] = {}
    for s, m in sets.items():
        profile[s] = {
            "share": (100 * m.sum(1) / m.sum()).tolist(),
            "counts_5pct": top_k(m, five).sum(1).tolist(),
        }
    for layer in range(n_layers):
        cells = [f"{profile[s]['share'][layer]:.1f} | {profile[s]['counts_5pct'][layer]}" for s in sets]
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    names = list(sets)
    lines += ["", "Spearman correlation of the neuron scores (all layers):", ""]
    ranks = {s: m.flatten().argsort().argsort().float() for s, m in sets.items()}
    for a in names:
        cells = [f"{torch.corrcoef(torch.stack([ranks[a], ranks[b]]))[0, 1].item():.3f}" for b in names]
        lines.append(f"- {a}: " + ", ".join(f"{b} {c}" for b, c in zip(names, cells, strict=True)))
    lines.append("")
    tag = args.tag or Path(args.model).name
    RESULTS.mkdir(exist_ok=True)
    payload = {"command": command, "dense": dense, "empty": empty, "plan": plan, "n": n, "rows": rows,
               "profile": profile, "attribution_seconds": seconds}  # fmt: skip
    (RESULTS / f"circuit-layers-{tag}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / f"circuit-layers-{tag}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
