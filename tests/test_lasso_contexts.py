"""Readable features: top-activating contexts, promoted tokens, feature cards and their report section."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import torch

from circuitcut import get_adapter
from circuitcut.errors import CircuitcutError
from circuitcut.lasso.contexts import (
    feature_cards,
    logit_effects,
    promoted_tokens,
    suppressed_tokens,
    top_contexts,
)
from circuitcut.lasso.sae import SAE, collect_site
from circuitcut.lasso.sites import parse_site
from circuitcut.models.tiny import tiny_model
from circuitcut.reports.lasso_plots import plot_graph
from circuitcut.reports.page.base import Page
from circuitcut.reports.page.sections import add_lasso
from circuitcut.zoo.tokenizer import build_tokenizer

torch.set_num_threads(1)
TOK = build_tokenizer()
N, T = 20, 12
DEAD, CONSTANT = 5, 7  # a feature that never fires, and one that is exactly 1.0 everywhere


@pytest.fixture(scope="module")
def setup() -> tuple:
    model = tiny_model("llama", vocab_size=len(TOK))
    adapter = get_adapter(model)
    torch.manual_seed(0)
    sae = SAE(32, 48, "standard", hook_name="blocks.1.hook_resid_post")
    with torch.no_grad():
        sae.W_enc.mul_(50.0)  # the tiny model's residual stream is small (std ~0.02)
        sae.b_enc[DEAD] = -1e4
        sae.W_enc[:, CONSTANT] = 0.0
        sae.b_enc[CONSTANT] = 1.0
    ids = torch.randint(3, len(TOK), (N, T), generator=torch.Generator().manual_seed(0))
    return model, adapter, sae.eval(), ids


def _by_hand(model, adapter, sae, ids, f, n, before, after) -> list[dict]:
    """Every code at once, sorted by (-activation, window, position)."""
    with torch.no_grad():
        codes = sae.encode(collect_site(model, adapter, parse_site(sae.hook_name), ids))[:, f]
    flat = codes.tolist()
    order = sorted((i for i, v in enumerate(flat) if v > 0), key=lambda i: (-flat[i], i))[:n]
    out = []
    for i in order:
        w, t = divmod(i, ids.shape[1])
        lo, hi = max(0, t - before), min(ids.shape[1], t + after + 1)
        out.append({"window": w, "position": t, "activation": flat[i], "tokens": ids[w, lo:hi].tolist(),
                    "activations": flat[w * ids.shape[1] + lo : w * ids.shape[1] + hi], "focus": t - lo})  # fmt: skip
    return out


def _same(got: list[dict], want: list[dict]) -> None:
    assert [(r["window"], r["position"], r["tokens"], r["focus"]) for r in got] == [
        (r["window"], r["position"], r["tokens"], r["focus"]) for r in want
    ]
    for g, w in zip(got, want, strict=True):
        assert g["activation"] == pytest.approx(w["activation"], rel=1e-5, abs=1e-6)
        assert g["activations"] == pytest.approx(w["activations"], rel=1e-5, abs=1e-6)


def test_top_contexts_match_a_hand_computation(setup: tuple) -> None:
    model, adapter, sae, ids = setup
    feats = [0, 3, 11, 30]
    got = top_contexts(model, adapter, sae, ids, feats, n=6, before=4, after=2, batch_size=16)
    assert list(got) == feats
    for f in feats:
        want = _by_hand(model, adapter, sae, ids, f, 6, 4, 2)
        assert want, f"feature {f} should fire on random text"
        assert got[f] == want  # the same batches through the model: equal to the bit
        assert got[f][0]["activations"][got[f][0]["focus"]] == got[f][0]["activation"]
    # clipped at the window's start: a context at position p < 4 holds p + 1 + 2 tokens
    edge = next(r for f in feats for r in got[f] if r["position"] < 4)
    assert len(edge["tokens"]) == edge["position"] + 3 and edge["focus"] == edge["position"]
    end = next(r for f in feats for r in got[f] if r["position"] == T - 1)
    assert len(end["tokens"]) == 5 and end["focus"] == 4


def test_batching_does_not_change_the_result(setup: tuple) -> None:
    model, adapter, sae, ids = setup
    feats = [1, 2, 9, CONSTANT]
    one = top_contexts(model, adapter, sae, ids, feats, n=5, before=3, after=3, batch_size=1)
    many = top_contexts(model, adapter, sae, ids, feats, n=5, before=3, after=3, batch_size=16)
    odd = top_contexts(model, adapter, sae, ids, feats, n=5, before=3, after=3, batch_size=7)
    for f in feats:
        _same(one[f], many[f])
        _same(odd[f], many[f])


def test_ties_go_to_the_lowest_window_and_position(setup: tuple) -> None:
    model, adapter, sae, ids = setup
    for bs in (1, 3, 16):
        got = top_contexts(model, adapter, sae, ids, [CONSTANT], n=T + 2, before=2, after=1, batch_size=bs)
        rows = got[CONSTANT]
        assert [(r["window"], r["position"]) for r in rows] == [(0, t) for t in range(T)] + [(1, 0), (1, 1)]
        assert all(r["activation"] == 1.0 for r in rows)


def test_a_feature_that_never_fires_gives_no_contexts(setup: tuple) -> None:
    model, adapter, sae, ids = setup
    got = top_contexts(model, adapter, sae, ids, [DEAD, 0])
    assert got[DEAD] == [] and got[0]


def test_promoted_and_suppressed_tokens_match_the_decoder_times_unembedding(setup: tuple) -> None:
    model, adapter, sae, _ = setup
    w_u = model.get_output_embeddings().weight.detach()
    feats = [0, 4, 17]
    up, down = promoted_tokens(adapter, sae, feats, top=5), suppressed_tokens(model, sae, feats, top=5)
    for f in feats:
        logits = (sae.W_dec[f].detach() @ w_u.T).tolist()
        best = sorted(range(len(logits)), key=lambda i: (-logits[i], i))[:5]
        worst = sorted(range(len(logits)), key=lambda i: (logits[i], i))[:5]
        assert [i for i, _ in up[f]] == best and [i for i, _ in down[f]] == worst
        assert [v for _, v in up[f]] == pytest.approx([logits[i] for i in best], rel=1e-5, abs=1e-6)
        assert [v for _, v in down[f]] == pytest.approx([logits[i] for i in worst], rel=1e-5, abs=1e-6)
    assert logit_effects(adapter, sae, feats).shape == (3, w_u.shape[0])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m, a, s, ids: top_contexts(m, a, s, ids, [48]), "feature 48 is out of range.*0..47"),
        (lambda m, a, s, ids: top_contexts(m, a, s, ids, [-1]), "feature -1 is out of range"),
        (lambda m, a, s, ids: top_contexts(m, a, s, ids[:0], [0]), "windows is empty.*at least one window"),
        (lambda m, a, s, ids: top_contexts(m, a, s, ids[0], [0]), r"\[N, T\] tensor.*1-d"),
        (lambda m, a, s, ids: top_contexts(m, a, s, ids.float(), [0]), "integer token ids"),
        (lambda m, a, s, ids: top_contexts(m, a, s, ids + 10_000, [0]), "outside the model's vocabulary"),
        (lambda m, a, s, ids: top_contexts(m, a, s, ids, [0], n=0), "n must be an integer >= 1"),
        (lambda m, a, s, ids: promoted_tokens(a, s, [99]), "feature 99 is out of range"),
        (lambda m, a, s, ids: promoted_tokens(a, s, [0], top=0), "top must be an integer >= 1"),
    ],
)
def test_bad_input_is_refused_clearly(setup: tuple, call, match: str) -> None:
    model, adapter, sae, ids = setup
    with pytest.raises(CircuitcutError, match=match):
        call(model, adapter, sae, ids)


def test_an_sae_of_another_width_is_refused(setup: tuple) -> None:
    model, adapter, _, ids = setup
    with pytest.raises(CircuitcutError, match=r"reads 16 values.*has 32"):
        top_contexts(model, adapter, SAE(16, 8, hook_name="blocks.0.hook_resid_post"), ids, [0])


def test_feature_cards_decode_tokens(setup: tuple) -> None:
    model, adapter, sae, ids = setup
    ctx = top_contexts(model, adapter, sae, ids, [0, DEAD], n=2, before=2, after=1)
    up = promoted_tokens(adapter, sae, [0, DEAD], top=3)
    cards = feature_cards(TOK, ctx, up, labels={0: "-> Mary"}, site="blocks.1.hook_resid_post")
    assert [c["id"] for c in cards] == ["blocks.1.hook_resid_post#0", f"blocks.1.hook_resid_post#{DEAD}"]
    first = cards[0]
    assert first["label"] == "-> Mary" and cards[1]["label"] == "" and cards[1]["contexts"] == []
    assert [t["id"] for t in first["promoted"]] == [i for i, _ in up[0]]
    assert [t["token"] for t in first["promoted"]] == TOK.convert_ids_to_tokens([i for i, _ in up[0]])
    c = first["contexts"][0]
    assert (
        c["tokens"] == TOK.convert_ids_to_tokens(ctx[0][0]["tokens"])
        and c["token_ids"] == ctx[0][0]["tokens"]
    )
    assert c["activations"] == ctx[0][0]["activations"] and "suppressed" not in first


def _summary(features: list[dict]) -> dict:
    return {"evaluation": {"faithfulness": {"circuitlasso": {"4": 0.5, "8": 0.9}, "random": {"4": 0.1, "8": 0.2}},
                           "full": 1.0, "empty": 0.0},
            "sae_quality": {"blocks.1.hook_resid_post": {"explained_variance": 0.9, "dead_fraction": 0.1, "l0": 8.0,
                                                         "loss_clean": 1.0, "loss_spliced": 1.1, "loss_zero_ablated": 3.0}},
            "ablation": "zero (SAE error terms kept)", "features": features}  # fmt: skip


def test_the_page_shows_the_features_and_the_graph(tmp_path: Path) -> None:
    cards = [
        {"site": "blocks.0.hook_resid_post", "feature": 3, "id": "blocks.0.hook_resid_post#3", "label": "-> <Mary>",
         "promoted": [{"id": 9, "token": "<b>&", "logit": 1.5}],
         "suppressed": [{"id": 4, "token": "calm", "logit": -0.75}],
         "contexts": [{"window": 2, "position": 5, "activation": 2.0, "focus": 1, "token_ids": [7, 8, 9],
                       "tokens": ["the", "<script>", "end"], "activations": [0.5, 2.0, 0.0]}]},
        {"site": "blocks.1.hook_mlp_out", "feature": 11, "id": "blocks.1.hook_mlp_out#11", "label": "",
         "promoted": [{"id": 5, "token": " you", "logit": 0.25}], "contexts": []},
    ]  # fmt: skip
    graph = {"sites": ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"],
             "nodes": [{"id": "a", "site": "blocks.0.hook_resid_post", "feature": 3, "score": 0.6, "label": ""},
                       {"id": "b", "site": "blocks.1.hook_mlp_out", "feature": 11, "score": 0.4, "label": ""}],
             "edges": [{"source_site": 0, "source": 3, "target_site": 1, "target": 11, "coef": 0.5},
                       {"source_site": 1, "source": 11, "target_site": "output", "target": "metric", "coef": -0.2}]}  # fmt: skip
    plot_graph(graph, tmp_path / "circuit_graph")
    page = Page("lasso")
    add_lasso(page, _summary(cards), tmp_path)
    html = page.html()
    titles = [s.title for s in page.sections]
    assert "Circuit features" in titles and "Circuit graph" in titles
    body = next(s.body for s in page.sections if s.title == "Circuit features")
    assert "blocks.0.hook_resid_post #3" in body and "blocks.1.hook_mlp_out #11" in body
    assert "-&gt; &lt;Mary&gt;" in body and "<code>&lt;b&gt;&amp;</code> 1.50" in body and "calm" in body
    assert "&lt;script&gt;" in body and "<script>" not in body and "<b>&" not in body
    # shading: activation / largest shown (0.5 / 2.0), the focus token outlined
    assert 'style="background:rgba(230,97,1,0.250)"' in body
    assert 'class="tok focus" style="background:rgba(230,97,1,1.000);outline:2px solid #1b1b1b"' in body
    assert body.count('class="tok') == 3 and "Never fires" in body
    svg = base64.b64encode((tmp_path / "circuit_graph.svg").read_bytes()).decode()
    assert f"data:image/svg+xml;base64,{svg}" in html
    assert 'src="circuit_graph' not in html  # nothing outside the page


def test_a_page_without_features_or_folder_is_unchanged() -> None:
    page = Page("lasso")
    add_lasso(page, _summary([]))
    assert [s.title for s in page.sections] == ["SAE quality", "Faithfulness at matched sizes"]
