"""Loading from local folders, clear errors, and the inspect verb."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, BertConfig
from transformers.utils import logging as hf_logging

from circuitcut import load_model
from circuitcut.cli.main import main
from circuitcut.errors import ModelLoadError, UnsupportedModelError
from circuitcut.models.tiny import tiny_model
from circuitcut.zoo.tokenizer import build_tokenizer


@pytest.fixture(scope="module")
def saved_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama").save_pretrained(folder)
    build_tokenizer().save_pretrained(folder)
    return folder


def test_load_model_offline_from_folder(saved_llama: Path) -> None:
    model, tok, adapter = load_model(saved_llama)
    assert adapter.model_type == "llama" and not model.training
    assert tok is not None and tok("Mary")["input_ids"]
    ref = tiny_model("llama")
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, ref(ids).logits, atol=1e-6)


def test_load_model_dtype(saved_llama: Path) -> None:
    model, _, _ = load_model(saved_llama, dtype="bf16")
    assert next(model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        load_model(saved_llama, dtype="float8")


def test_progress_false_silences_loading_bars_only_while_loading(
    saved_llama: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []
    original = AutoModelForCausalLM.from_pretrained

    def spy(*args: object, **kwargs: object) -> torch.nn.Module:
        seen.append(hf_logging.is_progress_bar_enabled())
        return original(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    was = hf_logging.is_progress_bar_enabled()  # the CLI tests may have turned them off already
    try:
        hf_logging.enable_progress_bar()
        load_model(saved_llama, progress=False)
        load_model(saved_llama)
        assert seen == [False, True] and hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a caller's own choice is left as it was
        load_model(saved_llama)
        assert seen[-1] is False and not hf_logging.is_progress_bar_enabled()
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()


def test_missing_dir_and_unknown_hub_id(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nope")
    with pytest.raises(ModelLoadError, match="not a local directory and the hub is unreachable"):
        load_model("someone/no-such-model-xyz")


def test_non_causal_and_unsupported(tmp_path: Path) -> None:
    bert = tmp_path / "bert"
    BertConfig(
        hidden_size=32, num_attention_heads=4, num_hidden_layers=1, intermediate_size=64
    ).save_pretrained(bert)
    with pytest.raises(ModelLoadError, match="not a causal language model"):
        load_model(bert)
    bloom = tmp_path / "bloom"
    AutoModelForCausalLM.from_config(
        AutoConfig.for_model("bloom", hidden_size=32, n_head=4, n_layer=1, vocab_size=64)
    ).save_pretrained(bloom)
    with pytest.raises(UnsupportedModelError, match="unsupported model type 'bloom'"):
        load_model(bloom)


def test_inspect_table_and_json(saved_llama: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(saved_llama)]) == 0
    table = capsys.readouterr().out
    assert "LlamaForCausalLM" in table and "layers.N.mlp.down_proj" in table
    assert main(["inspect", str(saved_llama), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["heads"] == 4 and data["kv_heads"] == 2 and data["neurons_per_layer"] == 48
    assert data["counts"]["neurons"] == 96
    assert data["parameters"]["total"] == sum(p.numel() for p in tiny_model("llama").parameters())


@pytest.mark.parametrize("case", ["missing", "bert", "bloom"])
def test_inspect_bad_inputs_exit_2(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / case
    if case == "bert":
        BertConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=1).save_pretrained(target)
    elif case == "bloom":
        AutoConfig.for_model("bloom", hidden_size=32, n_head=4, n_layer=1).save_pretrained(target)
    assert main(["inspect", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("circuitcut inspect: error:")
    expected = {
        "missing": "does not exist",
        "bert": "not a causal language model",
        "bloom": "unsupported model type 'bloom'",
    }[case]
    assert expected in err


def test_cli_help_lists_verbs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0  # argparse's exit becomes main's return value
    out = capsys.readouterr().out
    for verb in ("inspect", "attribute", "zoo", "demo"):
        assert verb in out
