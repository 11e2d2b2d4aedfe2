"""Perplexity in bounded memory (the LM head on chunks of positions), the dense-perplexity cache, and
the memory estimate and refusal of ``compress`` (issue 22, items 3 and 4)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from circuitcut import get_adapter
from circuitcut.attribution.config import ScoringConfig
from circuitcut.attribution.memory import (
    GIB,
    check_fits,
    estimate_compression,
    estimate_evaluation,
    estimate_memory,
    logit_copies,
)
from circuitcut.correction.fluency import continuation_nll
from circuitcut.errors import CircuitcutError
from circuitcut.evaluation import cache as ppl_cache
from circuitcut.evaluation.cache import cached_perplexity, model_fingerprint, perplexity_key
from circuitcut.evaluation.perplexity import (
    CHUNK_ELEMENTS,
    head_logprobs,
    lm_head_split,
    perplexity_of_ids,
    token_logprobs,
)
from circuitcut.models.tiny import tiny_model
from circuitcut.workflows import compress as compress_mod
from circuitcut.workflows.compress import CompressConfig, compress
from circuitcut.zoo.tokenizer import build_tokenizer

HUGE_VOCAB = 262144


def full_logits_perplexity(model: torch.nn.Module, ids: list[int], seqlen: int, batch_size: int) -> float:
    """The implementation before chunking: a batch's full logits, then cross-entropy (no prefix)."""
    n = len(ids) // seqlen
    windows = torch.tensor(ids[: n * seqlen]).view(n, seqlen)
    total = 0.0
    with torch.no_grad():
        for i in range(0, n, batch_size):
            x = windows[i : i + batch_size]
            logits = model(input_ids=x, use_cache=False).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(
                logits.flatten(0, 1), x[:, 1:].flatten(), reduction="none"
            )
            total += nll.double().sum().item()
    return math.exp(total / (n * (seqlen - 1)))


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache folder of this test's own, the cache on, no memory limit from the environment."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("CIRCUITCUT_CACHE", str(folder))
    monkeypatch.setenv("CIRCUITCUT_PERPLEXITY_CACHE", "1")
    monkeypatch.delenv("CIRCUITCUT_MEMORY_LIMIT", raising=False)
    monkeypatch.delenv("CIRCUITCUT_SKIP_MEMORY_CHECK", raising=False)
    return folder


def test_chunked_perplexity_equals_the_full_logits_on_a_262k_vocabulary() -> None:
    torch.manual_seed(0)
    model = tiny_model("llama", vocab_size=HUGE_VOCAB)
    ids = torch.randint(3, HUGE_VOCAB, (3 * 12 + 5,)).tolist()  # 3 windows of 12, 5 dropped
    want = full_logits_perplexity(model, ids, 12, 2)
    got = perplexity_of_ids(model, ids, seqlen=12, batch_size=2, progress=False)
    assert got.windows == 3 and got.tokens == 33
    assert got.perplexity == pytest.approx(want, rel=1e-6)
    assert HUGE_VOCAB > CHUNK_ELEMENTS // 128  # the default chunk holds fewer than 128 positions here
    # one position per chunk gives the same value
    one = perplexity_of_ids(model, ids, seqlen=12, batch_size=2, progress=False, chunk_elements=1)
    assert one.perplexity == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize(("family", "cap"), [("gemma2", 0.5), ("gpt2", None), ("opt", None), ("gemma", None)])
def test_chunked_perplexity_equals_the_full_logits_on_every_head(family: str, cap: float | None) -> None:
    model = tiny_model(family, **({"final_logit_softcapping": cap} if cap else {}))
    assert lm_head_split(model, torch.tensor([[3, 4, 5]])) is not None
    ids = (torch.arange(90) * 7 % 61 + 3).tolist()
    want = full_logits_perplexity(model, ids, 10, 3)
    got = perplexity_of_ids(model, ids, seqlen=10, batch_size=3, progress=False, chunk_elements=64 * 5)
    assert got.perplexity == pytest.approx(want, rel=1e-6)


def test_the_head_runs_on_chunks_of_at_most_chunk_elements_over_the_vocabulary() -> None:
    model = tiny_model("llama")  # vocabulary 64
    split = lm_head_split(model)
    assert split is not None and split.vocab == 64
    rows_seen: list[int] = []
    handle = split.head.register_forward_hook(lambda m, a, o: rows_seen.append(o.shape[0]))
    states = torch.randn(23, 32)
    targets = torch.randint(0, 64, (23,))
    want = torch.log_softmax(split.head(states).float(), -1).gather(1, targets[:, None])[:, 0]
    rows_seen.clear()
    for chunk, per_call in ((64 * 5, 5), (64, 1), (1, 1), (10**9, 23)):
        rows_seen.clear()
        got = head_logprobs(split, states, targets, chunk)
        torch.testing.assert_close(got, want)
        assert (
            max(rows_seen) == per_call and sum(rows_seen) == 23 and len(rows_seen) == math.ceil(23 / per_call)
        )
    handle.remove()
    with pytest.raises(CircuitcutError, match="chunk_elements must be >= 1"):
        head_logprobs(split, states, targets, 0)


