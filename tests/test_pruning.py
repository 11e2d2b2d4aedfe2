"""Masks (exact counts for every scheme), applying them reversibly, perplexity, compression."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from circuitcut import get_adapter
from circuitcut.attribution import attribute
from circuitcut.attribution.config import ScoringConfig
from circuitcut.errors import CircuitcutError
from circuitcut.evaluation import perplexity, perplexity_of_ids
from circuitcut.models.tiny import tiny_model
from circuitcut.pruning import Mask, apply_mask, masked, nm_mask, unit_mask, unstructured_mask
from circuitcut.pruning.select import lowest_k_chunks
from circuitcut.scores import Scores
from circuitcut.workflows.compress import CompressConfig, compress
from circuitcut.zoo.tokenizer import build_tokenizer


def _random_scores(model: torch.nn.Module, seed: int = 0) -> Scores:
    return attribute(model, [], ScoringConfig(method="random", seed=seed), progress=False)


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt"])
def test_unstructured_exact_counts(family: str) -> None:
    model = tiny_model(family)
    a = get_adapter(model)
    scores = _random_scores(model)
    total = sum(lin.weight.numel() for lin in a.linears())
    g = unstructured_mask(scores, a, 0.3, scheme="global")
    assert g.pruned() == math.floor(0.3 * total)
    lay = unstructured_mask(scores, a, 0.3, scheme="layer")
    for lin in a.linears():
        assert int(lay.weights[lin.name].sum()) == math.floor(0.3 * lin.weight.numel())
    row = unstructured_mask(scores, a, 0.3, scheme="rowwise")
    for lin in a.linears():
        per_row = row.weights[lin.name].sum(1)  # masks are [out, in] for every module
        assert torch.all(per_row == math.floor(0.3 * lin.in_features)), lin.name
    assert unstructured_mask(scores, a, count=17).pruned() == 17
    assert unstructured_mask(scores, a, 0.0).pruned() == 0


def test_global_mask_prunes_the_lowest_scores() -> None:
    model = tiny_model("llama")
    a = get_adapter(model)
    scores = _random_scores(model)
    m = unstructured_mask(scores, a, 0.4)
    pruned = torch.cat([scores.weight(k)[v] for k, v in m.weights.items()])
    kept = torch.cat([scores.weight(k)[~v] for k, v in m.weights.items()])
    assert pruned.max() <= kept.min()
    hi = unstructured_mask(scores, a, 0.4, prune="highest")
    assert (
        torch.cat([scores.weight(k)[v] for k, v in hi.weights.items()]).min()
        >= torch.cat([scores.weight(k)[~v] for k, v in hi.weights.items()]).max()
    )


def test_ties_are_broken_by_position() -> None:
    model = tiny_model("llama")
    a = get_adapter(model)
    flat = Scores(weights={lin.name: torch.ones_like(lin.weight) for lin in a.linears()}, n_samples=1)
    m = unstructured_mask(flat, a, count=5)
    first = a.linears()[0]
    assert int(m.weights[first.name].sum()) == 5
    assert m.weights[first.name].flatten()[:5].all()
    again = unstructured_mask(flat, a, count=5)
    assert all(torch.equal(m.weights[k], again.weights[k]) for k in m.weights)


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8)])
def test_n_m_masks(n: int, m: int) -> None:
    model = tiny_model("llama")
    a = get_adapter(model)
    mask = nm_mask(_random_scores(model), a, n, m)
    for lin in a.linears():
        groups = mask.weights[lin.name].reshape(lin.out_features, -1, m)
        assert torch.all(groups.sum(-1) == m - n)
    assert mask.sparsity() == pytest.approx(1 - n / m)


def test_neuron_masks_exact() -> None:
    model = tiny_model("opt")
    a = get_adapter(model)
    scores = attribute(model, [], "random", levels=["neuron", "head"], progress=False)
    g = unit_mask(scores, a, "neuron", count=10)
    assert sum(len(v) for v in g.units["neurons"].values()) == 10
    per = unit_mask(scores, a, "neuron", 0.25, scheme="layer")
    assert all(len(per.units["neurons"][i]) == a.n_neurons // 4 for i in range(a.n_layers))
    # pruned neurons are whole input columns of fc2
    fc2 = a.neuron_site(0)
    cols = per.weights[fc2.name].any(0)
    assert sorted(torch.nonzero(cols).flatten().tolist()) == per.units["neurons"][0]
    assert per.weights[fc2.name][:, cols].all()


@pytest.mark.parametrize("family", ["llama", "gemma", "phi3", "gpt2"])
def test_head_pruning_zeroes_exactly_that_head(family: str) -> None:
    """With grouped-query attention too: the output equals zero-ablating that head's output."""
    model = tiny_model(family)
    a = get_adapter(model)
    scores = Scores(
        heads={i: torch.arange(a.n_heads, dtype=torch.float) for i in range(a.n_layers)}, n_samples=1
    )
    scores.heads[0][2] = -1.0  # head 2 of layer 0 is the least relevant
    mask = unit_mask(scores, a, "head", count=1)
    assert mask.units["heads"] == {0: [2]}
    o = a.head_site(0)
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    d = a.head_dim

    def ablate(module: torch.nn.Module, args: tuple) -> tuple:
        x = args[0].clone()
        x[..., 2 * d : 3 * d] = 0
        return (x, *args[1:])

    h = o.module.register_forward_pre_hook(ablate)
    with torch.no_grad():
        expected = model(ids).logits
    h.remove()
    before = o.weight.detach().clone()
    with masked(a, mask), torch.no_grad():
        got = model(ids).logits
        w = o.as_out_in(o.weight)
        assert torch.all(w[:, 2 * d : 3 * d] == 0)
        others = torch.ones(w.shape[1], dtype=torch.bool)
        others[2 * d : 3 * d] = False
        assert torch.equal(w[:, others], o.as_out_in(before)[:, others])
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.equal(o.weight, before)


