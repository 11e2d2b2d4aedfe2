"""The lm-evaluation-harness wiring, with a stub harness (the real one needs hub data)."""

from __future__ import annotations

import sys
import types

import pytest

from circuitcut.errors import CircuitcutError
from circuitcut.evaluation.zero_shot import zero_shot_accuracy
from circuitcut.models.tiny import tiny_model


def _install_stub(monkeypatch: pytest.MonkeyPatch, results: dict) -> list:
    calls: list = []

    class HFLM:
        def __init__(self, pretrained, tokenizer, batch_size):
            calls.append(("HFLM", pretrained, tokenizer, batch_size))

    def simple_evaluate(model, tasks, num_fewshot, limit):
        calls.append(("evaluate", model, tuple(tasks), num_fewshot, limit))
        return {"results": results}

    lm_eval = types.ModuleType("lm_eval")
    lm_eval.simple_evaluate = simple_evaluate
    models = types.ModuleType("lm_eval.models")
    hf = types.ModuleType("lm_eval.models.huggingface")
    hf.HFLM = HFLM
    monkeypatch.setitem(sys.modules, "lm_eval", lm_eval)
    monkeypatch.setitem(sys.modules, "lm_eval.models", models)
    monkeypatch.setitem(sys.modules, "lm_eval.models.huggingface", hf)
    return calls


def test_zero_shot_wiring_with_stub_task(monkeypatch: pytest.MonkeyPatch) -> None:
    results = {"stub_a": {"acc,none": 0.5, "acc_norm,none": 0.6}, "stub_b": {"acc,none": 0.75}}
    calls = _install_stub(monkeypatch, results)
    model = tiny_model("llama")
    out = zero_shot_accuracy(model, "TOK", tasks=["stub_a", "stub_b"], batch_size=3, limit=5)
    assert calls[0] == ("HFLM", model, "TOK", 3)
    assert calls[1][2:] == (("stub_a", "stub_b"), 0, 5)
    assert out["tasks"]["stub_a"] == {"acc": 0.5, "acc_norm": 0.6}
    assert out["mean_acc"] == pytest.approx(0.625)


def test_zero_shot_missing_task_and_missing_harness(monkeypatch: pytest.MonkeyPatch) -> None:
    _install_stub(monkeypatch, {})
    with pytest.raises(CircuitcutError, match="no result for task 'stub'"):
        zero_shot_accuracy(tiny_model("llama"), None, tasks=["stub"])
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(CircuitcutError, match="pip install 'circuitcut\\[eval\\]'"):
        zero_shot_accuracy(tiny_model("llama"), None, tasks=["x"])
