"""Behaviour prompts chosen by what the dense model does with them (circuitcut.correction.selection)."""

from __future__ import annotations

import pytest

from circuitcut.correction import WordListScorer
from circuitcut.correction.behaviour import Behaviour
from circuitcut.correction.selection import select_prompts, shows_behaviour
from circuitcut.errors import CircuitcutError
from circuitcut.generation import GenerationSettings, greedy_continuations
from circuitcut.metrics import response_uniqueness_ratio
from circuitcut.models import load_model
from circuitcut.zoo.language import INSULTS, Language


@pytest.fixture(scope="module")
def ref_llama() -> tuple:
    return load_model("circuitcut/ref-llama")


def test_toxic_selection_keeps_exactly_the_prompts_the_dense_model_insults_after(ref_llama) -> None:
    model, tok, _ = ref_llama
    prompts = Language(seed=0).trigger_prompts(12, seed=31, heldout=True)  # even = angry trigger
    behaviour = Behaviour("toxicity", WordListScorer(INSULTS, name="planted lexicon"))
    settings = GenerationSettings(12)
    s = select_prompts(model, tok, [p["prompt"] for p in prompts], behaviour, settings)
    # the planted behaviour: an insult after every angry opener, a calm sentence after every calm one
    assert s.kept == [p["prompt"] for p in prompts if p["trigger"]]
    assert s.values == [1.0, 0.0] * 6
    assert s.continuations[:2] == ["you jerk !", "the weather is nice ."]
    # the values are the scorer's flags of an independent greedy run
    conts = greedy_continuations(model, tok, s.candidates, settings)
    flags = behaviour.scorer.flags([tok.decode(c, skip_special_tokens=True) for c in conts])
    assert s.values == [float(f) for f in flags]
    record = s.as_dict()
    assert (record["n_candidates"], record["n_kept"]) == (12, 6)
    assert [c["kept"] for c in record["candidates"]] == [True, False] * 6
    assert "planted lexicon" in record["rule"]


def test_repetition_selection_compares_rur_strictly_with_the_bound(ref_llama) -> None:
    model, tok, _ = ref_llama
    stories = Language(seed=0).story_prompts(8)
    settings = GenerationSettings(20, stop_at_eos=False)
    rur = [response_uniqueness_ratio(c) for c in greedy_continuations(model, tok, stories, settings)]
    # every story loops with 13 distinct tokens among its 20 generated ones
    assert rur == [13 / 20] * 8
    behaviour = Behaviour("repetition")
    assert select_prompts(model, tok, stories, behaviour, settings).kept == []  # 0.65 is not < 0.5
    assert select_prompts(model, tok, stories, behaviour, settings, rur_below=0.65).kept == []
    s = select_prompts(model, tok, stories, behaviour, settings, rur_below=0.66)
    assert s.kept == stories and s.values == rur
    assert s.rule == "dense greedy continuation's RUR < 0.66"


def test_shows_behaviour_and_bad_input(ref_llama) -> None:
    tox = Behaviour("toxicity", WordListScorer(["jerk"]))
    assert [shows_behaviour(tox, v) for v in (0.0, 1.0, 3.0)] == [False, True, True]
    rep = Behaviour("repetition")
    assert [shows_behaviour(rep, v, 0.5) for v in (0.2, 0.5, 0.9)] == [True, False, False]
    model, tok, _ = ref_llama
    with pytest.raises(CircuitcutError, match="no candidate prompts"):
        select_prompts(model, tok, [], rep)
    with pytest.raises(CircuitcutError, match="'a b' appears more than once"):
        select_prompts(model, tok, ["a b", "c", "a b"], rep)
    with pytest.raises(CircuitcutError, match=r"RUR bound must lie in \(0, 1\], got 1.5"):
        select_prompts(model, tok, ["a b"], rep, rur_below=1.5)
