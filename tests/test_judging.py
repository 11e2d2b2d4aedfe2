"""Judging a correction as users judge it (issue 23): a second scorer, the RealToxicityPrompts pair on
seeded samples with bootstrap intervals, the samples' diversity, and the substitution check."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch

from circuitcut import load_model
from circuitcut.correction import WordListScorer
from circuitcut.correction.behaviour import Behaviour
from circuitcut.correction.config import CorrectionConfig
from circuitcut.correction.judging import (
    Judging,
    bootstrap_interval,
    choose_judge,
    expected_max_toxicity,
    rtp_figures,
    sample_diversity,
    substitutions,
    toxicity_probability,
)
from circuitcut.errors import CircuitcutError
from circuitcut.generation import GenerationSettings, greedy_continuations, sampled_continuations
from circuitcut.reports.correction import correction_markdown
from circuitcut.reports.page.correction import judging_section
from circuitcut.workflows.correct import correct, export_corrected
from circuitcut.zoo.language import INSULTS, Language

LANG = Language(seed=0)
PROMPTS = ["When Mary and John went to the", "the cat sat", "you are a"]


def _trigger_prompts(n: int) -> list[str]:
    return [p["prompt"] for p in LANG.trigger_prompts(2 * n, seed=31, heldout=True) if p["trigger"]]


@pytest.fixture(scope="module")
def ref() -> tuple[torch.nn.Module, Any, Any]:
    """The packaged reference model, its tokenizer and adapter."""
    return load_model("circuitcut/ref-llama")


def test_substitution_on_a_hand_made_pair() -> None:
    """A slur swapped for another (and repeated) shows; a removed word and an unchanged one do not."""
    words = WordListScorer(["idiot", "moron", "jerk"], name="slurs")
    other = WordListScorer(["stupid"], name="judge list")
    prompts = ["he called her a", "what a nice", "you are a", "they said"]
    before = ["stupid idiot.", "nice day.", "jerk and an idiot", "fine"]
    after = ["moron. moron. moron.", "nice day.", "jerk", "stupid"]
    out = substitutions(prompts, before, after, [words, other])
    assert out["word_lists"] == ["slurs (3 entries)", "judge list (1 entries)"]
    assert (out["count"], out["n"]) == (2, 4)
    first, last = out["prompts"]
    assert first == {"index": 0, "prompt": "he called her a", "new_words": {"slurs (3 entries)": ["moron"]},
                     "before": "stupid idiot.", "after": "moron. moron. moron."}  # fmt: skip
    assert last["index"] == 3 and last["new_words"] == {"judge list (1 entries)": ["stupid"]}
    assert substitutions(prompts, before, after, [])["count"] == 0
    with pytest.raises(CircuitcutError, match="one continuation per prompt"):
        substitutions(prompts, before, after[:2], [words])


def test_expected_max_toxicity_and_toxicity_probability_by_hand() -> None:
    scores = [[0.1, 0.7, 0.2], [0.3, 0.4, 0.49], [0.5, 0.0, 0.0]]
    assert expected_max_toxicity(scores) == pytest.approx((0.7 + 0.49 + 0.5) / 3)
    assert toxicity_probability(scores) == pytest.approx(2 / 3)  # 0.49 is below 0.5; 0.5 counts
    assert toxicity_probability(scores, threshold=0.8) == 0.0
    counts = [[0.0, 2.0], [1.0, 0.0], [0.0, 0.0]]  # a word list: matches, flagged at one
    assert expected_max_toxicity(counts) == pytest.approx(1.0)
    assert toxicity_probability(counts, threshold=1.0) == pytest.approx(2 / 3)
    fig = rtp_figures(scores, 0.5, resamples=200, seed=1)
    assert fig["expected_max_toxicity"] == expected_max_toxicity(scores) and fig["samples"] == 3
    assert fig["per_prompt_max"] == [0.7, 0.49, 0.5] and fig["prompts"] == 3
    with pytest.raises(CircuitcutError, match="at least one sample"):
        expected_max_toxicity([[0.1], []])


def test_bootstrap_interval_is_seeded_and_contains_the_estimate() -> None:
    values = [0.0, 1.0, 1.0, 0.0, 1.0, 0.3, 0.9, 0.2, 0.6, 0.4]
    mean = statistics.fmean(values)
    lo, hi = bootstrap_interval(values, 1000, seed=5)
    assert lo <= mean <= hi and lo < hi
    assert bootstrap_interval(values, 1000, seed=5) == (lo, hi)
    assert bootstrap_interval(values, 1000, seed=6) != (lo, hi)
    assert bootstrap_interval([0.25] * 7, 100, seed=0) == (0.25, 0.25)
    fig = rtp_figures([[v] for v in values], 0.5, resamples=1000, seed=5)
    assert fig["emt_interval"][0] <= fig["expected_max_toxicity"] <= fig["emt_interval"][1]
    assert fig["tp_interval"][0] <= fig["toxicity_probability"] <= fig["tp_interval"][1]
    with pytest.raises(CircuitcutError, match="at least one resample"):
        bootstrap_interval(values, 0)


def test_sample_diversity_by_hand() -> None:
    out = sample_diversity([["a b a b", "a b c"], ["x y z w"]])
    # prompt 1 pooled: unigrams a b a b a b c (3 of 7 unique), bigrams ab ba ab ab bc (3 of 5); prompt 2 all unique
    assert out["distinct_1"] == pytest.approx((3 / 7 + 1) / 2)
    assert out["distinct_2"] == pytest.approx((3 / 5 + 1) / 2)
    assert out["repeated_trigram_rate"] == 0.0
    loop = sample_diversity([["you are a bim . you are a bim ."]])
    # 8 trigrams; "you are a", "are a bim", "a bim ." come again at the end
    assert loop["repeated_trigram_rate"] == pytest.approx(3 / 8)


def test_sampled_continuations_are_reproducible_and_seeded(ref: tuple) -> None:
    m, tok, _ = ref
    s = GenerationSettings(10, do_sample=True, num_samples=4, seed=1)
    a = sampled_continuations(m, tok, PROMPTS, s)
    assert [len(row) for row in a] == [4, 4, 4]
    assert a == sampled_continuations(m, tok, PROMPTS, s)
    assert a == sampled_continuations(m, tok, PROMPTS, GenerationSettings(10, True, 3, num_samples=4, seed=1))
    assert a[::-1] == sampled_continuations(m, tok, PROMPTS[::-1], s)  # independent of order and batching
    assert a != sampled_continuations(m, tok, PROMPTS, GenerationSettings(10, True, num_samples=4, seed=2))
    assert any(len({tuple(x) for x in row}) > 1 for row in a)  # the samples of a prompt differ
    nearly_greedy = sampled_continuations(
        m, tok, PROMPTS, GenerationSettings(10, True, num_samples=2, top_p=1e-9)
    )
    assert [row[0] for row in nearly_greedy] == greedy_continuations(m, tok, PROMPTS, s)
    with pytest.raises(CircuitcutError, match="top_p must lie in"):
        GenerationSettings(top_p=0.0)


def test_choosing_the_judge() -> None:
    words = Behaviour("toxicity", WordListScorer(INSULTS))
    assert choose_judge("none", words)[0] is None
    judge, why = choose_judge("auto", Behaviour("repetition"))
    assert judge is None and "repetition" in why
    with pytest.raises(CircuitcutError, match="unknown judge"):
        CorrectionConfig(judge="perspective")
    pytest.importorskip("profanity_check", reason="alt-profanity-check is not installed")
    classifier, why = choose_judge("auto", words)
    assert classifier is not None and classifier.name == "alt-profanity-check" and "word list" in why
    judge, why = choose_judge("auto", Behaviour("toxicity", classifier))
    assert judge is None and "--judge wordlist:FILE" in why
    with pytest.raises(CircuitcutError, match="is the selection scorer itself"):
        choose_judge("profanity-check", Behaviour("toxicity", classifier))


@pytest.fixture(scope="module")
def small_run(ref: tuple) -> tuple[dict, dict, CorrectionConfig, Behaviour]:
    """A small correction run on ref-llama (one seed, one count), judged in memory."""
    pytest.importorskip("profanity_check", reason="alt-profanity-check is not installed")
    torch.manual_seed(0)
    m, tok, ad = ref
    cfg = CorrectionConfig(counts=(2,), seeds=1, n_general=8, generation=GenerationSettings(8), eval_windows=10,
                           baselines=(), controls=(), n_general_prompts=4, samples=4, bootstrap=200)  # fmt: skip
    beh = Behaviour("toxicity", WordListScorer(INSULTS))
    kept: dict[str, Any] = {}
    s = correct(m, tok, ad, _trigger_prompts(12), LANG.corpus(150, seed=41), beh, cfg, LANG.corpus(60, seed=42),
                progress=False, keep=kept)  # fmt: skip
    return s, kept, cfg, beh


def test_second_scorer_and_sampled_figures_are_in_the_report(small_run: tuple) -> None:
    s = json.loads(json.dumps(small_run[0]))  # JSON-ready
    j = s["exported"]["judging"]
    n_test = s["prompts"]["test"]
    assert (
        j["selection"] == f"word list ({len(set(INSULTS))} entries)" and j["judge"] == "alt-profanity-check"
    )
    for where in ("test", "general"):
        g = j["greedy"][where]
        assert 0 <= g["dense"] <= 1 and 0 <= g["corrected"] <= 1
        assert len(g["per_prompt"]["before"]) == len(s["exported"]["continuations"][where])
    sampled = j["sampled"]
    assert sampled["settings"]["num_samples"] == 4 and sampled["settings"]["top_p"] == 0.9
    assert sampled["bootstrap"] == {"resamples": 200, "seed": 0, "level": 0.95}
    for role in ("selection", "judge"):
        fig = sampled["toxicity"][role]["test"]
        for which in ("dense", "corrected"):
            f = fig[which]
            assert f["prompts"] == n_test and f["samples"] == 4
            assert f["emt_interval"][0] <= f["expected_max_toxicity"] <= f["emt_interval"][1]
            assert f["tp_interval"][0] <= f["toxicity_probability"] <= f["tp_interval"][1]
    assert len(sampled["samples"]["test"]) == n_test and len(sampled["samples"]["test"][0]["dense"]) == 4
    assert set(sampled["diversity"]["general"]["dense"]) == {
        "distinct_1",
        "distinct_2",
        "repeated_trigram_rate",
    }
    sub = j["substitution"]
    assert sub["word_lists"] == [j["selection"]] and sub["n"] == n_test
    md = correction_markdown(s)
    assert "## Judged independently" in md and "judge alt-profanity-check: toxic rate on test prompts" in md
    assert "selection word list" in md and "expected maximum toxicity on test prompts (4 samples)" in md
    assert f"Substitutions: {sub['count']} of {n_test} test prompts" in md
    assert 'id="judging-table"' in judging_section(s) and "Substitutions:" in judging_section(s)


def test_the_reloaded_model_is_judged_and_the_dense_samples_are_reused(
    small_run: tuple, ref: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s, kept, cfg, beh = small_run
    s = json.loads(json.dumps(s))
    in_memory = s["exported"]["judging"]
    assert "dense_samples" in kept
    calls = []
    sample = Judging.sample
    monkeypatch.setattr(Judging, "sample", lambda self, *a: calls.append(1) or sample(self, *a))
    m, tok, ad = ref
    export_corrected(m, tok, ad, s, kept, tmp_path / "corrected_model", beh, cfg, LANG.corpus(60, seed=42))
    assert len(calls) == 1  # the reloaded model only; the dense samples came from the run
    reloaded = s["exported"]["judging"]
    assert reloaded["greedy"] == in_memory["greedy"]
    assert reloaded["sampled"]["toxicity"] == in_memory["sampled"]["toxicity"]  # the same seeded samples


def test_sampling_off_keeps_the_greedy_judging() -> None:
    pytest.importorskip("profanity_check", reason="alt-profanity-check is not installed")
    cfg = CorrectionConfig(sample=False)
    judging = Judging.of(cfg, Behaviour("toxicity", WordListScorer(INSULTS)))
    rows = [
        {"prompt": "p", "before": "you idiot", "after": "you fool"},
        {"prompt": "q", "before": "", "after": "ok"},
    ]
    exported = {"continuations": {"test": rows, "general": rows}}
    out = judging.report(exported, lambda: pytest.fail("no sampling"), lambda: pytest.fail("no sampling"))
    assert out["sampled"] is None and out["judge"] == "alt-profanity-check"
    assert set(out["greedy"]) == {"test", "general", "paired_test"}
    assert out["greedy"]["test"]["per_prompt"]["before"] == [1.0, 0.0]
