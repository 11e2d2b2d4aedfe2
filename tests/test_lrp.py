"""AttnLRP rules and relevance scores: conservation, hand computations, reversibility."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch

from circuitcut import get_adapter
from circuitcut.attribution import LRPRules, answer_sample, attribute, explain, next_token_sample
from circuitcut.attribution.config import ScoringConfig
from circuitcut.attribution.engine import _forward_logits
from circuitcut.attribution.methods import LRP_RULES
from circuitcut.errors import CircuitcutError
from circuitcut.models.tiny import tiny_model
from circuitcut.scores import Scores

GATED = ["gemma", "gemma2", "gemma3_text", "llama", "mistral", "phi3", "qwen2", "qwen3"]


def _ids(n: int = 9, seed: int = 0) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 64, (n,), generator=g).tolist()


def _hook_counts(model: torch.nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()
    )


def test_forward_identical_inside_and_model_restored_after(model: torch.nn.Module) -> None:
    a = get_adapter(model)
    ids = torch.tensor([_ids(), _ids(seed=1)])
    with torch.no_grad():
        ref = model(ids).logits
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    hooks_before = _hook_counts(model)
    for variant in ("attnlrp", "cp-lrp"):
        with LRPRules(a, variant):
            assert not model.training
            with torch.no_grad():
                inside = model(ids).logits
            assert (inside - ref).abs().max().item() <= 1e-6
    assert model.training and all(m.training for m in model.modules())
    assert _hook_counts(model) == hooks_before
    model.eval()
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    # gradients after the context are the plain model's, bit for bit
    fresh = tiny_model(a.model_type)
    for m in (model, fresh):
        m.zero_grad()
        m(ids).logits.square().mean().backward()
    for (n, p), (_, q) in zip(model.named_parameters(), fresh.named_parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), n


def test_cp_lrp_is_conservative(model: torch.nn.Module) -> None:
    """Input + position-embedding + bias relevance == the explained logit.

    Inside the rules a norm's own parameters are constants of the modified backward, so a
    LayerNorm bias absorbs ``b * dy`` with ``dy`` the gradient at the norm's output.
    """
    a = get_adapter(model)
    ids = torch.tensor([_ids(11)])
    captured: dict[str, torch.Tensor] = {}
    norm_outputs: list[tuple[torch.nn.Module, torch.Tensor]] = []
    handles = []
    if a.positions is not None:
        handles.append(a.positions.register_forward_hook(lambda m, i, o: captured.__setitem__("pos", o)))
    with LRPRules(a, "cp-lrp"):
        norms = [n for layer in a.layers for n in layer.norms] + [a.final_norm]
        for norm in norms:  # registered after the rule hooks: they see the rule's output
            if getattr(norm, "bias", None) is not None:
                handles.append(norm.register_forward_hook(lambda m, i, o: norm_outputs.append((m, o))))
        embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = _forward_logits(a, embeds, torch.ones_like(ids), lrp=True)
        y = logits[0, -1, 7]
        biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
        inputs = [embeds, *([captured["pos"]] if "pos" in captured else []), *biases]
        outs = [o for _, o in norm_outputs]
        grads = torch.autograd.grad(y, inputs + outs, allow_unused=True)
    for h in handles:
        h.remove()
    total = sum(
        (t.float() * g.float()).sum()
        for t, g in zip(inputs, grads[: len(inputs)], strict=True)
        if g is not None
    )
    for (norm, _), g in zip(norm_outputs, grads[len(inputs) :], strict=True):
        total = total + (norm.bias.detach() * g.reshape(-1, g.shape[-1]).sum(0)).sum()
    assert abs(total.item() - y.item()) <= 1e-4 * max(abs(y.item()), 1e-3)


def test_cp_lrp_explain_sums_to_logit_on_bias_free_models() -> None:
    for family in ("llama", "gemma2", "phi3", "qwen3"):
        model = tiny_model(family)
        sample = answer_sample(_ids(10), 9)
        rel = explain(model, [sample], ScoringConfig(variant="cp-lrp", seed_mode="value"))[0]
        with torch.no_grad():
            logit = model(torch.tensor([sample.input_ids])).logits[0, -1, 9].item()
        assert rel.shape == (10,)
        assert abs(rel.sum().item() - logit) <= 1e-4 * abs(logit), family
        # unit seeding: the explained output carries relevance 1
        unit = explain(model, [sample], ScoringConfig(variant="cp-lrp", seed_mode="unit"))[0]
        assert abs(unit.sum().item() - 1.0) <= 1e-3, family


def test_attnlrp_is_not_conservative_but_bounded() -> None:
    """AttnLRP's q/k path is not conservative; the sum stays the same sign and order of magnitude."""
    model = tiny_model("llama")
    sample = answer_sample(_ids(10), 9)
    attn = explain(model, [sample], ScoringConfig(variant="attnlrp", seed_mode="value"))[0].sum().item()
    cp = explain(model, [sample], ScoringConfig(variant="cp-lrp", seed_mode="value"))[0].sum().item()
    assert attn != pytest.approx(cp, rel=1e-6)
    assert 0.1 < attn / cp < 2.0


