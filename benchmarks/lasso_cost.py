"""What a feature ranking costs on a real model: CircuitLasso against attribution patching, timed in turns.

Usage (SAEs from ``circuitcut sae train``, as for ``benchmarks/lasso_real.py``)::

    python benchmarks/lasso_cost.py --model ~/.cache/circuitcut/SmolLM2-135M-Instruct --sae runs/sae-smollm2

On the IOI attribution prompts (the standard lists), each round runs, in turn (every other round in
reverse order, so load on the machine falls on all alike): CircuitLasso as ``circuitcut lasso`` runs
it (codes of the prompts and of their counterfactuals at the explained position, then the fit),
attribution patching of the features against zero, against the counterfactual (its codes
included), attribution patching of nodes and edges (edges into the top 16 features of each site, as
the faithfulness run of ``lasso_real.py``: the circuit with its graph, as CircuitLasso gives one) and
integrated gradients (5 steps, its counterfactual codes included); ``--rankings`` picks some. It
reports the median seconds of each and CircuitLasso's median ratio to each baseline, round by round.
Writes ``lasso-cost-TAG.{json,md}``.
"""

from __future__ import annotations

import statistics
from typing import Any

import common
from circuitcut.encoding import pad_id
from circuitcut.io import read_json
from circuitcut.lasso.node_scores import attribution_patching, counterfactual_codes, integrated_gradients
from circuitcut.models import as_loaded
from circuitcut.tasks.splits import task_splits
from circuitcut.workflows.lasso import EDGES_PER_SITE, EVAL_BATCH, circuit_lasso_ranking, get_saes
from lasso_real import LISTS

#: the baselines this benchmark can time beside CircuitLasso
RANKINGS = ("attribution_patching", "attribution_patching_counterfactual", "attribution_patching_nodes_and_edges",
            "integrated_gradients")  # fmt: skip


def markdown(res: dict[str, Any]) -> str:
    """The cost table."""
    lines = [f"# Cost of a feature ranking: {res['model']}", "", f"Command: `{res['command']}`", "",
             f"{res['n_attribution']} IOI attribution prompts, {res['rounds']} rounds in turns, sites "
             f"{', '.join(res['sites'])}.", "", "| ranking | median seconds | model passes | CircuitLasso / it (median of rounds) |",
             "|---|---|---|---|"]  # fmt: skip
    for name, r in res["runs"].items():
        ratio = "-" if name == "circuitlasso" else f"{r['lasso_ratio']:.2f}"
        lines.append(f"| {name} | {r['median']:.1f} | {r['passes']} | {ratio} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Time the rankings in turns and write the table."""
    p = common.parser(__doc__)
    common.add_model(p, None)
    common.add_results(p, None)
    p.add_argument("--sae", required=True, help="folder of SAEs (circuitcut sae train's output)")
    p.add_argument("--n-attribution", type=int, default=400, help="attribution prompts (default 400)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of every ranking (default 3)")
    p.add_argument("--rankings", nargs="+", default=list(RANKINGS), choices=list(RANKINGS),
                   help="the baselines timed beside CircuitLasso (default: all)")  # fmt: skip
    p.add_argument(
        "--site-norm", default="off", choices=["on", "off"], help="CircuitLasso's site normalisation"
    )
    args = common.parse(p)
    model, tok, adapter, _ = as_loaded(args.model, purpose="CircuitLasso")
    pad = pad_id(tok)
    quality = read_json(f"{args.sae}/quality.json")
    saes, _ = get_saes(model, adapter, ",".join(quality["sites"]), args.sae, None, None, 0, 0, 0, False)
    attribution, _ = task_splits("ioi", tok, args.n_attribution, 1, ioi_lists=str(LISTS))
    enc = attribution.encode(tok)
    passes: dict[str, int] = {}

    def lasso() -> None:
        passes["circuitlasso"] = circuit_lasso_ranking(model, adapter, saes, enc, pad,
                                                       normalise_sites=args.site_norm == "on")[2]  # fmt: skip

    def ap() -> None:
        passes["attribution_patching"] = attribution_patching(model, adapter, saes, enc, EVAL_BATCH, pad,
                                                              nodes="last")["passes"]  # fmt: skip

    def apc() -> None:
        patches = counterfactual_codes(model, adapter, saes, enc, EVAL_BATCH, pad)
        run = attribution_patching(model, adapter, saes, enc, EVAL_BATCH, pad, patches=patches, nodes="last")
        passes["attribution_patching_counterfactual"] = run["passes"] + len(patches)

    def edges() -> None:
        run = attribution_patching(
            model, adapter, saes, enc, EVAL_BATCH, pad, edges_per_site=EDGES_PER_SITE, nodes="last"
        )
        passes["attribution_patching_nodes_and_edges"] = run["passes"]

    def ig() -> None:
        passes["integrated_gradients"] = integrated_gradients(model, adapter, saes, enc, 5, EVAL_BATCH, pad,
                                                              nodes="last")["passes"]  # fmt: skip

    every = {"attribution_patching": ap, "attribution_patching_counterfactual": apc,
             "attribution_patching_nodes_and_edges": edges, "integrated_gradients": ig}  # fmt: skip
    assert set(every) == set(RANKINGS)
    runs = {"circuitlasso": lasso, **{name: every[name] for name in args.rankings}}
    attribution_patching(model, adapter, saes, enc.rows(0, 8), pad_id=pad)  # first-call costs, untimed
    timed = common.interleaved(runs, args.rounds, alternate=True)
    secs = {name: [t.seconds for t in ts] for name, ts in timed.items()}
    res = {"model": args.model, "command": common.command(), "n_attribution": len(enc.prompts),
           "rounds": args.rounds, "sites": quality["sites"], "site_norm": args.site_norm,
           "runs": {name: {"seconds": s, "median": statistics.median(s), "passes": passes[name],
                           "lasso_ratio": common.median_ratio(secs["circuitlasso"], s)}
                    for name, s in secs.items()}}  # fmt: skip
    md = markdown(res)
    print(md, flush=True)
    common.write_results(args, f"lasso-cost-{common.tag_of(args, args.model)}", res, md)


if __name__ == "__main__":
    main()
