"""One encoding policy (circuitcut.encoding): a BOS-adding tokenizer gets its BOS exactly once at the
start of every prompt and window, at every entry point; answers get nothing; bad words and lengths
are refused with the word or the limit named."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tokenizers import processors
from transformers.utils import logging as hf_logging

from circuitcut import load_model
from circuitcut.attribution import attribute
from circuitcut.attribution.config import ScoringConfig
from circuitcut.cli.main import main
from circuitcut.data import calibration_samples, load_samples
from circuitcut.encoding import Encoder, as_encoder, cut_windows
from circuitcut.errors import CircuitcutError
from circuitcut.evaluation.perplexity import perplexity, perplexity_of_ids
from circuitcut.generation import GenerationSettings, greedy_continuations
from circuitcut.tasks import Example, Task, ioi_task
from circuitcut.workflows.compress import compress
from circuitcut.workflows.compress_config import CompressConfig
from circuitcut.workflows.explain import explain_prompts
from circuitcut.zoo.language import Language
from circuitcut.zoo.tokenizer import build_tokenizer, save_tokenizer

TEXT = Language(seed=0).corpus(40, seed=1)


def bos_tokenizer():
    """The reference models' tokenizer, made to put <bos> before every text (as Llama's does)."""
    tok = build_tokenizer()
    bos = tok.convert_tokens_to_ids("<bos>")
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)]
    )
    return tok


@pytest.fixture(autouse=True)
def _no_hf_progress_bars():
    """transformers' own loading/saving bars write to stderr; these tests read stderr."""
    hf_logging.disable_progress_bar()
    yield
    hf_logging.enable_progress_bar()


@pytest.fixture(scope="module")
def ref():
    model, _, adapter = load_model("circuitcut/ref-llama")
    return model, adapter


def starts_with_one_bos(ids, bos: int) -> bool:
    ids = list(ids)
    return ids[0] == bos and ids.count(bos) == 1


def test_prefix_is_derived_from_the_tokenizer() -> None:
    tok = bos_tokenizer()
    bos = tok.convert_tokens_to_ids("<bos>")
    assert Encoder(tok).prefix == (bos,)
    assert Encoder(tok, special_tokens=False).prefix == ()
    assert Encoder(build_tokenizer()).prefix == ()
    enc = Encoder(tok, context=64)
    assert enc.provenance() == {
        "special_tokens": True,
        "prefix_ids": [bos],
        "prefix_tokens": ["<bos>"],
        "context": 64,
    }


def test_every_entry_point_puts_the_bos_once_at_the_start(ref, tmp_path: Path) -> None:
    model, adapter = ref
    tok = bos_tokenizer()
    bos = tok.convert_tokens_to_ids("<bos>")
    enc = as_encoder(tok, model)
    # tasks: prompts with the BOS, answers and contrasts without it
    task = ioi_task(tok, 12, seed=0)
    coded = task.encode(tok)
    assert all(starts_with_one_bos(p, bos) for p in coded.prompts)
    assert bos not in coded.answers and bos not in coded.contrasts
    plain = task.encode(Encoder(tok, special_tokens=False))
    assert [[bos, *p] for p in plain.prompts] == coded.prompts and plain.answers == coded.answers
    assert all(starts_with_one_bos(s.input_ids, bos) for s in task.samples(tok))
    # text windows (reference data) and calibration windows
    txt = tmp_path / "ref.txt"
    txt.write_text(TEXT)
    windows = load_samples(txt, tok, seqlen=16)
    assert len(windows) > 3 and all(
        len(w.input_ids) == 16 and starts_with_one_bos(w.input_ids, bos) for w in windows
    )
    stream = enc.pieces(TEXT)
    assert [list(w.input_ids[1:]) for w in windows] == [
        stream[i * 15 : (i + 1) * 15] for i in range(len(windows))
    ]
    cal = calibration_samples(tok, TEXT, 5, 16, seed=0)
    assert all(len(s.input_ids) == 16 and starts_with_one_bos(s.input_ids, bos) for s in cal)
    jsonl = tmp_path / "ref.jsonl"
    jsonl.write_text(json.dumps({"prompt": "Mary went to the", "response": "store ."}) + "\n")
    (sample,) = load_samples(jsonl, tok)
    assert starts_with_one_bos(sample.input_ids, bos) and sample.target.positions == (4, 5)
    # generation prompts: the model sees the BOS once, first
    seen = []
    handle = model.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["input_ids"][0].tolist()), with_kwargs=True
    )
    try:
        greedy_continuations(
            model, tok, ["When Mary and John went to the"], GenerationSettings(max_new_tokens=2)
        )
    finally:
        handle.remove()
    assert starts_with_one_bos(seen[0], bos)
    # explain: the explained prompt starts with the BOS, shown as a token of its own
    (rec,) = explain_prompts(
        model, tok, adapter, ["When Mary and John went to the store , John gave a drink to"]
    )
    assert rec["tokens"][0] == "<bos>" and rec["tokens"].count("<bos>") == 1


