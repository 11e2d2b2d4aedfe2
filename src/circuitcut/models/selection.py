"""Which linear layers a run scores or prunes: glob patterns over the adapter's readable names.

Below the attribution engine and the pruning masks, which both select layers with it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from circuitcut.errors import CircuitcutError
from circuitcut.models.adapter import LinearInfo, ModelAdapter


def select_linears(
    adapter: ModelAdapter,
    layers: str | Sequence[str] | None = None,
    include_embeddings: bool = False,
) -> list[LinearInfo]:
    """The linear layers matching glob patterns on their readable names.

    ``None`` or ``"all"`` selects every decoder linear; ``"attn"`` and ``"mlp"`` select a group;
    ``"embeddings"`` selects the embedding matrix and an untied LM head; other patterns are globs
    such as ``*.mlp.fc1`` or ``layers.[0-3].*``. Embeddings and the LM head are only included with
    ``include_embeddings`` or when a pattern names them (``embeddings``, ``embed_tokens``,
    ``lm_head``).
    """
    candidates = adapter.linears(include_embeddings=True)
    if layers is None or layers == "all":
        patterns = ["layers.*"]
    elif isinstance(layers, str):
        patterns = [p.strip() for p in layers.split(",") if p.strip()]
    else:
        patterns = list(layers)
    if "embeddings" in patterns:
        include_embeddings = True
        patterns = [p for p in patterns if p != "embeddings"] or ["all"]
    if not patterns:
        raise CircuitcutError("empty layer selection; pass a pattern such as 'all' or '*.mlp.*'")
    expanded = []
    for p in patterns:
        expanded.append({"all": "layers.*", "attn": "layers.*.attn.*", "mlp": "layers.*.mlp.*"}.get(p, p))
    chosen = []
    for lin in candidates:  # compute order: embeddings, decoder layers, an untied LM head
        if lin.role in ("embed", "lm_head"):  # only when asked for, or named exactly
            # a tied LM head is the embedding matrix, listed once as embed_tokens
            if include_embeddings or any(
                p == lin.name or (p == "lm_head" and adapter.tied) for p in expanded
            ):
                chosen.append(lin)
        elif any(fnmatch.fnmatchcase(lin.name, p) for p in expanded):
            chosen.append(lin)
    if not chosen:
        example = adapter.linears()[0].name
        raise CircuitcutError(
            f"layer pattern {layers!r} matches no linear layer; names look like {example!r} "
            "(`circuitcut inspect MODEL` lists them)"
        )
    return chosen
