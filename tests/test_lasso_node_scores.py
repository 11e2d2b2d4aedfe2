"""Feature node scores against the counterfactual and counterfactual ablation of features, by hand."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from circuitcut import get_adapter
from circuitcut.errors import CircuitcutError
from circuitcut.lasso.features import (
    collect_codes,
    collect_site_codes,
    metric_with,
    prompt_batches,
    spliced,
    task_metric,
)
from circuitcut.lasso.node_scores import attribution_patching, counterfactual_codes, integrated_gradients
from circuitcut.lasso.sae import SAE
from circuitcut.lasso.sites import parse_site, site_hook
from circuitcut.models.tiny import tiny_model
from circuitcut.tasks import ioi_task
from circuitcut.workflows.lasso import circuit_lasso_ranking
from circuitcut.zoo.tokenizer import build_tokenizer

TOK = build_tokenizer()


@pytest.fixture(scope="module")
def setup() -> tuple:
    torch.manual_seed(0)
    model = tiny_model("llama", vocab_size=len(TOK))
    adapter = get_adapter(model)
    saes = [SAE(32, 40, "topk", k=6, hook_name=f"blocks.{i}.hook_resid_post") for i in range(2)]
    enc = ioi_task(TOK, 10, seed=0).encode(TOK)
    assert enc.corrupts is not None and enc.corrupts != enc.prompts
    return model, adapter, saes, enc


def _ones(saes: list[SAE], value: float = 1.0) -> list[torch.Tensor]:
    return [torch.full((s.d_sae,), value) for s in saes]


def test_patching_with_the_clean_codes_changes_nothing(setup: tuple) -> None:
    model, adapter, saes, enc = setup
    own = replace(enc, corrupts=enc.prompts)  # the counterfactual of each prompt is the prompt itself
    patches = counterfactual_codes(model, adapter, saes, own, batch_size=4)
    clean = metric_with(model, adapter, saes, enc, None, batch_size=4)
    none_kept = metric_with(model, adapter, saes, enc, _ones(saes, 0.0), batch_size=4, patches=patches)
    assert none_kept == pytest.approx(clean, abs=1e-5)


def test_patching_every_feature_is_the_counterfactual_codes(setup: tuple) -> None:
    """With nothing kept, each site decodes the counterfactual codes, plus the clean run's error term."""
    model, adapter, saes, enc = setup
    patches = counterfactual_codes(model, adapter, saes, enc, batch_size=20)
    got = metric_with(model, adapter, saes, enc, _ones(saes, 0.0), batch_size=20, patches=patches)
    ((rows, ids, mask, last),) = list(prompt_batches(enc, 20, 0))
    with torch.no_grad():
        hooks = []
        for k, sae in enumerate(saes):

            def fn(t: torch.Tensor, sae: SAE = sae, k: int = k) -> torch.Tensor:
                return sae.decode(patches[0][k]) + (t - sae.decode(sae.encode(t)))

            hooks.append(site_hook(adapter, parse_site(sae.hook_name), fn))
        with hooks[0], hooks[1]:
            logits = model(input_ids=ids, attention_mask=mask).logits
    assert got == pytest.approx(
        float(task_metric(logits[torch.arange(len(last)), last], enc, rows).mean()), abs=1e-5
    )
    clean = metric_with(model, adapter, saes, enc, None, batch_size=20)
    assert got != pytest.approx(clean, abs=1e-3)


def test_ig_with_one_step_is_attribution_patching_against_the_counterfactual(setup: tuple) -> None:
    model, adapter, saes, enc = setup
    patches = counterfactual_codes(model, adapter, saes, enc, batch_size=4)
    ap = attribution_patching(model, adapter, saes, enc, batch_size=4, patches=patches)
    ig = integrated_gradients(model, adapter, saes, enc, steps=1, batch_size=4, patches=patches)
    for a, b in zip(ap["nodes"], ig["nodes"], strict=True):
        assert torch.allclose(a, b, atol=1e-5) and a.abs().sum() > 0
    assert ap["passes"] == 2 * 3 and ig["passes"] == 2 * 3  # 3 batches, a forward and a backward each
    ig5 = integrated_gradients(model, adapter, saes, enc, steps=5, batch_size=4)
    assert ig5["passes"] == 3 + 5 * 2 * 3  # the counterfactual codes, then 5 points per batch
    assert not torch.allclose(ig5["nodes"][0], ig["nodes"][0])


def test_attribution_patching_against_the_counterfactual_by_hand(setup: tuple) -> None:
    model, adapter, saes, enc = setup
    patches = counterfactual_codes(model, adapter, saes, enc, batch_size=20)
    got = attribution_patching(model, adapter, saes, enc, batch_size=20, patches=patches)["nodes"]
    ((rows, ids, mask, last),) = list(prompt_batches(enc, 20, 0))
    rec: list[torch.Tensor] = []
    with spliced(adapter, saes, batch_shape=tuple(ids.shape), record=rec):
        m = task_metric(
            model(input_ids=ids, attention_mask=mask).logits[torch.arange(len(last)), last], enc, rows
        )
    for k in range(2):
        g = torch.autograd.grad(m.sum(), rec[k], retain_graph=True)[0]
        want = torch.zeros(saes[k].d_sae)
        for i in range(len(ids)):
            real = mask[i].bool()
            want += ((g[i][real] * (rec[k][i][real].detach() - patches[0][k][i][real])).sum(0)).abs()
        assert torch.allclose(got[k], want / len(ids), atol=1e-5)