class _Capture:
    """Record a linear layer's input/output and their gradients for one forward/backward."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.t: dict[str, torch.Tensor] = {}
        self.h = module.register_forward_hook(self._hook, prepend=True)

    def _hook(self, module: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
        x = args[0]
        self.t["x"], self.t["y"] = x.detach(), out.detach()
        x.register_hook(lambda g: self.t.__setitem__("dx", g))
        out.register_hook(lambda g: self.t.__setitem__("dy", g))


def _signed_lrp(model: torch.nn.Module, adapter: Any, sample: Any) -> Scores:
    """LRP scores of one sample, signed and value-seeded: the settings under which the identities hold."""
    return attribute(
        model,
        [sample],
        ScoringConfig(method="lrp", aggregation="signed", seed_mode="value"),
        adapter=adapter,
        progress=False,
    )


def test_linear_layer_identities(model: torch.nn.Module) -> None:
    """sum W*dW == sum x*dx == sum y*dy - sum b*db for every linear layer of layer 1."""
    a = get_adapter(model)
    sample = next_token_sample(_ids(9))
    linears = list(a.layers[1].linears.values())
    caps = {lin.name: _Capture(lin.module) for lin in linears}
    scores = _signed_lrp(model, a, sample)
    for lin in linears:
        t = caps[lin.name].t
        caps[lin.name].h.remove()
        wdw = scores.weight(lin.name).sum().item()
        # the gradient reaching the input through this layer only (q, k and v share their input)
        dx = t["dy"] @ lin.as_out_in(lin.weight.detach())
        xdx = (t["x"] * dx).sum().item()
        ydy = (t["y"] * t["dy"]).sum().item()
        bias = lin.bias
        bdb = 0.0 if bias is None else (bias.detach() * t["dy"].flatten(0, -2).sum(0)).sum().item()
        scale = max(abs(ydy), abs(xdx), 1e-6)
        assert abs(wdw - xdx) <= 1e-5 * scale, lin.name
        assert abs(wdw - (ydy - bdb)) <= 1e-5 * scale, lin.name


def test_weight_relevance_equals_epsilon_rule() -> None:
    """W * dW equals z_ij / (z_j + eps sign z_j) * R_j element by element (Hatefi et al., Eq. 8)."""
    for family, role in (("llama", "down"), ("opt", "up"), ("gpt2", "o")):
        model = tiny_model(family)
        a = get_adapter(model)
        lin = a.layers[0].linears[role]
        cap = _Capture(lin.module)
        scores = _signed_lrp(model, a, next_token_sample(_ids(8)))
        cap.h.remove()
        x, y, dy = (cap.t[k].reshape(-1, cap.t[k].shape[-1]).double() for k in ("x", "y", "dy"))
        w = lin.as_out_in(lin.weight.detach()).double()
        eps = 1e-12
        r_out = y * dy  # relevance of each output unit at each token
        z_ij = x[:, None, :] * w[None, :, :]  # [tokens, out, in]
        denom = y + eps * torch.where(y >= 0, 1.0, -1.0).double()
        explicit = (z_ij / denom[:, :, None] * r_out[:, :, None]).sum(0)
        got = scores.weight(lin.name).double()
        assert torch.allclose(got, explicit, rtol=1e-4, atol=1e-7 * explicit.abs().max().item()), family


def test_heads_sum_to_o_proj_relevance(model: torch.nn.Module) -> None:
    a = get_adapter(model)
    scores = _signed_lrp(model, a, next_token_sample(_ids(9)))
    for layer in range(a.n_layers):
        o = a.head_site(layer)
        per_column = scores.weight(o.name).sum(0)  # relevance of each input unit
        per_head = per_column.reshape(a.n_heads, a.head_dim).sum(-1)
        heads = scores.head(layer)
        tol = 1e-5 * heads.abs().sum().item()
        assert torch.allclose(heads, per_head, atol=tol)
        assert abs(heads.sum().item() - scores.weight(o.name).sum().item()) <= tol
        # neurons likewise are the input columns of the down projection
        d = a.neuron_site(layer)
        cols = scores.weight(d.name).sum(0)
        assert torch.allclose(scores.neuron(layer), cols, atol=1e-5 * cols.abs().sum().item())


@pytest.mark.parametrize("family", GATED)
def test_gated_mlp_gate_and_up_carry_half(family: str) -> None:
    model = tiny_model(family)
    a = get_adapter(model)
    scores = _signed_lrp(model, a, next_token_sample(_ids(9)))
    lin = a.layers[0].linears
    n = a.n_neurons
    half = 0.5 * scores.neuron(0)
    if "gate_up" in lin:
        rows = scores.weight(lin["gate_up"].name).sum(1)
        gate, up = rows[:n], rows[n:]
    else:
        gate = scores.weight(lin["gate"].name).sum(1)
        up = scores.weight(lin["up"].name).sum(1)
    tol = 1e-4 * half.abs().max().item()
    assert torch.allclose(up, half, atol=tol)
    assert torch.allclose(gate, half, atol=tol)


def test_batched_equals_one_at_a_time(model: torch.nn.Module) -> None:
    a = get_adapter(model)
    samples = [next_token_sample(_ids(9, 0)), answer_sample(_ids(6, 1), 4, 5), next_token_sample(_ids(12, 2))]
    kw = dict(adapter=a, progress=False)
    batched = attribute(model, samples, ScoringConfig(seed_mode="value", batch_size=3), **kw)
    single = attribute(model, samples[:1], ScoringConfig(seed_mode="value"), **kw)
    for s in samples[1:]:
        single = single.merge(attribute(model, [s], ScoringConfig(seed_mode="value"), **kw))
    assert batched.n_samples == single.n_samples == 3
    # float32 sums run in another order in a batch; the identity rule's y / x amplifies that
    # rounding where x is near zero, so the bound is relative to each tensor's scale
    for key, t in batched.tensors().items():
        ref = single.tensors()[key]
        assert (t - ref).abs().max().item() <= 1e-4 * ref.abs().max().item(), key


def test_gradient_method_equals_weight_times_autograd_grad() -> None:
    model = tiny_model("qwen2")
    sample = next_token_sample(_ids(9))
    scores = attribute(
        model,
        [sample],
        ScoringConfig(method="gradient", aggregation="signed", seed_mode="value"),
        progress=False,
    )
    model.zero_grad()
    logits = model(torch.tensor([sample.input_ids])).logits[0]
    logits[torch.arange(8), torch.tensor(sample.target.token_ids)].sum().backward()
    a = get_adapter(model)
    for lin in a.linears():
        expected = lin.weight.detach() * lin.weight.grad
        assert torch.allclose(scores.weight(lin.name), expected, atol=1e-5 * expected.abs().max().item())
    model.zero_grad(set_to_none=True)


def test_attribute_leaves_model_untouched() -> None:
    model = tiny_model("gpt2")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = _hook_counts(model)
    attribute(model, [next_token_sample(_ids(9))], progress=False, layers="embeddings")
    assert _hook_counts(model) == hooks
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])


def test_rule_subsets_span_gradient_to_lrp() -> None:
    """No rules is gradient x input; every rule is LRP; each rule alone changes the scores; the
    rules' effects on a gated product compose exactly (the halving is a factor 1/2 on the MLP path)."""
    model = tiny_model("llama")
    a = get_adapter(model)
    samples = [next_token_sample(_ids(9)), answer_sample(_ids(7, 1), 4, 5)]
    kw = dict(adapter=a, levels=("neuron", "head"), progress=False)
    signed = ScoringConfig(aggregation="signed", seed_mode="value")
    lrp = attribute(model, samples, signed, **kw)
    grad = attribute(model, samples, signed.with_method("gradient"), **kw)
    hooks = _hook_counts(model)

    def with_rules(rules: tuple[str, ...]) -> Scores:
        with LRPRules(a, rules=rules):
            return attribute(model, samples, signed.with_method("gradient"), **kw)

    for want, got in ((grad, with_rules(())), (lrp, with_rules(LRP_RULES))):
        for key, t in want.tensors().items():
            assert torch.allclose(got.tensors()[key], t, atol=1e-6 * t.abs().max().item()), key
    # attribute(..., lrp_rules=...) is LRP with those rules, recorded in the sidecar
    partial = ("activation", "norm", "gate")
    direct = attribute(model, samples, replace(signed, lrp_rules=partial), **kw)
    assert direct.meta["lrp_rules"] == list(partial) and lrp.meta["lrp_rules"] == list(LRP_RULES)
    for key, t in with_rules(partial).tensors().items():
        assert torch.allclose(direct.tensors()[key], t, atol=1e-6 * t.abs().max().item()), key
    with pytest.raises(CircuitcutError, match="LRP rules apply to method 'lrp', not 'gradient'"):
        replace(signed, method="gradient", lrp_rules=partial)
    for rule in LRP_RULES:
        one = with_rules((rule,))
        assert not torch.allclose(one.neuron_matrix(), grad.neuron_matrix()), rule
    # the last layer's neurons see no later MLP: the gate rule halves only the earlier layers' paths
    # through it, and the last layer's neuron relevance is the gradient's exactly
    gate = with_rules(("gate",))
    last = a.n_layers - 1
    assert torch.allclose(
        gate.neuron(last), grad.neuron(last), atol=1e-6 * grad.neuron(last).abs().max().item()
    )
    assert _hook_counts(model) == hooks
    with pytest.raises(
        CircuitcutError,
        match=r"LRP rules: unknown 'softmax'; use activation, norm, attention_scores, attention_values, gate",
    ):
        LRPRules(a, rules=("softmax",))
