"""Data-parallel scoring across processes, and resuming an interrupted run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import circuitcut.attribution.engine as engine
from circuitcut.attribution import attribute, next_token_sample
from circuitcut.attribution.config import Execution, ScoringConfig
from circuitcut.errors import CircuitcutError
from circuitcut.models import get_adapter
from circuitcut.models.tiny import tiny_model
from circuitcut.pruning import apply_mask, masked, unstructured_mask
from circuitcut.scores import Scores

from .dist_worker import samples

HERE = Path(__file__).parent


def test_two_gloo_processes_equal_one(tmp_path: Path) -> None:
    out = tmp_path / "dist.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(HERE / "dist_worker.py"), str(out)]  # fmt: skip
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    dist = Scores.load(out)
    single = attribute(tiny_model("llama"), samples(), ScoringConfig(batch_size=3), progress=False)
    assert dist.n_samples == single.n_samples == 10
    assert dist.meta["aggregation"] == "abs"  # per-sample absolute relevance survives the reduction
    for key, t in single.tensors().items():
        err = (dist.tensors()[key] - t).abs().max() / t.abs().max()
        assert err <= 1e-6, (key, float(err))


def test_interrupted_run_resumes_to_identical_scores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model("opt")
    data = samples()
    full = attribute(
        model, data, ScoringConfig(batch_size=2), progress=False, levels=("weight", "neuron", "head")
    )
    real = engine._gradient_pass
    calls = {"n": 0}

    def dies_after_three(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "_gradient_pass", dies_after_three)
    ckpt = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        attribute(
            model,
            data,
            ScoringConfig(batch_size=2),
            progress=False,
            execution=Execution(checkpoint=str(ckpt), checkpoint_every=2),
        )
    assert (tmp_path / "run.rank0-of-1.json").exists()
    monkeypatch.setattr(engine, "_gradient_pass", real)
    resumed_calls = {"n": 0}

    def counting(*args, **kwargs):
        resumed_calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "_gradient_pass", counting)
    resumed = attribute(
        model,
        data,
        ScoringConfig(batch_size=2),
        progress=False,
        execution=Execution(checkpoint=str(ckpt), checkpoint_every=2),
    )
    assert resumed_calls["n"] == 5 - 2  # the two checkpointed batches are not recomputed
    for key, t in full.tensors().items():
        assert torch.equal(resumed.tensors()[key], t), key
    assert not list(tmp_path.glob("run.*"))  # the checkpoint is removed once complete


def test_checkpoint_of_other_settings_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model("llama")
    data = samples()
    real = engine._gradient_pass
    calls = {"n": 0}

    def dies(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "_gradient_pass", dies)
    with pytest.raises(KeyboardInterrupt):
        attribute(
            model,
            data,
            ScoringConfig(batch_size=2),
            progress=False,
            execution=Execution(checkpoint=str(tmp_path / "c"), checkpoint_every=1),
        )
    monkeypatch.setattr(engine, "_gradient_pass", real)
    with pytest.raises(CircuitcutError, match="written for other samples or settings"):
        attribute(
            model,
            data[:5],
            ScoringConfig(batch_size=2),
            progress=False,
            execution=Execution(checkpoint=str(tmp_path / "c")),
        )
    with pytest.raises(CircuitcutError, match="checkpoint_every must be >= 1"):
        attribute(
            model,
            data,
            progress=False,
            execution=Execution(checkpoint=str(tmp_path / "d"), checkpoint_every=0),
        )


def test_single_process_path_needs_no_launcher() -> None:
    from circuitcut.distributed import init_from_env, is_main_process, world_size

    assert not init_from_env() and world_size() == 1 and is_main_process()
    assert next_token_sample([1, 2, 3]).target.positions == (0, 1)


DEVICE_MAPS = {
    "llama": {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk", "model.norm": "cpu",
              "model.rotary_emb": "cpu", "lm_head": "cpu"},
    "opt": {"model.decoder.embed_tokens": "cpu", "model.decoder.embed_positions": "cpu", "model.decoder.layers.0": "disk",
            "model.decoder.layers.1": "cpu", "model.decoder.final_layer_norm": "cpu", "lm_head": "cpu"},
}  # fmt: skip


@pytest.mark.parametrize("family", sorted(DEVICE_MAPS))
def test_device_map_split_with_offload_equals_unsplit(family: str, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = tiny_model(family)
    model.save_pretrained(tmp_path / "m")
    split = AutoModelForCausalLM.from_pretrained(
        tmp_path / "m", device_map=DEVICE_MAPS[family], offload_folder=str(tmp_path / "offload")
    )
    assert any(p.device.type == "meta" for p in split.parameters())  # one layer really is offloaded
    data = samples()[:4]
    for method in ("lrp", "wanda"):
        ref = attribute(model, data, method, progress=False)
        got = attribute(split, data, method, progress=False)
        for key, t in ref.tensors().items():
            assert torch.allclose(got.tensors()[key], t, rtol=1e-6, atol=1e-9), (method, key)
    # pruning: layers in memory can be masked and restored; an offloaded one is refused, not skipped
    adapter = get_adapter(split)
    offloaded = {lin.name for lin in adapter.linears() if lin.weight.is_meta}
    resident = [lin.name for lin in adapter.linears() if lin.name not in offloaded]
    mask = unstructured_mask(got, adapter, 0.5, layers=resident)
    before = {n: adapter.linear(n).weight.clone() for n in resident}
    with masked(adapter, mask) as report:
        assert report["sparsity"] >= 0.5 and report["masked"] == mask.pruned() > 0
    assert all(torch.equal(adapter.linear(n).weight, w) for n, w in before.items())
    with pytest.raises(CircuitcutError, match="offloaded by accelerate"):
        apply_mask(adapter, unstructured_mask(got, adapter, 0.5, layers=sorted(offloaded)))


def test_bf16_model_scores_in_float32() -> None:
    model = tiny_model("llama")
    half = tiny_model("llama").to(torch.bfloat16)
    data = samples()[:4]
    ref = attribute(model, data, ScoringConfig(seed_mode="value"), progress=False)
    got = attribute(half, data, ScoringConfig(seed_mode="value"), progress=False)
    for key, t in got.tensors().items():
        assert t.dtype == torch.float32, key
        corr = torch.corrcoef(torch.stack([t.flatten(), ref.tensors()[key].flatten()]))[0, 1]
        assert corr > 0.95, (key, float(corr))


@pytest.mark.parametrize("family", ["llama", "opt"])
def test_gradient_checkpointing_same_scores_and_model_left_as_found(family: str) -> None:
    model = tiny_model(family)
    before_attrs = set(vars(model))
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    data = samples()[:4]
    plain = attribute(model, data, progress=False)
    ckpt = attribute(model, data, progress=False, execution=Execution(gradient_checkpointing=True))
    for key, t in plain.tensors().items():
        assert torch.allclose(ckpt.tensors()[key], t, rtol=1e-6, atol=1e-9), key
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == hooks
    assert set(vars(model)) == before_attrs
    assert not model.is_gradient_checkpointing and not any(m.training for m in model.modules())


def test_cli_under_torchrun_equals_single_process_cli(tmp_path: Path) -> None:
    """The README's launch line: `torchrun --nproc-per-node 2 -m circuitcut.cli.main attribute ...`."""
    from circuitcut.cli.main import main
    from circuitcut.zoo.language import Language

    text = tmp_path / "text.txt"
    text.write_text(Language(seed=0).corpus(40, seed=3))
    args = ["attribute", "--model", "circuitcut/ref-opt", "--data", str(text), "--seqlen", "32",
            "--n-samples", "12", "--batch-size", "2", "--levels", "neuron,head", "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "circuitcut.cli.main", *args, "--output", str(tmp_path / "two.safetensors")]  # fmt: skip
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert main([*args, "--output", str(tmp_path / "one.safetensors")]) == 0
    two, one = Scores.load(tmp_path / "two.safetensors"), Scores.load(tmp_path / "one.safetensors")
    assert two.n_samples == one.n_samples == 12 and two.meta["processes"] == 2
    for key, t in one.tensors().items():
        assert torch.allclose(two.tensors()[key], t, rtol=1e-6, atol=1e-9), key