def test_perplexity_puts_the_prefix_before_every_window_and_scores_each_corpus_token_once(ref) -> None:
    model, _ = ref
    tok = bos_tokenizer()
    bos = tok.convert_tokens_to_ids("<bos>")
    stream = Encoder(tok).pieces(TEXT)
    got = perplexity(model, tok, TEXT, seqlen=16, max_windows=4)
    # by hand: windows [bos] + 15 corpus tokens, every corpus token scored
    nll, n = 0.0, 0
    with torch.no_grad():
        for i in range(4):
            x = torch.tensor([[bos, *stream[i * 15 : (i + 1) * 15]]])
            logp = torch.log_softmax(model(input_ids=x).logits[0, :-1].double(), -1)
            nll -= logp[torch.arange(15), x[0, 1:]].sum().item()
            n += 15
    assert got.tokens == n == 60 and got.windows == 4
    assert math.isclose(got.nll, nll / n, rel_tol=1e-6)
    # without a prefix: Wanda's protocol, the first token of each window is context only
    plain = perplexity(model, Encoder(tok, special_tokens=False), TEXT, seqlen=16, max_windows=4)
    assert plain.tokens == 4 * 15
    assert plain.perplexity == perplexity_of_ids(model, stream, 16, max_windows=4).perplexity


def test_unknown_and_multi_token_words_are_refused_with_the_word_named() -> None:
    tok = build_tokenizer()
    with pytest.raises(CircuitcutError, match=r"answer 'Zyxwv'.*does not know.*<unk>"):
        Task(
            "t", [Example("When Mary and John went to the store , John gave a drink to", "Zyxwv", "John")]
        ).encode(tok)
    with pytest.raises(CircuitcutError, match=r"contrast 'John Mary' is 2 tokens .*\['John', 'Mary'\]"):
        Task("t", [Example("When Mary and John went to the", "Mary", "John Mary")]).encode(tok)


def test_prompts_and_windows_longer_than_the_context_are_refused(ref, tmp_path: Path) -> None:
    model, _ = ref  # ref-llama: 128 positions
    enc = as_encoder(build_tokenizer(), model)
    assert enc.context == 128
    long_prompt = " ".join(["Mary"] * 130)
    with pytest.raises(
        CircuitcutError, match=r"130 tokens, longer than the model's context of 128 positions"
    ):
        enc.prompt(long_prompt)
    with pytest.raises(CircuitcutError, match=r"seqlen=256 is 256 tokens.*context of 128.*smaller seqlen"):
        cut_windows(list(range(1000)), 256, (), enc.context)
    with pytest.raises(CircuitcutError, match=r"context of 128"):
        perplexity_of_ids(model, list(range(4, 1000)), seqlen=256)


