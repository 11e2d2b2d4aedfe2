"""Reports that tell the truth (issue 15): the exported corrected model is what the report measures,
seeds are reported one by one and tested within themselves, a degenerate correction is flagged by
fluency and diversity, and circuit curves run over distinct component counts with the threshold on
faithfulness and the answer's probability beside the metric."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from scipy import stats

from circuitcut import get_adapter, load_model
from circuitcut.attribution import attribute
from circuitcut.circuits import extract_circuit
from circuitcut.circuits.sweep import SweepConfig, count_grid, mask_keeping
from circuitcut.cli.main import build_parser, main
from circuitcut.correction import WordListScorer
from circuitcut.correction.behaviour import Behaviour
from circuitcut.correction.fluency import text_quality
from circuitcut.correction.summary import summarise
from circuitcut.encoding import as_encoder
from circuitcut.evaluation import perplexity
from circuitcut.generation import GenerationSettings, greedy_continuations
from circuitcut.io import write_json
from circuitcut.metrics import QualityBounds
from circuitcut.models.tiny import tiny_model
from circuitcut.pruning import masked
from circuitcut.reports.correction import correction_markdown
from circuitcut.tasks import evaluate_task, faithfulness, ioi_task
from circuitcut.workflows.circuit import DiscoveryConfig, discover_circuit
from circuitcut.workflows.correct import CorrectionConfig, correct
from circuitcut.zoo.language import INSULTS, Language
from circuitcut.zoo.tokenizer import build_tokenizer

LANG = Language(seed=0)


def _trigger_prompts(n: int) -> list[str]:
    return [p["prompt"] for p in LANG.trigger_prompts(2 * n, seed=31, heldout=True) if p["trigger"]]


def test_exported_model_reloaded_from_disk_gives_the_headline(tmp_path: Path) -> None:
    prompts = tmp_path / "toxic.txt"
    prompts.write_text("\n".join(_trigger_prompts(24)))
    words = tmp_path / "lexicon.txt"
    words.write_text("\n".join(INSULTS))
    general = tmp_path / "general.txt"
    general.write_text(LANG.corpus(200, seed=6))
    out = tmp_path / "corr"
    rc = main(["correct", "--model", "circuitcut/ref-llama", "--undesired", str(prompts), "--general", str(general),
               "--scorer", f"wordlist:{words}", "--counts", "7", "--seeds", "1", "--baselines", "none", "--controls",
               "random", "--n-general", "16", "--max-new-tokens", "12", "--eval-windows", "20",
               "--n-general-prompts", "6", "--output", str(out), "--no-progress"])  # fmt: skip
    assert rc == 0
    r = json.loads((out / "report.json").read_text())
    e = r["exported"]
    assert e["measured_from"] == "corrected_model/ reloaded from disk" and e["choice"] == "all"
    assert "lrp contrastive relevance on all 18 development prompts" in e["statement"]
    assert len(e["test_prompts"]) == 6 and r["prompts"] == {
        "total": 24,
        "development": 18,
        "test": 6,
        "general": 6,
    }
    # independent re-measurement of the files on disk
    model, tok, _ = load_model(str(out / "corrected_model"))
    dense, _, _ = load_model("circuitcut/ref-llama")
    gen = GenerationSettings(12)
    conts = greedy_continuations(model, tok, e["test_prompts"], gen)
    texts = [tok.decode(c, skip_special_tokens=True) for c in conts]
    flags = WordListScorer(INSULTS).flags([t if t.strip() else " " for t in texts])
    assert sum(flags) / len(flags) == e["test_rate"]
    assert [x["after"] for x in e["continuations"]["test"]] == texts
    assert perplexity(model, tok, general.read_text(), 64, 16, 20).perplexity == e["perplexity"]
    enc = as_encoder(tok, model)
    q = text_quality(dense, [enc.prompt(p) for p in e["test_prompts"]], conts)
    assert q == pytest.approx({k: v for k, v in e["quality"]["test"].items() if k != "rate"}, rel=1e-9)
    assert e["in_memory_figures_equal"]
    pruning = json.loads((out / "corrected_model" / "pruning.json").read_text())
    assert pruning["correction"]["test_rate"] == e["test_rate"]
    assert pruning["correction"]["perplexity"] == e["perplexity"]
    md = (out / "report.md").read_text()
    assert md.index("## The exported model") < md.index("## The method over 1 seeds")
    assert (
        f"| behaviour (toxic rate) on the test prompts | {e['dense']['test_rate']:.3f} | {e['test_rate']:.3f} |"
        in md
    )
    assert "{'" not in md and "':" not in md  # no raw Python dicts


@pytest.fixture(scope="module")
def small_run() -> dict:
    """A real three-seed correction run on ref-llama, small enough to be quick."""
    torch.manual_seed(0)
    m, tok, ad = load_model("circuitcut/ref-llama")
    cfg = CorrectionConfig(counts=(2,), seeds=3, n_general=8, generation=GenerationSettings(8), eval_windows=10,
                           baselines=(), controls=(), n_general_prompts=4)  # fmt: skip
    beh = Behaviour("toxicity", WordListScorer(INSULTS))
    return correct(m, tok, ad, _trigger_prompts(16), LANG.corpus(150, seed=41), beh, cfg, LANG.corpus(60, seed=42),
                   progress=False)  # fmt: skip


def test_planted_seed_dependent_outcome_is_reported_per_seed(small_run: dict, tmp_path: Path) -> None:
    s = json.loads(json.dumps(small_run))  # a copy (and JSON-ready)
    seeds = s["seeds"]
    n_held = len(seeds[0]["dense"]["heldout"]["per_prompt"])
    for run in seeds:  # plant: every held-out prompt toxic before; only seed 2's pruning removes it
        run["dense"]["heldout"]["per_prompt"] = [1.0] * n_held
        run["dense"]["heldout"]["rate"] = 1.0
        after = [0.0] * n_held if run["seed"] == 2 else [1.0] * n_held
        run["methods"]["lrp"] = {2: {**run["methods"]["lrp"]["2"], "heldout": {
            **run["methods"]["lrp"]["2"]["heldout"], "per_prompt": after, "per_prompt_score": after,
            "rate": sum(after) / n_held}}}  # fmt: skip
    cfg = s["config"]
    s.update(summarise(seeds, [2], 2, True, True, QualityBounds(), cfg["disagreement_bound"], cfg["alpha"]))
    row = s["results"]["lrp"][2]
    assert row["per_seed"]["heldout_rate"] == [1.0, 1.0, 0.0]
    p = [t["p_value"] for t in row["tests"]["per_seed"]]
    assert p == [1.0, 1.0, pytest.approx(2 * 0.5**n_held)]  # McNemar within each seed
    z = stats.norm.isf(0.5**n_held) / 3**0.5
    assert row["tests"]["combined"]["p_value"] == pytest.approx(2 * stats.norm.sf(z))
    pooled = stats.binomtest(n_held, n_held, 0.5).pvalue  # what pooling the prompts of all seeds would give
    assert pooled < 0.05 < row["tests"]["combined"]["p_value"]  # pooling would call it significant
    assert not row["agreement"]["agree"] and row["agreement"]["spread"] == 1.0
    write_json(tmp_path / "report.json", s)
    back = json.loads((tmp_path / "report.json").read_text())
    assert back["warnings"] == [
        "lrp at 2: the seeds disagree: held-out rates 1.00, 1.00, 0.00 span 1.00, more than the bound 0.25; "
        "significant (p < 0.05) in 1 of 3 seeds"
    ]
    assert back["results"]["lrp"]["2"]["per_seed"]["heldout_rate"] == [1.0, 1.0, 0.0]
    md = correction_markdown(back)
    assert "- **warning**: lrp at 2: the seeds disagree" in md
    assert "| lrp | 1.00 / 1.00 / 0.00 | 0.667 +/- 0.333 |" in md
    assert f"| 1, 1, {p[2]:.2g} | {row['tests']['combined']['p_value']:.2g} | **no** (spread 1.00) |" in md


def test_report_shows_continuations_and_tables_not_dicts(small_run: dict) -> None:
    md = correction_markdown(small_run)
    e = small_run["exported"]
    assert len(e["continuations"]["test"]) == small_run["prompts"]["test"]
    first = e["continuations"]["test"][0]
    assert set(first) == {"prompt", "before", "after"}
    assert "| prompt | dense | corrected |" in md and "### Relevance totals" in md
    assert "{'" not in md
    assert small_run["seeds"][0]["relevance_totals"]["lrp"]["normalized"] is False


def test_degenerate_correction_is_flagged_by_fluency_and_diversity() -> None:
    """Explaining continuations that run past the end of the insult into a new document makes the
    contrastive scores hit general generation: at 9 neurons ref-llama's free-running text loops
    ("When went to the garden . When went to the garden ...") while teacher-forced general perplexity
    rises by 10.5%, within a user's 15% tolerance."""
    m, tok, ad = load_model("circuitcut/ref-llama")
    cfg = CorrectionConfig(counts=(9,), seeds=1, n_general=16, generation=GenerationSettings(30, stop_at_eos=False),
                           eval_windows=30, baselines=(), controls=(), n_general_prompts=8,
                           quality=QualityBounds(perplexity=0.15))  # fmt: skip
    s = correct(m, tok, ad, _trigger_prompts(32), LANG.corpus(300, seed=41),
                Behaviour("toxicity", WordListScorer(INSULTS)), cfg, LANG.corpus(100, seed=42), progress=False)  # fmt: skip
    row = s["results"]["lrp"][9]
    assert 0.05 < row["perplexity_relative_change"] < 0.15
    assert not [f for f in row["flags"] if f.startswith("general perplexity")]
    assert [f for f in row["flags"] if f.startswith("fluency on general prompts")]
    assert [f for f in row["flags"] if f.startswith("diversity on general prompts")]
    assert [f for f in row["flags"] if f.startswith("diversity on held-out behaviour prompts")]
    g, d = row["quality"]["general"], s["dense"]["quality"]["general"]
    assert g["fluency_perplexity"] > 3 * d["fluency_perplexity"] and g["distinct_2"] < 0.8 * d["distinct_2"]


