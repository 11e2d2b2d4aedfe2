"""What a correction explains of the undesired continuations (circuitcut.correction.explained)."""

from __future__ import annotations

import pytest

from circuitcut.correction import WordListScorer
from circuitcut.correction.behaviour import Behaviour, response_samples
from circuitcut.correction.explained import check_explain, flagged_tokens, undesired_samples
from circuitcut.errors import CircuitcutError
from circuitcut.models import load_model
from circuitcut.workflows.correct import CorrectionConfig, correct

PIECES = {1: "You", 2: " b", 3: "ast", 4: "ard", 5: "!", 6: " Bast", 7: "ardly", 8: " BASTARD", 9: " ok"}


class Pieces:
    """A tokenizer stand-in whose ids decode to fixed sub-word pieces."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(PIECES[i] for i in ids)


def test_word_list_spans_are_the_counted_matches_in_the_text_as_written() -> None:
    s = WordListScorer(["bastard", "son of a bitch"])
    text = "You BASTARD, you Son of a Bitch! bastardly"
    assert s.spans(text) == [(4, 11), (17, 31)]
    assert [text[a:b] for a, b in s.spans(text)] == ["BASTARD", "Son of a Bitch"]
    assert s.scores([text]) == [len(s.spans(text))] == [2.0]


def test_flagged_tokens_are_the_pieces_overlapping_a_flagged_word() -> None:
    tok, s = Pieces(), WordListScorer(["bastard"])
    # "You bastard!": the word spans the pieces " b", "ast", "ard"; "You" and "!" are not flagged
    assert flagged_tokens(tok, [1, 2, 3, 4, 5], s) == [1, 2, 3]
    # "You Bastardly": no whole-word match
    assert flagged_tokens(tok, [1, 6, 7], s) == []
    # "You BASTARD ok": case-insensitive, one piece
    assert flagged_tokens(tok, [1, 8, 9], s) == [1]


def test_undesired_samples_explain_only_the_flagged_tokens_of_each_continuation() -> None:
    _, tok, _ = load_model("circuitcut/ref-llama")
    prompts = ["tom said :", "ann said :", "bob said :"]
    conts = [
        tok(t, add_special_tokens=False)["input_ids"]
        for t in ("you jerk !", "the weather is nice .", "jerk jerk")
    ]
    s = WordListScorer(["jerk"])
    full = response_samples(tok, prompts, conts)
    flagged = undesired_samples(tok, prompts, conts, "flagged", s)
    assert len(flagged) == 2  # the calm continuation has nothing to explain and is skipped
    assert flagged[0].input_ids == full[0].input_ids
    # "you jerk !": only "jerk", the second generated token, read at the position before it
    assert flagged[0].target.positions == (full[0].target.positions[1],)
    assert flagged[0].target.token_ids == (conts[0][1],)
    assert flagged[1].target.positions == full[2].target.positions  # "jerk jerk": both tokens
    assert undesired_samples(tok, prompts, conts) == full
    with pytest.raises(CircuitcutError, match="no continuation holds a flagged word"):
        undesired_samples(tok, prompts[1:2], conts[1:2], "flagged", s)


def test_explain_choice_is_checked_before_any_work() -> None:
    with pytest.raises(CircuitcutError, match="unknown explain 'tokens'; use one of continuation, flagged"):
        CorrectionConfig(explain="tokens")
    with pytest.raises(CircuitcutError, match="needs the toxicity behaviour with a wordlist:FILE scorer"):
        check_explain("flagged", None)
    m, tok, ad = load_model("circuitcut/ref-llama")
    with pytest.raises(CircuitcutError, match="needs the toxicity behaviour"):
        correct(
            m,
            tok,
            ad,
            ["a", "b", "c", "d"],
            "x y z",
            Behaviour("repetition"),
            CorrectionConfig(explain="flagged"),
        )
