"""`--explain flagged` with a classifier (issue 23, item 2): the words whose removal lowers the
classifier's score the most are flagged (circuitcut.correction.explained.Occlusion), and their tokens
explained; and judging one model on a separate prompt file (circuitcut.correction.judge_prompts)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from circuitcut import load_model
from circuitcut.correction import ToxicityScorer, judge_prompts
from circuitcut.correction.behaviour import Behaviour, load_prompts, response_samples
from circuitcut.correction.explained import (
    Occlusion,
    check_explain,
    flagged_tokens,
    undesired_samples,
    without,
    word_spans,
)
from circuitcut.errors import CircuitcutError
from circuitcut.generation import GenerationSettings
from circuitcut.workflows.correct import CorrectionConfig, correct
from circuitcut.zoo.language import INSULTS, Language

UNSEEN = Path(__file__).resolve().parents[1] / "benchmarks" / "prompts" / "unseen-toxicity.jsonl"

#: the hand-set classifier: the score of a text is that of the set of these words it holds
WATCHED = ("jerk", "idiot", "moron", "clown", "fool", "dummy", "creep")
TABLE = {
    frozenset(): 0.02,
    frozenset({"idiot", "jerk"}): 0.95,
    frozenset({"jerk"}): 0.65,
    frozenset({"idiot"}): 0.35,
    frozenset({"moron", "clown"}): 0.999,  # saturated: each alone is still toxic
    frozenset({"moron"}): 0.98,
    frozenset({"clown"}): 0.99,
    frozenset({"fool", "dummy"}): 0.62,  # barely toxic, every drop small
    frozenset({"fool"}): 0.60,
    frozenset({"dummy"}): 0.58,
    frozenset({"creep"}): 0.45,  # not toxic
}


class Table(ToxicityScorer):
    """A classifier whose score is a hand-set function of which watched words a text holds (0.02 for
    a set the table does not list)."""

    name = "hand-set classifier"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def scores(self, texts: Sequence[str]) -> list[float]:
        self.calls.append(list(texts))
        held = [frozenset(w for w in WATCHED if re.search(rf"\b{w}\b", t.lower())) for t in texts]
        return [TABLE.get(h, 0.02) for h in held]


class Counting(ToxicityScorer):
    """A smooth classifier: sigmoid(-3 + 4 x the number of distinct reference-model insults)."""

    name = "insult counter"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def scores(self, texts: Sequence[str]) -> list[float]:
        self.calls.append(list(texts))
        return [1 / (1 + math.exp(3 - 4 * sum(w in t.lower().split() for w in INSULTS))) for t in texts]


@pytest.fixture(scope="module")
def ref() -> tuple[torch.nn.Module, Any, Any]:
    """The packaged reference model, its tokenizer and adapter."""
    torch.set_num_threads(1)
    return load_model("circuitcut/ref-llama")


TEXTS = [
    "you idiot , you jerk ! go home",  # drops: jerk 0.60, idiot 0.30, the rest 0
    "moron moron , you clown",  # drops 0.009 / 0.019, log-odds drops 2.31 / 3.01
    "you fool , dummy",  # drops 0.04 / 0.02, log-odds 0.17 / 0.08: only the largest (fool)
    "the weather is nice , you creep",  # 0.45: not toxic
]


def test_occlusion_flags_the_hand_computed_words() -> None:
    s = Table()
    flagged = Occlusion().flag(s, TEXTS)
    assert [[w.word for w in row] for row in flagged] == [["idiot", "jerk"], ["moron", "clown"], ["fool"], []]
    idiot, jerk = flagged[0]
    assert (idiot.drop, jerk.drop) == (pytest.approx(0.30), pytest.approx(0.60))
    moron, clown = flagged[1]
    assert moron.drop == pytest.approx(0.009) and clown.drop == pytest.approx(0.019)
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    assert moron.logit_drop == pytest.approx(logit(0.999) - logit(0.99)) == pytest.approx(2.31, abs=0.01)
    assert moron.spans == ((0, 5), (6, 11))  # a repeated word is removed (and flagged) as one
    # the probability rules alone miss the saturated words but the largest drop
    assert [w.word for w in Occlusion(min_logit_drop=1e9).flag(s, TEXTS[1:2])[0]] == ["clown"]
    assert [w.word for w in Occlusion(top=0).flag(s, TEXTS[2:3])[0]] == []
    # batched: the texts in one call, every occluded variant of the three toxic ones in another
    assert len(s.calls) == 6 and [len(c) for c in s.calls[:2]] == [4, 5 + 3 + 3]
    assert "you , you jerk ! go home" in s.calls[1] and " , you clown" in s.calls[1]
    with pytest.raises(CircuitcutError, match=r"the defaults are 0\.1, 1\.0 and 1"):
        Occlusion(min_drop=0)


def test_words_and_their_removal() -> None:
    text = "jerk jerk, you don't f*ck\n  jerk ok"
    words = word_spans(text)
    assert list(words) == ["jerk", "you", "don't", "f*ck", "ok"]
    assert without(text, words["jerk"]) == ", you don't f*ck\n  ok"
    assert without(text, words["you"]) == "jerk jerk, don't f*ck\n  jerk ok"


def test_classifier_explains_the_tokens_of_the_flagged_words(ref: tuple) -> None:
    _, tok, _ = ref
    prompts = ["tom said :", "ann said :", "bob said :", "sam said :"]
    conts = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    full = response_samples(tok, prompts, conts)
    s = Table()
    samples = undesired_samples(tok, prompts, conts, "flagged", s)
    assert len(s.calls) == 2  # the continuations, then all their variants
    assert len(samples) == 3  # the continuation scored non-toxic has nothing to explain
    expected = [[1, 4], [0, 1, 4], [1]]  # idiot, jerk / moron, moron, clown / fool
    for sample, whole, cont, idx in zip(samples, full, conts, expected, strict=False):
        assert sample.input_ids == whole.input_ids
        assert sample.target.positions == tuple(whole.target.positions[i] for i in idx)
        assert sample.target.token_ids == tuple(cont[i] for i in idx)
    words = [[tok.decode([t]).strip() for t in sample.target.token_ids] for sample in samples]
    assert words == [["idiot", "jerk"], ["moron", "moron", "clown"], ["fool"]]
    assert flagged_tokens(tok, conts[3], Table()) == []
    with pytest.raises(CircuitcutError, match="no continuation holds a flagged word"):
        undesired_samples(tok, prompts[3:], conts[3:], "flagged", Table())
    check_explain("flagged", s)  # a classifier is accepted


def test_profanity_check_flags_the_profane_word_among_neutral_ones() -> None:
    pytest.importorskip("profanity_check", reason="alt-profanity-check is not installed")
    from circuitcut.correction import ProfanityCheckScorer

    s = ProfanityCheckScorer()
    text = "the old dog walks to the fucking park by the river"
    flagged = Occlusion().flag(s, [text, "the old dog walks to the park by the river"])
    assert [w.word for w in flagged[0]] == ["fucking"] and flagged[1] == []
    assert [text[a:b] for a, b in flagged[0][0].spans] == ["fucking"]


def test_correction_explains_a_classifiers_flagged_words_on_the_reference_model(ref: tuple) -> None:
    m, tok, ad = ref
    lang = Language(seed=0)
    prompts = [p["prompt"] for p in lang.trigger_prompts(24, seed=31, heldout=True) if p["trigger"]]
    scorer = Counting()
    cfg = CorrectionConfig(counts=(2,), seeds=1, n_general=4, generation=GenerationSettings(8), eval_windows=4,
                           baselines=(), controls=(), n_general_prompts=4, explain="flagged", judge="none",
                           sample=False)  # fmt: skip
    kept: dict[str, Any] = {}
    s = correct(m, tok, ad, prompts, lang.corpus(100, seed=41), Behaviour("toxicity", scorer), cfg,
                lang.corpus(40, seed=42), progress=False, keep=kept)  # fmt: skip
    assert s["config"]["explain"] == "flagged" and s["exported"]["count"] == 2
    assert "undesired" in kept and "mask" in kept  # the exported mask's flagged-word relevance
    # the attributed continuations were occluded word by word ("you <insult> !" without the insult)
    assert any(t.startswith("you !") or t == "you" for call in scorer.calls for t in call)


@pytest.mark.skipif(not UNSEEN.is_file(), reason="benchmarks/prompts/unseen-toxicity.jsonl is absent")
def test_unseen_prompt_set_is_well_formed() -> None:
    rows = [json.loads(ln) for ln in UNSEEN.read_text(encoding="utf-8").splitlines() if ln.strip()]
    assert len(rows) == 40 and all(set(r) == {"prompt", "style"} for r in rows)
    assert {r["style"] for r in rows} == {"scene", "quote", "forum", "setup"}
    assert len({r["prompt"] for r in rows}) == 40
    assert load_prompts(UNSEEN) == [r["prompt"] for r in rows]


def test_judge_prompts_greedy_and_sampled(ref: tuple) -> None:
    m, tok, _ = ref
    prompts = ["tom yelled :", "the weather is", "ann snapped :"]
    settings = GenerationSettings(6, seed=3)
    out = judge_prompts(m, tok, prompts, Counting(), Table(), settings, samples=3, resamples=50)
    again = judge_prompts(m, tok, prompts, Counting(), Table(), settings, samples=3, resamples=50)
    assert out == again  # seeded
    g = out["greedy"]
    assert len(g["continuations"]) == 3 and g["scorer"]["rate"] == sum(g["scorer"]["per_prompt"]) / 3
    flags = [float(any(w in c.lower().split() for w in INSULTS)) for c in g["continuations"]]
    assert g["scorer"]["per_prompt"] == flags  # one insult scores sigmoid(1) = 0.73 >= 0.5
    sampled = out["sampled"]
    assert len(sampled["samples"]) == 3 and all(len(r) == 3 for r in sampled["samples"])
    assert sampled["scorer"]["samples"] == 3 and sampled["judge"]["prompts"] == 3
    assert set(sampled["diversity"]) == {"distinct_1", "distinct_2", "repeated_trigram_rate"}
    assert out["scorers"]["judge"] == {"name": "hand-set classifier", "threshold": 0.5}
    assert judge_prompts(m, tok, prompts, Counting(), samples=None)["sampled"] is None
    with pytest.raises(CircuitcutError, match="no prompts to judge"):
        judge_prompts(m, tok, [], Counting())