def test_group_kv_prunes_whole_groups() -> None:
    model = tiny_model("llama")  # 4 heads, 2 kv heads
    a = get_adapter(model)
    scores = Scores(heads={i: torch.tensor([5.0, 6.0, 0.1, 0.2]) for i in range(a.n_layers)}, n_samples=1)
    mask = unit_mask(scores, a, "head", count=1, group_kv=True, layers=[1])
    assert mask.units["heads"] == {1: [2, 3]}


def test_masked_restores_bit_for_bit_and_apply_is_permanent() -> None:
    model = tiny_model("gpt2")
    a = get_adapter(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    mask = unstructured_mask(_random_scores(model), a, 0.5, scheme="rowwise")
    with masked(a, mask) as report:
        assert report["sparsity"] >= 0.5
        for name, m in mask.weights.items():
            lin = a.linear(name)  # Conv1D: the [out, in] mask lands on the weight's [in, out] storage
            assert m.shape == lin.shape and torch.all(lin.as_out_in(lin.weight)[m] == 0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    report = apply_mask(a, mask)
    assert all(row["zeros"] >= row["masked"] for row in report["layers"])
    assert report["sparsity"] == pytest.approx(0.5, abs=0.01)


def test_mask_errors_and_roundtrip(tmp_path: Path) -> None:
    model = tiny_model("llama")
    a = get_adapter(model)
    scores = _random_scores(model)
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(CircuitcutError, match=r"sparsity must be in \[0, 1\)"):
            unstructured_mask(scores, a, bad)
    with pytest.raises(CircuitcutError, match="matches no linear layer"):
        unstructured_mask(scores, a, 0.5, layers="*.mlp.fc9")
    with pytest.raises(CircuitcutError, match="empty layer selection"):
        unstructured_mask(scores, a, 0.5, layers=[])
    with pytest.raises(CircuitcutError, match="cannot prune"):
        unstructured_mask(scores, a, count=10**9)
    mask = unstructured_mask(scores, a, 0.2, scheme="layer")
    path = mask.save(tmp_path / "m")
    back = Mask.load(path)
    assert back.meta["scheme"] == "layer" and back.pruned() == mask.pruned()
    other = get_adapter(tiny_model("llama", intermediate_size=64))
    with pytest.raises(CircuitcutError, match="made for another model"):
        apply_mask(other, back)


def test_perplexity_equals_hand_computation() -> None:
    model = tiny_model("llama")
    ids = torch.arange(3, 3 + 23) % 60 + 3  # 23 tokens -> 2 windows of 10, 3 dropped
    res = perplexity_of_ids(model, ids, seqlen=10, batch_size=1)
    nll, count = 0.0, 0
    with torch.no_grad():
        for w in ids[:20].view(2, 10):
            logp = torch.log_softmax(model(w[None]).logits[0].double(), -1)
            nll -= sum(logp[t, w[t + 1]].item() for t in range(9))
            count += 9
    assert res.windows == 2 and res.tokens == 18
    assert res.perplexity == pytest.approx(math.exp(nll / count), rel=1e-6)
    again = perplexity_of_ids(model, ids, seqlen=10, batch_size=2)
    assert again.perplexity == pytest.approx(res.perplexity, rel=1e-6)
    assert perplexity_of_ids(model, ids, seqlen=10, batch_size=2).perplexity == again.perplexity
    with pytest.raises(CircuitcutError, match="fewer than one window"):
        perplexity_of_ids(model, ids, seqlen=100)
    with pytest.raises(CircuitcutError, match="corpus is empty"):
        perplexity(model, build_tokenizer(), "  ")


@pytest.mark.parametrize("sequential", [False, True])
def test_compress_workflow_writes_model_mask_report(tmp_path: Path, sequential: bool) -> None:
    tok = build_tokenizer()
    model = tiny_model("llama", vocab_size=len(tok))
    text = tmp_path / "cal.txt"
    text.write_text(" ".join(["Mary went to the store . Tom sang : la la la ."] * 40))
    cfg = CompressConfig(
        ScoringConfig(method="wanda"),
        sparsity=0.5,
        scheme="rowwise",
        n_samples=4,
        seqlen=16,
        sequential=sequential,
    )
    report = compress(model, str(text), tmp_path / "out", cfg, tokenizer=tok, progress=False)
    assert report["sparsity"] == pytest.approx(0.5)
    assert report["pruned"]["tokens"] == report["dense"]["tokens"]
    for f in ("model.safetensors", "config.json", "tokenizer.json", "mask.safetensors", "mask.json", "report.json",
              "report.md", "pruning.json"):  # fmt: skip
        assert (tmp_path / "out" / f).exists(), f
    with pytest.raises(CircuitcutError, match="sequential protocol"):
        CompressConfig(scheme="global", sequential=True)
    with pytest.raises(CircuitcutError, match="unknown scheme"):
        CompressConfig(scheme="blocks")


@pytest.fixture
def calibration_text(tmp_path: Path) -> Path:
    """A small calibration file in the reference tokenizer's words."""
    text = tmp_path / "cal.txt"
    text.write_text(" ".join(["Mary went to the store . Tom sang : la la la ."] * 40))
    return text


def test_compress_seed_mode_reaches_the_attribution(tmp_path: Path, calibration_text: Path) -> None:
    tok, text = build_tokenizer(), calibration_text
    masks = {}
    for mode in ("unit", "value"):
        model = tiny_model("llama", vocab_size=len(tok))  # compress prunes in place: a fresh copy each
        cfg = CompressConfig(
            ScoringConfig(seed_mode=mode), sparsity=0.5, scheme="global", n_samples=4, seqlen=16
        )
        report = compress(model, str(text), tmp_path / mode, cfg, tokenizer=tok, progress=False)
        assert report["config"]["scoring"]["seed_mode"] == mode
        masks[mode] = Mask.load(tmp_path / mode / "mask.safetensors")
    differ = [n for n, m in masks["unit"].weights.items() if not torch.equal(m, masks["value"].weights[n])]
    assert differ  # value seeds weight each explained token by its logit: another global ranking
    with pytest.raises(CircuitcutError, match="seed_mode"):
        CompressConfig(ScoringConfig(seed_mode="logit"))


def test_compress_lrp_rules_reach_the_attribution(tmp_path: Path, calibration_text: Path) -> None:
    tok, text = build_tokenizer(), calibration_text
    model = tiny_model("llama", vocab_size=len(tok))
    cfg = CompressConfig(
        ScoringConfig(lrp_rules=("gate", "norm", "activation")), sparsity=0.5, n_samples=4, seqlen=16
    )
    assert cfg.scoring.lrp_rules == ("activation", "norm", "gate")  # canonical order
    report = compress(model, str(text), tmp_path / "c", cfg, tokenizer=tok, progress=False)
    assert list(report["config"]["scoring"]["lrp_rules"]) == ["activation", "norm", "gate"]
    mask = Mask.load(tmp_path / "c" / "mask.safetensors")
    assert mask.meta["scores"]["lrp_rules"] == ["activation", "norm", "gate"]
    with pytest.raises(CircuitcutError, match="LRP rules apply to method 'lrp', not 'wanda'"):
        CompressConfig(ScoringConfig(method="wanda", lrp_rules=("norm",)))


def _stable_sort_selection(chunks: list[torch.Tensor], k: int) -> list[torch.Tensor]:
    """The reference: concatenate, stable-sort, take the first k, split back."""
    flat = torch.cat([c.flatten() for c in chunks])
    sel = torch.zeros(flat.numel(), dtype=torch.bool)
    sel[torch.sort(flat, stable=True).indices[:k]] = True
    return [m.view(c.shape) for m, c in zip(sel.split([c.numel() for c in chunks]), chunks, strict=True)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chunked_selection_equals_a_stable_sort_of_the_concatenation(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    chunks = [
        torch.randint(-3, 4, (7, 5), generator=g).float(),  # heavy ties
        torch.randn(40, generator=g) * 1e-30,  # tiny values sharing the high key bits
        torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1.0, -0.0, 0.0]),
        torch.randn(3, 4, 6, generator=g),
        torch.zeros(0),
    ]
    total = sum(c.numel() for c in chunks)
    for k in (0, 1, 2, 17, 35, 36, 60, total - 1, total):
        got = lowest_k_chunks(chunks, k)
        want = _stable_sort_selection(chunks, k)
        assert [m.shape for m in got] == [c.shape for c in chunks]
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True)), k
        assert sum(int(m.sum()) for m in got) == k
    with pytest.raises(CircuitcutError, match="cannot select 1000"):
        lowest_k_chunks(chunks, 1000)
    zeros = [torch.tensor([0.0, -0.0, 0.0, -0.0])]  # -0.0 == 0.0 in a sort: ties go by position
    assert lowest_k_chunks(zeros, 2)[0].tolist() == [True, True, False, False]


def test_chunked_selection_accepts_a_generator_factory() -> None:
    data = [torch.arange(10.0).flip(0), torch.arange(5.0)]
    calls = {"n": 0}

    def fresh():
        calls["n"] += 1
        return (d for d in data)

    got = lowest_k_chunks(fresh, 4)
    assert got[0].tolist() == [False] * 8 + [True, True] and got[1].tolist() == [True, True] + [False] * 3
    assert calls["n"] == 4  # one count, three passes: a generator is never reused once spent
    calls["n"] = 0
    assert [m.tolist() for m in lowest_k_chunks(fresh, 4, total=15)] == [m.tolist() for m in got]
    assert calls["n"] == 3  # the count is skipped when the caller knows it