def test_patch_without_keep_is_refused(setup: tuple) -> None:
    _, adapter, saes, _ = setup
    with (
        pytest.raises(CircuitcutError, match="needs the features to keep"),
        spliced(adapter, saes, None, patch=[torch.zeros(1)]),
    ):
        pass


def test_last_position_nodes_by_hand(setup: tuple) -> None:
    """Nodes "last": the effect is taken at each prompt's last position only, and ablation acts there only."""
    model, adapter, saes, enc = setup
    patches = counterfactual_codes(model, adapter, saes, enc, batch_size=20)
    got = attribution_patching(model, adapter, saes, enc, batch_size=20, patches=patches, nodes="last")[
        "nodes"
    ]
    ((rows, ids, mask, last),) = list(prompt_batches(enc, 20, 0))
    assert len(set(last.tolist())) > 1  # prompts of several lengths: the last position varies
    rec: list[torch.Tensor] = []
    with spliced(adapter, saes, batch_shape=tuple(ids.shape), record=rec):
        m = task_metric(
            model(input_ids=ids, attention_mask=mask).logits[torch.arange(len(last)), last], enc, rows
        )
    for k in range(2):
        g = torch.autograd.grad(m.sum(), rec[k], retain_graph=True)[0]
        want = sum(
            (g[i, last[i]] * (rec[k][i, last[i]].detach() - patches[0][k][i, last[i]])).abs()
            for i in range(len(ids))
        )
        assert torch.allclose(got[k], want / len(ids), atol=1e-5)
    # ablating everything at the last position only: by hand, the codes at the other positions kept
    zero = metric_with(model, adapter, saes, enc, _ones(saes, 0.0), batch_size=20, nodes="last")
    with torch.no_grad():
        hooks = []
        for sae in saes:

            def fn(t: torch.Tensor, sae: SAE = sae) -> torch.Tensor:
                z = sae.sequence_codes(t)
                kept = z.clone()
                kept[torch.arange(len(last)), last] = 0.0
                return sae.decode(kept) + (t - sae.decode(z))

            hooks.append(site_hook(adapter, parse_site(sae.hook_name), fn))
        with hooks[0], hooks[1]:
            logits = model(input_ids=ids, attention_mask=mask).logits
    assert zero == pytest.approx(
        float(task_metric(logits[torch.arange(len(last)), last], enc, rows).mean()), abs=1e-5
    )
    everywhere = metric_with(model, adapter, saes, enc, _ones(saes, 0.0), batch_size=20)
    assert zero != pytest.approx(everywhere, abs=1e-3)


def test_unknown_nodes_are_refused(setup: tuple) -> None:
    model, adapter, saes, enc = setup
    with pytest.raises(CircuitcutError, match="unknown nodes 'first'; use one of last, all"):
        attribution_patching(model, adapter, saes, enc, nodes="first")


def test_circuit_lasso_collects_the_counterfactual_only_for_activation_importance(setup: tuple) -> None:
    """Bare coefficients never read the counterfactual codes, so their forward pass is not run."""
    model, adapter, saes, enc = setup
    weighted = circuit_lasso_ranking(model, adapter, saes, enc, 0)
    bare = circuit_lasso_ranking(model, adapter, saes, enc, 0, importance="coef")
    assert (weighted[2], bare[2]) == (2, 1)  # 10 prompts: one batch each way
    assert (weighted[0].against, bare[0].against) == ("the counterfactual prompt", None)


@pytest.mark.parametrize("positions", ["last", "all"])
def test_site_codes_stop_after_the_deepest_site_and_equal_the_full_pass(setup: tuple, positions: str) -> None:
    model, adapter, _, enc = setup
    assert adapter.n_layers >= 2
    saes = [SAE(32, 40, "topk", k=6, hook_name="blocks.0.hook_resid_post")]
    ran: list[str] = []
    watch = [adapter.layers[1].module.register_forward_hook(lambda *a: ran.append("layer 1")),
             model.get_output_embeddings().register_forward_hook(lambda *a: ran.append("head"))]  # fmt: skip
    try:
        got = collect_site_codes(model, adapter, saes, enc, batch_size=4, positions=positions)
        assert ran == []  # nothing after the deepest site ran
        full = collect_codes(model, adapter, saes, enc, batch_size=4, positions=positions)
        assert ran.count("layer 1") == 3  # the full pass does run it (10 prompts in batches of 4)
    finally:
        for h in watch:
            h.remove()
    assert len(got) == 1 and torch.equal(got[0], full.codes[0]) and got[0].abs().sum() > 0
    # the model is left as it was: no hook of circuitcut's remains
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    # counterfactual codes per batch are the codes of the counterfactual prompts, position by position
    (batch,) = counterfactual_codes(model, adapter, saes, enc, batch_size=10)
    last = torch.tensor([len(p) - 1 for p in enc.corrupts])
    assert torch.equal(
        batch[0][torch.arange(10), last], collect_site_codes(model, adapter, saes, enc.corrupted())[0]
    )
