"""The model options (:class:`ModelOptions`) and ``convert``, from Python.

One frozen, torch-free dataclass holds how a model is loaded; :func:`load_model`, :func:`as_loaded`,
the workflows and :func:`convert` take it. ``convert`` writes a model as a safetensors folder that
reloads to identical logits, under a temporary name renamed when complete.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from circuitcut.errors import InputError, ModelLoadError
from circuitcut.models import ModelOptions, convert, load_model
from circuitcut.models.tiny import tiny_model
from circuitcut.zoo.tokenizer import build_tokenizer

REF = "circuitcut/ref-llama"


def write_pickle_only(folder: Path) -> Path:
    """A model folder whose weights are only a pickle (pytorch_model.bin)."""
    model = tiny_model("llama")
    model.config.save_pretrained(folder)
    build_tokenizer().save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


@pytest.fixture(scope="module")
def pickle_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder whose weights are only a pickle."""
    return write_pickle_only(tmp_path_factory.mktemp("pickle-only"))


def test_pickle_only_folder_loads_with_the_option_object(pickle_only: Path) -> None:
    with pytest.raises(ModelLoadError, match="--allow-pickle"):
        load_model(pickle_only)
    model, _, _ = load_model(pickle_only, ModelOptions(allow_pickle=True))
    assert torch.equal(model.model.embed_tokens.weight, tiny_model("llama").model.embed_tokens.weight)


def test_as_loaded_follows_the_special_token_option() -> None:
    from circuitcut.models import as_loaded

    _, on, _, _ = as_loaded(REF)
    model, off, _, model_id = as_loaded(REF, options=ModelOptions(special_tokens=False))
    assert on.special_tokens and not off.special_tokens and model_id == REF
    _, kept, _, _ = as_loaded(model, off)  # a loaded model keeps its Encoder's choice
    assert kept is off


def test_model_options_check_their_values() -> None:
    assert ModelOptions(dtype=torch.bfloat16, device=torch.device("cpu")) == ModelOptions(
        dtype="bfloat16", device="cpu"
    )
    assert ModelOptions(dtype=None).dtype == "auto"
    with pytest.raises(ModelLoadError, match="unknown dtype 'float8'"):
        ModelOptions(dtype="float8")
    with pytest.raises(InputError, match="allow_pickle must be True or False"):
        ModelOptions(allow_pickle="yes")  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"unknown model option.*dtyp.*the options are"):
        ModelOptions().with_changes(dtyp="bf16")
    with pytest.raises(InputError, match="unknown model option"):
        load_model(REF, dtyp="bf16")


def test_model_options_import_without_torch() -> None:
    import subprocess
    import sys

    code = "import sys; from circuitcut.models import ModelOptions; ModelOptions(); print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        == "False\n"
    )


def test_convert_round_trips_the_reference_model(tmp_path: Path) -> None:
    out = convert(REF, tmp_path / "ref")
    original, tok, _ = load_model(REF)
    back, back_tok, _ = load_model(out)
    ids = torch.tensor([tok("the cat sat on the mat")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(back(ids).logits, original(ids).logits)
    assert back_tok("the cat sat")["input_ids"] == tok("the cat sat")["input_ids"]
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    source = json.loads((out / "circuitcut-source.json").read_text())
    assert source["source"] == REF and source["dtype"] == "float32" and source["revision"] is None
    assert [p.name for p in tmp_path.iterdir()] == ["ref"]  # no temporary folder left beside it


def test_convert_interrupted_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import PreTrainedModel

    def interrupted(self: Any, *args: Any, **kwargs: Any) -> None:
        (Path(args[0]) / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert(REF, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary folder


def test_convert_refuses_a_folder_with_files(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"is a folder with files in it.*nothing was overwritten"):
        convert(REF, tmp_path / "out")
    with pytest.raises(InputError, match="is a file"):
        convert(REF, tmp_path / "out" / "notes.txt")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]