def test_a_model_whose_logits_are_not_its_head_takes_the_full_forward() -> None:
    model = tiny_model("llama")

    def scale(module: Any, args: Any, out: Any) -> Any:
        out["logits"] = out["logits"] * 2.0
        return out

    handle = model.register_forward_hook(scale)
    ids = (torch.arange(60) * 5 % 61 + 3).tolist()
    with pytest.warns(UserWarning, match="not its output embedding"):
        assert lm_head_split(model, torch.tensor([ids[:8]])) is None
    want = full_logits_perplexity(model, ids, 10, 2)
    with pytest.warns(UserWarning, match="full logits"):
        got = perplexity_of_ids(model, ids, seqlen=10, batch_size=2, progress=False)
    assert got.perplexity == pytest.approx(want, rel=1e-6)
    handle.remove()


def test_token_logprobs_and_continuation_nll_equal_the_full_logits_on_padded_batches() -> None:
    model = tiny_model("qwen2", vocab_size=1000)
    prompts = [[5, 6, 7], [8], [9, 10, 11, 12, 13]]
    conts = [[20, 21], [22, 23, 24, 25], [26]]
    got = continuation_nll(model, prompts, conts, batch_size=3)
    for (nll, n), p, c in zip(got, prompts, conts, strict=True):
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([p + c])).logits[0].double(), -1)
        want = -sum(logp[len(p) - 1 + k, t].item() for k, t in enumerate(c))
        assert n == len(c) and nll == pytest.approx(want, rel=1e-5)
    ids = torch.tensor([[5, 6, 7, 0], [8, 9, 10, 11]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    rows, pos, tgt = torch.tensor([0, 1, 1]), torch.tensor([1, 0, 2]), torch.tensor([7, 9, 11])
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
        chunked = token_logprobs(model, ids, rows, pos, tgt, mask, chunk_elements=1000)
    torch.testing.assert_close(chunked, full[rows, pos].gather(1, tgt[:, None])[:, 0])


def test_the_fingerprint_follows_the_weights_not_the_path() -> None:
    a, b = tiny_model("llama", seed=0), tiny_model("llama", seed=0)
    b.config._name_or_path = "/somewhere/else"
    with torch.no_grad():
        b(input_ids=torch.tensor([[3, 4, 5]]))  # a forward changes nothing it hashes
    assert model_fingerprint(a) == model_fingerprint(b)
    with torch.no_grad():
        b.model.layers[1].mlp.down_proj.weight[0, 0] += 1e-3
    assert model_fingerprint(a) != model_fingerprint(b)
    assert model_fingerprint(a) != model_fingerprint(tiny_model("llama", seed=0, rms_norm_eps=1e-5))
    fp, ids = model_fingerprint(a), list(range(3, 60))
    keys = {
        perplexity_key(fp, ids, 16, None),
        perplexity_key(fp, ids, 8, None),
        perplexity_key(fp, ids, 16, 2),
        perplexity_key(fp, ids, 16, None, prefix=(1,)),
        perplexity_key(fp, [*ids, 3], 16, None),
    }
    assert len(keys) == 5


def test_cached_perplexity_is_written_atomically_read_back_and_ignored_when_broken(_own_cache: Path) -> None:
    model = tiny_model("llama")
    ids = (torch.arange(80) * 3 % 61 + 3).tolist()
    first, path = cached_perplexity(model, ids, 16, progress=False)
    assert path is None
    (stored,) = (_own_cache / "perplexity").glob("*.json")
    assert json.loads(stored.read_text())["result"]["perplexity"] == first.perplexity
    again, path = cached_perplexity(model, ids, 16, progress=False)
    assert path == stored and again == first
    stored.write_text("{ not json")
    third, path = cached_perplexity(model, ids, 16, progress=False)
    assert path is None and third.perplexity == pytest.approx(first.perplexity, rel=1e-12)


def _compress(tmp_path: Path, seed: int = 0, text: str | None = None, **cfg: Any) -> dict[str, Any]:
    tok = build_tokenizer()
    model = tiny_model("llama", vocab_size=len(tok), seed=seed)
    cal = tmp_path / ("cal.txt" if text is None else "other.txt")
    cal.write_text(text or " ".join(["Mary went to the store . Tom sang : la la la ."] * 40))
    config = CompressConfig(ScoringConfig(method="wanda"), n_samples=4, seqlen=16, **cfg)
    return compress(model, str(cal), None, config, tokenizer=tok, progress=False)


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the perplexity passes ``compress`` measures (dense through the cache, then pruned)."""
    seen: list[int] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        seen.append(1)
        return perplexity_of_ids(*args, **kwargs)

    monkeypatch.setattr(ppl_cache, "perplexity_of_ids", counting)
    monkeypatch.setattr(compress_mod, "perplexity_of_ids", counting)
    return seen


def test_a_second_compress_run_reads_the_dense_perplexity_from_the_cache(
    tmp_path: Path, passes: list[int], capsys: pytest.CaptureFixture[str]
) -> None:
    first = _compress(tmp_path)
    assert len(passes) == 2 and not first["dense_from_cache"]
    assert "dense perplexity from cache" not in capsys.readouterr().out
    second = _compress(tmp_path)
    assert len(passes) == 3 and second["dense_from_cache"]  # only the pruned model measured
    assert second["dense"] == first["dense"] and second["pruned"] == first["pruned"]
    assert f"dense perplexity from cache: {first['dense']['perplexity']:.4f}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "change",
    [
        {"seed": 1},  # other weights
        {"text": " ".join(["Tom went to the store . Mary sang : la la ."] * 40)},
        {"eval_seqlen": 8},
        {"eval_windows": 3},
    ],
)
def test_the_cache_misses_when_the_model_text_or_protocol_changes(
    tmp_path: Path, passes: list[int], change: dict[str, Any]
) -> None:
    _compress(tmp_path)
    report = _compress(tmp_path, **change)
    assert len(passes) == 4 and not report["dense_from_cache"]


def test_the_cache_can_be_turned_off(
    tmp_path: Path, passes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIRCUITCUT_PERPLEXITY_CACHE", "0")
    _compress(tmp_path)
    assert not _compress(tmp_path)["dense_from_cache"] and len(passes) == 4
    assert not (tmp_path / "cache").exists()


def test_compress_prints_its_estimate_and_refuses_what_cannot_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CIRCUITCUT_MEMORY_LIMIT", "0.0001")
    with pytest.raises(
        CircuitcutError, match=r"compression needs about .* GiB.*Lower --batch-size.*SKIP_MEMORY"
    ):
        _compress(tmp_path)
    assert "estimated peak memory:" in capsys.readouterr().out
    monkeypatch.setenv("CIRCUITCUT_SKIP_MEMORY_CHECK", "1")
    assert _compress(tmp_path)["pruned"]["windows"] >= 1
    monkeypatch.delenv("CIRCUITCUT_SKIP_MEMORY_CHECK")
    monkeypatch.setenv("CIRCUITCUT_MEMORY_LIMIT", "lots")
    with pytest.raises(CircuitcutError, match="not a number of GiB"):
        _compress(tmp_path)


def test_the_estimates_count_the_engines_logit_copies_and_one_evaluation_chunk() -> None:
    llama = get_adapter(tiny_model("llama", vocab_size=HUGE_VOCAB))
    capped = get_adapter(tiny_model("gemma2", vocab_size=HUGE_VOCAB, final_logit_softcapping=30.0))
    one = 4 * 128 * HUGE_VOCAB * 4 / GIB  # float32 logits of 4 x 128 tokens
    assert estimate_memory(llama, 4, 128, "lrp")["logits"] == pytest.approx(3 * one)
    assert estimate_memory(llama, 4, 128, "lrp", kinds=["logprob"])["logits"] == pytest.approx(5 * one)
    assert estimate_memory(capped, 4, 128, "lrp")["logits"] == pytest.approx(7 * one)
    assert estimate_memory(capped, 4, 128, "gradient")["logits"] == pytest.approx(5 * one)
    assert estimate_memory(llama, 4, 128, "wanda")["logits"] == pytest.approx(one)
    assert logit_copies("magnitude") == 0 and logit_copies("wanda", capped=True) == 2
    ev = estimate_evaluation(llama, 8, 512)
    assert ev["logits"] == pytest.approx((CHUNK_ELEMENTS // HUGE_VOCAB) * HUGE_VOCAB * 4 * 3 / GIB)
    parts = estimate_compression(llama, 4, 128, 8, 512, "lrp")
    assert parts["total"] == pytest.approx(parts["weights"] + max(parts["scoring"], parts["evaluation"]))
    assert parts["scoring"] > parts["evaluation"]  # the engine's logits dominate; evaluation is bounded
    check_fits(parts)  # a few hundred MiB fit here
    with pytest.raises(CircuitcutError, match="this run needs about"):
        check_fits({**parts, "weights": 0.0, "total": 1e9})


def test_perplexity_shows_a_progress_bar_unless_told_not_to(capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny_model("llama")
    ids = (torch.arange(80) * 3 % 61 + 3).tolist()
    perplexity_of_ids(model, ids, 16, batch_size=2)
    assert "perplexity" in capsys.readouterr().err
    perplexity_of_ids(model, ids, 16, batch_size=2, progress=False)
    assert "perplexity" not in capsys.readouterr().err
