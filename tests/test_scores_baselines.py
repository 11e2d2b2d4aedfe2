"""Baselines against hand computations, the Scores file format, data files and error messages."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from circuitcut import get_adapter
from circuitcut.attribution import Sample, Target, attribute, next_token_sample, select_linears
from circuitcut.attribution.config import ScoringConfig
from circuitcut.cli.main import main
from circuitcut.data import load_samples
from circuitcut.errors import CircuitcutError
from circuitcut.models.tiny import tiny_model
from circuitcut.scores import Scores
from circuitcut.zoo.tokenizer import build_tokenizer


def _samples(n: int = 3, length: int = 8) -> list[Sample]:
    g = torch.Generator().manual_seed(3)
    return [next_token_sample(torch.randint(3, 64, (length + i,), generator=g).tolist()) for i in range(n)]


def _inputs_of(model: torch.nn.Module, module: torch.nn.Module, samples: list[Sample]) -> torch.Tensor:
    """All real-token inputs of a module over the samples, one sample at a time."""
    rows = []
    h = module.register_forward_hook(lambda m, a, o: rows.append(a[0].detach().reshape(-1, a[0].shape[-1])))
    with torch.no_grad():
        for s in samples:
            model(torch.tensor([s.input_ids]))
    h.remove()
    return torch.cat(rows)


def test_wanda_equals_hand_computation() -> None:
    model = tiny_model("opt")
    a = get_adapter(model)
    samples = _samples()
    scores = attribute(model, samples, ScoringConfig(method="wanda", batch_size=2), adapter=a, progress=False)
    for lin in (a.layers[0].linears["up"], a.layers[1].linears["o"]):
        x = _inputs_of(model, lin.module, samples)
        expected = lin.weight.detach().abs() * x.norm(dim=0)[None, :]
        assert torch.allclose(scores.weight(lin.name), expected, rtol=1e-5, atol=1e-7)


def test_wanda_on_conv1d_layout() -> None:
    model = tiny_model("gpt2")
    a = get_adapter(model)
    samples = _samples()
    scores = attribute(model, samples, "wanda", adapter=a, progress=False)
    lin = a.layers[0].linears["up"]  # Conv1D: weight stored [in, out]; scores are [out, in] as for nn.Linear
    x = _inputs_of(model, lin.module, samples)
    expected = lin.weight.detach().abs().t() * x.norm(dim=0)[None, :]
    assert lin.weight.shape == (32, 128) and scores.weight(lin.name).shape == (128, 32) == lin.shape
    assert torch.allclose(scores.weight(lin.name), expected, rtol=1e-5, atol=1e-7)


def test_wanda_and_magnitude_unit_scores_are_column_sums() -> None:
    model = tiny_model("llama")
    a = get_adapter(model)
    samples = _samples()
    both = attribute(model, samples, "wanda", adapter=a, levels=("weight", "neuron", "head"), progress=False)
    down, o = a.neuron_site(1), a.head_site(0)
    assert torch.allclose(both.neuron(1), both.weight(down.name).sum(0), rtol=1e-6)
    assert torch.allclose(both.head(0), both.weight(o.name).sum(0).view(a.n_heads, -1).sum(-1), rtol=1e-6)
    units = attribute(model, samples, "magnitude", adapter=a, levels=("neuron",), progress=False)
    assert not units.weights and units.levels == ["neuron"]
    assert torch.allclose(units.neuron(0), a.neuron_site(0).weight.detach().abs().sum(0))


def test_activation_magnitude_equals_hand_computation() -> None:
    model = tiny_model("llama")
    a = get_adapter(model)
    samples = _samples()
    scores = attribute(
        model, samples, ScoringConfig(method="activation", batch_size=3), adapter=a, progress=False
    )
    x = _inputs_of(model, a.neuron_site(1).module, samples)
    assert torch.allclose(scores.neuron(1), x.abs().sum(0) / len(samples), rtol=1e-5)
    xo = _inputs_of(model, a.head_site(0).module, samples)
    heads = xo.reshape(-1, a.n_heads, a.head_dim).norm(dim=-1).sum(0) / len(samples)
    assert torch.allclose(scores.head(0), heads, rtol=1e-5)


def test_magnitude_and_random() -> None:
    model = tiny_model("llama")
    a = get_adapter(model)
    mag = attribute(model, [], "magnitude", adapter=a, progress=False)
    lin = a.linears()[3]
    assert torch.equal(mag.weight(lin.name), lin.weight.detach().abs())
    r1 = attribute(model, [], ScoringConfig(method="random", seed=5), adapter=a, progress=False)
    r2 = attribute(model, [], ScoringConfig(method="random", seed=5), adapter=a, progress=False)
    r3 = attribute(model, [], ScoringConfig(method="random", seed=6), adapter=a, progress=False)
    assert torch.equal(r1.weight(lin.name), r2.weight(lin.name))
    assert not torch.equal(r1.weight(lin.name), r3.weight(lin.name))
    assert r1.levels == ["weight", "neuron", "head"]


def test_gradient_magnitude_is_abs_grad() -> None:
    model = tiny_model("llama")
    s = _samples(1)[0]
    scores = attribute(
        model, [s], ScoringConfig(method="gradient_magnitude", seed_mode="value"), progress=False
    )
    model.zero_grad()
    logits = model(torch.tensor([s.input_ids])).logits[0]
    logits[torch.arange(len(s.target.positions)), torch.tensor(s.target.token_ids)].sum().backward()
    lin = get_adapter(model).layers[0].linears["down"]
    assert torch.allclose(scores.weight(lin.name), lin.weight.grad.abs(), atol=1e-6)
    model.zero_grad(set_to_none=True)


def test_scores_memory_does_not_grow_with_samples() -> None:
    model = tiny_model("llama")
    few = attribute(model, _samples(2), progress=False)
    many = attribute(model, _samples(9), progress=False)
    assert few.n_samples == 2 and many.n_samples == 9
    assert {k: v.shape for k, v in few.tensors().items()} == {k: v.shape for k, v in many.tensors().items()}


def test_scores_save_load_roundtrip(tmp_path: Path) -> None:
    model = tiny_model("phi3")
    scores = attribute(model, _samples(2), progress=False, provenance={"data": "x.jsonl"})
    path = scores.save(tmp_path / "s")
    assert path.name == "s.safetensors" and (tmp_path / "s.json").exists()
    loaded = Scores.load(path)
    assert loaded.n_samples == 2 and loaded.meta["method"] == "lrp"
    assert loaded.meta["variant"] == "attnlrp" and loaded.meta["data"] == "x.jsonl"
    assert loaded.meta["targets"]["explained_outputs"] == 7 + 8
    for k, v in scores.tensors().items():
        assert torch.equal(loaded.tensors()[k], v.cpu())
    side = json.loads((tmp_path / "s.json").read_text())
    assert side["format"] == "circuitcut.scores/1" and "transformers" in side["versions"]
    assert not list(tmp_path.glob("*.tmp"))
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == 0o666 & ~umask  # not mkstemp's 0600


def test_scores_load_rejects_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"hello": 1}')
    (tmp_path / "x.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CircuitcutError, match="is not a valid safetensors file"):
        Scores.load(tmp_path / "x.safetensors")
    with pytest.raises(CircuitcutError, match="no such file"):
        Scores.load(tmp_path / "missing.safetensors")


def test_errors_name_the_problem() -> None:
    model = tiny_model("llama")
    with pytest.raises(CircuitcutError, match="unknown method 'foo'"):
        attribute(model, _samples(1), "foo")
    with pytest.raises(CircuitcutError, match="cannot score weight"):
        attribute(model, _samples(1), "activation", levels=["weight"])
    with pytest.raises(CircuitcutError, match="needs at least one reference sample"):
        attribute(model, [], "lrp")
    with pytest.raises(CircuitcutError, match="matches no linear layer"):
        attribute(model, _samples(1), layers="*.mlp.fc9")
    with pytest.raises(CircuitcutError, match="outside the sample"):
        Sample((1, 2, 3), Target((5,), (1,)))
    with pytest.raises(CircuitcutError, match="contrast id"):
        Target((0,), (1,), kind="logit_diff")
    with pytest.raises(CircuitcutError, match="token id 99 is outside the model's vocabulary of 64"):
        attribute(model, [next_token_sample([1, 2, 99])])
    with pytest.raises(CircuitcutError, match="unknown LRP variant"):
        attribute(model, _samples(1), ScoringConfig(variant="lrp-z"))


def test_layer_selection() -> None:
    a = get_adapter(tiny_model("opt"))
    assert [lin.name for lin in select_linears(a, "*.mlp.fc1")] == ["layers.0.mlp.fc1", "layers.1.mlp.fc1"]
    assert all(lin.group == "attn" for lin in select_linears(a, "attn"))
    assert len(select_linears(a, "all")) == 12
    names = [lin.name for lin in select_linears(a, "all", include_embeddings=True)]
    assert names[0] == "embed_tokens" and "lm_head" not in names  # tied: scored once
    with pytest.raises(CircuitcutError, match="empty layer selection"):
        select_linears(a, " , ")


def test_tied_embeddings_score_both_uses() -> None:
    model = tiny_model("gpt2")
    s = _samples(1)
    both = attribute(
        model, s, ScoringConfig(aggregation="signed", seed_mode="value"), progress=False, layers="embeddings"
    )
    assert "embed_tokens" in both.weights and "lm_head" not in both.weights
    assert both.weight("embed_tokens").shape == model.get_input_embeddings().weight.shape


def test_load_samples_jsonl_and_text(tmp_path: Path) -> None:
    tok = build_tokenizer()
    f = tmp_path / "d.jsonl"
    f.write_text(
        "\n".join(
            [
                json.dumps({"text": "Mary went to the store ."}),
                json.dumps(
                    {
                        "prompt": "When Mary and John went to the store , John gave a drink to",
                        "answer": "Mary",
                        "contrast": "John",
                    }
                ),
                json.dumps({"prompt": "Tom yelled :", "response": "you idiot !"}),
                "",
            ]
        )
    )
    samples = load_samples(f, tok)
    assert [s.target.kind for s in samples] == ["logit", "logit_diff", "logit"]
    assert samples[1].target.token_ids == (tok.convert_tokens_to_ids("Mary"),)
    assert samples[2].target.positions == (2, 3, 4)
    txt = tmp_path / "t.txt"
    txt.write_text("Mary went to the store . " * 10)
    windows = load_samples(txt, tok, seqlen=12)
    assert len(windows) == 5 and all(len(w.input_ids) == 12 for w in windows)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "Mary went", "answer": "to the store", "contrast": "John"}\n')
    with pytest.raises(CircuitcutError, match=r"bad\.jsonl:1: answer 'to the store' must be one token"):
        load_samples(bad, tok)
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n")
    with pytest.raises(CircuitcutError, match="gave no samples"):
        load_samples(empty, tok)


def test_attribute_cli_writes_scores(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    tok = build_tokenizer()
    tiny_model("llama", vocab_size=len(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    data = tmp_path / "d.txt"
    data.write_text("Mary went to the store . Tom sang : la la la . " * 4)
    out = tmp_path / "scores.safetensors"
    rc = main(["attribute", "--model", str(folder), "--data", str(data), "--output", str(out),
               "--seqlen", "8", "--levels", "neuron,head", "--no-progress"])  # fmt: skip
    assert rc == 0
    loaded = Scores.load(out)
    assert loaded.levels == ["neuron", "head"] and loaded.n_samples == 52 // 8
    assert main(["attribute", "--model", str(folder), "--output", str(out)]) == 2
