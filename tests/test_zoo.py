"""The synthetic language, its tokenizer and the training code (no long training here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from circuitcut.metrics import repeated_ngram_rate, response_uniqueness_ratio
from circuitcut.zoo.language import HELDOUT_TEMPLATES, INSULTS, IOI_TEMPLATES, NAMES, Language, vocabulary
from circuitcut.zoo.tokenizer import build_tokenizer
from circuitcut.zoo.train import TrainConfig, train_reference_model


def test_generator_is_deterministic_for_a_seed() -> None:
    lang = Language(seed=0)
    assert list(lang.documents(20, seed=3)) == list(Language(seed=0).documents(20, seed=3))
    assert list(lang.documents(20, seed=3)) != list(lang.documents(20, seed=4))
    assert lang.ioi_prompts(10, seed=1) == Language(seed=0).ioi_prompts(10, seed=1)


def test_language_has_the_planted_structure() -> None:
    lang = Language(seed=0)
    assert len(NAMES) >= 50 and len(set(NAMES)) == len(NAMES)
    tok = build_tokenizer()
    for name in NAMES:  # every name is one token
        assert len(tok(name, add_special_tokens=False)["input_ids"]) == 1
    docs = list(lang.documents(400, seed=0))
    words = {w for d in docs for w in d.split()}
    assert words <= set(vocabulary())
    # insults appear only right after an angry speech opener
    for doc in docs:
        toks = doc.split()
        for i, w in enumerate(toks):
            if w in INSULTS:
                j = i
                while toks[j] in INSULTS:
                    j -= 1
                assert (
                    toks[j] == "you"
                    and toks[j - 1] == ":"
                    and toks[j - 2] in {"yelled", "snapped", "shouted", "growled"}
                )


def test_heldout_templates_and_pairs_stay_out_of_training() -> None:
    lang = Language(seed=0)
    train_text = " ".join(lang.documents(3000, seed=0))
    for k, template in enumerate(IOI_TEMPLATES):
        pattern = re.escape(template)
        for slot in ("A", "B", "S", "IO", "PLACE", "OBJECT"):
            pattern = pattern.replace(re.escape(f"[{slot}]"), r"\S+")
        found = re.search(pattern, train_text) is not None
        assert found == (k not in HELDOUT_TEMPLATES), (k, template)
    for p in lang.ioi_prompts(50, seed=0, heldout=True):
        pair = (min(p["io"], p["s"]), max(p["io"], p["s"]))
        assert pair in lang.heldout_pairs
    for p in lang.ioi_prompts(50, seed=0, heldout=False):
        assert (min(p["io"], p["s"]), max(p["io"], p["s"])) not in lang.heldout_pairs


def test_ioi_prompts_answer_is_the_non_repeated_name() -> None:
    for p in Language(seed=0).ioi_prompts(30, seed=2):
        words = p["prompt"].split()
        assert words.count(p["s"]) == 2 and words.count(p["io"]) == 1


def test_entropy_rate_is_positive_and_stable() -> None:
    lang = Language(seed=0)
    h1, h2 = lang.entropy_rate(400, seed=1), lang.entropy_rate(400, seed=2)
    assert 0.5 < h1 < 3.0 and abs(h1 - h2) < 0.1


def test_tokenizer_roundtrip_with_autotokenizer(tmp_path: Path) -> None:
    tok = build_tokenizer()
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").exists()
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "When Mary and John went to the store , John gave a drink to"
    assert loaded(text)["input_ids"] == tok(text, add_special_tokens=False)["input_ids"]
    assert loaded.decode(loaded(text)["input_ids"]) == text
    assert loaded.convert_ids_to_tokens(loaded("Mary zebra")["input_ids"]) == ["Mary", "<unk>"]


@pytest.mark.parametrize("arch", ["llama", "opt"])
def test_a_few_training_steps_lower_the_loss(arch: str) -> None:
    cfg = TrainConfig(arch=arch, hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64,
                      steps=40, batch_size=8, seq_len=32, n_docs=300, eval_every=20, lr=1e-2)  # fmt: skip
    _, _, log = train_reference_model(cfg, progress=False)
    first, last = log["evals"][0]["heldout_loss"], log["evals"][-1]["heldout_loss"]
    assert last < first < 5.5


def test_training_is_reproducible() -> None:
    cfg = TrainConfig(arch="llama", hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64,
                      steps=10, batch_size=4, seq_len=16, n_docs=50, eval_every=10)  # fmt: skip
    a = train_reference_model(cfg, progress=False)[2]["evals"][-1]
    b = train_reference_model(cfg, progress=False)[2]["evals"][-1]
    assert a["heldout_loss"] == b["heldout_loss"] and a["train_loss"] == b["train_loss"]


def test_rur_and_repeated_ngrams_by_hand() -> None:
    assert response_uniqueness_ratio([]) == 0.0
    assert response_uniqueness_ratio([1, 2, 2, 3]) == 0.75
    assert response_uniqueness_ratio([5] * 10) == 0.1
    assert repeated_ngram_rate([1, 2, 3, 1, 2, 3], 3) == 1 / 4  # (1,2,3) once more among 4 trigrams
    assert repeated_ngram_rate([1, 2], 3) == 0.0
    assert repeated_ngram_rate([7, 7, 7, 7], 2) == 2 / 3
