"""Targeted correction: prune what drives an undesired behaviour but matters little for general text.

1. The undesired prompts are split once into a development pool and a **test set** (``test_share``)
   that no attribution ever sees.
2. **The method, resampled over seeds.** For each seed the development pool is split into an
   attribution half and a held-out half; the dense model's greedy continuations of the attribution
   half are explained (undesired relevance); ``n_general`` windows of general text drawn with the
   seed are explained with next-token targets (general relevance); the components with the lowest
   ``R_general - R_undesired`` are pruned (Hatefi et al., Sec. 3.4) at each count of a sweep.
   Equal-count random and magnitude pruning are the controls; gradient and Wanda contrastive scores
   are compared the same way. Every model is measured by one protocol
   (:class:`~circuitcut.correction.measure.Probe`): the behaviour on both halves, toxicity / fluency
   / diversity on the held-out half and on general prompts, and general-text perplexity. Each seed's
   figures are reported with their mean and SEM; each seed has its own paired test, combined across
   seeds by Stouffer's method (:mod:`circuitcut.correction.statistics`); seeds that disagree beyond
   a bound raise a warning.
3. **The exported model** is the first method's mask at the report count, chosen from contrastive
   relevance on all development prompts (``export="all"``) or as the seeds' consensus
   (``export="consensus"``). It is measured on the test set and the general prompts;
   :func:`export_corrected` writes it, reloads it from disk and measures it again, and those figures
   head the report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from circuitcut import validation
from circuitcut.attribution import attribute
from circuitcut.attribution.config import ScoringConfig
from circuitcut.correction.behaviour import Behaviour, load_prompts, split_prompts, split_test
from circuitcut.correction.config import CorrectionConfig
from circuitcut.correction.contrastive import consensus, contrastive
from circuitcut.correction.explained import check_explain, undesired_samples
from circuitcut.correction.judging import Judging, judge_models
from circuitcut.correction.measure import Probe, general_prompts
from circuitcut.correction.scorers import make_scorer
from circuitcut.correction.summary import headline, summarise
from circuitcut.data import calibration_samples
from circuitcut.encoding import as_encoder
from circuitcut.errors import CircuitcutError
from circuitcut.evaluation import load_text
from circuitcut.generation import greedy_continuations
from circuitcut.io import read_json, write_json, write_text
from circuitcut.models import ModelOptions, as_loaded, load_model
from circuitcut.models.adapter import ModelAdapter
from circuitcut.pruning import Mask, export_pruned, masked, unit_mask, unstructured_mask
from circuitcut.reports.correction import correction_markdown, plot_correction_curves, plot_per_prompt
from circuitcut.reports.page import write_report
from circuitcut.run_folder import writes_run
from circuitcut.scores import Scores


def _mask(scores: Scores, adapter: ModelAdapter, cfg: CorrectionConfig, count: int) -> Mask:
    if cfg.level == "neuron":
        return unit_mask(scores, adapter, "neuron", count=count, prune="lowest")
    return unstructured_mask(scores, adapter, count=count, scheme="global", layers=cfg.layers, prune="lowest")


def make_probe(tokenizer: Any, behaviour: Behaviour, cfg: CorrectionConfig, eval_text: str) -> Probe:
    """The measurement protocol of a run (the same for the dense, pruned and exported models)."""
    return Probe(tokenizer, behaviour, cfg.generation, eval_text, cfg.general_seqlen, cfg.eval_windows,
                 cfg.scoring.batch_size)  # fmt: skip


def _slim(fig: dict[str, Any]) -> dict[str, Any]:
    """A measurement without the per-prompt lists of the attribution and general sets (not reported)."""
    drop = ("per_prompt", "per_prompt_score")
    return {k: ({kk: vv for kk, vv in v.items() if kk not in drop} if k in ("attribution", "general") else v)
            for k, v in fig.items()}  # fmt: skip


def correct(
    model: torch.nn.Module,
    tokenizer: Any,
    adapter: ModelAdapter,
    prompts: list[str],
    general_text: str,
    behaviour: Behaviour,
    config: CorrectionConfig | None = None,
    general_eval_text: str | None = None,
    progress: bool = True,
    keep: dict[str, Any] | None = None,
    general_prompt_texts: list[str] | None = None,
    judging: bool = True,
) -> dict[str, Any]:
    """Run the correction experiment; returns every number the report needs (JSON-ready).

    General prompts are ``general_prompt_texts`` or openings cut from the general evaluation text.
    With ``keep`` (a dict), the exported mask (``mask``), its contrastive scores (``contrastive``;
    with ``export="all"`` also ``general`` and ``undesired``) and the dense model's measurement on
    the test and general prompts (``dense_figures``) are stored in it for :func:`export_corrected`. The ``exported`` entry holds the chosen mask's figures measured in
    memory; :func:`export_corrected` replaces them with those of the model reloaded from disk. With
    ``judging``, the exported entry's ``judging`` (:mod:`circuitcut.correction.judging`) judges the
    mask in memory (the dense model's samples are kept for :func:`export_corrected`); without it, only
    :func:`export_corrected` judges (the reloaded model).
    """
    cfg = config or CorrectionConfig()
    check_explain(cfg.explain, behaviour.scorer)
    judge = Judging.of(cfg, behaviour)  # the judge is built (or refused) before the long run
    start = time.time()
    eval_text = general_eval_text or general_text
    run = _Run(
        model,
        tokenizer,
        adapter,
        cfg,
        behaviour,
        make_probe(tokenizer, behaviour, cfg, eval_text),
        general_text,
    )
    dev, test = split_test(prompts, cfg.test_share)
    gprompts = list(general_prompt_texts) if general_prompt_texts else general_prompts(
        tokenizer, eval_text, cfg.n_general_prompts, cfg.general_prompt_tokens)  # fmt: skip
    first: list[Scores] = []  # the first method's contrastive scores per seed (for a consensus)
    bar = tqdm(total=cfg.seeds * (len(cfg.methods) + len(cfg.controls)) * len(cfg.counts), desc="correction",
               unit="model", disable=not progress)  # fmt: skip
    seeds = [run.seed(seed, dev, gprompts, first, bar.update) for seed in range(cfg.seeds)]
    bar.close()
    kept, exported = run.export(dev, test, gprompts, first)
    if judging:
        exported["judging"] = judge_models(judge, exported, (model, tokenizer), (model, tokenizer),
                                           lambda: masked(adapter, kept["mask"]), kept)  # fmt: skip
        exported["marked_words"] = marked_words(behaviour, exported, judge)
    if keep is not None:
        keep.update(kept)
    binary, lower = behaviour.kind == "toxicity", behaviour.lower_is_better
    summary = summarise(seeds, cfg.counts, cfg.report_count, binary, lower, cfg.quality, cfg.disagreement_bound,
                        cfg.alpha)  # fmt: skip
    return {
        "behaviour": behaviour.name,
        "config": cfg.as_dict(),
        "prompts": {
            "total": len(prompts),
            "development": len(dev),
            "test": len(test),
            "general": len(gprompts),
        },
        "share_of_components": {c: _share(adapter, cfg, c) for c in cfg.counts},
        "neurons_total": adapter.n_layers * adapter.n_neurons,
        "encoding": as_encoder(tokenizer, model).provenance(),
        "exported": exported,
        **summary,
        "seeds": seeds,
        "seconds": round(time.time() - start, 1),
    }


@dataclass
class _Run:
    """One correction run's model, settings and measurement protocol."""

    model: torch.nn.Module
    tokenizer: Any
    adapter: ModelAdapter
    cfg: CorrectionConfig
    behaviour: Behaviour
    probe: Probe
    general_text: str

    def scores(self, scoring: ScoringConfig | str, samples: list) -> Scores:
        """The scores of the run's level and layers."""
        return attribute(self.model, samples, scoring, adapter=self.adapter, levels=(self.cfg.level,),
                         layers=self.cfg.layers, progress=False)  # fmt: skip

    def relevance(self, method: str, prompt_set: list[str], seed: int) -> tuple[Scores, Scores, Scores, dict]:
        """General and undesired relevance of ``method``, their contrast and its totals."""
        cfg = self.cfg
        conts = greedy_continuations(self.model, self.tokenizer, prompt_set, cfg.generation)
        general = calibration_samples(
            self.tokenizer, self.general_text, cfg.n_general, cfg.general_seqlen, seed
        )
        scoring = cfg.scoring.with_method(method)
        g = self.scores(scoring, general)
        undesired = undesired_samples(self.tokenizer, prompt_set, conts, cfg.explain, self.behaviour.scorer)
        u = self.scores(scoring, undesired)
        return (g, u, *contrastive(g, u, cfg.normalize))

    def seed(self, seed: int, dev: list[str], gprompts: list[str], first: list[Scores], tick: Any) -> dict:
        """One seed: split the development pool, score every method and control, measure each count."""
        cfg, model, adapter = self.cfg, self.model, self.adapter
        attr_p, held_p = split_prompts(dev, seed)
        sets = {"heldout": held_p, "attribution": attr_p, "general": gprompts}
        run: dict[str, Any] = {"seed": seed, "n_attribution": len(attr_p), "n_heldout": len(held_p),
                               "dense": _slim(self.probe.measure(model, sets)), "relevance_totals": {},
                               "methods": {}}  # fmt: skip
        for method in (*cfg.methods, *cfg.controls):
            if method in cfg.methods:
                _, _, scores, tot = self.relevance(method, attr_p, seed)
                run["relevance_totals"][method] = tot
                if method == cfg.methods[0] and cfg.export == "consensus":
                    first.append(scores)
            elif method == "random":
                scores = self.scores(cfg.scoring.with_method("random").with_seed(cfg.scoring.seed + seed), [])
            else:
                scores = self.scores("magnitude", [])
            run["methods"][method] = {}
            for count in cfg.counts:
                fig = self.probe.measure(
                    model, sets, adapter=adapter, mask=_mask(scores, adapter, cfg, count)
                )
                run["methods"][method][count] = _slim(fig)
                tick(1)
        return run

    def export(
        self, dev: list[str], test: list[str], gprompts: list[str], first: list[Scores]
    ) -> tuple[dict, dict]:
        """The exported mask (with what ``keep`` stores) and its figures measured in memory."""
        cfg, adapter, behaviour = self.cfg, self.adapter, self.behaviour
        n, first_method = cfg.report_count, cfg.methods[0]
        kept: dict[str, Any] = {}
        if cfg.export == "all":
            kept["general"], kept["undesired"], kept["contrastive"], _ = self.relevance(first_method, dev, 0)
            choice = (f"{first_method} contrastive relevance on all {len(dev)} development prompts (the pool every "
                      f"seed's attribution half is drawn from) against {cfg.n_general} general windows (seed 0); "
                      f"the {n} lowest {cfg.level}s pruned")  # fmt: skip
        else:
            kept["contrastive"] = consensus(first, [_mask(s, adapter, cfg, n) for s in first])
            choice = (f"the consensus of the {cfg.seeds} seeds' {first_method} masks at {n}: the {n} {cfg.level}s "
                      "pruned by the most seeds, ties broken by the mean contrastive score")  # fmt: skip
        kept["mask"] = _mask(kept["contrastive"], adapter, cfg, n)
        binary, lower = behaviour.kind == "toxicity", behaviour.lower_is_better
        final_sets = {"test": test, "general": gprompts}
        kept["dense_figures"] = self.probe.measure(self.model, final_sets, texts=True)
        in_memory = self.probe.measure(self.model, final_sets, adapter=adapter, mask=kept["mask"], texts=True)
        exported = {
            "method": first_method, "count": n, "share": _share(adapter, cfg, n), "choice": cfg.export,
            "statement": choice, "test_prompts": test, "general_prompts": gprompts,
            "measured_from": "the chosen mask applied in memory (not exported)",
            **headline(kept["dense_figures"], in_memory, binary, lower, cfg.quality),
        }  # fmt: skip
        exported["marked_words"] = marked_words(behaviour, exported)
        return kept, exported


def marked_words(behaviour: Behaviour, exported: dict[str, Any], judging: Judging | None = None) -> list[str]:
    """The behaviour's words (and a word-list judge's) in the exported model's continuations before
    and after (what the HTML report marks)."""
    texts = [c[k] for rows in exported["continuations"].values() for c in rows for k in ("before", "after")]
    words = set(behaviour.words_in(texts))
    for scorer in judging.word_lists if judging is not None else []:
        words |= set(scorer.words_in(texts))
    return sorted(words)


def _share(adapter: ModelAdapter, cfg: CorrectionConfig, count: int) -> str:
    return adapter.fraction(count, "neuron") if cfg.level == "neuron" else f"{count} weights"


def export_corrected(
    model: torch.nn.Module,
    tokenizer: Any,
    adapter: ModelAdapter,
    summary: dict[str, Any],
    kept: dict[str, Any],
    folder: str | Path,
    behaviour: Behaviour,
    config: CorrectionConfig,
    general_eval_text: str,
) -> Path:
    """Write the corrected model to ``folder``, reload it from disk and measure it as written.

    The in-memory model stays dense (the mask is lifted after writing); it judges the fluency of the
    reloaded model's continuations. ``kept`` is what :func:`correct` stored (the mask and the dense
    figures). The reloaded model's figures replace ``summary["exported"]``'s and are written into
    ``pruning.json`` beside the weights.
    """
    out = Path(folder)
    e = summary["exported"]
    mask = kept["mask"]
    mask.meta = {**mask.meta, "purpose": f"correction of {behaviour.name}", "method": e["method"],
                 "choice": e["statement"]}  # fmt: skip
    with masked(adapter, mask):
        export_pruned(model, tokenizer, adapter, mask, out)
    param = next(model.parameters())  # reloaded as the in-memory model is held, encoded as it is
    reloaded, rtok, _ = load_model(out, dtype=param.dtype, device=param.device)
    rtok = as_encoder(rtok, reloaded, as_encoder(tokenizer).special_tokens)
    probe = make_probe(rtok, behaviour, config, general_eval_text)
    fig = probe.measure(reloaded, {"test": e["test_prompts"], "general": e["general_prompts"]}, dense=model,
                        texts=True)  # fmt: skip
    before = {k: e[k] for k in ("test_rate", "general_rate", "perplexity")}
    e.update(headline(kept["dense_figures"], fig, behaviour.kind == "toxicity", behaviour.lower_is_better,
                      config.quality))  # fmt: skip
    judging = Judging.of(config, behaviour)
    e["judging"] = judge_models(judging, e, (model, tokenizer), (reloaded, rtok), cache=kept)
    e["marked_words"] = marked_words(behaviour, e, judging)
    e["measured_from"] = f"{out.name}/ reloaded from disk"
    e["in_memory_figures_equal"] = before == {k: e[k] for k in before}
    info = read_json(out / "pruning.json")
    info["correction"] = {k: e[k] for k in ("method", "count", "statement", "test_rate", "general_rate",
                                            "perplexity", "quality", "dense", "paired_test", "flags")}  # fmt: skip
    write_json(out / "pruning.json", info)
    return out


@writes_run("correct")
def run_correction(
    model: str,
    undesired: str | list[str],
    general: str,
    output: str | None,
    behaviour: str = "toxicity",
    scorer: str | None = None,
    config: CorrectionConfig | None = None,
    general_eval: str | None = None,
    progress: bool = True,
    general_prompts_file: str | None = None,
    model_options: ModelOptions | None = None,
) -> dict[str, Any]:
    """Load, run :func:`correct`, and (with ``output``) export the corrected model, reload and measure
    it, and write its mask, the score files, the report (Markdown + JSON) and the plots (``output`` is
    a run folder, :mod:`circuitcut.run_folder`: checked first, written when the run has ended). The model is
    loaded with ``model_options`` (:class:`~circuitcut.models.ModelOptions`: revision, dtype, device,
    allow_pickle, trust_remote_code, special_tokens)."""

    cfg = config or CorrectionConfig()
    if behaviour == "toxicity" and scorer is None:
        raise CircuitcutError(
            "the toxicity behaviour needs --scorer (wordlist:FILE, profanity-check or hf:MODEL)"
        )
    validation.text_source(general, "general")  # checked before any model is loaded
    if general_eval:
        validation.text_source(general_eval, "general_eval")
    beh = Behaviour(behaviour, make_scorer(scorer) if behaviour == "toxicity" else None)
    check_explain(cfg.explain, beh.scorer)
    Judging.of(cfg, beh)  # the judge is checked before any model is loaded
    m, tok, adapter, _ = as_loaded(model, purpose="correction", options=model_options)
    prompts = load_prompts(undesired) if isinstance(undesired, str) else list(undesired)
    general_text = load_text(general)
    eval_text = load_text(general_eval) if general_eval else general_text
    gprompts = load_prompts(general_prompts_file) if general_prompts_file else None
    kept: dict[str, Any] = {}
    summary = correct(m, tok, adapter, prompts, general_text, beh, cfg, eval_text, progress, kept, gprompts,
                      judging=output is None)  # with an output, the reloaded model is judged  # fmt: skip
    summary["model"] = model
    if output is None:
        return summary
    out = Path(output)
    export_corrected(m, tok, adapter, summary, kept, out / "corrected_model", beh, cfg, eval_text)
    kept["contrastive"].save(out / "scores_contrastive.safetensors")
    for key in ("general", "undesired"):
        if key in kept:
            kept[key].save(out / f"scores_{key}.safetensors")
    write_json(out / "report.json", summary)
    plot_correction_curves(summary, out / "correction_curves")
    plot_per_prompt(summary, out / "per_prompt")
    write_text(out / "report.md", correction_markdown(summary))
    write_report(out)
    return summary
