"""``circuitcut sae train`` on the embedded reference model: the run folder, the quality table, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from circuitcut.cli.main import main
from circuitcut.errors import CircuitcutError
from circuitcut.io import read_json
from circuitcut.lasso.sae import load_sae
from circuitcut.models import as_loaded
from circuitcut.workflows.sae import checkpoint_folder, train_sae_run
from circuitcut.zoo.language import Language

SITES = "blocks.0.hook_resid_post,blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("text") / "corpus.txt"
    p.write_text(Language(seed=0).corpus(300, seed=5), encoding="utf-8")
    return p


def _argv(text: Path, out: Path, *extra: str) -> list[str]:
    return ["sae", "train", "--model", "circuitcut/ref-llama", "--sites", SITES, "--text", str(text),
            "--output", str(out), "--d-sae", "64", "--k", "8", "--steps", "40", "--batch-tokens", "128",
            "--buffer-tokens", "2048", "--seqlen", "32", "--eval-windows", "4", "--lr", "3e-3",
            "--checkpoint-every", "10", "--no-progress", *extra]  # fmt: skip


def test_sae_train_writes_saelens_folders_and_quality(
    text: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "saes"
    assert main(_argv(text, out)) == 0
    printed = capsys.readouterr().out
    assert "| blocks.0.hook_resid_post |" in printed and "explained variance" in printed
    q = read_json(out / "quality.json")
    assert q["sites"] == SITES.split(",") and q["training"]["steps"] == 40
    _, _, adapter, _ = as_loaded("circuitcut/ref-llama", purpose="test")
    for site in SITES.split(","):
        sae = load_sae(out / site, adapter)
        assert sae.hook_name == site and sae.d_sae == 64 and sae.k == 8
        m = q["quality"][site]
        assert 0 < m["explained_variance"] <= 1 and m["l0"] <= 8
        assert m["loss_increase"] == pytest.approx(m["loss_spliced"] / m["loss_clean"] - 1)
    assert not checkpoint_folder(out).exists()  # removed once finished


def test_interrupted_run_resumes_to_the_same_weights(text: Path, tmp_path: Path) -> None:
    from circuitcut.lasso.sae_config import SAETrainConfig

    cfg = SAETrainConfig(
        d_sae=64, k=8, steps=30, batch_tokens=128, buffer_tokens=2048, lr=3e-3, checkpoint_every=10
    )
    kw = {"eval_windows": 4, "seqlen": 32, "progress": False}
    whole = train_sae_run("circuitcut/ref-llama", SITES, [str(text)], tmp_path / "a", cfg, **kw)
    out = tmp_path / "b"

    class Stop(Exception):
        pass

    import circuitcut.workflows.sae as workflow

    real = workflow.train_saes

    def interrupted(*a: object, **k: object) -> object:
        real(*a, **k, stop_after=20)  # type: ignore[arg-type]
        raise Stop  # as a Ctrl-C after the checkpoint at step 20

    workflow.train_saes = interrupted  # type: ignore[assignment]
    try:
        with pytest.raises(Stop):
            train_sae_run("circuitcut/ref-llama", SITES, [str(text)], out, cfg, **kw)
    finally:
        workflow.train_saes = real
    assert not out.exists() and (checkpoint_folder(out) / "checkpoint.safetensors").is_file()
    resumed = train_sae_run("circuitcut/ref-llama", SITES, [str(text)], out, cfg, **kw)
    assert resumed["training"]["resumed_from"] == 20
    for site in SITES.split(","):
        a, b = load_sae(tmp_path / "a" / site), load_sae(out / site)
        assert torch.equal(a.W_enc, b.W_enc) and torch.equal(a.W_dec, b.W_dec)
    assert whole["quality"] == resumed["quality"]


def test_no_text_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CircuitcutError, match="no training text"):
        train_sae_run("circuitcut/ref-llama", SITES, [], tmp_path / "o")
