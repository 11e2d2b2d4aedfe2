"""Streaming SAE training: exact resume, the checkpoint format, the buffer, the errors."""

from __future__ import annotations

import pytest
import torch

from circuitcut import get_adapter
from circuitcut.errors import CircuitcutError
from circuitcut.lasso.features import spliced
from circuitcut.lasso.sae import collect_site, load_sae
from circuitcut.lasso.sae_config import SAETrainConfig
from circuitcut.lasso.sae_training import ActivationStream, train_saes
from circuitcut.lasso.sites import parse_site, site_hook
from circuitcut.models.tiny import tiny_model

SITES = ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"]


@pytest.fixture(scope="module")
def llama() -> tuple:
    torch.manual_seed(0)
    model = tiny_model("llama", vocab_size=64)
    return model, get_adapter(model)


def _windows(n: int = 24, t: int = 16) -> torch.Tensor:
    return torch.randint(3, 60, (n, t), generator=torch.Generator().manual_seed(1))


def _cfg(**kw: object) -> SAETrainConfig:
    base = {"d_sae": 48, "k": 8, "steps": 12, "batch_tokens": 32, "lr": 3e-3, "buffer_tokens": 96,
            "model_batch": 4, "checkpoint_every": 5}  # fmt: skip
    return SAETrainConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_resume_gives_the_same_weights(llama: tuple, tmp_path) -> None:
    model, adapter = llama
    whole, info = train_saes(model, adapter, SITES, _windows(), _cfg(), progress=False)
    assert info["finished"] and info["resumed_from"] == 0
    ck = tmp_path / "ck"
    part, info1 = train_saes(
        model, adapter, SITES, _windows(), _cfg(), checkpoint=ck, progress=False, stop_after=7
    )
    assert not info1["finished"] and info1["steps"] == 7
    assert not torch.equal(part[0].W_enc, whole[0].W_enc)  # stopped early: not yet the same
    resumed, info2 = train_saes(model, adapter, SITES, _windows(), _cfg(), checkpoint=ck, progress=False)
    assert info2["resumed_from"] == 7 and info2["finished"]
    for a, b in zip(whole, resumed, strict=True):
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_checkpoint_of_other_settings_is_refused(llama: tuple, tmp_path) -> None:
    model, adapter = llama
    train_saes(model, adapter, SITES, _windows(), _cfg(), checkpoint=tmp_path, progress=False, stop_after=3)
    with pytest.raises(CircuitcutError, match="checkpoint of another training run"):
        train_saes(model, adapter, SITES, _windows(), _cfg(lr=1e-3), checkpoint=tmp_path, progress=False)


def test_stream_batches_are_the_sites_activations(llama: tuple) -> None:
    model, adapter = llama
    sites = [parse_site(s, adapter) for s in SITES]
    w = _windows(8, 16)
    stream = ActivationStream(model, adapter, sites, w, _cfg(buffer_tokens=64, skip_positions=0))
    assert stream.chunk_windows == 4 and stream.per_refill == 2 and not stream.whole
    ids = stream._window_ids(0)
    for k, site in enumerate(sites):
        assert torch.allclose(stream.activations(ids)[k], collect_site(model, adapter, site, ids), atol=1e-6)
    seen = torch.cat([stream.batch(s)[0] for s in range(2)])  # one refill, consumed whole
    want = collect_site(model, adapter, sites[0], ids)
    assert torch.allclose(seen[seen[:, 0].argsort()], want[want[:, 0].argsort()], atol=1e-6)
    # every window is visited once per epoch
    visited = torch.cat([stream._window_ids(r) for r in range(2)])
    assert sorted(map(tuple, visited.tolist())) == sorted(map(tuple, w.tolist()))


def test_trained_sae_saves_in_saelens_layout(llama: tuple, tmp_path) -> None:
    model, adapter = llama
    saes, _ = train_saes(model, adapter, SITES[:1], _windows(), _cfg(), progress=False)
    saes[0].save(tmp_path / SITES[0])
    back = load_sae(tmp_path / SITES[0], adapter)
    assert back.hook_name == SITES[0] and back.cfg["training"]["steps"] == 12
    assert torch.equal(back.W_dec, saes[0].W_dec)


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"batch_tokens": 128, "buffer_tokens": 64}, "buffer_tokens"), ({"architecture": "gated"}, "architecture"),
     ({"k": 0}, "k")],
)  # fmt: skip
def test_bad_settings_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(CircuitcutError, match=message):
        _cfg(**fields)


