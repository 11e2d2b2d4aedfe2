"""Counterfactual patching (:mod:`circuitcut.pruning.patching`) and the tasks' counterfactuals.

On the reference model, with its IOI prompts and their ABC counterfactuals: patching every component
with its own clean activation changes nothing; patching every decoder linear gives the corrupted
model's metric exactly (the last position's residual stream is then the corrupted run's); a sweep
and its circuit under ``ablation="auto"`` patch, and measure the empty circuit as the corrupted model.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from circuitcut import load_model
from circuitcut.circuits import Circuit, SweepConfig, extract_circuit
from circuitcut.circuits.sweep import empty_mask, sweep
from circuitcut.errors import CircuitcutError
from circuitcut.pruning import masked
from circuitcut.pruning.patching import counterfactual_inputs
from circuitcut.tasks import Example, Task, ioi_task
from circuitcut.tasks.base import task_metrics


@pytest.fixture(scope="module")
def ref() -> tuple:
    torch.manual_seed(0)
    return load_model("circuitcut/ref-llama")


def test_ioi_counterfactuals_rename_every_name_and_keep_the_length(ref: tuple) -> None:
    _, tok, _ = ref
    task = ioi_task(tok, 12, seed=3)
    enc = task.encode(tok)
    for e, p, c in zip(task.examples, enc.prompts, enc.corrupts or [], strict=True):
        assert len(p) == len(c)
        assert e.answer not in e.corrupt.split() and e.contrast not in e.corrupt.split()
        names = [w for w, v in zip(e.corrupt.split(), e.prompt.split(), strict=True) if w != v]
        assert len(names) == 3 and len(set(names)) == 3  # IO, S and S again: three different names
    # the clean prompts are those of before (the counterfactuals have their own random draw)
    assert [e.prompt for e in task.examples] == [e.prompt for e in ioi_task(tok, 12, seed=3).examples]


@pytest.mark.parametrize("level", ["weight", "neuron", "head"])
def test_patching_with_own_activations_changes_nothing_and_all_gives_the_corrupted_model(
    ref: tuple, level: str
) -> None:
    model, tok, adapter = ref
    enc = ioi_task(tok, 24, seed=5).encode(tok)
    dense, corrupted = task_metrics(model, enc, 8), task_metrics(model, enc.corrupted(), 8)
    everything = empty_mask(adapter, level, "all")
    own = counterfactual_inputs(
        model, adapter, list(everything.weights), replace(enc, corrupts=enc.prompts), 8
    )
    with masked(adapter, everything, own):
        assert task_metrics(model, enc, 8) == pytest.approx(dense, rel=1e-5, abs=1e-6)
    other = counterfactual_inputs(model, adapter, list(everything.weights), enc, 8)
    with masked(adapter, everything, other):
        patched = task_metrics(model, enc, 8)
    if level != "neuron":  # every linear, or every head: the last position is the corrupted run's
        assert patched == pytest.approx(corrupted, rel=1e-4, abs=1e-5)
    assert patched["logit_diff"] < 0.1 * dense["logit_diff"]
    with masked(adapter, everything, other), pytest.raises(CircuitcutError, match="batch 0 has shape"):
        task_metrics(model, enc, 4)  # other batches than the recorded ones are refused


def test_sweep_and_circuit_patch_by_default_where_the_task_has_counterfactuals(
    ref: tuple, tmp_path: Path
) -> None:
    model, tok, adapter = ref
    attr, ev = ioi_task(tok, 40, seed=2).split(16)
    cfg = SweepConfig(baselines=("random",), level="head", keep=(1.0, 0.5, 0.25), seeds=1, n_ref=8)
    res = sweep(model, tok, adapter, attr, ev, cfg, progress=False)
    assert res.config.ablation == "patch"
    corrupted = task_metrics(model, ev.encode(tok).corrupted(), cfg.eval_batch_size)
    assert res.empty == pytest.approx(corrupted, rel=1e-4, abs=1e-5)
    circuit = extract_circuit(
        model, tok, adapter, attr, ev, SweepConfig(level="head", threshold=0.8, random_seeds=1)
    )
    assert circuit.info["ablation"] == "patch" and circuit.info["faithfulness"] >= 0.8
    circuit.save(tmp_path / "c")
    back = Circuit.load(tmp_path / "c")
    with pytest.raises(CircuitcutError, match="found under counterfactual patching"), back.run(adapter):
        pass
    enc = ev.encode(tok)
    inputs = counterfactual_inputs(model, adapter, list(back.mask.weights), enc, cfg.eval_batch_size)
    with back.run(adapter, inputs):
        again = task_metrics(model, enc, cfg.eval_batch_size)
    assert again["logit_diff"] == pytest.approx(circuit.info["circuit"]["logit_diff"], rel=1e-5)
    plain = Task("t", [Example("Mary and John", "Mary", "John")])
    with pytest.raises(CircuitcutError, match="needs a counterfactual prompt for every example"):
        SweepConfig(ablation="patch").for_task(plain)
    assert SweepConfig().for_task(plain).ablation == "zero"
