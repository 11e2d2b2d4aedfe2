"""End-to-end runs of the workflows on the shipped reference models (the slow CI step)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from circuitcut.cli.main import main
from circuitcut.zoo.language import INSULTS, Language

pytestmark = pytest.mark.slow


def test_demo_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--quick", "--no-progress", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "## 2. The IOI circuit" in out and "## 3. Correction" in out and "LRP over the sweep" in out
    s = json.loads((tmp_path / "summary.json").read_text())
    c = s["parts"]["circuit"]["summary"]
    m = c["metric"]
    assert c["met_threshold"] and c["circuit"][m] >= 0.9 * c["model"][m]
    assert c["random_control"]["metric"] < 0.5 * c["model"][m]
    for f in ("report.md", "circuit/curves.png", "circuit/curves.svg", "circuit/circuit_layers.png",
              "circuit/circuit/circuit_mask.safetensors", "correction/report.md", "correction/per_prompt.png",
              "attribution/ioi_lrp.safetensors", "attribution/token_relevance.html", "report.html",
              "circuit/report.html", "correction/report.html"):  # fmt: skip
        assert (tmp_path / f).exists(), f


def test_compress_cli_on_reference_model(tmp_path: Path) -> None:
    lang = Language(seed=0)
    text = tmp_path / "text.txt"
    text.write_text(lang.corpus(300, seed=5))
    out = tmp_path / "pruned"
    rc = main(["compress", "--model", "circuitcut/ref-opt", "--method", "wanda", "--sparsity", "0.5", "--scheme",
               "rowwise", "--calibration", str(text), "--n-samples", "16", "--seqlen", "64", "--output", str(out),
               "--no-progress"])  # fmt: skip
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["sparsity"] == pytest.approx(0.5)
    assert report["dense"]["perplexity"] < report["pruned"]["perplexity"] < 2 * report["dense"]["perplexity"]
    assert f"{report['pruned']['perplexity']:.4f}" in (out / "report.html").read_text()  # the HTML page


def test_correct_cli_on_reference_model(tmp_path: Path) -> None:
    lang = Language(seed=0)
    prompts = tmp_path / "toxic.txt"
    prompts.write_text("\n".join(p["prompt"] for p in lang.trigger_prompts(40, seed=3) if p["trigger"]))
    words = tmp_path / "lexicon.txt"
    words.write_text("\n".join(INSULTS))
    general = tmp_path / "general.txt"
    general.write_text(lang.corpus(200, seed=6))
    out = tmp_path / "corr"
    rc = main(["correct", "--model", "circuitcut/ref-llama", "--undesired", str(prompts), "--general", str(general),
               "--scorer", f"wordlist:{words}", "--counts", "2,7", "--seeds", "1", "--n-general", "16",
               "--max-new-tokens", "12", "--output", str(out), "--no-progress"])  # fmt: skip
    assert rc == 0
    r = json.loads((out / "report.json").read_text())
    assert r["results"]["lrp"]["7"]["heldout_rate"] < 0.5 * r["dense"]["heldout_rate"]
    assert (out / "corrected_model" / "model.safetensors").exists() and (
        out / "corrected_model" / "mask.json"
    ).exists()
    page = (out / "report.html").read_text()
    assert 'id="correction-table"' in page and "<mark>" in page and r["encoding"]["special_tokens"] is True


def test_circuit_cli_weight_level(tmp_path: Path) -> None:
    rc = main(["circuit", "--model", "circuitcut/ref-llama", "--level", "weight", "--layers", "mlp", "--seeds", "1",
               "--n-ref", "16", "--n-attribution", "32", "--n-eval", "48", "--baselines", "random",
               "--output", str(tmp_path), "--no-progress"])  # fmt: skip
    assert rc == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    c = s["circuit"]
    assert c["circuit"]["logit_diff"] >= 0.9 * c["model"]["logit_diff"] > c["random_control"]["metric"]
    assert (tmp_path / "curves.csv").read_text().startswith("method,seed,keep,count,fraction")
    page = (tmp_path / "report.html").read_text()
    assert page.count('class="layer"') == 4  # a button per layer: kept weights per projection
    assert c["top_components"][0]["component"] in page


def test_lasso_cli_on_reference_model(tmp_path: Path) -> None:
    rc = main(["lasso", "--model", "circuitcut/ref-llama", "--sites", "blocks.2.hook_resid_post,blocks.3.hook_resid_post",
               "--d-sae", "128", "--sae-steps", "300", "--n-attribution", "160", "--n-eval", "80", "--no-toxic",
               "--output", str(tmp_path), "--no-progress"])  # fmt: skip
    assert rc == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    f = s["evaluation"]["faithfulness"]
    assert f["circuitlasso"]["256"] > 0.8 > f["random"]["64"]
    graph = json.loads((tmp_path / "circuit_graph.json").read_text())
    assert graph["nodes"] and graph["format"] == "circuitcut.lasso-circuit/1"
    for name in ("cfg.json", "sae_weights.safetensors"):
        assert (tmp_path / "saes" / "blocks.3.hook_resid_post" / name).exists()
    for f_ in ("report.md", "report.html", "faithfulness.png", "circuit_graph.svg"):
        assert (tmp_path / f_).exists()
    cf = s["evaluation_counterfactual"]["faithfulness"]  # IOI has counterfactual prompts
    assert set(cf) == {"circuitlasso", "attribution_patching", "attribution_patching_counterfactual",
                       "integrated_gradients", "random"}  # fmt: skip
    assert s["costs"]["integrated_gradients"]["passes"] > s["costs"]["attribution_patching"]["passes"]
    cards = s["features"]
    assert cards and all(c["site"] in s["sites"] for c in cards) and any(c["contexts"] for c in cards)
    page = (tmp_path / "report.html").read_text()
    assert "Circuit features" in page and "counterfactual ablation" in page and "Circuit graph" in page