def test_too_little_text_is_refused(llama: tuple) -> None:
    model, adapter = llama
    with pytest.raises(CircuitcutError, match="fewer than one batch"):
        train_saes(model, adapter, SITES, _windows(1, 8), _cfg(), progress=False)


def test_resampling_points_dead_latents_at_badly_reconstructed_inputs() -> None:
    from circuitcut.lasso.sae import SAE
    from circuitcut.lasso.sae_training import _resample

    torch.manual_seed(0)
    sae = SAE(8, 6, "topk", k=2)
    x = torch.randn(10, 8)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    sae(x)[0].pow(2).sum().backward()
    opt.step()  # Adam moments exist
    cfg = _cfg(d_sae=6, k=2, dead_tokens=50)
    since = torch.tensor([0, 60, 0, 0, 70, 0])
    alive_norm = sae.W_enc[:, [0, 2, 3, 5]].norm(dim=0).mean()
    assert _resample(sae, x, since, opt, cfg, torch.Generator().manual_seed(0)) == 2
    centred = (x - sae.b_dec.detach()) / (x - sae.b_dec.detach()).norm(dim=1, keepdim=True)
    for f in (1, 4):
        assert torch.allclose(sae.W_dec[f].norm(), torch.tensor(1.0))
        assert any(torch.allclose(sae.W_dec[f], row) for row in centred)  # a batch token's centred input
        assert torch.allclose(sae.W_enc[:, f], sae.W_dec[f] * 0.2 * alive_norm)
        assert sae.b_enc[f] == 0 and opt.state[sae.W_dec]["exp_avg"][f].abs().sum() == 0
    assert since.tolist() == [0, 0, 0, 0, 0, 0]
    assert opt.state[sae.W_dec]["exp_avg"][0].abs().sum() > 0  # alive latents keep their moments


def test_saved_sae_reads_raw_activations(llama: tuple) -> None:
    """Training scales activations to mean squared norm d_in; the returned SAE folds the factor back."""
    model, adapter = llama
    saes, _ = train_saes(model, adapter, SITES[:1], _windows(), _cfg(steps=200), progress=False)
    sae = saes[0]
    c = sae.cfg["training"]["activation_scale"]
    acts = collect_site(model, adapter, parse_site(SITES[0]), _windows(4))
    assert c > 1  # the tiny model's activations are small
    ev = 1 - (acts - sae.decode(sae.encode(acts))).pow(2).sum() / (acts - acts.mean(0)).pow(2).sum()
    assert ev > 0.5
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.full((sae.d_sae,), 1 / c), rtol=1e-4)


def test_skipped_positions_are_left_out_of_training_and_alone_when_spliced(llama: tuple) -> None:
    model, adapter = llama
    sites = [parse_site(s, adapter) for s in SITES]
    w = _windows(8, 16)
    stream = ActivationStream(model, adapter, sites, w, _cfg(buffer_tokens=60, skip_positions=1))
    assert stream.chunk_windows == 4 and stream.per_refill == 1  # 4 windows x 15 tokens
    ids = stream._window_ids(0)
    want = collect_site(model, adapter, sites[0], ids).reshape(4, 16, -1)[:, 1:].reshape(-1, 32)
    assert torch.equal(stream.activations(ids)[0], want)
    saes, _ = train_saes(model, adapter, SITES[:1], w, _cfg(steps=20, skip_positions=1), progress=False)
    sae = saes[0]
    assert sae.skip_positions == 1
    acts = collect_site(model, adapter, sites[0], w[:2]).reshape(2, 16, -1)
    z = sae.sequence_codes(acts)
    assert z[:, 0].abs().sum() == 0 and z[:, 1:].abs().sum() > 0
    seen: list[torch.Tensor] = []
    hook = site_hook(adapter, parse_site(SITES[1], adapter), lambda t: seen.append(t.clone()), (2, 16))
    with torch.no_grad(), spliced(adapter, saes, [torch.zeros(sae.d_sae)], batch_shape=(2, 16)), hook:
        model(input_ids=w[:2])
    clean = collect_site(model, adapter, sites[1], w[:2]).reshape(2, 16, -1)
    assert torch.allclose(seen[0][:, 0], clean[:, 0], atol=1e-5)  # position 0 untouched by the ablation
    assert not torch.allclose(seen[0][:, 1:], clean[:, 1:], atol=1e-3)
