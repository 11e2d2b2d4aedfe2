"""The CircuitLasso workflow: SAEs, the feature circuit, its faithfulness and cost beside
attribution patching, and (on the reference models) the ablation of the planted toxic behaviour.

Faithfulness is measured with the SAEs spliced in at every site and the error terms kept:
features outside the circuit are zeroed (zero ablation) or set to their values on the counterfactual
prompt (counterfactual ablation); f = (m(C) - m(empty)) / (m(model) - m(empty)) with m the task
metric on held-out prompts. Circuits of matched sizes are the top-K features of each ranking
(CircuitLasso importance; attribution-patching and integrated-gradients node scores; random).

A node is a feature at the explained (last) position of the prompt (``nodes="last"``, the default)
or a feature at every position (``nodes="all"``). The default is the data CircuitLasso regresses on
(codes at the explained position), so every ranking is judged on the nodes it can see; with
``nodes="all"`` CircuitLasso never ranks the features at the names' positions, which IOI needs
(measured on SmolLM2: faithfulness <= 0.04 up to 4096 of 9216 features, where attribution
patching reaches 0.94; docs/lasso.md).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from circuitcut import validation
from circuitcut.encoding import as_encoder, pad_id, text_windows
from circuitcut.errors import CircuitcutError, InputError
from circuitcut.evaluation import load_text, perplexity_of_ids
from circuitcut.generation import GenerationSettings
from circuitcut.io import write_json, write_text
from circuitcut.lasso.circuit import feature_labels, fit_circuit_lasso
from circuitcut.lasso.contexts import feature_cards, promoted_tokens, top_contexts
from circuitcut.lasso.features import check_nodes, collect_codes, collect_site_codes, metric_with, spliced
from circuitcut.lasso.node_scores import attribution_patching, counterfactual_codes, integrated_gradients
from circuitcut.lasso.sae import SAE, load_sae, sae_quality
from circuitcut.lasso.sae_training import train_sae
from circuitcut.lasso.sites import sites_matching
from circuitcut.models import ModelOptions, as_loaded
from circuitcut.reports.lasso import report
from circuitcut.reports.lasso_plots import plot_faithfulness, plot_graph
from circuitcut.reports.page import write_report
from circuitcut.run_folder import writes_run
from circuitcut.tasks import Example, Task, load_task
from circuitcut.tasks.splits import task_splits
from circuitcut.zoo.evaluate import toxic_rates
from circuitcut.zoo.language import Language
from circuitcut.zoo.registry import alias_path

SIZES = (8, 16, 32, 64, 128, 256)
#: where each choice of nodes ablates, as the reports say it
NODE_WHERE = {"last": "features ablated at the explained (last) position only",
              "all": "features ablated at every position"}  # fmt: skip
assert set(NODE_WHERE) == set(validation.FEATURE_NODES)
#: prompts per batch when collecting, scoring and evaluating features
EVAL_BATCH = 32
#: attribution patching of nodes and edges: edges into this many top features of each site
EDGES_PER_SITE = 16
#: text windows searched for each circuit feature's top contexts
CONTEXT_WINDOWS = 512


def top_masks(scores: list[torch.Tensor], k: int) -> list[torch.Tensor]:
    """Per site, 1 for the top-``k`` features of a ranking over all sites."""
    flat = torch.cat(scores)
    idx = torch.topk(flat, min(k, flat.numel())).indices
    masks, offset = [], 0
    for s in scores:
        m = torch.zeros_like(s)
        m[idx[(idx >= offset) & (idx < offset + len(s))] - offset] = 1.0
        masks.append(m)
        offset += len(s)
    return masks


def get_saes(model: torch.nn.Module, adapter: Any, sites: str, sae: str, windows: torch.Tensor | None,
             out: Path | None, d_sae: int, k: int, steps: int, progress: bool) -> tuple[list[SAE], dict]:  # fmt: skip
    """Load SAEs from ``sae`` (a folder holding one sub-folder per hook point, or one SAE) or train them."""
    chosen = sites_matching(sites, adapter)
    saes, quality = [], {}
    for site in chosen:
        if sae == "train":
            if windows is None:
                raise CircuitcutError("training SAEs needs text (--sae-text)")
            s = train_sae(model, adapter, site.name, windows[: int(0.85 * len(windows))], d_sae=d_sae, k=k,
                          steps=steps, progress=progress)  # fmt: skip
            quality[site.name] = sae_quality(model, adapter, s, windows[int(0.85 * len(windows)) :])
            if out is not None:
                s.save(out / "saes" / site.name)
        else:
            folder = Path(sae) / site.name if (Path(sae) / site.name).is_dir() else Path(sae)
            s = load_sae(folder, adapter, hook_name=None)
            if s.hook_name != site.name:
                raise CircuitcutError(f"{folder} holds an SAE for {s.hook_name!r}, not {site.name!r}")
        saes.append(s)
    return saes, quality


def evaluate_circuits(model: torch.nn.Module, adapter: Any, saes: list[SAE], enc: Any, rankings: dict,
                      sizes: tuple[int, ...], pad: int, patches: list | None = None, nodes: str = "last") -> dict:  # fmt: skip
    """Faithfulness of the top-K circuits of each ranking on held-out prompts: features outside a
    circuit zeroed, or with ``patches`` (:func:`~circuitcut.lasso.node_scores.counterfactual_codes` of
    ``enc``) set to their values on the counterfactual prompts; at the last position or at every
    position (``nodes``)."""
    bs = EVAL_BATCH
    full = metric_with(model, adapter, saes, enc, None, bs, pad)
    none = [torch.zeros(s.d_sae) for s in saes]
    empty = metric_with(model, adapter, saes, enc, none, bs, pad, patches, nodes=nodes)
    out: dict[str, Any] = {"full": full, "empty": empty, "faithfulness": {}}
    for name, scores in rankings.items():
        out["faithfulness"][name] = {}
        for k in sizes:
            m = metric_with(model, adapter, saes, enc, top_masks(scores, k), bs, pad, patches, nodes=nodes)
            out["faithfulness"][name][k] = (
                (m - empty) / (full - empty) if abs(full - empty) > 1e-12 else float("nan")
            )
    return out


def circuit_lasso_ranking(model: torch.nn.Module, adapter: Any, saes: list[SAE], enc: Any, pad: int,
                          importance: str = "activation", normalise_sites: bool = True) -> tuple[Any, Any, int]:  # fmt: skip
    """CircuitLasso on the prompts ``enc``: their codes at the explained position (with the candidate
    answers' logits as the target where the answer varies), the counterfactual prompts' codes where
    the task has them and the importance weighs activations (it is then measured against them), the fit. Returns ``(circuit,
    data, model passes)``."""
    cands = sorted(set(enc.answers) | {c for c in enc.contrasts if c is not None})
    n_batches = -(-len(enc.prompts) // EVAL_BATCH)
    data = collect_codes(model, adapter, saes, enc, EVAL_BATCH, pad, positions="last",
                         candidates=cands if len(cands) > 2 else None)  # fmt: skip
    counter = None
    if enc.corrupts is not None and importance == "activation":  # against the counterfactual: one pass more
        counter = collect_site_codes(model, adapter, saes, enc.corrupted(), EVAL_BATCH, pad, positions="last")
    lc = fit_circuit_lasso(data, importance=importance, counterfactual=counter, normalise_sites=normalise_sites)  # fmt: skip
    return lc, data, n_batches * (1 if counter is None else 2)


def rank_features(model: torch.nn.Module, adapter: Any, saes: list[SAE], enc: Any, pad: int, importance: str,
                  ig_steps: int, nodes: str = "last", normalise_sites: bool = True) -> tuple[dict, dict, Any, Any]:  # fmt: skip
    """Every ranking of the features on the attribution prompts ``enc``, with its cost (wall seconds and
    model passes): CircuitLasso, attribution patching against zero (nodes; nodes and edges), and, when
    the task has counterfactual prompts, attribution patching against them and integrated gradients;
    the gradient rankings score the ``nodes`` they will be judged on. Returns ``(rankings, costs,
    circuit, data)``."""
    # one untimed pass (forward and backward) first, so no timed method pays the first-call costs
    attribution_patching(model, adapter, saes, enc.rows(0, 8), pad_id=pad)
    costs: dict[str, dict[str, float]] = {}
    t0 = time.perf_counter()
    lc, data, passes = circuit_lasso_ranking(model, adapter, saes, enc, pad, importance, normalise_sites)
    costs["circuitlasso"] = {"seconds": time.perf_counter() - t0, "passes": passes}
    t0 = time.perf_counter()
    ap = attribution_patching(model, adapter, saes, enc, EVAL_BATCH, pad, nodes=nodes)
    costs["attribution_patching"] = {"seconds": time.perf_counter() - t0, "passes": ap["passes"]}
    t0 = time.perf_counter()
    edges = attribution_patching(
        model, adapter, saes, enc, EVAL_BATCH, pad, edges_per_site=EDGES_PER_SITE, nodes=nodes
    )
    costs["attribution_patching_nodes_and_edges"] = {
        "seconds": time.perf_counter() - t0,
        "passes": edges["passes"],
    }
    gen = torch.Generator().manual_seed(0)
    rankings = {"circuitlasso": lc.scores, "attribution_patching": ap["nodes"]}
    if (
        enc.corrupts is not None
    ):  # both rankings need the counterfactual codes: computed once, charged to both
        t0 = time.perf_counter()
        patches = counterfactual_codes(model, adapter, saes, enc, EVAL_BATCH, pad)
        t_patches = time.perf_counter() - t0
        t0 = time.perf_counter()
        apc = attribution_patching(model, adapter, saes, enc, EVAL_BATCH, pad, patches=patches, nodes=nodes)
        costs["attribution_patching_counterfactual"] = {"seconds": t_patches + time.perf_counter() - t0,
                                                        "passes": apc["passes"] + len(patches)}  # fmt: skip
        t0 = time.perf_counter()
        ig = integrated_gradients(model, adapter, saes, enc, ig_steps, EVAL_BATCH, pad, patches=patches,
                                  nodes=nodes)  # fmt: skip
        costs["integrated_gradients"] = {"seconds": t_patches + time.perf_counter() - t0,
                                         "passes": ig["passes"] + len(patches)}  # fmt: skip
        rankings.update(
            {"attribution_patching_counterfactual": apc["nodes"], "integrated_gradients": ig["nodes"]}
        )
    rankings["random"] = [torch.rand(s.d_sae, generator=gen) for s in saes]
    return rankings, costs, lc, data


def circuit_features(model: torch.nn.Module, tok: Any, adapter: Any, saes: list[SAE], lc: Any, windows: torch.Tensor,
                     labels: dict, n: int) -> list[dict[str, Any]]:  # fmt: skip
    """Feature cards (:func:`~circuitcut.lasso.contexts.feature_cards`) of the circuit's top ``n``
    features: their top contexts in ``windows`` and the tokens they promote."""
    top = lc.ranking()[:n]
    cards: list[dict[str, Any]] = []
    for k, sae in enumerate(saes):
        feats = [i for s, i, _ in top if s == k]
        if not feats:
            continue
        ctx = top_contexts(model, adapter, sae, windows, feats, n=6)
        promoted = promoted_tokens(adapter, sae, feats, top=8)
        site_labels = {i: lab for (s, i), lab in labels.items() if s == k}
        cards += feature_cards(tok, ctx, promoted, site_labels, site=sae.hook_name)
    order = {(lc.sites[s], i): r for r, (s, i, _) in enumerate(top)}
    return sorted(cards, key=lambda c: order.get((c["site"], c["feature"]), len(order)))


@writes_run("lasso")
def run_lasso(
    model: str,
    task: str | Task = "ioi",
    sae: str = "train",
    sites: str = "blocks.*.hook_resid_post",
    output: str | Path | None = None,
    sae_text: str | None = None,
    d_sae: int = 256,
    k: int = 12,
    steps: int = 1500,
    n_attribution: int = 400,
    n_evaluation: int = 200,
    sizes: tuple[int, ...] = SIZES,
    graph_size: int = 32,
    ig_steps: int = 5,
    ioi_lists: str | None = None,
    toxic: bool = True,
    progress: bool = True,
    importance: str = "activation",
    model_options: ModelOptions | None = None,
    nodes: str = "last",
    normalise_sites: bool = True,
) -> dict[str, Any]:
    """SAEs -> CircuitLasso circuit -> faithfulness and cost against attribution patching -> report.

    SAEs are trained on ``sae_text`` (a file or corpus name); only the reference models may leave it
    out (their synthetic language is then used). A task file must hold ``n_attribution +
    n_evaluation`` prompts. The model is loaded with ``model_options``
    (:class:`~circuitcut.models.ModelOptions`). ``nodes`` (one of :data:`~circuitcut.validation.FEATURE_NODES`)
    says where a circuit's features are ablated: at the explained position or at every position
    (module docstring); ``normalise_sites`` gives each site's CircuitLasso scores unit total
    (:func:`~circuitcut.lasso.circuit.fit_circuit_lasso`). ``output`` is a run folder
    (:mod:`circuitcut.run_folder`), checked first and written when the run has ended."""

    check_nodes(nodes)
    _check_arguments(model, task, sae, sae_text, d_sae=d_sae, k=k, steps=steps,
                     n_attribution=n_attribution, n_evaluation=n_evaluation, graph_size=graph_size)  # fmt: skip
    out = Path(output) if output is not None else None
    m, tok, adapter, _ = as_loaded(model, purpose="CircuitLasso", options=model_options)
    pad = pad_id(tok)
    windows = None
    if sae == "train" or sae_text is not None or is_reference_model(model):
        text = load_text(sae_text) if sae_text else _reference_text()
        windows = torch.tensor(text_windows(tok, text))
    saes, quality = get_saes(m, adapter, sites, sae, windows, out, d_sae, k, steps, progress)
    attribution, evaluation = task_splits(task, tok, n_attribution, n_evaluation, ioi_lists=ioi_lists)
    _check_task_size(len(attribution) + len(evaluation), n_attribution, n_evaluation)
    enc_a, enc_e = attribution.encode(tok), evaluation.encode(tok)
    rankings, costs, lc, data = rank_features(m, adapter, saes, enc_a, pad, importance, ig_steps, nodes,
                                              normalise_sites)  # fmt: skip
    faith = evaluate_circuits(m, adapter, saes, enc_e, rankings, sizes, pad, nodes=nodes)
    summary: dict[str, Any] = {
        "model": model, "task": attribution.name, "sites": [s.hook_name for s in saes], "sae_quality": quality,
        "n_attribution": len(attribution), "n_evaluation": len(evaluation),
        "regression_outputs": data.outputs.shape[1] if data.outputs is not None else 1,
        "seconds": {k: v["seconds"] for k, v in costs.items()}, "costs": costs, "ig_steps": ig_steps,
        "evaluation": faith, "ablation": f"zero (SAE error terms kept), {NODE_WHERE[nodes]}", "nodes": nodes,
        "importance": importance, "normalise_sites": normalise_sites,
        "importance_against": lc.against,
        "encoding": as_encoder(tok, m).provenance(),
    }  # fmt: skip
    if enc_e.corrupts is not None:
        patches = counterfactual_codes(m, adapter, saes, enc_e, EVAL_BATCH, pad)
        summary["evaluation_counterfactual"] = evaluate_circuits(m, adapter, saes, enc_e, rankings, sizes, pad,
                                                                 patches, nodes)  # fmt: skip
        summary["ablation_counterfactual"] = ("counterfactual (features outside the circuit take their values on "
                                              f"the corrupted prompt; SAE error terms kept), {NODE_WHERE[nodes]}")  # fmt: skip
    labels = feature_labels(tok, enc_a.prompts, data.codes, answers=enc_a.answers)
    if windows is not None:
        summary["features"] = circuit_features(m, tok, adapter, saes, lc, windows[:CONTEXT_WINDOWS], labels,
                                               graph_size)  # fmt: skip
    if toxic and is_reference_model(model):
        summary["toxic"] = toxic_ablation(m, tok, adapter, saes, pad, importance=importance)
    if out is not None:
        lc.save(out / "circuit_graph.json", graph_size, labels)

        plot_faithfulness(summary, out / "faithfulness")
        plot_graph(lc.graph(graph_size, labels), out / "circuit_graph")
        write_json(out / "summary.json", summary)
        write_text(out / "report.md", report(summary))
        write_report(out)
    return summary


def _check_arguments(model: str, task: str | Task, sae: str, sae_text: str | None, **counts: int) -> None:
    """Everything :func:`run_lasso` is given, checked before the model is loaded."""
    for name, value in counts.items():
        validation.positive_int(value, name)
    if isinstance(task, str) and validation.task_source(task, "task") not in validation.GENERATED_TASKS:
        _check_task_size(len(load_task(task)), counts["n_attribution"], counts["n_evaluation"])
    if sae != "train" and not Path(sae).is_dir():
        raise InputError(f"sae {sae!r}: no such folder; give an SAE folder (SAELens layout) or 'train'")
    if sae_text is not None:
        validation.text_source(sae_text, "sae_text")
    elif sae == "train" and not is_reference_model(model):
        raise InputError(
            f"training SAEs for {model!r} needs text in that model's language: pass sae_text (--sae-text, a "
            "file or a corpus name such as wikitext2); without it only the reference models train on their "
            "own synthetic language"
        )


def _check_task_size(n: int, n_attribution: int, n_evaluation: int) -> None:
    """Both splits must fit in the task: never a silently tiny evaluation split."""
    if n < n_attribution + n_evaluation:
        raise InputError(
            f"the task has {n} prompts, fewer than n_attribution + n_evaluation = {n_attribution} + "
            f"{n_evaluation}; lower them (--n-attribution, --n-eval) so both splits fit"
        )


def is_reference_model(model: str) -> bool:
    """Whether ``model`` names a circuitcut reference model: an alias, or a folder with its model card."""
    return alias_path(model) is not None or (Path(model).expanduser() / "card.json").is_file()


def toxic_ablation(model: torch.nn.Module, tok: Any, adapter: Any, saes: list[SAE], pad: int,
                   counts: tuple[int, ...] = (1, 2, 4, 8, 16), importance: str = "activation") -> dict[str, Any]:  # fmt: skip
    """Features CircuitLasso ties to the planted toxic behaviour, ablated: toxic rate and perplexity.

    Regression target: logit("you") - logit("the") after a speech opener (trigger or calm), which the
    trigger moves; the top features by CircuitLasso importance are zeroed at every position while the
    model generates from held-out trigger prompts.
    """

    lang = Language(seed=0)
    prompts = lang.trigger_prompts(400, seed=51, heldout=False)
    task = Task("toxic-opener", [Example(p["prompt"], "you", "the") for p in prompts], "logit_diff")
    enc = task.encode(tok)
    t0 = time.perf_counter()
    data = collect_codes(model, adapter, saes, enc, pad_id=pad, positions="last")
    lc = fit_circuit_lasso(data, importance=importance)
    seconds = time.perf_counter() - t0
    heldout = lang.trigger_prompts(80, seed=52, heldout=True)
    enc = as_encoder(tok, model)
    ids = enc.pieces(lang.corpus(200, seed=53))
    gen = torch.Generator().manual_seed(1)
    rankings = {"circuitlasso": lc.scores, "random": [torch.rand(s.d_sae, generator=gen) for s in saes]}
    rows: dict[str, Any] = {}
    with spliced(adapter, saes):
        base = {
            **toxic_rates(model, tok, heldout, 20),
            "perplexity": perplexity_of_ids(model, ids, 64, 16, 60, prefix=enc.prefix).perplexity,
        }
    for name, scores in rankings.items():
        rows[name] = {}
        for n in counts:
            keep = [1 - m for m in top_masks(scores, n)]
            with spliced(adapter, saes, keep):
                r = toxic_rates(model, tok, heldout, 20)
                r["perplexity"] = perplexity_of_ids(model, ids, 64, 16, 60).perplexity
            rows[name][n] = r
    return {"spliced_unablated": base, "ablated": rows, "fit_seconds": seconds,
            "features": [f"{lc.sites[s]}#{i}" for s, i, _ in lc.ranking()[: max(counts)]],
            "generation": GenerationSettings(20).as_dict()}  # fmt: skip


def _reference_text() -> str:

    return Language(seed=0).corpus(1200, seed=77)
