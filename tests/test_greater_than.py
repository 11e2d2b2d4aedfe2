"""Greater-than (Hanna et al., 2023): prompts, counterfactuals, the prob_diff metric, task files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from circuitcut import validation
from circuitcut.encoding import as_encoder
from circuitcut.errors import CircuitcutError
from circuitcut.models.tiny import tiny_model
from circuitcut.tasks import (
    Example,
    Task,
    build_task,
    evaluate_task,
    greater_than_splits,
    greater_than_task,
    ioi_task,
    load_task,
    task_metrics,
    task_splits,
)
from circuitcut.tasks.greater_than import TEMPLATES
from circuitcut.zoo.tokenizer import build_tokenizer

WAR = "The war lasted from the year {year} to the year {century}"


def year_tokenizer(numbers: str = "years") -> PreTrainedTokenizerFast:
    """A GPT-2-like tokenizer (byte-level words with a leading ``Ġ``, a BOS before every prompt) over
    the templates' words and numbers: ``" 1732"`` is ``" 17"`` + ``"32"``, ``" 1776"`` one token (as
    GPT-2 has such years), and ``" 32"`` another token than ``"32"``; with ``numbers="digits"``,
    numbers are single digits (as SmolLM2's: ``" 1732"`` is ``" "``, ``"1"``, ``"7"``, ``"3"``,
    ``"2"``); with ``"none"``, digits split so but unknown to the vocabulary."""
    vocab = ["<pad>", "<bos>", "<eos>", "<unk>"]
    vocab += [w if i == 0 else "Ġ" + w for t in TEMPLATES for i, w in enumerate(t.split()) if "{" not in w]
    if numbers != "years":
        vocab += ["Ġ", *(map(str, range(10)) if numbers == "digits" else [])]
        split = pre_tokenizers.Split(Regex(r"\d"), "isolated")
    else:
        vocab += [f"{y:02d}" for y in range(100)] + [f"Ġ{c}" for c in range(10, 100)] + ["Ġ1776"]
        split = pre_tokenizers.Split(Regex(r"Ġ1776|Ġ?\d\d"), "isolated")
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(dict.fromkeys(vocab))}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.ByteLevel(add_prefix_space=False), split])
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<bos>", eos_token="<eos>"
    )


YT = year_tokenizer()


def years(a: int, b: int) -> tuple[str, ...]:
    """The two-digit years a..b, both included."""
    return tuple(f"{y:02d}" for y in range(a, b + 1))


class FixedLogits(torch.nn.Module):
    """A stand-in model whose last-position logits are a given row, whatever the prompt."""

    def __init__(self, row: torch.Tensor) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(row.numel(), 1)
        self.register_buffer("row", row)

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.emb

    def get_output_embeddings(self) -> None:
        return None

    def forward(self, input_ids: torch.Tensor, **_: object) -> SimpleNamespace:
        return SimpleNamespace(logits=self.row.expand(*input_ids.shape, -1))


def test_hand_checked_example_encodes_as_glued_years() -> None:
    task = greater_than_task(YT, 1, templates=[WAR], years=[32], centuries=[17])
    (e,) = task.examples
    assert e.prompt == "The war lasted from the year 1732 to the year 17"
    assert e.corrupt == "The war lasted from the year 1701 to the year 17"
    assert (e.answer, e.contrast, e.space) == ("33", "31", False)
    assert e.above == years(33, 99) and e.below == years(0, 32)
    assert task.metric == "prob_diff" and task.has_counterfactuals
    enc = task.encode(YT)
    head = ["<bos>", "The", "Ġwar", "Ġlasted", "Ġfrom", "Ġthe", "Ġyear", "Ġ17"]
    tail = ["Ġto", "Ġthe", "Ġyear", "Ġ17"]
    assert YT.convert_ids_to_tokens(enc.prompts[0]) == [*head, "32", *tail]
    assert YT.convert_ids_to_tokens(enc.corrupts[0]) == [*head, "01", *tail]
    # the years are the tokens that continue "17", not the space-led " 33" the vocabulary also has
    assert YT.convert_ids_to_tokens(enc.above[0]) == list(years(33, 99))
    assert YT.convert_ids_to_tokens(enc.below[0]) == list(years(0, 32))
    assert YT.convert_ids_to_tokens([enc.answers[0], enc.contrasts[0]]) == ["33", "31"]
    assert sorted(enc.above[0] + enc.below[0]) == sorted(YT.convert_tokens_to_ids(list(years(0, 99))))


def test_generated_prompts_encode_with_same_length_counterfactuals() -> None:
    task = greater_than_task(YT, 40, seed=1)
    assert [e.prompt for e in task.examples] == [e.prompt for e in greater_than_task(YT, 40, 1).examples]
    enc = task.encode(YT)
    for e, p, c, up, down in zip(task.examples, enc.prompts, enc.corrupts, enc.above, enc.below, strict=True):
        yy, century = e.meta["start"], e.meta["century"]
        assert 2 <= yy <= 98 and e.prompt.endswith(f"from the year {century}{yy:02d} to the year {century}")
        (at,) = [i for i, (a, b) in enumerate(zip(p, c, strict=True)) if a != b]  # same length, one change
        assert YT.convert_ids_to_tokens([p[at], c[at]]) == [f"{yy:02d}", "01"]
        assert len(up) == 99 - yy and len(down) == yy + 1
    assert task.meta["dropped_years"] == ["1776"]
    assert not any(e.meta["century"] == 17 and e.meta["start"] == 76 for e in task.examples)


def test_merged_start_year_is_dropped_and_its_end_year_kept() -> None:
    # " 1776" is one token: as a start year it cannot be split, so it is refused ...
    with pytest.raises(CircuitcutError, match=r"no start year splits .* splits the year 1776 as \[' 1776'\]"):
        greater_than_task(YT, 1, years=[76], centuries=[17])
    # ... but "76" as the end year after "... the year 17" is the token "76" the model would predict
    enc = greater_than_task(YT, 1, templates=[WAR], years=[75], centuries=[17]).encode(YT)
    assert YT.convert_ids_to_tokens([enc.answers[0]]) == ["76"]
    assert as_encoder(YT).token("The war lasted from the year 1775 to the year 17", "76", space=False) == (
        YT.convert_tokens_to_ids("76")
    )


def test_prob_diff_and_accuracy_from_fixed_logits() -> None:
    task = greater_than_task(YT, 1, templates=[WAR], years=[32], centuries=[17])
    ids = {y: YT.convert_tokens_to_ids(y) for y in ("40", "20", "32", "33", "31")}
    row = torch.full((len(YT),), -30.0)
    row[ids["40"]], row[ids["20"]], row[ids["32"]] = torch.log(torch.tensor(3.0)), 0.0, 0.0
    # p(40) = 3/5 (above), p(20) = p(32) = 1/5 (below, the start year included): 0.6 - 0.4
    got = task_metrics(FixedLogits(row), task.encode(YT))
    assert got["prob_diff"] == pytest.approx(0.2, abs=1e-6) and got["accuracy"] == 1.0
    assert got["logit_diff"] == pytest.approx(0.0) and got["prob"] == pytest.approx(0.0, abs=1e-6)
    row[ids["20"]] = 2.0  # the argmax is now a year below the start: (3 - e^2 - 1) / (3 + e^2 + 1)
    e2 = math.e**2
    got = task_metrics(FixedLogits(row), task.encode(YT))
    assert got["accuracy"] == 0.0 and got["prob_diff"] == pytest.approx((2 - e2) / (4 + e2), abs=1e-6)


def test_prob_diff_on_tiny_model_matches_hand_computation() -> None:
    torch.manual_seed(0)
    model = tiny_model("llama", vocab_size=len(YT))
    task = greater_than_task(YT, 6, seed=2)
    got = task_metrics(model, task.encode(YT), batch_size=4, pad_id=YT.pad_token_id)
    diffs, correct, logit_diffs = [], [], []
    with torch.no_grad():
        for e in task.examples:
            row = model(torch.tensor([YT(e.prompt)["input_ids"]])).logits[0, -1]
            p = torch.softmax(row, -1)
            up, down = YT.convert_tokens_to_ids(list(e.above)), YT.convert_tokens_to_ids(list(e.below))
            diffs.append(p[up].sum().item() - p[down].sum().item())
            correct.append(max(up + down, key=lambda i: row[i].item()) in up)
            a, c = YT.convert_tokens_to_ids([e.answer, e.contrast])
            logit_diffs.append((row[a] - row[c]).item())
    assert got["prob_diff"] == pytest.approx(sum(diffs) / len(diffs), abs=1e-6)
    assert got["accuracy"] == pytest.approx(sum(correct) / len(correct))
    assert got["logit_diff"] == pytest.approx(sum(logit_diffs) / len(logit_diffs), rel=1e-5)
    # counterfactual prompts, clean answer sets: the corrupted model's metric
    corrupted = task_metrics(model, task.encode(YT).corrupted(), batch_size=4, pad_id=YT.pad_token_id)
    assert set(corrupted) == set(got) and corrupted["prob_diff"] != got["prob_diff"]
    assert evaluate_task(model, YT, task)["prob_diff"] == pytest.approx(got["prob_diff"], abs=1e-6)


DT = year_tokenizer("digits")
DIGITS = tuple(map(str, range(10)))


def test_digit_tokenizer_reads_the_end_years_first_digit() -> None:
    # 32 cannot be compared on the first digit (30-32 start with 3 too): only 39 is used
    task = greater_than_task(DT, 3, templates=[WAR], years=[32, 39], centuries=[17])
    e = task.examples[0]
    assert {x.prompt for x in task.examples} == {"The war lasted from the year 1739 to the year 17"}
    assert e.corrupt == "The war lasted from the year 1701 to the year 17"
    assert (e.answer, e.contrast, e.space) == ("4", "3", False)
    assert e.above == DIGITS[4:] and e.below == DIGITS[:4] and task.meta["reading"] == "digits"
    assert task.meta["dropped_years"] == [] and task.metric == "prob_diff"
    enc = task.encode(DT)
    head = ["<bos>", "The", "Ġwar", "Ġlasted", "Ġfrom", "Ġthe", "Ġyear", "Ġ", "1", "7"]
    tail = ["Ġto", "Ġthe", "Ġyear", "Ġ", "1", "7"]
    assert DT.convert_ids_to_tokens(enc.prompts[0]) == [*head, "3", "9", *tail]
    assert DT.convert_ids_to_tokens(enc.corrupts[0]) == [*head, "0", "1", *tail]
    assert DT.convert_ids_to_tokens(enc.above[0]) == list(DIGITS[4:])
    assert DT.convert_ids_to_tokens([enc.answers[0], enc.contrasts[0]]) == ["4", "3"]
    assert greater_than_task(YT, 1, templates=[WAR], years=[39], centuries=[17]).meta["reading"] == "years"


def test_first_digit_prob_diff_is_the_year_level_one() -> None:
    # a model whose distribution over years 00-99 is given: the first digit's distribution is the
    # years' summed over the second digit, so the digit task's prob_diff is the year-level one
    task = greater_than_task(DT, 1, templates=[WAR], years=[59], centuries=[17])
    p_year = torch.softmax(torch.randn(100, generator=torch.Generator().manual_seed(0)), 0)
    year_level = p_year[60:].sum() - p_year[:60].sum()  # after 1759, minus the others (59 included)
    row = torch.full((len(DT),), -float("inf"))
    ids = DT.convert_tokens_to_ids(list(DIGITS))
    row[ids] = p_year.view(10, 10).sum(1).log()
    got = task_metrics(FixedLogits(row), task.encode(DT))
    assert got["prob_diff"] == pytest.approx(year_level.item(), abs=1e-6)
    assert got["accuracy"] == float(p_year.view(10, 10).sum(1).argmax() >= 6)


def test_digit_tokenizer_without_a_start_year_ending_in_9_is_refused() -> None:
    with pytest.raises(
        CircuitcutError, match=r"splits numbers into digits.*ending in 9.*\[32, 40\] have none"
    ):
        greater_than_task(DT, 2, years=[32, 40])


def test_digit_splits_hold_out_start_years_ending_in_9() -> None:
    attr, ev = greater_than_splits(DT, 40, 20, seed=0)
    kept = {e.meta["start"] for e in attr.examples}
    held = set(attr.meta["heldout_years"])
    assert held == {e.meta["start"] for e in ev.examples} and not kept & held
    assert kept | held == {9, 19, 29, 39, 49, 59, 69, 79, 89} and len(held) == 3


def test_tokenizer_without_year_or_digit_tokens_is_refused() -> None:
    with pytest.raises(
        CircuitcutError, match=r"'00' to '99' to be one token.*or each digit '0' to '9'"
    ) as err:
        greater_than_task(year_tokenizer("none"), 4)
    assert "splits the year 1102 as [' ', '<unk>', '<unk>', '<unk>', '<unk>']" in str(err.value)
    assert "keeps two-digit" in str(err.value) and "splits numbers into digits" in str(err.value)


def test_splits_have_disjoint_start_years() -> None:
    attr, ev = greater_than_splits(YT, 30, 12, seed=0)
    assert (attr.name, ev.name, len(attr), len(ev)) == (
        "greater-than/attribution",
        "greater-than/evaluation",
        30,
        12,
    )
    held = set(attr.meta["heldout_years"])
    assert len(held) == round(0.3 * 97) and {e.meta["start"] for e in ev.examples} <= held
    assert not {e.meta["start"] for e in attr.examples} & held
    a2, e2 = task_splits("greater-than", YT, 30, 12)
    assert [e.prompt for e in a2.examples] == [e.prompt for e in attr.examples]
    assert [e.prompt for e in e2.examples] == [e.prompt for e in ev.examples]
    built = build_task("greater-than", YT, 5, seed=3)
    assert built.metric == "prob_diff" and len(built) == 5
    assert validation.task_source("greater-than", "task") == "greater-than"  # --task greater-than


def test_bad_greater_than_inputs() -> None:
    with pytest.raises(CircuitcutError, match=r"must hold the start year as \{year\} once and end with"):
        greater_than_task(YT, 2, templates=["The war lasted from {year} until later"])
    with pytest.raises(CircuitcutError, match="from 2 to 98"):
        greater_than_task(YT, 2, years=[1, 50])
    with pytest.raises(CircuitcutError, match="n must be >= 1"):
        greater_than_task(YT, 0)
    with pytest.raises(CircuitcutError, match="held-out start years need at least 2"):
        greater_than_splits(YT, 2, 2, years=[40])
    with pytest.raises(CircuitcutError, match="prob_diff metric needs 'above' and 'below'"):
        Task("t", [Example("The war lasted", "a")], "prob_diff")
    with pytest.raises(CircuitcutError, match=r"\['33'\] are both above and below"):
        Task("t", [Example("x", "33", above=("33", "34"), below=("33",))], "prob_diff")


def test_jsonl_task_file_with_counterfactuals(tmp_path: Path) -> None:
    tok = build_tokenizer()
    ioi = ioi_task(tok, 3, seed=0)
    path = tmp_path / "ioi.jsonl"
    rows = [
        {"prompt": e.prompt, "answer": e.answer, "contrast": e.contrast, "corrupt": e.corrupt}
        for e in ioi.examples
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = load_task(path)
    assert task.metric == "logit_diff" and task.has_counterfactuals
    enc = task.encode(tok)
    coder = as_encoder(tok)
    assert enc.corrupts == [coder.prompt(r["corrupt"]) for r in rows]
    assert [len(c) for c in enc.corrupts] == [len(p) for p in enc.prompts]
    assert enc.corrupted().prompts == enc.corrupts and enc.corrupted().answers == enc.answers


def test_task_file_counterfactual_of_other_length_is_refused(tmp_path: Path) -> None:
    tok = build_tokenizer()
    e = ioi_task(tok, 1, seed=0).examples[0]
    path = tmp_path / "bad.jsonl"
    record = {"prompt": e.prompt, "answer": e.answer, "contrast": e.contrast, "corrupt": e.corrupt + " the"}
    path.write_text(json.dumps(record) + "\n")
    n = len(as_encoder(tok).prompt(e.prompt))
    with pytest.raises(
        CircuitcutError, match=rf"example 1: the counterfactual prompt .* has {n + 1} tokens, .* {n}: "
    ):
        load_task(path).encode(tok)


def test_greater_than_task_file_jsonl_and_csv(tmp_path: Path) -> None:
    generated = greater_than_task(YT, 1, templates=[WAR], years=[32], centuries=[17])
    e = generated.examples[0]
    record = {"prompt": e.prompt, "answer": e.answer, "contrast": e.contrast, "corrupt": e.corrupt,
              "above": list(e.above), "below": list(e.below), "space": False}  # fmt: skip
    jl = tmp_path / "gt.jsonl"
    jl.write_text(json.dumps(record) + "\n")
    csv = tmp_path / "gt.csv"
    csv.write_text(
        "prompt,answer,contrast,corrupt,above,below,space\n"
        f"{e.prompt},33,31,{e.corrupt},{'|'.join(e.above)},{'|'.join(e.below)},false\n"
    )
    want = generated.encode(YT)
    for path in (jl, csv):
        task = load_task(path)
        assert task.metric == "prob_diff" and task.examples[0] == e
        got = task.encode(YT)
        assert (got.prompts, got.corrupts, got.above, got.below, got.answers) == (
            want.prompts, want.corrupts, want.above, want.below, want.answers
        )  # fmt: skip
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**record, "above": [33, 34]}) + "\n")
    with pytest.raises(CircuitcutError, match="field 'above' must be a list of strings"):
        load_task(bad)
    bad.write_text(json.dumps({**record, "space": "sometimes"}) + "\n")
    with pytest.raises(CircuitcutError, match="field 'space' must be true or false"):
        load_task(bad)