def test_every_cli_default_is_in_its_help() -> None:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for verb, parser in sub.choices.items():
        for a in parser._actions:
            if a.default in (None, False, argparse.SUPPRESS) or not a.help or a.help == argparse.SUPPRESS:
                continue
            shown = ",".join(map(str, a.default)) if isinstance(a.default, (tuple, list)) else str(a.default)
            if shown not in a.help:
                missing.append(f"{verb} {a.option_strings}: {a.default!r}")
    assert missing == []


def test_head_curves_on_eight_heads_snap_to_distinct_counts(tmp_path: Path) -> None:
    tok = build_tokenizer()
    model = tiny_model("llama", vocab_size=len(tok), seed=3)
    adapter = get_adapter(model)
    assert adapter.n_layers * adapter.n_heads == 8
    run = DiscoveryConfig(
        SweepConfig(baselines=("activation", "random"), level="head", seeds=2, n_ref=8), 16, 24
    )
    s = discover_circuit(model, "ioi", tmp_path, run, tokenizer=tok, progress=False)
    for method, r in s["sweep"].items():
        counts = [p["count"] for p in r["points"]]
        assert counts == [8, 4, 2, 1], method  # 100%, 50%, 20% -> 2, 10% and below -> 1 head, once
        assert [p["fraction"] for p in r["points"]] == [1.0, 0.5, 0.25, 0.125]
        f = [p["faithfulness"] for p in r["points"]]
        xs = [p["fraction"] for p in r["points"]]
        cpr = sum((xs[i] - xs[i + 1]) * (f[i] + f[i + 1]) / 2 for i in range(3))
        assert r["cpr"] == pytest.approx(cpr)
        assert r["cmd"] == pytest.approx(sum((xs[i] - xs[i + 1]) * (abs(1 - f[i]) + abs(1 - f[i + 1])) / 2
                                             for i in range(3)))  # fmt: skip
        assert {"prob", "accuracy", "logit_diff", "faithfulness"} <= set(r["points"][0])
    c = s["circuit"]
    assert c["threshold_applies_to"] == "faithfulness" and c["met_threshold"] == (c["faithfulness"] >= 0.9)
    assert c["faithfulness"] == pytest.approx(
        faithfulness(c["circuit"]["logit_diff"], c["model"]["logit_diff"], c["empty"]["logit_diff"])
    )
    md = (tmp_path / "report.md").read_text()
    assert "| kept heads | kept share | logit diff | answer probability | accuracy | faithfulness |" in md
    assert "| | logit diff | answer probability | accuracy | faithfulness |" in md
    assert "CPR (area under f)" in md and "0.1%" not in md
    csv_head = (tmp_path / "curves.csv").read_text().splitlines()[0]
    assert csv_head.startswith("method,seed,keep,count,fraction") and "prob" in csv_head


