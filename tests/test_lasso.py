"""CircuitLasso: SAEs in SAELens layout, splicing, regressions, block structure, ground truth, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from circuitcut import get_adapter
from circuitcut.errors import CircuitcutError
from circuitcut.lasso.circuit import fit_circuit_lasso
from circuitcut.lasso.features import FeatureData, collect_codes, metric_with, spliced
from circuitcut.lasso.regression import fista_lasso, learn_structure, sklearn_lasso, standardize
from circuitcut.lasso.sae import SAE, load_sae
from circuitcut.lasso.sae_training import train_sae
from circuitcut.lasso.sites import parse_site, site_hook, sites_matching
from circuitcut.lasso.synthetic import random_sem, structure_scores
from circuitcut.models.tiny import tiny_model
from circuitcut.tasks import ioi_task
from circuitcut.zoo.tokenizer import build_tokenizer

TOK = build_tokenizer()


@pytest.fixture(scope="module")
def llama() -> tuple:
    model = tiny_model("llama", vocab_size=len(TOK))
    return model, get_adapter(model)


def _windows(n: int = 24, t: int = 16) -> torch.Tensor:
    return torch.randint(3, len(TOK), (n, t), generator=torch.Generator().manual_seed(0))


def test_sae_roundtrip_in_saelens_layout(tmp_path: Path, llama: tuple) -> None:
    _, adapter = llama
    sae = SAE(32, 64, "topk", k=4, hook_name="blocks.1.hook_resid_post")
    sae.save(tmp_path / "sae")
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert (
        cfg["d_in"] == 32
        and cfg["d_sae"] == 64
        and cfg["architecture"] == "topk"
        and cfg["activation_fn_kwargs"] == {"k": 4}
    )
    from safetensors.torch import load_file

    assert set(load_file(str(tmp_path / "sae" / "sae_weights.safetensors"))) == {
        "W_enc",
        "W_dec",
        "b_enc",
        "b_dec",
    }
    back = load_sae(tmp_path / "sae", adapter)
    x = torch.randn(5, 32)
    assert torch.equal(back.encode(x), sae.encode(x)) and back.hook_name == sae.hook_name


def test_encode_decode_shapes_and_error_term() -> None:
    for arch, k in (("standard", None), ("topk", 3)):
        sae = SAE(8, 20, arch, k=k)
        x = torch.randn(2, 5, 8)
        z = sae.encode(x)
        assert z.shape == (2, 5, 20) and (z >= 0).all()
        if k:
            assert int((z > 0).sum(-1).max()) <= k
        assert sae.decode(z).shape == x.shape
        assert torch.allclose(sae.decode(z) + sae.error(x), x, atol=1e-6)


def test_splice_with_error_term_is_exact(llama: tuple) -> None:
    model, adapter = llama
    saes = [SAE(32, 48, "topk", k=4, hook_name=f"blocks.{i}.hook_resid_post") for i in range(2)]
    ids = _windows(3, 10)
    with torch.no_grad():
        ref = model(ids).logits
        with spliced(adapter, saes):
            got = model(ids).logits
    assert torch.allclose(got, ref, atol=1e-4)
    task = ioi_task(TOK, 12, seed=0)
    enc = task.encode(TOK)
    full = metric_with(model, adapter, saes, enc, None)
    none_kept = metric_with(model, adapter, saes, enc, [torch.zeros(48), torch.zeros(48)])
    assert full != pytest.approx(none_kept)
    data = collect_codes(model, adapter, saes, enc, positions="last")
    assert data.codes[0].shape == (12, 48) and data.errors[1].shape == (12, 32) and data.metric.shape == (12,)


def test_train_sae_reconstructs(llama: tuple) -> None:
    model, adapter = llama
    sae = train_sae(model, adapter, "blocks.0.hook_mlp_out", _windows(), d_sae=64, k=16, steps=400, batch_tokens=128,
                    lr=3e-3, progress=False)  # fmt: skip
    from circuitcut.lasso.sae import collect_site

    acts = collect_site(model, adapter, parse_site("blocks.0.hook_mlp_out"), _windows(8))
    ev = 1 - (acts - sae.decode(sae.encode(acts))).pow(2).sum() / (acts - acts.mean(0)).pow(2).sum()
    assert ev > 0.9  # activations normalised before training (lasso.sae_training); 0.95 measured


def test_regression_recovers_a_planted_sparse_matrix() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 30, generator=g, dtype=torch.float64)
    true = torch.zeros(30, 4, dtype=torch.float64)
    true[[2, 7, 11], 0] = torch.tensor([1.5, -2.0, 1.0], dtype=torch.float64)
    true[[0, 29], 3] = torch.tensor([-1.0, 2.5], dtype=torch.float64)
    y = x @ true + 0.1 * torch.randn(500, 4, generator=g, dtype=torch.float64)
    a = fista_lasso(x, y, 0.05)
    b = sklearn_lasso(x, y, 0.05)
    assert torch.equal(a.abs() > 0.2, true != 0)
    assert torch.allclose(a, b, atol=1e-4)


def test_block_structure_never_points_backwards() -> None:
    g = torch.Generator().manual_seed(1)
    late = torch.randn(300, 3, generator=g, dtype=torch.float64)
    early = late @ torch.tensor(
        [[1.0, 0, 0], [0, 2.0, 0], [0, 0, -1.5]], dtype=torch.float64
    )  # early depends on late
    st = learn_structure([early, late], ["early", "late"])
    assert set(st.blocks) == {(0, 1)}  # only earlier -> later blocks exist
    adj = st.adjacency()
    assert torch.all(adj[3:, :3] == 0)
    three = learn_structure([early, late, late * 2], adjacent_only=True)
    assert set(three.blocks) == {(0, 1), (1, 2)}


def test_synthetic_20_node_linear_recovery() -> None:
    sem = random_sem(20, 2000, noise=1.0, seed=3)
    st = learn_structure([sem.data[:, i : i + 1] for i in range(20)])
    s = structure_scores(st.adjacency() != 0, sem.graph)
    assert s["precision"] >= 0.9 and s["recall"] >= 0.9, s
    assert structure_scores(sem.graph, sem.graph)["shd"] == 0


def test_circuit_lasso_finds_the_driving_features() -> None:
    g = torch.Generator().manual_seed(2)
    a = torch.relu(torch.randn(400, 10, generator=g))
    b = torch.relu(a[:, :5] @ torch.eye(5, 8) * 2 + 0.1 * torch.rand(400, 8, generator=g))
    metric = 3 * b[:, 1] - 2 * b[:, 4] + 0.05 * torch.randn(400, generator=g)
    lc = fit_circuit_lasso(FeatureData(["s0", "s1"], [a, b], [torch.zeros(400, 1)] * 2, metric))
    top = {(s, i) for s, i, _ in lc.ranking()[:4]}
    assert {(1, 1), (1, 4), (0, 1), (0, 4)} <= top


def test_activation_importance_is_the_mean_per_prompt_contribution() -> None:
    g = torch.Generator().manual_seed(3)
    a = torch.relu(torch.randn(400, 6, generator=g)) * torch.tensor([1.0, 5.0, 1.0, 1.0, 0.2, 1.0])
    b = torch.relu(a[:, :4] @ torch.rand(4, 5, generator=g) + 0.1 * torch.rand(400, 5, generator=g))
    metric = b[:, 0] - b[:, 2] + 0.05 * torch.randn(400, generator=g)
    data = FeatureData(["s0", "s1"], [a, b], [torch.zeros(400, 1)] * 2, metric)
    bare = fit_circuit_lasso(data, importance="coef")
    weighted = fit_circuit_lasso(data)  # default: activation
    for codes, s_bare, s_act in zip(data.codes, bare.scores, weighted.scores, strict=True):
        x = codes.double()
        by_hand = s_bare.double() * x.abs().mean(0) / x.std(0, unbiased=False)  # |coef_raw| * mean |x|
        assert torch.allclose(s_act.double(), by_hand / by_hand.sum(), atol=1e-6)
    assert not torch.allclose(bare.scores[0], weighted.scores[0])
    with pytest.raises(CircuitcutError, match="importance must be"):
        fit_circuit_lasso(data, importance="gain")


def test_bad_inputs(tmp_path: Path, llama: tuple) -> None:
    _, adapter = llama
    SAE(16, 32, hook_name="blocks.0.hook_resid_post").save(tmp_path / "narrow")
    with pytest.raises(
        CircuitcutError, match=r"reads 16 features but blocks\.0\.hook_resid_post of this model has 32"
    ):
        load_sae(tmp_path / "narrow", adapter)
    SAE(32, 32, hook_name="blocks.9.hook_resid_post").save(tmp_path / "deep")
    with pytest.raises(CircuitcutError, match=r"the model has layers 0\.\.1"):
        load_sae(tmp_path / "deep", adapter)
    with pytest.raises(CircuitcutError, match="unknown hook point"):
        parse_site("layers.0.mlp")
    with pytest.raises(CircuitcutError, match="no sites"):
        learn_structure([])
    with pytest.raises(CircuitcutError, match="no data"):
        fista_lasso(torch.zeros(0, 3), torch.zeros(0, 1), 0.1)
    with pytest.raises(CircuitcutError, match="no prompts"):
        from circuitcut.tasks.base import Encoded

        collect_codes(
            llama[0], adapter, [SAE(32, 8, hook_name="blocks.0.hook_resid_post")], Encoded([], [], [], [])
        )
    with pytest.raises(CircuitcutError, match="a topk SAE needs k"):
        SAE(4, 8, "topk")
    assert [s.name for s in sites_matching("blocks.*.hook_mlp_out", adapter)] == [
        "blocks.0.hook_mlp_out",
        "blocks.1.hook_mlp_out",
    ]
    assert standardize(torch.ones(4, 2))[0].abs().sum() == 0


def test_site_hook_sees_flattened_opt_mlp() -> None:
    model = tiny_model("opt")
    adapter = get_adapter(model)
    shapes = []
    with site_hook(
        adapter, parse_site("blocks.0.hook_mlp_out"), lambda t: shapes.append(t.shape), batch_shape=(2, 5)
    ):
        model(torch.randint(3, 60, (2, 5)))
    assert shapes == [torch.Size([2, 5, 32])]


def test_features_stream_to_disk_sparse_and_load_back(tmp_path: Path, llama: tuple) -> None:
    from circuitcut.lasso.features import stream_codes

    model, adapter = llama
    saes = [SAE(32, 48, "topk", k=4, hook_name=f"blocks.{i}.hook_resid_post") for i in range(2)]
    enc = ioi_task(TOK, 10, seed=0).encode(TOK)
    whole = collect_codes(model, adapter, saes, enc, positions="last", candidates=[5, 6, 7])
    stream_codes(
        model, adapter, saes, enc, tmp_path / "f", shard_prompts=4, positions="last", candidates=[5, 6, 7]
    )
    assert len(list((tmp_path / "f").glob("*.safetensors"))) == 3
    back = FeatureData.load(tmp_path / "f")
    for a, b in zip(whole.codes + whole.errors, back.codes + back.errors, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(whole.outputs, back.outputs) and torch.allclose(whole.metric, back.metric)


def test_penalty_for_a_target_number_of_edges() -> None:
    sem = random_sem(12, 1000, seed=4)
    st = learn_structure([sem.data[:, i : i + 1] for i in range(12)], target_edges=10)
    assert len(st.edges()) >= 10
    fewer = learn_structure([sem.data[:, i : i + 1] for i in range(12)], target_edges=3)
    assert 3 <= len(fewer.edges()) <= len(st.edges())


def test_position_windows_fold_back_per_feature(llama: tuple) -> None:
    model, adapter = llama
    saes = [SAE(32, 16, "topk", k=4, hook_name=f"blocks.{i}.hook_resid_post") for i in range(2)]
    enc = ioi_task(TOK, 40, seed=1).encode(TOK)
    data = collect_codes(model, adapter, saes, enc, positions="last3", candidates=[5, 6, 7, 8])
    assert data.window == 3 and data.codes[0].shape == (40, 3 * 16)
    last = collect_codes(model, adapter, saes, enc, positions="last")
    assert torch.allclose(data.codes[1][:, :16], last.codes[1], atol=1e-6)  # position -1 comes first
    lc = fit_circuit_lasso(data)
    assert all(s.shape == (16,) for s in lc.scores) and lc.output_coef.shape == (16,)
    with pytest.raises(CircuitcutError, match="positions must be"):
        collect_codes(model, adapter, saes, enc, positions="first")


def test_importance_against_the_counterfactual_is_the_mean_change() -> None:
    """With counterfactual codes the activation weight is mean |z - z'|, not mean |z|."""
    g = torch.Generator().manual_seed(4)
    a = torch.relu(torch.randn(300, 6, generator=g))
    b = torch.relu(a[:, :4] @ torch.rand(4, 5, generator=g) + 0.1 * torch.rand(300, 5, generator=g))
    metric = b[:, 0] - b[:, 2] + 0.05 * torch.randn(300, generator=g)
    data = FeatureData(["s0", "s1"], [a, b], [torch.zeros(300, 1)] * 2, metric)
    counter = [a * torch.tensor([1.0, 0.0, 1.0, 0.5, 1.0, 1.0]), b * 0.5]  # feature 0 of s0 never moves
    bare = fit_circuit_lasso(data, importance="coef", normalise_sites=False)
    moved = fit_circuit_lasso(data, counterfactual=counter, normalise_sites=False)
    for codes, cf, s_bare, s_cf in zip(data.codes, counter, bare.scores, moved.scores, strict=True):
        x = codes.double()
        by_hand = s_bare.double() * (x - cf.double()).abs().mean(0) / x.std(0, unbiased=False)
        assert torch.allclose(s_cf.double(), by_hand, atol=1e-6)
    assert moved.scores[0][0] == 0 and bare.scores[0][0] > 0
    assert (moved.against, bare.against, fit_circuit_lasso(data).against) == (
        "the counterfactual prompt",
        None,
        "zero",
    )
    with pytest.raises(CircuitcutError, match="one counterfactual row per prompt"):
        fit_circuit_lasso(data, counterfactual=[a[:10], b[:10]])


