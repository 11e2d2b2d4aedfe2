"""Contrastive relevance, scorers, prompt splits and the paired tests of the correction workflow."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from circuitcut.attribution import attribute, next_token_sample, response_sample
from circuitcut.correction import WordListScorer, auroc, make_scorer, totals
from circuitcut.correction.behaviour import Behaviour, load_prompts, split_prompts
from circuitcut.correction.contrastive import contrastive
from circuitcut.correction.statistics import paired_test
from circuitcut.errors import CircuitcutError
from circuitcut.models.tiny import tiny_model
from circuitcut.workflows.correct import CorrectionConfig

from .conftest import shared_data


def test_contrastive_equals_difference_of_scores() -> None:
    model = tiny_model("llama")
    g = attribute(model, [next_token_sample([3, 4, 5, 6, 7, 8])], levels=("weight", "neuron"), progress=False)
    u = attribute(model, [response_sample([9, 10], [11, 12]), response_sample([13], [14, 15, 16])],
                  levels=("weight", "neuron"), progress=False)  # fmt: skip
    diff, info = contrastive(g, u)
    for k in g.weights:
        assert torch.allclose(diff.weight(k), g.weight(k) - u.weight(k))
    for i in g.neurons:
        assert torch.allclose(diff.neuron(i), g.neuron(i) - u.neuron(i))
    assert info["general_total"]["neuron"] == pytest.approx(float(g.neuron_matrix().sum()), rel=1e-5)
    assert info["undesired_total"] == totals(u)
    norm, _ = contrastive(g, u, normalize=True)
    assert float(
        sum(g.neuron(i).sum() / info["general_total"]["neuron"] for i in g.neurons)
    ) == pytest.approx(1.0)
    expected = g.neuron(0) / info["general_total"]["neuron"] - u.neuron(0) / info["undesired_total"]["neuron"]
    assert torch.allclose(norm.neuron(0), expected)
    other = attribute(
        model, [next_token_sample([3, 4, 5])], "gradient", levels=("weight", "neuron"), progress=False
    )
    with pytest.raises(CircuitcutError, match="differ in method"):
        contrastive(g, other)


def test_split_never_leaks(tmp_path: Path) -> None:
    prompts = [f"prompt {i}" for i in range(41)]
    for seed in range(5):
        attr, held = split_prompts(prompts, seed)
        assert not set(attr) & set(held)
        assert sorted(attr + held) == sorted(prompts)
        assert len(attr) == 20
    assert split_prompts(prompts, 1) == split_prompts(prompts, 1)
    assert split_prompts(prompts, 1) != split_prompts(prompts, 2)
    with pytest.raises(CircuitcutError, match="at least two prompts"):
        split_prompts(["one"], 0)
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a"}\n\n{"prompt": "b"}\n')
    assert load_prompts(f) == ["a", "b"]
    (tmp_path / "e.txt").write_text("\n \n")
    with pytest.raises(CircuitcutError, match="holds no prompts"):
        load_prompts(tmp_path / "e.txt")
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n')
    with pytest.raises(CircuitcutError, match=r"bad\.jsonl:1"):
        load_prompts(tmp_path / "bad.jsonl")


def test_word_list_scorer_by_hand(tmp_path: Path) -> None:
    s = WordListScorer(["idiot", "dumb head", "fool"])
    assert s.scores(["You IDIOT!", "foolish plan", "what a dumb head, fool", "nice"]) == [1.0, 0.0, 2.0, 0.0]
    assert s.flags(["you fool", "kind words"]) == [True, False]
    with pytest.raises(CircuitcutError, match="no texts to score"):
        s.scores([])
    with pytest.raises(CircuitcutError, match="word list is empty"):
        WordListScorer(["  ", ""])
    f = tmp_path / "w.txt"
    f.write_text("idiot\n# a comment\nfool  # trailing\n")
    assert make_scorer(f"wordlist:{f}").words == ["idiot", "fool"]
    with pytest.raises(CircuitcutError, match="unknown scorer"):
        make_scorer("perspective")


def _jigsaw() -> tuple[list[str], list[int]]:
    path = shared_data("toxicity/jigsaw_sample_101.csv")
    rows = list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))
    return [r["comment_text"] for r in rows], [int(r["toxic"]) for r in rows]


def test_offline_scorers_on_the_labelled_sample() -> None:
    texts, labels = _jigsaw()
    words = make_scorer(f"wordlist:{shared_data('toxicity/ldnoobw_en.txt')}")
    assert auroc(labels, words.scores(texts)) > 0.6
    pytest.importorskip("profanity_check", reason="alt-profanity-check is not installed")
    prof = make_scorer("profanity-check")
    assert auroc(labels, prof.scores(texts)) > 0.8
    with pytest.raises(CircuitcutError, match="no texts"):
        prof.scores([])


def test_paired_tests_by_hand() -> None:
    t = paired_test([1, 1, 1, 1, 0, 1], [0, 0, 0, 1, 0, 0], binary=True)
    assert (t["improved"], t["worsened"]) == (4, 0)
    assert t["p_value"] == pytest.approx(2 * 0.5**4)
    same = paired_test([0.2, 0.3], [0.2, 0.3], binary=False)
    assert same["p_value"] == 1.0
    w = paired_test([0.1, 0.2, 0.3, 0.25, 0.15, 0.05], [0.5, 0.6, 0.7, 0.8, 0.9, 0.95], binary=False)
    assert w["p_value"] == pytest.approx(0.03125)


def test_behaviour_and_config_validation() -> None:
    with pytest.raises(CircuitcutError, match="needs a scorer"):
        Behaviour("toxicity")
    with pytest.raises(CircuitcutError, match="unknown behaviour"):
        Behaviour("rudeness")
    with pytest.raises(CircuitcutError, match="prunes 'neuron' or 'weight'"):
        CorrectionConfig(level="head")
    with pytest.raises(CircuitcutError, match="not among the counts"):
        CorrectionConfig(counts=(10, 20), report_count=15)
    b = Behaviour("repetition")
    per = b.per_prompt(None, [[1, 1, 1, 2], []])
    assert per["value"] == [0.5, 0.0]
