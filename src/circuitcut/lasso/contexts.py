"""What an SAE feature reads and writes: its top-activating text contexts and the tokens it promotes.

* :func:`top_contexts` streams token windows through the model and keeps, per feature, the ``n``
  (window, position) pairs where it fires most, with the tokens around each and the feature's
  activation on every one of them.
* :func:`promoted_tokens` / :func:`suppressed_tokens`: the direct logit effect of a feature's decoder
  direction, ``W_dec[f] @ W_U^T`` (the "logit lens" of the direction).
* :func:`feature_cards` turns both into JSON-ready records with readable token strings, the
  ``"features"`` list of a CircuitLasso summary that the report page shows
  (:func:`circuitcut.reports.page.sections.add_lasso`).
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from circuitcut.errors import CircuitcutError
from circuitcut.lasso.sae import SAE
from circuitcut.lasso.sites import Site, parse_site, site_hook
from circuitcut.models.adapter import ModelAdapter, get_adapter, input_device

#: vocabulary rows multiplied at once in :func:`logit_effects` (bounds the float32 copy of W_U)
VOCAB_CHUNK = 32768

Context = dict[str, Any]


def _check_count(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise CircuitcutError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _check_features(sae: SAE, features: Sequence[int]) -> list[int]:
    """The requested features as distinct ints in the order given; out-of-range ones refused."""
    out = []
    for f in features:
        try:
            i = operator.index(f)
        except TypeError:
            raise CircuitcutError(
                f"feature {f!r} is not an integer index; give SAE feature indices"
            ) from None
        if not 0 <= i < sae.d_sae:
            raise CircuitcutError(
                f"feature {i} is out of range: the SAE at {sae.hook_name or 'this site'} has features "
                f"0..{sae.d_sae - 1}; give indices of that SAE (a circuit node's `feature`)"
            )
        out.append(i)
    return list(dict.fromkeys(out))


def _check_windows(windows: torch.Tensor, adapter: ModelAdapter) -> torch.Tensor:
    if not isinstance(windows, torch.Tensor) or windows.dim() != 2:
        what = f"a {windows.dim()}-d tensor" if isinstance(windows, torch.Tensor) else type(windows).__name__
        raise CircuitcutError(
            f"windows must be a [N, T] tensor of token ids, got {what}; stack the windows first"
        )
    if windows.dtype.is_floating_point or windows.dtype.is_complex or windows.dtype == torch.bool:
        raise CircuitcutError(f"windows must hold integer token ids, got dtype {windows.dtype}")
    if windows.numel() == 0:
        raise CircuitcutError(
            f"windows is empty (shape {tuple(windows.shape)}); give at least one window of at least one token"
        )
    low, high = int(windows.min()), int(windows.max())
    if low < 0 or high >= adapter.vocab_size:
        raise CircuitcutError(
            f"windows hold token ids {low}..{high}, outside the model's vocabulary 0..{adapter.vocab_size - 1}; "
            "encode the text with this model's tokenizer"
        )
    return windows.long().cpu()


def _site(adapter: ModelAdapter, sae: SAE) -> Site:
    site = parse_site(sae.hook_name, adapter)
    if site.width(adapter) != sae.d_in:
        raise CircuitcutError(
            f"the SAE reads {sae.d_in} values but {sae.hook_name} of this model has {site.width(adapter)}; "
            "use an SAE trained for this model"
        )
    return site


def _feature_acts(model: nn.Module, adapter: ModelAdapter, sae: SAE, site: Site, x: torch.Tensor,
                  index: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """The requested features' activations on one batch of windows: ``[B, T, F]`` float32 on the CPU."""
    seen: list[torch.Tensor] = []
    with site_hook(adapter, site, lambda t: seen.append(t.detach()), batch_shape=tuple(x.shape)):
        model(input_ids=x, use_cache=False)
    codes = sae.sequence_codes(seen[0].to(sae.W_enc.device))
    return codes[..., index.to(codes.device)].float().cpu()


