"""Layer budgets (OWL, relevance mass): hand computations, exact totals, row-wise within a layer,
refusals, and the compress workflow with a budget."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest
import torch

from circuitcut import get_adapter
from circuitcut.attribution import attribute
from circuitcut.attribution.config import ScoringConfig
from circuitcut.cli.main import build_parser
from circuitcut.errors import CircuitcutError
from circuitcut.models.tiny import tiny_model
from circuitcut.pruning import Mask, unstructured_mask
from circuitcut.pruning.budgets import (
    LAMBDA,
    allocate,
    layer_budget,
    outlier_ratio,
    relevance_density,
    spread_rates,
)
from circuitcut.scores import Scores
from circuitcut.workflows.compress import CompressConfig, compress
from circuitcut.zoo.tokenizer import build_tokenizer


def _random_scores(model: torch.nn.Module, seed: int = 0) -> Scores:
    return attribute(model, [], ScoringConfig(method="random", seed=seed), progress=False)


def _ones(model: torch.nn.Module) -> Scores:
    a = get_adapter(model)
    return Scores({lin.name: torch.ones(lin.shape) for lin in a.linears()}, n_samples=1)


def test_outlier_ratio_by_hand() -> None:
    # 10 scores: nine ones and a 21; mean 3, so above M * mean: 21 only for M = 5 (15) and M = 3 (9)
    block = [torch.ones(2, 2), torch.tensor([[1.0, 1, 1, 1, 1, 21]])]
    assert outlier_ratio(block, 5) == pytest.approx(0.1)
    assert outlier_ratio(block, 3) == pytest.approx(0.1)
    assert outlier_ratio(block, 8) == 0.0  # 24 > 21
    # two outliers of 20: sum 8 + 40 = 48, mean 4.8; above 5 * 4.8 = 24? no; above 3 * 4.8 = 14.4: both
    two = [torch.tensor([1.0] * 8 + [20, 20])]
    assert outlier_ratio(two, 5) == 0.0
    assert outlier_ratio(two, 3) == pytest.approx(0.2)


def test_spread_rates_by_hand() -> None:
    # equal sizes: the signal's range maps onto [s - lam, s + lam], mean already s
    rates = spread_rates({0: 0.1, 1: 0.0, 2: 0.05}, {0: 1, 1: 1, 2: 1}, 0.5, 0.08)
    assert rates == pytest.approx({0: 0.42, 1: 0.58, 2: 0.50})
    # block 2 twice as big: raw 0.42, 0.58, 0.58 have weighted mean 0.54, shifted down by 0.04
    rates = spread_rates({0: 0.1, 1: 0.0, 2: 0.0}, {0: 1, 1: 1, 2: 2}, 0.5, 0.08)
    assert rates == pytest.approx({0: 0.38, 1: 0.54, 2: 0.54})
    assert (rates[0] + rates[1] + 2 * rates[2]) / 4 == pytest.approx(0.5, abs=1e-12)
    assert spread_rates({0: 0.3, 1: 0.3}, {0: 5, 1: 7}, 0.4) == {0: 0.4, 1: 0.4}  # no spread: uniform


def test_relevance_density_by_hand() -> None:
    # block 0: 4 weights, mass 6; block 1: 2 weights, mass 6 (abs); shares of mass 1/2, of weights 2/3, 1/3
    d = relevance_density({0: [torch.tensor([1.0, 2, 1, 2])], 1: [torch.tensor([-3.0, 3])]})
    assert d == pytest.approx({0: 0.75, 1: 1.5})
    with pytest.raises(CircuitcutError, match=r"every score is zero.*--budget uniform"):
        relevance_density({0: [torch.zeros(3)]})


def test_allocate_is_exact_and_largest_remainder() -> None:
    counts = allocate({"a": 0.5, "b": 0.5, "c": 0.5}, {"a": 3, "b": 3, "c": 3}, 4)
    assert counts == {"a": 2, "b": 1, "c": 1}  # remainders tie: the earliest layer takes the one left
    counts = allocate({"a": 0.3, "b": 0.7}, {"a": 10, "b": 10}, 10)
    assert counts == {"a": 3, "b": 7}


def test_owl_budget_on_planted_outliers_equals_hand_computation() -> None:
    model = tiny_model("llama")
    a = get_adapter(model)
    scores = _ones(model)
    scores.weights["layers.0.attn.q_proj"][0, :3] = 100.0  # three outliers in block 0
    n0 = sum(lin.weight.numel() for lin in a.layers[0].linears.values())
    mean0 = (n0 + 3 * 99) / n0
    assert 5 * mean0 < 100  # so the three are outliers and the ones are not
    s = 0.5
    budget = layer_budget("owl", scores, a.linears(), s)
    assert budget.signal == pytest.approx({0: 3 / n0, 1: 0.0})
    # two blocks of equal size: block 0 (more outliers) at s - lam, block 1 at s + lam
    assert budget.rates == pytest.approx({0: s - LAMBDA, 1: s + LAMBDA})
    assert budget.as_dict()["m"] == 5.0 and budget.as_dict()["lambda"] == LAMBDA


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt"])
@pytest.mark.parametrize("kind", ["owl", "relevance"])
@pytest.mark.parametrize("scheme", ["rowwise", "layer"])
def test_budget_masks_keep_exact_totals(family: str, kind: str, scheme: str) -> None:
    model = tiny_model(family)
    a = get_adapter(model)
    scores = _random_scores(model)
    first = scores.weights[a.linears()[0].name]
    first *= 4.0  # block 0 has more mass (relevance) and three outliers (OWL), so the rates spread
    first[0, :3] = 1e3
    s = 0.5
    budget = layer_budget(kind, scores, a.linears(), s)
    total = sum(lin.weight.numel() for lin in a.linears())
    assert budget.total() == math.floor(s * total)
    sizes = {b: sum(lin.weight.numel() for lin in layer.linears.values()) for b, layer in enumerate(a.layers)}
    assert sum(budget.rates[b] * sizes[b] for b in sizes) / total == pytest.approx(s, abs=1e-12)
    assert max(budget.rates.values()) - min(budget.rates.values()) == pytest.approx(2 * LAMBDA)
    mask = unstructured_mask(scores, a, s, scheme=scheme, budget=budget)
    assert mask.pruned() == math.floor(s * total)
    assert mask.meta["budget"]["kind"] == kind
    for lin in a.linears():
        m = mask.weights[lin.name]
        assert int(m.sum()) == budget.counts[lin.name]
        assert abs(int(m.sum()) - budget.rates[lin.layer] * m.numel()) < 1 + 1e-6  # the block's rate
        sc = scores.weight(lin.name)
        if scheme == "rowwise":
            per_row = m.sum(1)
            assert int(per_row.max() - per_row.min()) <= 1, lin.name
            for row in range(m.shape[0]):  # the lowest of each row go
                if 0 < int(per_row[row]) < m.shape[1]:
                    assert sc[row][m[row]].max() <= sc[row][~m[row]].min()
        elif 0 < int(m.sum()) < m.numel():
            assert sc[m].max() <= sc[~m].min()


def test_uniform_rowwise_is_unchanged_by_the_refactor() -> None:
    model = tiny_model("llama")
    a = get_adapter(model)
    scores = _random_scores(model)
    mask = unstructured_mask(scores, a, 0.3, scheme="rowwise")
    for lin in a.linears():
        s = scores.weight(lin.name)
        k = math.floor(0.3 * lin.in_features)
        ref = torch.zeros_like(s, dtype=torch.bool).scatter_(
            1, torch.sort(s, dim=1, stable=True).indices[:, :k], True
        )
        assert torch.equal(mask.weights[lin.name], ref)
    assert "budget" not in mask.meta


def test_refusals_name_the_fix() -> None:
    model = tiny_model("llama")
    a = get_adapter(model)
    scores = _random_scores(model)
    budget = layer_budget("relevance", scores, a.linears(), 0.5)
    with pytest.raises(CircuitcutError, match=r"global scheme lets all layers compete.*'layer' or 'rowwise'"):
        unstructured_mask(scores, a, 0.5, scheme="global", budget=budget)
    with pytest.raises(CircuitcutError, match=r"made for sparsity 0.5, not 0.6"):
        unstructured_mask(scores, a, 0.6, scheme="rowwise", budget=budget)
    part = layer_budget("owl", scores, a.linears()[:3], 0.5)
    with pytest.raises(CircuitcutError, match=r"no count for .*same layer selection"):
        unstructured_mask(scores, a, 0.5, scheme="rowwise", budget=part)
    with pytest.raises(
        CircuitcutError, match=r"outside \[0, 1\): .* use a sparsity between 0.2 and 0.8, budget uniform"
    ):
        spread_rates({0: 1.0, 1: 0.0}, {0: 1, 1: 1}, 0.05, 0.1)
    with pytest.raises(CircuitcutError, match=r"unknown budget 'flat'"):
        layer_budget("flat", scores, a.linears(), 0.5)
    with pytest.raises(CircuitcutError, match=r"belongs to no decoder layer.*--budget uniform"):
        layer_budget("owl", _random_scores(model), [a.embed], 0.5)
    for scheme in ("2:4", "4:8"):
        with pytest.raises(CircuitcutError, match=r"N:M keeps n of every m.*budget uniform"):
            CompressConfig(scheme=scheme, budget="owl")
    with pytest.raises(CircuitcutError, match=r"global scheme already lets all layers compete"):
        CompressConfig(scheme="global", budget="relevance")
    with pytest.raises(
        CircuitcutError, match=r"unknown budget 'outlier'; use one of uniform, owl, relevance"
    ):
        CompressConfig(budget="outlier")


def test_cli_budget_option_and_its_refusal() -> None:
    from circuitcut.cli import compress_cmd

    parser = build_parser()
    args = parser.parse_args(["compress", "--model", "M", "--calibration", "T", "--budget", "owl"])
    assert compress_cmd.compress_config(args).budget == "owl"
    args = parser.parse_args(
        ["compress", "--model", "M", "--calibration", "T", "--budget", "owl", "--scheme", "2:4"]
    )
    assert isinstance(args, argparse.Namespace)
    with pytest.raises(CircuitcutError, match=r"N:M"):
        compress_cmd.compress_config(args)


@pytest.mark.parametrize(("method", "budget", "sequential"), [("lrp", "owl", False), ("lrp", "relevance", False),
                                                              ("wanda", "owl", True)])  # fmt: skip
def test_compress_with_a_budget(tmp_path: Path, method: str, budget: str, sequential: bool) -> None:
    tok = build_tokenizer()
    model = tiny_model("llama", vocab_size=len(tok))
    text = tmp_path / "cal.txt"
    text.write_text(" ".join(["Mary went to the store . Tom sang : la la la ."] * 40))
    cfg = CompressConfig(ScoringConfig(method=method), sparsity=0.5, scheme="rowwise", n_samples=4, seqlen=16,
                         sequential=sequential, budget=budget)  # fmt: skip
    report = compress(model, str(text), tmp_path / "out", cfg, tokenizer=tok, progress=False)
    total = sum(lin.weight.numel() for lin in get_adapter(model).linears())
    assert report["masked_weights"] == math.floor(0.5 * total)
    assert report["config"]["budget"] == budget
    mask = Mask.load(tmp_path / "out" / "mask.safetensors")
    assert mask.meta["budget"]["kind"] == budget
    assert set(mask.meta["budget"]["rates"]) == {"0", "1"}
