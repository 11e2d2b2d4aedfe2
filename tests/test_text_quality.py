"""Text-quality metrics (distinct-n, fluency under the dense model, bounds) and the correction statistics
(within-seed paired tests, Stouffer's combination, seed agreement, the seeds' consensus mask)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from circuitcut import get_adapter
from circuitcut.correction.behaviour import split_test
from circuitcut.correction.contrastive import consensus
from circuitcut.correction.fluency import (
    QualityBounds,
    continuation_nll,
    perplexity_flag,
    quality_flags,
    text_quality,
)
from circuitcut.correction.statistics import combine_seeds, paired_test, seed_agreement, sem
from circuitcut.errors import CircuitcutError
from circuitcut.metrics import distinct_n
from circuitcut.models.tiny import tiny_model
from circuitcut.pruning import unit_mask
from circuitcut.scores import Scores


def test_distinct_n_by_hand() -> None:
    loop = [5, 5, 5, 5]  # "a a a a"
    assert distinct_n([loop], 1) == 0.25
    assert distinct_n([loop], 2) == pytest.approx(1 / 3)
    phrase = [1, 2, 3, 1, 2, 3]  # "he is ajer he is ajer": bigrams 12 23 31 12 23 -> 3 of 5
    assert distinct_n([phrase], 2) == pytest.approx(3 / 5)
    assert distinct_n([phrase], 3) == pytest.approx(3 / 4)
    # the mean over sequences; a sequence without an n-gram is left out, none at all gives 0
    assert distinct_n([loop, [7, 8, 9]], 1) == pytest.approx((0.25 + 1.0) / 2)
    assert distinct_n([[4], loop], 2) == pytest.approx(1 / 3)
    assert distinct_n([[], [4]], 2) == 0.0
    with pytest.raises(CircuitcutError, match="n >= 1"):
        distinct_n([loop], 0)


def test_fluency_is_the_dense_models_perplexity_of_the_continuation() -> None:
    model = tiny_model("llama")
    prompts, conts = [[3, 4, 5], [6, 7]], [[8, 9], []]
    nll = continuation_nll(model, prompts, conts)
    with torch.no_grad():
        logp = model(torch.tensor([[3, 4, 5, 8, 9]])).logits[0].log_softmax(-1)
    expected = -(logp[2, 8] + logp[3, 9]).item()  # position t predicts token t + 1
    assert nll[0] == (pytest.approx(expected, rel=1e-5), 2)
    assert nll[1] == (0.0, 0)
    q = text_quality(model, prompts, conts)
    assert q["fluency_perplexity"] == pytest.approx(math.exp(expected / 2), rel=1e-5)
    assert q["empty_share"] == 0.5 and q["mean_length"] == 1.0
    assert q["distinct_1"] == 1.0  # [8, 9]; the empty one has no n-gram
    assert text_quality(model, prompts, [[], []])["fluency_perplexity"] is None
    with pytest.raises(CircuitcutError, match="prompt is empty"):
        continuation_nll(model, [[]], [[3]])


def test_quality_flags_name_each_bound() -> None:
    b = QualityBounds()
    dense = {"fluency_perplexity": 10.0, "distinct_2": 0.8, "empty_share": 0.0}
    fine = {"fluency_perplexity": 14.0, "distinct_2": 0.7, "empty_share": 0.0}
    assert quality_flags(dense, fine, b, "general prompts", behaviour=False) == []
    broken = {"fluency_perplexity": 40.0, "distinct_2": 0.4, "empty_share": 0.5}
    flags = quality_flags(dense, broken, b, "general prompts", behaviour=False)
    assert len(flags) == 3
    assert flags[0].startswith("fluency on general prompts") and "+300%, bound +50%" in flags[0]
    assert "distinct-2 0.800 -> 0.400 (-50%, bound -20%)" in flags[1]
    assert "empty continuations on general prompts: 50%" in flags[2]
    # behaviour prompts: the wide fluency bound (the dense judge expects the removed behaviour)
    assert not [f for f in quality_flags(dense, broken, b, "x", behaviour=True) if f.startswith("fluency")]
    assert quality_flags(dense, {**fine, "fluency_perplexity": 300.0}, b, "x", behaviour=True)[0].startswith(
        "fluency"
    )
    assert perplexity_flag(10.0, 10.9, b) == []
    assert perplexity_flag(10.0, 11.5, b) == ["general perplexity 10.000 -> 11.500 (+15.0%, bound +10%)"]
    with pytest.raises(CircuitcutError, match="quality bound diversity"):
        QualityBounds(diversity=-1)


def test_paired_test_signs_and_p_values_by_hand() -> None:
    t = paired_test([1, 1, 1, 1, 0, 1], [0, 0, 0, 1, 0, 0], binary=True)
    assert (t["improved"], t["worsened"], t["n"]) == (4, 0, 6)
    assert t["p_value"] == pytest.approx(2 * 0.5**4)
    assert t["z"] == pytest.approx(stats.norm.isf(0.0625))  # positive: toxic flags went down
    worse = paired_test([0, 0, 0, 0], [1, 1, 1, 0], binary=True)
    assert worse["z"] == pytest.approx(-stats.norm.isf(0.125)) and worse["worsened"] == 3
    assert paired_test([0.2, 0.3], [0.2, 0.3], binary=False) | {"test": ""} == {
        "test": "", "n": 2, "improved": 0, "worsened": 0, "p_value": 1.0, "z": 0.0}  # fmt: skip
    # RUR: higher is better
    w = paired_test([0.1, 0.2, 0.3, 0.25, 0.15, 0.05], [0.5, 0.6, 0.7, 0.8, 0.9, 0.95], binary=False,
                    lower_is_better=False)  # fmt: skip
    assert w["p_value"] == pytest.approx(0.03125) and w["z"] > 0 and w["improved"] == 6
    with pytest.raises(CircuitcutError, match="3 values before but 2 after"):
        paired_test([1, 0, 1], [0, 0], binary=True)


def test_stouffer_combination_and_seed_agreement_by_hand() -> None:
    # two seeds with no effect and one with a strong one: not pooled, combined by Stouffer
    null = paired_test([1] * 10, [1] * 10, binary=True)
    strong = paired_test([1] * 10, [0] * 8 + [1] * 2, binary=True)
    assert strong["p_value"] == pytest.approx(2 * 0.5**8)
    c = combine_seeds([null, null, strong])
    assert c["z"] == pytest.approx(stats.norm.isf(2 * 0.5**8 / 2) / math.sqrt(3))
    assert c["p_value"] == pytest.approx(2 * stats.norm.sf(c["z"]))
    pooled = paired_test([1] * 30, [1] * 20 + [0] * 8 + [1] * 2, binary=True)["p_value"]
    assert pooled == pytest.approx(strong["p_value"]) and c["p_value"] > 10 * pooled
    # opposite effects cancel
    assert combine_seeds([strong, {**strong, "z": -strong["z"]}])["p_value"] == pytest.approx(1.0)
    a = seed_agreement([1.0, 1.0, 0.2], [null, null, strong], bound=0.25)
    assert (a["agree"], a["spread"], a["significant_seeds"]) == (False, pytest.approx(0.8), 1)
    assert seed_agreement([0.1, 0.2], [strong, strong], bound=0.25)["agree"]
    assert sem([1.0, 1.0, 0.2]) == pytest.approx(
        math.sqrt(((0.8 / 3) ** 2 * 2 + (1.6 / 3) ** 2) / 2) / math.sqrt(3)
    )
    assert sem([0.5]) == 0.0


def test_consensus_prunes_what_most_seeds_prune() -> None:
    model = tiny_model("llama")
    adapter = get_adapter(model)
    n = adapter.n_neurons
    seeds = []
    for order in ([0, 1, 2], [0, 1, 3], [0, 4, 5]):  # neuron 0 in all seeds, 1 in two
        s = torch.ones(n)
        s[order] = torch.tensor([-3.0, -2.0, -1.0])
        seeds.append(Scores(neurons={0: s, 1: torch.ones(n)}, n_samples=1, meta={"method": "lrp"}))
    masks = [unit_mask(s, adapter, "neuron", count=3) for s in seeds]
    both = consensus(seeds, masks)
    top2 = unit_mask(both, adapter, "neuron", count=2)
    assert top2.units["neurons"] == {0: [0, 1]}
    # the third place is a tie of one vote each (2, 3, 4, 5): the lowest mean score wins
    third = unit_mask(both, adapter, "neuron", count=3).units["neurons"][0]
    assert third[:2] == [0, 1] and len(third) == 3 and third[2] == 4
    with pytest.raises(CircuitcutError, match="one mask per seed"):
        consensus(seeds, masks[:2])


def test_test_split_is_fixed_and_disjoint() -> None:
    prompts = [f"p{i}" for i in range(20)]
    dev, test = split_test(prompts, 0.25)
    assert len(test) == 5 and len(dev) == 15 and not set(dev) & set(test)
    assert split_test(prompts, 0.25) == (dev, test)
    with pytest.raises(CircuitcutError, match="fewer than two for attribution"):
        split_test(["a", "b"], 0.5)
    with pytest.raises(CircuitcutError, match=r"test share must lie in \(0, 1\)"):
        split_test(prompts, 1.0)