def _ref_copy_with_context(tmp_path: Path, positions: int) -> Path:
    """ref-llama saved with a shorter position table (96): the default --seqlen 128 does not fit."""
    model, tok, _ = load_model("circuitcut/ref-llama")
    model.config.max_position_embeddings = positions
    folder = tmp_path / f"ref{positions}"
    model.save_pretrained(folder)
    save_tokenizer(tok, str(folder))
    return folder


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["attribute", "--method", "gradient", "--data", "{txt}", "--seqlen", "128"],
            "context of 96 positions",
        ),
        (["attribute", "--method", "gradient", "--data", "{bad_answer}"], "'Zyxwv'"),
        (["explain", "--prompt", "When Mary and John went to the", "--target", "Zyxwv"], "'Zyxwv'"),
        (["explain", "--prompt", "When Mary and John went to the", "--target", "Mary John"], "is 2 tokens"),
        (["explain", "--prompt", "Mary " * 100], "longer than the model's context of 96"),
        (["explain", "--file", "{explain_bad}"], "'Zyxwv'"),
    ],
)
def test_cli_refuses_bad_words_and_lengths_in_one_line(tmp_path: Path, capsys, argv, message) -> None:
    folder = _ref_copy_with_context(tmp_path, 96)
    files = {
        "txt": tmp_path / "d.txt",
        "bad_answer": tmp_path / "a.jsonl",
        "explain_bad": tmp_path / "e.jsonl",
    }
    files["txt"].write_text(TEXT)
    files["bad_answer"].write_text(
        json.dumps({"prompt": "When Mary and John went to the", "answer": "Zyxwv"}) + "\n"
    )
    files["explain_bad"].write_text(
        json.dumps({"prompt": "When Mary and John went to the", "target": "Zyxwv"}) + "\n"
    )
    argv = [a.format(**files) for a in argv]
    verb, rest = argv[0], argv[1:]
    model_arg = ["--model", str(folder)] + (
        ["--output", str(tmp_path / "s.safetensors")] if verb == "attribute" else []
    )
    code = main([verb, *model_arg, *rest])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "s.safetensors").exists()


def test_explain_file_gives_each_prompt_its_own_target(ref, tmp_path: Path, capsys) -> None:
    rows = [
        {
            "prompt": "When Mary and John went to the store , John gave a drink to",
            "target": "Mary",
            "contrast": "John",
        },
        {"prompt": "When Anna and Peter went to the park , Anna gave a ball to", "target": "Peter"},
    ]
    f = tmp_path / "p.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "h.html"
    assert main(["explain", "--model", "circuitcut/ref-llama", "--file", str(f), "--output", str(out)]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    assert [(s["target"], s["contrast"]) for s in data["samples"]] == [("Mary", "John"), ("Peter", None)]
    assert data["encoding"]["special_tokens"] is True


def test_no_special_tokens_is_recorded_in_the_scores_provenance(tmp_path: Path) -> None:
    txt = tmp_path / "d.txt"
    txt.write_text(TEXT)
    out = tmp_path / "s.safetensors"
    argv = ["attribute", "--model", "circuitcut/ref-llama", "--method", "gradient", "--data", str(txt),
            "--seqlen", "32", "--n-samples", "2", "--output", str(out), "--no-progress"]  # fmt: skip
    assert main([*argv, "--no-special-tokens"]) == 0
    side = json.loads(out.with_suffix(".json").read_text())
    blob = json.dumps(side)
    assert '"special_tokens": false' in blob and '"context": 128' in blob


def test_attribution_with_and_without_bos_differ_only_by_the_bos(ref) -> None:
    """The same prompt, with and without the BOS: the scores differ (the model sees another input), so
    the choice matters and is recorded; both run end to end."""
    model, adapter = ref
    tok = bos_tokenizer()
    task = ioi_task(tok, 4, seed=2)
    with_bos = attribute(model, task.samples(tok), "gradient", adapter=adapter, levels=("neuron",))
    without = attribute(model, task.samples(Encoder(tok, special_tokens=False)), "gradient", adapter=adapter,
                        levels=("neuron",))  # fmt: skip
    a, b = with_bos.neuron_matrix(), without.neuron_matrix()
    assert a.shape == b.shape and not torch.allclose(a, b)


def test_default_windows_fit_a_short_context(tmp_path: Path) -> None:
    """Without --seqlen, compress and attribute use 128 tokens or the model's context if shorter."""
    folder = _ref_copy_with_context(tmp_path, 96)
    txt = tmp_path / "d.txt"
    txt.write_text(Language(seed=0).corpus(120, seed=1))
    out = tmp_path / "s.safetensors"
    assert main(["attribute", "--model", str(folder), "--method", "gradient", "--data", str(txt), "--n-samples",
                 "2", "--output", str(out), "--no-progress"]) == 0  # fmt: skip
    assert json.loads(out.with_suffix(".json").read_text())["meta"]["seqlen"] == 96
    report = compress(
        str(folder),
        str(txt),
        config=CompressConfig(ScoringConfig(method="magnitude"), n_samples=2, eval_windows=2),
    )
    assert report["config"]["seqlen"] == 96 and report["dense"]["seqlen"] == 96
