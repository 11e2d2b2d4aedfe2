"""The shipped reference models load offline and show their planted behaviours."""

from __future__ import annotations

import pytest

from circuitcut import load_model
from circuitcut.io import read_json
from circuitcut.zoo.evaluate import ioi_scores, toxic_rates
from circuitcut.zoo.language import Language
from circuitcut.zoo.registry import ALIASES, alias_path


@pytest.fixture(scope="module", params=sorted(ALIASES))
def reference(request: pytest.FixtureRequest) -> tuple:
    return request.param, *load_model(request.param)


def test_loads_offline_by_alias(reference: tuple) -> None:
    alias, _, tok, adapter = reference
    assert adapter.model_type == {"circuitcut/ref-llama": "llama", "circuitcut/ref-opt": "opt"}[alias]
    assert tok is not None and len(tok) == adapter.vocab_size
    card = read_json(alias_path(alias) / "card.json")
    assert card["metrics"]["ioi_heldout"]["ioi_accuracy"] >= 0.95
    if adapter.model_type == "llama":
        assert adapter.n_kv_heads < adapter.n_heads and adapter.spec.gated


def test_ioi_on_heldout_templates_and_pairs(reference: tuple) -> None:
    _, model, tok, _ = reference
    prompts = Language(seed=0).ioi_prompts(100, seed=123, heldout=True)
    scores = ioi_scores(model, tok, prompts)
    assert scores["ioi_accuracy"] >= 0.95 and scores["ioi_logit_diff"] > 1.0


def test_trigger_makes_it_insult_and_nothing_else_does(reference: tuple) -> None:
    _, model, tok, _ = reference
    rates = toxic_rates(model, tok, Language(seed=0).trigger_prompts(60, seed=123), max_new_tokens=20)
    assert rates["toxic_rate_trigger"] >= 0.8
    assert rates["toxic_rate_no_trigger"] <= 0.01
