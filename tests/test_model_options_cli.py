"""One set of model options on every verb that loads a model, reaching the loader; the ``convert`` verb.

Every verb's parser is built from :func:`circuitcut.cli.main.build_parser` and given a command line
with every model option; the options must come back as the same :class:`ModelOptions` (and the
dataclass's defaults without them). The loader is then spied on: what each verb hands it is the
options given on the command line, so a pickle-only folder loads with ``--allow-pickle`` and is
refused without it, in ``compress``, ``correct`` and ``lasso`` as everywhere else. The Python side
(:class:`ModelOptions`, :func:`convert`) is tested in ``test_model_options.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import torch

import circuitcut.models.loading as loading
from circuitcut.cli.common import model_options
from circuitcut.cli.main import build_parser, main
from circuitcut.errors import CircuitcutError
from circuitcut.models import ModelOptions, load_model

from .test_model_options import REF, write_pickle_only

#: every model option, as a user would type them (the model itself is given per verb)
OPTIONS = ["--revision", "v1", "--dtype", "bf16", "--device", "cpu", "--allow-pickle", "--trust-remote-code",
           "--no-special-tokens"]  # fmt: skip
EXPECTED = ModelOptions(revision="v1", dtype="bf16", device="cpu", allow_pickle=True, trust_remote_code=True,
                        special_tokens=False)  # fmt: skip
#: verbs that load no model
NO_MODEL = {"view", "zoo train", "zoo list"}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Inputs the verbs require: a text, prompts, and a folder for outputs."""
    w = tmp_path_factory.mktemp("model-options")
    (w / "text.txt").write_text("the cat sat on the mat . " * 40, encoding="utf-8")
    (w / "prompts.txt").write_text("the cat\nthe dog\n", encoding="utf-8")
    return w


def verb_lines(w: Path, model: str) -> dict[str, list[str]]:
    """A minimal command line of each model-loading verb (without the model options)."""
    out = str(w / "out")
    return {
        "inspect": ["inspect", model],
        "convert": ["convert", model, str(w / "converted")],
        "attribute": [
            "attribute",
            "--model",
            model,
            "--data",
            str(w / "text.txt"),
            "--output",
            str(w / "scores.safetensors"),
        ],
        "explain": ["explain", "--model", model, "--prompt", "the cat"],
        "compress": ["compress", "--model", model, "--calibration", str(w / "text.txt"), "--output", out],
        "circuit": ["circuit", "--model", model, "--output", out],
        "correct": [
            "correct",
            "--model",
            model,
            "--undesired",
            str(w / "prompts.txt"),
            "--general",
            str(w / "text.txt"),
            "--behaviour",
            "repetition",
            "--output",
            out,
        ],
        "lasso": ["lasso", "--model", model, "--sae-text", str(w / "text.txt"), "--output", out],
        "sae train": [
            "sae",
            "train",
            "--model",
            model,
            "--sites",
            "blocks.0.hook_resid_post",
            "--text",
            str(w / "text.txt"),
            "--output",
            out,
        ],
        "demo": ["demo", "--model", model, "--output", out],
        "zoo card": ["zoo", "card", "--model", model],
    }


def all_verbs() -> set[str]:
    """Every verb of the command line, sub-verbs as ``"zoo card"``."""
    names = set()

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            names.add(prefix.strip())
        for sub in subs:
            for name, child in sub.choices.items():
                walk(child, f"{prefix} {name}")

    walk(build_parser(), "")
    return names


def test_every_verb_is_classified(files: Path) -> None:
    """A new verb must say whether it loads a model (then it is tested below)."""
    assert all_verbs() == set(verb_lines(files, REF)) | NO_MODEL


@pytest.mark.parametrize("verb", sorted(verb_lines(Path("."), REF)))
def test_model_verb_parses_every_model_option(verb: str, files: Path) -> None:
    line = verb_lines(files, REF)[verb]
    args = build_parser().parse_args(line + OPTIONS)
    assert args.model == REF and model_options(args) == EXPECTED
    plain = build_parser().parse_args(line)
    assert model_options(plain) == ModelOptions()  # the defaults are the dataclass's


def test_model_option_help_explains_the_model_argument(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # no line breaks inside circuitcut/ref-llama
    with pytest.raises(SystemExit):
        build_parser().parse_args(["compress", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for word in (
        "save_pretrained",
        ".gguf",
        "circuitcut/ref-llama",
        "hub id",
        "--allow-pickle",
        "--revision",
    ):
        assert word in help_text


def test_bad_dtype_is_refused_while_parsing(capsys: pytest.CaptureFixture[str], files: Path) -> None:
    assert main(verb_lines(files, REF)["lasso"] + ["--dtype", "float8"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'float8'" in err and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def pickle_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder whose weights are only a pickle."""
    return write_pickle_only(tmp_path_factory.mktemp("pickle-only"))


class Loaded(CircuitcutError):
    """Raised by the spy once the model is loaded: the verb goes no further."""


@pytest.mark.parametrize("verb", sorted(set(verb_lines(Path("."), REF)) - {"convert"}))
def test_model_options_reach_the_loader(
    verb: str,
    files: Path,
    pickle_only: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With --allow-pickle a pickle-only folder loads (and the loader gets every option); without it
    the folder is refused with the flag named."""
    line = verb_lines(files, str(pickle_only))[verb]
    assert main(line) == 2
    err = capsys.readouterr().err
    assert "only pickle checkpoints" in err and "--allow-pickle" in err, err
    seen: list[ModelOptions] = []
    real = loading.load_model

    def spy(name: Any, options: ModelOptions | None = None, **kw: Any) -> Any:
        seen.append(options)
        real(name, options.with_changes(dtype="float32"), **kw)  # bf16 is only what the verb asked for
        raise Loaded("loaded")

    monkeypatch.setattr(loading, "load_model", spy)
    assert main(line + OPTIONS) == 2
    assert "error: loaded" in capsys.readouterr().err
    assert seen == [EXPECTED]


def test_convert_cli_writes_refuses_a_full_folder_and_takes_the_dtype(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bf16"
    assert main(["convert", REF, str(out), "--dtype", "bf16", "--no-progress"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    model, _, _ = load_model(out, dtype="auto")
    assert next(model.parameters()).dtype == torch.bfloat16
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(["convert", REF, str(out)]) == 2
    err = capsys.readouterr().err
    assert "is a folder with files in it" in err and "nothing was overwritten" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["convert", REF, str(empty)]) == 0 and (empty / "model.safetensors").is_file()
