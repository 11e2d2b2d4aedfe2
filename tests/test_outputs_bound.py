"""Outputs that cannot be confused: a tensors file and its sidecar are one unit (racing writers, cut
saves and edited sidecars are refused), a sidecar never replaces a file circuitcut did not write,
masks refuse Scores of another model, tied matrices restore exactly, and --include-embeddings
scores an untied LM head."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
import torch

from circuitcut.attribution import answer_sample, attribute
from circuitcut.attribution.config import ScoringConfig
from circuitcut.errors import CircuitcutError, InputError, MismatchError, OutputError
from circuitcut.models import get_adapter
from circuitcut.models.tiny import tiny_model
from circuitcut.pruning import Mask, masked, unit_mask, unstructured_mask
from circuitcut.scores import Scores


def _marked(writer: int, k: int) -> Scores:
    """Scores whose tensor and sidecar both say who wrote them and when."""
    return Scores(neurons={0: torch.tensor([float(writer), float(k)])}, n_samples=1,
                  meta={"writer": writer, "k": k})  # fmt: skip


def test_racing_writers_give_consistent_pairs_or_a_clear_refusal(tmp_path: Path) -> None:
    path = tmp_path / "race.safetensors"
    _marked(0, -1).save(path)
    stop = threading.Event()
    outcomes = {"consistent": 0, "refused": 0, "inconsistent": 0}

    def write(writer: int) -> None:
        for k in range(60):
            _marked(writer, k).save(path)

    def read() -> None:
        while not stop.is_set():
            try:
                s = Scores.load(path)
            except MismatchError as exc:
                assert "not from the same save" in str(exc)
                outcomes["refused"] += 1
                continue
            same = s.neurons[0].tolist() == [float(s.meta["writer"]), float(s.meta["k"])]
            outcomes["consistent" if same else "inconsistent"] += 1

    writers = [threading.Thread(target=write, args=(w,)) for w in (1, 2)]
    reader = threading.Thread(target=read)
    reader.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    reader.join()
    assert outcomes["inconsistent"] == 0 and outcomes["consistent"] > 0, outcomes
    final = Scores.load(path) if _is_pair(path) else None  # the last writer's pair, or a refusal
    assert final is None or final.neurons[0].tolist() == [float(final.meta["writer"]), 59.0]
    assert not list(tmp_path.glob("*.tmp"))


def _is_pair(path: Path) -> bool:
    try:
        Scores.load(path)
    except MismatchError:
        return False
    return True


def test_interleaved_save_is_refused(tmp_path: Path) -> None:
    # writer A's tensors with writer B's sidecar: what two racing saves, or a save cut short by a
    # full disk between the two files, leave behind
    _marked(1, 0).save(tmp_path / "a")
    _marked(2, 0).save(tmp_path / "b")
    shutil.copy(tmp_path / "b.json", tmp_path / "a.json")
    with pytest.raises(MismatchError, match="not from the same save"):
        Scores.load(tmp_path / "a")
    side = json.loads((tmp_path / "b.json").read_text())
    side["n_samples"] = 5  # an edited sidecar
    (tmp_path / "b.json").write_text(json.dumps(side, indent=2) + "\n")
    with pytest.raises(MismatchError, match="not from the same save"):
        Scores.load(tmp_path / "b")
    mask = Mask({"x": torch.ones(2, 2, dtype=torch.bool)})
    mask.save(tmp_path / "m")
    with pytest.raises(MismatchError, match=r"is not a circuitcut\.scores/1 file"):
        Scores.load(tmp_path / "m")  # a mask is not Scores
    (tmp_path / "m.json").unlink()
    with pytest.raises(CircuitcutError, match=r"m\.json is missing"):
        Mask.load(tmp_path / "m")


def test_sidecar_never_overwrites_a_foreign_file(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    config = b'{"model_type": "llama", "hidden_size": 64}\n'
    (model_dir / "config.json").write_bytes(config)
    weights = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "
    (model_dir / "model.safetensors").write_bytes(weights)
    scores = _marked(1, 1)
    with pytest.raises(InputError, match=r"config\.json' exists and was not written by circuitcut"):
        scores.save(model_dir / "config")
    with pytest.raises(InputError, match=r"model\.safetensors' exists and was not written by circuitcut"):
        scores.save(model_dir / "model")
    with pytest.raises(InputError, match="not written by circuitcut"):
        Mask({"x": torch.ones(1, 1, dtype=torch.bool)}).save(model_dir / "config")
    assert (model_dir / "config.json").read_bytes() == config
    assert (model_dir / "model.safetensors").read_bytes() == weights
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "model.safetensors"]
    # circuitcut's own pair is replaced, as a rerun expects
    scores.save(tmp_path / "s")
    _marked(2, 7).save(tmp_path / "s")
    assert Scores.load(tmp_path / "s").meta == {"writer": 2, "k": 7}


def test_unwritable_output_is_one_line_and_replaces_nothing(tmp_path: Path) -> None:
    _marked(1, 1).save(tmp_path / "s")
    before = (tmp_path / "s.json").read_bytes()
    (tmp_path / "blocker").write_text("a file where a folder is needed\n")
    with pytest.raises(InputError, match="is a file, not a folder"):
        _marked(2, 2).save(tmp_path / "blocker" / "s")
    assert (tmp_path / "s.json").read_bytes() == before


def test_masks_refuse_scores_of_another_model() -> None:
    small, big = tiny_model("llama"), tiny_model("llama", intermediate_size=128, num_hidden_layers=3)
    a_small, a_big = get_adapter(small), get_adapter(big)
    assert a_small.n_neurons != a_big.n_neurons
    ids = [3, 5, 7, 9]
    other = attribute(big, [answer_sample(ids, 11)], "gradient", progress=False)
    with pytest.raises(MismatchError, match="made for another model"):
        unit_mask(other, a_small, "neuron", 0.5)
    with pytest.raises(MismatchError, match="made for another model"):
        unit_mask(other, a_small, "head", 0.5)
    with pytest.raises(MismatchError, match="made for another model"):
        unstructured_mask(other, a_small, 0.5)
    # without the recorded architecture the shapes still tell: 2 neurons per layer is not this model
    bare = Scores(neurons={i: torch.rand(2) for i in range(a_small.n_layers)}, n_samples=1)
    with pytest.raises(MismatchError, match=r"neuron scores of layer 0 have shape \(2,\)"):
        unit_mask(bare, a_small, "neuron", 0.5)
    own = attribute(small, [answer_sample(ids, 11)], "gradient", progress=False)
    mask = unit_mask(own, a_small, "neuron", 0.5)
    assert mask.meta["pruned_units"] == (a_small.n_layers * a_small.n_neurons) // 2


def test_masked_restores_a_tied_matrix_named_twice() -> None:
    model = tiny_model("llama", tie_word_embeddings=True)
    adapter = get_adapter(model)
    assert adapter.tied
    w = adapter.embed.weight
    original = w.detach().clone()
    first = torch.zeros_like(w, dtype=torch.bool)
    first[:5] = True
    second = torch.zeros_like(w, dtype=torch.bool)
    second[3:9] = True  # rows 3-4 named under both names
    mask = Mask({"embed_tokens": first, "lm_head": second})
    with masked(adapter, mask):
        assert int((w[:9] == 0).all(dim=1).sum()) == 9
    assert torch.equal(w, original)


def test_include_embeddings_scores_an_untied_lm_head() -> None:
    model = tiny_model("llama", tie_word_embeddings=False)
    adapter = get_adapter(model)
    assert not adapter.tied and adapter.lm_head is not None
    ids, answer = [3, 5, 7, 9], 11
    scores = attribute(model, [answer_sample(ids, answer)], ScoringConfig(method="gradient", aggregation="signed", seed_mode="value"), levels=["weight"], progress=False, layers="embeddings")  # fmt: skip
    assert "embed_tokens" in scores.weights and "lm_head" in scores.weights
    head = scores.weight("lm_head")
    assert head.shape == adapter.lm_head.weight.shape
    # the LM head is the last linear map and has no bias: W * dW over its elements sums to the logit
    with torch.no_grad():
        logit = model(input_ids=torch.tensor([ids])).logits[0, -1, answer]
    assert torch.allclose(head.sum(), logit, rtol=1e-4, atol=1e-5)
    assert int((head.abs().sum(dim=1) > 0).sum()) == 1  # only the explained token's row
    without = attribute(model, [answer_sample(ids, answer)], "gradient", levels=["weight"], progress=False)
    assert "lm_head" not in without.weights and "embed_tokens" not in without.weights


def test_full_disk_is_one_line_and_keeps_the_old_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import circuitcut.io

    _marked(1, 1).save(tmp_path / "s")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def no_space(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(circuitcut.io, "save_file", no_space)
    with pytest.raises(
        OutputError, match=r"cannot write .*s\.safetensors: No space left on device; nothing was"
    ):
        _marked(2, 2).save(tmp_path / "s")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temporary file left either
    assert Scores.load(tmp_path / "s").meta == {"writer": 1, "k": 1}