def test_extracted_circuit_is_the_sparsest_count_reaching_faithfulness() -> None:
    tok = build_tokenizer()
    model = tiny_model("llama", vocab_size=len(tok), seed=3)
    adapter = get_adapter(model)
    attr, ev = ioi_task(tok, 40, seed=2).split(16)
    scores = attribute(model, attr.samples(tok), "lrp", adapter=adapter, levels=("head",), progress=False)
    assert count_grid(8) == [1, 2, 3, 4, 5, 6, 7, 8]
    for threshold in (0.5, 0.9):
        cfg = SweepConfig(level="head", threshold=threshold, random_seeds=1, search="scan", ablation="zero")
        info = extract_circuit(model, tok, adapter, attr, ev, cfg, scores=scores).info
        assert info["faithfulness"] >= threshold and info["met_threshold"]
        assert {"prob", "accuracy"} <= set(info["circuit"]) and {"prob", "accuracy"} <= set(
            info["random_control"]
        )
        for fewer in range(1, info["kept"]):  # every smaller count misses the threshold
            with masked(adapter, mask_keeping(scores, adapter, "head", "all", fewer, 8, "global")):
                m = evaluate_task(model, tok, ev)["logit_diff"]
            assert faithfulness(m, info["model"]["logit_diff"], info["empty"]["logit_diff"]) < threshold