def test_top_down_regressions_give_the_full_structure_scores() -> None:
    """Regressing only the features that carry importance changes no score: by hand from the full structure."""
    g = torch.Generator().manual_seed(5)
    a = torch.relu(torch.randn(400, 8, generator=g))
    b = torch.relu(a[:, :5] @ torch.rand(5, 7, generator=g) + 0.2 * torch.rand(400, 7, generator=g))
    c = torch.relu(b[:, :4] @ torch.rand(4, 6, generator=g) + 0.2 * torch.rand(400, 6, generator=g))
    metric = c[:, 0] - 2 * c[:, 3] + 0.05 * torch.randn(400, generator=g)
    data = FeatureData(["s0", "s1", "s2"], [a, b, c], [torch.zeros(400, 1)] * 3, metric)
    lc = fit_circuit_lasso(data, importance="coef", penalty=0.02, normalise_sites=False, dtype=torch.float64)
    st = learn_structure([a.double(), b.double(), c.double()], adjacent_only=True, penalty=0.02,
                         dtype=torch.float64)  # fmt: skip
    want = [
        torch.zeros(8, dtype=torch.float64),
        torch.zeros(7, dtype=torch.float64),
        lc.output_coef.double().abs(),
    ]
    for j in (2, 1):
        blk = st.blocks[(j - 1, j)].double()
        want[j - 1] += (blk * (blk.abs() > 0.05)).abs() @ want[j]
    assert (want[2] == 0).any()  # some late features carry no importance and are not regressed
    for got, ref in zip(lc.scores, want, strict=True):
        assert torch.allclose(got.double(), ref, atol=1e-4), (got, ref)
