"""The HTML token heatmap."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from circuitcut.errors import CircuitcutError
from circuitcut.reports.heatmap import display_tokens, save_token_heatmap, token_heatmap_html
from circuitcut.zoo.language import vocabulary
from circuitcut.zoo.tokenizer import build_tokenizer


def _cells(page: str) -> list[tuple[str, float, str]]:
    """(rgb, alpha, shown text) of every token box."""
    pat = r'<span class="tok" style="background:rgba\((\d+,\d+,\d+),([0-9.]+)\)" title="[^"]*">([^<]*)</span>'
    return [(rgb, float(a), text) for rgb, a, text in re.findall(pat, page)]


def test_colours_scale_with_relevance_and_tokens_are_escaped() -> None:
    page = token_heatmap_html([("a <sample>", ["<b>", "x", " "], [2.0, -1.0, 0.5])])
    cells = _cells(page)
    assert [c[0] for c in cells] == ["230,97,1", "33,102,172", "230,97,1"]  # orange, blue, orange
    assert [c[1] for c in cells] == [1.0, 0.5, 0.25]  # |r| / max |r|
    assert cells[0][2] == "&lt;b&gt;" and cells[2][2] == "&#9251;"  # escaped; whitespace shown as a box
    assert "<b>" not in page and "a &lt;sample&gt;" in page
    assert "sum +1.5" in page


def test_heatmap_of_real_relevance_written_atomically(tmp_path: Path) -> None:
    tok = build_tokenizer()
    chosen = [w for w in vocabulary() if w.isalpha()][:3]
    ids = tok(" ".join(chosen), add_special_tokens=False)["input_ids"]
    words = display_tokens(tok, ids)
    assert words == chosen
    path = save_token_heatmap(tmp_path / "h" / "heat.html", [("s", words, torch.tensor([0.0, 3.0, -3.0]))])
    cells = _cells(path.read_text())
    assert [c[2] for c in cells] == words and [c[1] for c in cells] == [0.0, 1.0, 1.0]
    assert [p.name for p in path.parent.iterdir()] == ["heat.html"]  # no temporary file left behind


def test_bad_rows_are_refused() -> None:
    with pytest.raises(CircuitcutError, match="no samples"):
        token_heatmap_html([])
    with pytest.raises(CircuitcutError, match="2 tokens but 3 relevance values"):
        token_heatmap_html([("s", ["a", "b"], [1.0, 2.0, 3.0])])
    with pytest.raises(CircuitcutError, match="has no tokens"):
        token_heatmap_html([("s", [], [])])


def test_byte_level_tokens_are_shown_as_text() -> None:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["hello world, hello there world"] * 20, vocab_size=300, min_frequency=1)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer)
    ids = tok("hello world", add_special_tokens=False)["input_ids"]
    assert any(t.startswith("\u0120") for t in tok.convert_ids_to_tokens(ids))  # GPT-2's space marker
    assert "".join(display_tokens(tok, ids)) == "hello world"


def test_explain_cli_writes_the_api_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from circuitcut.attribution import answer_sample, explain
    from circuitcut.cli.main import main
    from circuitcut.models import load_model

    model, tok, adapter = load_model("circuitcut/ref-opt")
    prompt = "When Mary and John went to the store , John gave a drink to"
    out = tmp_path / "ioi.html"
    assert main(["explain", "--model", "circuitcut/ref-opt", "--prompt", prompt, "--prompt", "the",
                 "--contrast", "John", "--output", str(out)]) == 0  # fmt: skip
    assert "logit 'Mary' - 'John'" in capsys.readouterr().out  # the model's own prediction is Mary
    data = json.loads(out.with_suffix(".json").read_text())
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    mary, john = tok.convert_tokens_to_ids(["Mary", "John"])
    want = explain(model, [answer_sample(ids, mary, john)], adapter=adapter)[0]
    got = torch.tensor(data["samples"][0]["relevance"])
    assert torch.allclose(got, want, atol=1e-5) and data["samples"][0]["tokens"] == prompt.split()
    assert len(_cells(out.read_text())) == len(ids) + 1  # both prompts drawn


def test_explain_refuses_bad_targets_and_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from circuitcut.cli.main import main

    base = ["explain", "--model", "circuitcut/ref-opt", "--prompt", "the"]
    assert main([*base, "--target", "Mary John"]) == 2
    assert "is 2 tokens for this tokenizer" in capsys.readouterr().err
    assert main([*base, "--output", str(tmp_path / "x.png")]) == 2
    assert "ending in .html" in capsys.readouterr().err and not list(tmp_path.iterdir())