def _batch_best(acts: torch.Tensor, first: int, n: int, span: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per feature, the ``n`` largest activations of a batch ``[B, T, F]`` (ties: lower window, then
    lower position first) as ``(values, windows, positions, context activations)``, each ``[F, n]``
    (the contexts ``[F, n, len(span)]``, zero outside the window)."""
    b, t, f = acts.shape
    flat = acts.permute(2, 0, 1).reshape(f, b * t)  # per feature, window-major: the tie order
    values, idx = torch.sort(flat, dim=1, descending=True, stable=True)
    values, idx = values[:, :n], idx[:, :n]
    rows, pos = idx // t, idx % t
    at = pos[..., None] + span  # [F, n, L]
    inside = (at >= 0) & (at < t)
    feat = torch.arange(f)[:, None, None]
    ctx = acts[rows[..., None], at.clamp(0, t - 1), feat] * inside
    return values, rows + first, pos, ctx


def _merge(
    best: tuple[torch.Tensor, ...] | None, new: tuple[torch.Tensor, ...], n: int
) -> tuple[torch.Tensor, ...]:
    """The ``n`` best of the running candidates and a later batch's. The running ones come first and
    the sort is stable, so among equal activations earlier (window, position) pairs stay ahead."""
    if best is None:
        return new
    joined = [torch.cat([a, b], dim=1) for a, b in zip(best, new, strict=True)]
    order = torch.sort(joined[0], dim=1, descending=True, stable=True).indices[:, :n]
    return tuple(
        x.gather(1, order if x.dim() == 2 else order[..., None].expand(-1, -1, x.shape[2])) for x in joined
    )


def top_contexts(
    model: nn.Module,
    adapter: ModelAdapter,
    sae: SAE,
    windows: torch.Tensor,
    features: Sequence[int],
    n: int = 8,
    before: int = 10,
    after: int = 3,
    batch_size: int = 16,
) -> dict[int, list[Context]]:
    """The ``n`` contexts where each feature fires most, over token windows ``windows [N, T]``.

    The windows go through the model ``batch_size`` at a time (no gradients, no attention mask: give
    windows of real text); the SAE encodes its site's activations and a running top-``n`` per feature
    is kept, so memory grows with ``n`` and the batch, never with ``N``.

    Returns, per requested feature (in the order given, duplicates once), up to ``n`` records sorted
    by activation, largest first; equal activations are ordered by window, then position, lowest first
    (so the result does not depend on ``batch_size``). Each record is ``{"window": i, "position": t,
    "activation": a, "tokens": ids of window i from t - before to t + after (clipped to the window),
    "activations": the feature's activation on each of those tokens, "focus": the index of t in
    tokens}``. Only positive activations count: a feature that never fires gets ``[]``, one that fires
    at fewer than ``n`` places gets fewer records.
    """
    n = _check_count(n, "n", 1)
    before, after = _check_count(before, "before", 0), _check_count(after, "after", 0)
    batch_size = _check_count(batch_size, "batch_size", 1)
    ids = _check_windows(windows, adapter)
    feats = _check_features(sae, features)
    site = _site(adapter, sae)
    if not feats:
        return {}
    index = torch.tensor(feats)
    span = torch.arange(-before, after + 1)
    device = input_device(model)
    best: tuple[torch.Tensor, ...] | None = None
    with torch.no_grad():
        for first in range(0, len(ids), batch_size):
            x = ids[first : first + batch_size]
            acts = _feature_acts(model, adapter, sae, site, x.to(device), index)
            best = _merge(best, _batch_best(acts, first, n, span), n)
    assert best is not None
    values, rows, pos, ctx = best
    t_len = ids.shape[1]
    out: dict[int, list[Context]] = {}
    for j, f in enumerate(feats):
        records = []
        for r in range(values.shape[1]):
            value = float(values[j, r])
            if not value > 0:
                break  # sorted: the rest do not fire either
            w, t = int(rows[j, r]), int(pos[j, r])
            lo, hi = max(0, t - before), min(t_len, t + after + 1)
            records.append({"window": w, "position": t, "activation": value, "tokens": ids[w, lo:hi].tolist(),
                            "activations": ctx[j, r, lo - t + before : hi - t + before].tolist(),
                            "focus": t - lo})  # fmt: skip
        out[f] = records
    return out


def unembedding(adapter: ModelAdapter) -> torch.Tensor:
    """The model's unembedding ``W_U [vocab, hidden]``: the LM head's weight (the input embedding
    when the model has no separate head)."""
    head = adapter.lm_head if adapter.lm_head is not None else adapter.embed
    return head.weight_values().detach()


def logit_effects(
    model_or_adapter: nn.Module | ModelAdapter, sae: SAE, features: Sequence[int]
) -> torch.Tensor:
    """The direct logit effect of each feature's decoder direction: ``W_dec[features] @ W_U^T``,
    ``[len(features), vocab]`` float32 on the CPU (features deduplicated, in the order given).

    This is the "logit lens" of the decoder direction, the convention of SAE feature dashboards: the
    logit weights of Bricken et al. 2023 ("Towards Monosemanticity", transformer-circuits.pub) and the
    promoted / suppressed tokens Neuronpedia shows (``W_dec @ W_U``). The final norm is skipped, both
    its normalisation and its gain, as are any later layers, the logit soft-capping of Gemma 2/3 and
    the LM head's bias: the effect of adding the direction to the residual stream straight before the
    head. (Tools that load models through TransformerLens usually have the norm's gain folded into
    ``W_U``; here it is the model's own head weight.)
    """
    adapter = (
        model_or_adapter if isinstance(model_or_adapter, ModelAdapter) else get_adapter(model_or_adapter)
    )
    feats = _check_features(sae, features)
    w_u = unembedding(adapter)
    if w_u.shape[1] != sae.d_in:
        raise CircuitcutError(
            f"the model's unembedding reads {w_u.shape[1]} values but the SAE writes {sae.d_in}; this model "
            "projects its residual stream before the head (as some OPT models do), so a decoder direction "
            "has no direct logit effect to show"
        )
    rows = sae.W_dec.detach()[feats].float().to(w_u.device)
    out = torch.empty(len(feats), w_u.shape[0])
    with torch.no_grad():
        for i in range(0, w_u.shape[0], VOCAB_CHUNK):
            out[:, i : i + VOCAB_CHUNK] = (rows @ w_u[i : i + VOCAB_CHUNK].float().T).cpu()
    return out


def _ranked(
    effects: torch.Tensor, feats: list[int], top: int, sign: float
) -> dict[int, list[tuple[int, float]]]:
    top = _check_count(top, "top", 1)
    values, idx = torch.sort(sign * effects, dim=1, descending=True, stable=True)  # ties: lower id first
    k = min(top, effects.shape[1])
    return {f: [(int(i), sign * float(v)) for i, v in zip(idx[j, :k], values[j, :k], strict=True)]
            for j, f in enumerate(feats)}  # fmt: skip


def promoted_tokens(model_or_adapter: nn.Module | ModelAdapter, sae: SAE, features: Sequence[int],
                    top: int = 8) -> dict[int, list[tuple[int, float]]]:  # fmt: skip
    """Per feature, the ``top`` token ids its decoder direction raises most, with their direct logit
    effect (:func:`logit_effects`), largest first (ties: lower token id first)."""
    feats = _check_features(sae, features)
    return _ranked(logit_effects(model_or_adapter, sae, feats), feats, top, 1.0)


def suppressed_tokens(model_or_adapter: nn.Module | ModelAdapter, sae: SAE, features: Sequence[int],
                      top: int = 8) -> dict[int, list[tuple[int, float]]]:  # fmt: skip
    """Per feature, the ``top`` token ids its decoder direction lowers most, with their (negative)
    direct logit effect, most negative first (ties: lower token id first)."""
    feats = _check_features(sae, features)
    return _ranked(logit_effects(model_or_adapter, sae, feats), feats, top, -1.0)


def token_strings(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Each token as readable text: decoded one by one (byte-level markers such as GPT-2's become
    spaces), with the leading space SentencePiece's ``▁`` stands for kept (a lone decode drops it)."""
    ids = [int(i) for i in ids]
    if not ids:
        return []
    pieces = tokenizer.convert_ids_to_tokens(ids)
    out = []
    for i, piece in zip(ids, pieces, strict=True):
        text = tokenizer.decode([i], clean_up_tokenization_spaces=False)
        if isinstance(piece, str) and piece.startswith("▁") and not text.startswith(" "):
            text = " " + text
        out.append(text)
    return out


def _tokens(tokenizer: Any, pairs: Sequence[tuple[int, float]]) -> list[dict[str, Any]]:
    words = token_strings(tokenizer, [i for i, _ in pairs])
    return [{"id": int(i), "token": w, "logit": float(v)} for (i, v), w in zip(pairs, words, strict=True)]


def feature_cards(
    tokenizer: Any,
    contexts: Mapping[int, Sequence[Context]],
    promoted: Mapping[int, Sequence[tuple[int, float]]],
    labels: Mapping[int, str] | None = None,
    site: str = "",
    suppressed: Mapping[int, Sequence[tuple[int, float]]] | None = None,
) -> list[dict[str, Any]]:
    """JSON-ready records of the features of one site, in the order of ``contexts`` (then any feature
    only ``promoted`` has): the ``"features"`` list of a CircuitLasso summary.

    Each card: ``{"site", "feature", "id": "SITE#F", "label", "promoted": [{"id", "token", "logit"}],
    "suppressed": [...] (only when given), "contexts": [{"window", "position", "activation", "focus",
    "token_ids", "tokens": readable strings, "activations"}]}``. Concatenate the cards of several
    sites for a whole circuit.
    """
    cards = []
    for f in dict.fromkeys([*contexts, *promoted]):
        card: dict[str, Any] = {"site": site, "feature": int(f), "id": f"{site}#{int(f)}",
                                "label": (labels or {}).get(f, ""), "promoted": _tokens(tokenizer, promoted.get(f, []))}  # fmt: skip
        if suppressed is not None:
            card["suppressed"] = _tokens(tokenizer, suppressed.get(f, []))
        card["contexts"] = [
            {"window": int(c["window"]), "position": int(c["position"]), "activation": float(c["activation"]),
             "focus": int(c["focus"]), "token_ids": [int(i) for i in c["tokens"]],
             "tokens": token_strings(tokenizer, c["tokens"]), "activations": [float(a) for a in c["activations"]]}
            for c in contexts.get(f, [])
        ]  # fmt: skip
        cards.append(card)
    return cards