def test_bisection_returns_a_measured_boundary_point_in_fewer_evaluations() -> None:
    """The default search: the returned count reaches the threshold, the next sparser grid count
    does not, and the figures are those measured at the count; on a monotone curve it equals the scan."""
    tok = build_tokenizer()
    model = tiny_model("llama", vocab_size=len(tok), seed=3)
    adapter = get_adapter(model)
    attr, ev = ioi_task(tok, 40, seed=2).split(16)
    scores = attribute(model, attr.samples(tok), "lrp", adapter=adapter, levels=("head",), progress=False)
    for threshold in (0.5, 0.9):
        cfg = SweepConfig(level="head", threshold=threshold, random_seeds=1, ablation="zero")
        info = extract_circuit(model, tok, adapter, attr, ev, cfg, scores=scores).info
        assert info["search"] == "bisection" and info["faithfulness"] >= threshold
        grid = count_grid(8)
        below = [c for c in grid if c < info["kept"]]
        with masked(adapter, mask_keeping(scores, adapter, "head", "all", info["kept"], 8, "global")):
            assert evaluate_task(model, tok, ev)["logit_diff"] == pytest.approx(info["circuit"]["logit_diff"])
        if below:
            with masked(adapter, mask_keeping(scores, adapter, "head", "all", below[-1], 8, "global")):
                m = evaluate_task(model, tok, ev)["logit_diff"]
            assert faithfulness(m, info["model"]["logit_diff"], info["empty"]["logit_diff"]) < threshold
