"""Token relevance as a self-contained HTML heatmap (no scripts, no external files).

Each token is a coloured box: orange for positive relevance (it supports the explained output), blue
for negative (a diverging pair that colour-blind readers tell apart, unlike red/green), the opacity
proportional to |relevance| / max |relevance| of the sample; hovering shows the value. Several
samples go on one page, each scaled on its own. :func:`heatmap_block` is one sample's heatmap, which
the run reports (:mod:`circuitcut.reports.page`) embed.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from circuitcut.errors import CircuitcutError
from circuitcut.io import write_text

if TYPE_CHECKING:
    import torch

#: the diverging palette (RGB): positive relevance orange, negative blue
POSITIVE_RGB = "230,97,1"
NEGATIVE_RGB = "33,102,172"
#: one sample's relevance: a sequence of numbers or a 1-d tensor
Relevance = Union[Sequence[float], "torch.Tensor"]

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:60em}"
    ".tok{display:inline-block;padding:0.15em 0.3em;margin:0.1em;border-radius:0.25em;"
    "font-family:ui-monospace,monospace;white-space:pre}"
    ".legend{color:#555;font-size:0.9em}"
)
LEGEND = (
    "orange: supports the explained output; blue: speaks against it; opacity: |relevance| relative to "
    "the largest in the sample; hover for the value."
)


def display_tokens(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Each token as readable text (decoded one by one, so byte-level markers such as GPT-2's become
    spaces)."""
    return [tokenizer.decode([int(i)]) for i in ids]


def token_heatmap_text(tokens: Sequence[str], values: Sequence[float]) -> str:
    """The same in one line of text: ``token(+0.12)`` per token."""
    return "  ".join(f"{t}({float(v):+.2f})" for t, v in zip(tokens, values, strict=True))


def _cell(token: str, value: float, scale: float) -> str:
    alpha = min(1.0, abs(value) / scale) if scale > 0 else 0.0
    rgb = POSITIVE_RGB if value >= 0 else NEGATIVE_RGB
    shown = html.escape(token) if token.strip() else "&#9251;"  # an open box for whitespace-only tokens
    return (
        f'<span class="tok" style="background:rgba({rgb},{alpha:.3f})" '
        f'title="{html.escape(token)}: {value:+.4g}">{shown}</span>'
    )


def heatmap_block(caption: str, tokens: Sequence[str], relevance: Relevance, level: int = 2) -> str:
    """One sample's heatmap: a heading ``<hN>`` with the caption, the token boxes, and the sum and
    scale of its relevance."""
    values = [float(v) for v in (relevance.tolist() if hasattr(relevance, "tolist") else relevance)]
    if len(values) != len(tokens):
        raise CircuitcutError(f"{len(tokens)} tokens but {len(values)} relevance values for {caption!r}")
    if not tokens:
        raise CircuitcutError(f"sample {caption!r} has no tokens")
    scale = max(abs(v) for v in values)
    cells = "".join(_cell(t, v, scale) for t, v in zip(tokens, values, strict=True))
    return (
        f"<h{level}>{html.escape(caption)}</h{level}>\n<p>{cells}</p>\n"
        f'<p class="legend">sum {sum(values):+.4g}, largest |relevance| {scale:.4g}</p>'
    )


def token_heatmap_html(
    rows: Sequence[tuple[str, Sequence[str], Relevance]], title: str = "Token relevance"
) -> str:
    """An HTML page with one heatmap per ``(caption, tokens, relevance)`` row."""
    if not rows:
        raise CircuitcutError("no samples to draw")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="legend">{LEGEND}</p>',
        *(heatmap_block(caption, tokens, relevance) for caption, tokens, relevance in rows),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def save_token_heatmap(
    path: str | os.PathLike[str],
    rows: Sequence[tuple[str, Sequence[str], Relevance]],
    title: str = "Token relevance",
) -> Path:
    """Write :func:`token_heatmap_html` to ``path`` (atomically)."""
    return write_text(path, token_heatmap_html(rows, title))
