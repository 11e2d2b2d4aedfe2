"""Tasks (generation, files, metrics) and circuits (sweeps, extraction, save/load)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from circuitcut import get_adapter
from circuitcut.attribution import attribute
from circuitcut.attribution.config import ScoringConfig
from circuitcut.attribution.targets import pad_batch
from circuitcut.circuits import Circuit, SweepConfig, extract_circuit
from circuitcut.circuits.sweep import SweepResult, mask_keeping, sweep
from circuitcut.errors import CircuitcutError
from circuitcut.models.tiny import TINY_CONFIGS, tiny_model
from circuitcut.tasks import Example, Task, evaluate_task, faithfulness, ioi_task, load_task
from circuitcut.tasks.base import last_position_logits
from circuitcut.workflows.circuit import DiscoveryConfig, discover_circuit
from circuitcut.zoo.tokenizer import build_tokenizer

TOK = build_tokenizer()


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model("llama", vocab_size=len(TOK))


def test_ioi_generation_is_deterministic_and_balanced() -> None:
    a, b = ioi_task(TOK, 20, seed=3), ioi_task(TOK, 20, seed=3)
    assert [e.prompt for e in a.examples] == [e.prompt for e in b.examples]
    assert [e.prompt for e in a.examples] != [e.prompt for e in ioi_task(TOK, 20, seed=4).examples]
    orders = [e.meta["order"] for e in a.examples]
    assert orders.count("ABBA") == orders.count("BABA") == 10
    for e in a.examples:
        words = e.prompt.split()
        assert words.count(e.contrast) == 2 and words.count(e.answer) == 1 and e.answer != e.contrast


def test_ioi_acdc_convention() -> None:
    t = ioi_task(TOK, 4, templates=["Then , [B] and [A] went to the [PLACE] . [B] gave a [OBJECT] to [A]"])
    for e in t.examples:
        w = e.prompt.split()
        assert w[4] == e.answer and w[2] == e.contrast == w[-5]


def test_ioi_rejects_bad_input() -> None:
    with pytest.raises(CircuitcutError, match=r"unknown template field\(s\) \[NAME\]"):
        ioi_task(TOK, 4, templates=["When [A] and [NAME] met , [S] gave it to [IO] ."])
    with pytest.raises(CircuitcutError, match="must end with the answer field"):
        ioi_task(TOK, 4, templates=["When [A] and [B] met , [IO] gave it to [S] ."])
    with pytest.raises(CircuitcutError, match="only 0 of 3 names are a single token"):
        ioi_task(TOK, 4, names=["Mary Ann", "Zorblax", "John Paul"])
    with pytest.raises(CircuitcutError, match="n must be >= 1"):
        ioi_task(TOK, 0)


def test_task_files(tmp_path: Path) -> None:
    jl = tmp_path / "t.jsonl"
    jl.write_text(json.dumps({"prompt": "Tom went to the", "answer": "store", "contrast": "park"}) + "\n")
    t = load_task(jl)
    assert t.metric == "logit_diff" and t.examples[0] == Example("Tom went to the", "store", "park")
    csv = tmp_path / "t.csv"
    csv.write_text("prompt,answer,candidates\nTom went to the,store,store|park|beach\n")
    t2 = load_task(csv)
    assert t2.metric == "accuracy" and t2.examples[0].candidates == ("store", "park", "beach")
    empty = tmp_path / "e.jsonl"
    empty.write_text("  \n")
    with pytest.raises(CircuitcutError, match="is empty"):
        load_task(empty)
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    with pytest.raises(CircuitcutError, match="record 1 needs 'prompt' and 'answer'"):
        load_task(bad)
    with pytest.raises(CircuitcutError, match=r"task file '.*missing\.jsonl': no such file"):
        load_task(tmp_path / "missing.jsonl")
    multi = tmp_path / "m.jsonl"
    multi.write_text(json.dumps({"prompt": "Tom went", "answer": "to the", "contrast": "park"}) + "\n")
    with pytest.raises(CircuitcutError, match="answer 'to the' is 2 tokens"):
        load_task(multi).encode(TOK)


def test_metrics_equal_hand_computation(model: torch.nn.Module) -> None:
    task = ioi_task(TOK, 6, seed=1)
    task.examples.append(Example("Tom went to the", "store", None, ("store", "park", "beach")))
    task.metric = "accuracy"
    got = evaluate_task(model, TOK, task)
    correct, diffs, probs = [], [], []
    with torch.no_grad():
        for e in task.examples:
            ids = TOK(e.prompt, add_special_tokens=False)["input_ids"]
            row = model(torch.tensor([ids])).logits[0, -1]
            ans = TOK.convert_tokens_to_ids(e.answer)
            probs.append(torch.softmax(row, -1)[ans].item())
            if e.contrast:
                d = (row[ans] - row[TOK.convert_tokens_to_ids(e.contrast)]).item()
                diffs.append(d)
                correct.append(d > 0)
            else:
                cands = [TOK.convert_tokens_to_ids(c) for c in e.candidates]
                correct.append(max(cands, key=lambda c: row[c].item()) == ans)
    assert got["accuracy"] == pytest.approx(sum(correct) / len(correct))
    assert got["logit_diff"] == pytest.approx(sum(diffs) / len(diffs), rel=1e-5)
    assert got["prob"] == pytest.approx(sum(probs) / len(probs), rel=1e-5)
    assert faithfulness(0.8, 1.0, 0.0) == pytest.approx(0.8)
    assert faithfulness(0.5, 2.0, -1.0) == pytest.approx(0.5)
    with pytest.raises(CircuitcutError, match="undefined"):
        faithfulness(1.0, 1.0, 1.0)


def test_split_is_disjoint_and_seeded() -> None:
    t = ioi_task(TOK, 30, seed=0)
    a, e = t.split(10, seed=5)
    assert len(a) == 10 and len(e) == 20
    assert not {x.prompt for x in a.examples} & {x.prompt for x in e.examples}
    assert [x.prompt for x in t.split(10, seed=5)[0].examples] == [x.prompt for x in a.examples]
    with pytest.raises(CircuitcutError, match="both splits need at least one"):
        t.split(30)


@pytest.mark.parametrize("level", ["weight", "neuron", "head"])
def test_sweep_zero_point_is_the_unpruned_model(model: torch.nn.Module, level: str) -> None:
    a = get_adapter(model)
    attr, ev = ioi_task(TOK, 40, seed=2).split(16)
    cfg = SweepConfig(
        baselines=("activation", "random"), level=level, keep=(1.0, 0.3, 0.05), seeds=2, n_ref=8
    )
    res = sweep(model, TOK, a, attr, ev, cfg, progress=False)
    for method, seeds in res.curves.items():
        for points in seeds:
            assert points[0] == pytest.approx(res.dense), method
            assert len(points) == 3
    # the full point is not evaluated again: keeping every component prunes nothing
    scores = attribute(model, attr.samples(TOK), "random", adapter=a, levels=(level,), progress=False)
    full = mask_keeping(scores, a, level, "all", res.n_components, res.n_components, "global")
    assert full.pruned() == 0 and int(full.meta.get("pruned_units", 0)) == 0
    if level == "weight":
        assert "activation" in res.skipped and set(res.curves) == {"lrp", "random"}
    else:
        assert set(res.curves) == {"lrp", "activation", "random"}
    rows = res.rows()
    assert len(rows) == len(res.curves) * 2 * 3 and rows[0]["faithfulness"] == pytest.approx(1.0)
    assert res.as_dict()["ablation"] == "patch"  # IOI has counterfactuals: patched by default


def test_circuit_save_load_reproduces_metric(model: torch.nn.Module, tmp_path: Path) -> None:
    a = get_adapter(model)
    attr, ev = ioi_task(TOK, 40, seed=2).split(16)
    circuit = extract_circuit(
        model, TOK, a, attr, ev, SweepConfig(level="neuron", threshold=0.5, random_seeds=1, ablation="zero")
    )
    circuit.save(tmp_path / "c")
    back = Circuit.load(tmp_path / "c")
    with back.run(a):
        again = evaluate_task(model, TOK, ev)
    assert again["logit_diff"] == pytest.approx(circuit.info["circuit"]["logit_diff"], rel=1e-6)
    assert circuit.info["kept"] == sum(len(v) for v in circuit.info["kept_neurons"].values())
    assert back.info["level"] == "neuron"
    with pytest.raises(CircuitcutError, match="threshold must be in"):
        SweepConfig(threshold=1.5)


def test_task_validation() -> None:
    with pytest.raises(CircuitcutError, match="has no examples"):
        Task("t", [])
    with pytest.raises(CircuitcutError, match="needs a contrast"):
        Task("t", [Example("a", "b")], "logit_diff")
    with pytest.raises(CircuitcutError, match="unknown level"):
        SweepConfig(level="layer")


@pytest.mark.parametrize("family", sorted(TINY_CONFIGS))
def test_last_position_logits_equal_the_full_forward(family: str) -> None:
    """Task metrics run the LM head on the last position only: the same logits as the full model."""
    model = tiny_model(family)
    ids, mask = pad_batch([[3, 8, 1, 4, 9], [5, 2], [7, 7, 6]], pad_id=0)
    last = torch.tensor([4, 1, 2])
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits[torch.arange(3), last]
        got = last_position_logits(model, ids, mask, last)
    torch.testing.assert_close(got, full, rtol=1e-5, atol=1e-5)


def test_areas_of_any_recorded_metric_equal_hand_computation() -> None:
    """The area, CPR and CMD of the configured metric and of any other recorded one, by hand:
    two seeds at 100%, 10% and 1% kept, faithfulness of the seed mean."""
    pts = [{"keep": k, "count": round(k * 1000), "fraction": k} for k in (1.0, 0.1, 0.01)]
    seed = [
        {"logit_diff": 4.0, "prob": 0.5},
        {"logit_diff": 2.0, "prob": 0.3},
        {"logit_diff": 1.0, "prob": 0.1},
    ]
    other = [
        {"logit_diff": 4.0, "prob": 0.5},
        {"logit_diff": 3.0, "prob": 0.1},
        {"logit_diff": 0.0, "prob": 0.1},
    ]
    r = SweepResult(SweepConfig(baselines=()), {"logit_diff": 4.0, "prob": 0.5},
                    {"logit_diff": 0.0, "prob": 0.1}, {"lrp": [seed, other]}, {}, {}, {"lrp": pts}, 1000)  # fmt: skip
    f_ld = [1.0, 2.5 / 4, 0.5 / 4]
    f_p = [1.0, (0.2 - 0.1) / 0.4, 0.0]
    for metric, f in ((None, f_ld), ("prob", f_p)):
        assert r.faithfulness_curve("lrp", metric) == pytest.approx(f)
        assert r.area("lrp", metric) == pytest.approx(((f[0] + f[1]) / 2 + (f[1] + f[2]) / 2) / 2)
        assert r.cpr("lrp", metric) == pytest.approx(0.9 * (f[0] + f[1]) / 2 + 0.09 * (f[1] + f[2]) / 2)
        cmd = 0.9 * ((1 - f[0]) + (1 - f[1])) / 2 + 0.09 * ((1 - f[1]) + (1 - f[2])) / 2
        assert r.cmd("lrp", metric) == pytest.approx(cmd)
    with pytest.raises(CircuitcutError, match=r"no 'accuracy' metric .*has logit_diff, prob"):
        r.area("lrp", "accuracy")


def test_lrp_rules_reach_the_sweep_the_circuit_and_the_report(model: torch.nn.Module, tmp_path: Path) -> None:
    """LRP with no rules is gradient x input: its sweep curve equals gradient's point for point; the
    extracted circuit's scores record the rules; the workflow's summary and report name those left out."""
    a = get_adapter(model)
    attr, ev = ioi_task(TOK, 48, seed=4).split(16)
    cfg = SweepConfig(ScoringConfig(lrp_rules=()), baselines=("gradient",), level="neuron", keep=(1.0, 0.3, 0.1, 0.03),
                      seeds=1, n_ref=16)  # fmt: skip
    r = sweep(model, TOK, a, attr, ev, cfg, progress=False)
    assert r.curves["lrp"] == r.curves["gradient"]
    assert ScoringConfig(lrp_rules=("gate", "norm")).lrp_rules == ("norm", "gate")  # canonical order
    with pytest.raises(CircuitcutError, match="LRP rules: unknown 'softmax'"):
        ScoringConfig(lrp_rules=("softmax",))
    partial = ("activation", "norm", "gate")
    c = extract_circuit(model, TOK, a, attr, ev, SweepConfig(ScoringConfig(lrp_rules=partial), level="neuron",
                                                              threshold=0.5, random_seeds=1))  # fmt: skip
    assert c.mask.meta["scores"]["lrp_rules"] == list(partial)
    scoring = ScoringConfig(lrp_rules=partial, aggregation="token_abs", seed_mode="value")
    run = DiscoveryConfig(
        SweepConfig(scoring, baselines=("random",), level="neuron", seeds=1, n_ref=8), 16, 16
    )
    s = discover_circuit(model, "ioi", tmp_path, run, tokenizer=TOK, progress=False)
    assert s["lrp_rules"] == list(partial)
    assert (s["aggregation"], s["seed_mode"]) == ("token_abs", "value")
    assert (
        "LRP ran without its rule(s) attention_scores, attention_values."
        in (tmp_path / "report.md").read_text()
    )
