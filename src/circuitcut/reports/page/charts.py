"""Line charts as inline SVG: one focusable marker per point carrying its values as a tooltip, a
marker shape and a dash pattern per series besides its colour, and checkboxes that show or hide a
series in every chart of a group.

Colours are the Okabe-Ito set (distinguishable with the common colour-vision deficiencies); the
controls (random, magnitude) are grey or orange and dashed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from circuitcut.reports.page.base import esc

#: one colour per method (Okabe & Ito, "Color Universal Design", 2008)
COLORS = {
    "lrp": "#D55E00", "gradient": "#0072B2", "wanda": "#009E73", "activation": "#CC79A7",
    "gradient_magnitude": "#56B4E9", "random": "#666666", "magnitude": "#E69F00",
    "circuitlasso": "#D55E00", "attribution_patching": "#0072B2", "dense": "#000000",
}  # fmt: skip
#: methods drawn dashed: the controls
CONTROLS = ("random", "magnitude")
_OTHER = ("#000000", "#F0E442", "#56B4E9", "#CC79A7")
#: a marker shape per method, so series differ in more than colour
SHAPES = {"lrp": "circle", "gradient": "square", "wanda": "diamond", "activation": "triangle",
          "gradient_magnitude": "triangle", "random": "circle", "magnitude": "square",
          "circuitlasso": "circle", "attribution_patching": "square"}  # fmt: skip
_SHAPES = ("circle", "square", "diamond", "triangle")
W, H = 460, 290
LEFT, RIGHT, TOP, BOTTOM = 56, 24, 14, 44


@dataclass
class Point:
    """A point: position, optional error half-width, and the tooltip text (one value a line)."""

    x: float
    y: float | None
    tip: str
    err: float = 0.0


@dataclass
class Series:
    """A named line of points."""

    name: str
    points: list[Point] = field(default_factory=list)
    dashed: bool | None = None

    @property
    def is_control(self) -> bool:
        """Drawn dashed."""
        return self.name in CONTROLS if self.dashed is None else self.dashed


def color(name: str) -> str:
    """The colour of a method (a fallback from the same palette for other names)."""
    return COLORS.get(name, _OTHER[sum(map(ord, name)) % len(_OTHER)])


def shape(name: str) -> str:
    """The marker shape of a method."""
    return SHAPES.get(name, _SHAPES[sum(map(ord, name)) % len(_SHAPES)])


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step + 1e-9)
    last = math.ceil(hi / step - 1e-9)
    return [round(k * step, 12) for k in range(first, max(last, first + 1) + 1)]


def _marker(shape: str, x: float, y: float, r: float = 4.5) -> str:
    if shape == "square":
        return f"M{x - r:.1f},{y - r:.1f}h{2 * r:.1f}v{2 * r:.1f}h{-2 * r:.1f}z"
    if shape == "diamond":
        return f"M{x:.1f},{y - r - 1:.1f}l{r + 1:.1f},{r + 1:.1f}l{-r - 1:.1f},{r + 1:.1f}l{-r - 1:.1f},{-r - 1:.1f}z"
    if shape == "triangle":
        return f"M{x:.1f},{y - r - 1:.1f}l{r + 1:.1f},{2 * r:.1f}h{-2 * r - 2:.1f}z"
    return f"M{x - r:.1f},{y:.1f}a{r:.1f},{r:.1f} 0 1,0 {2 * r:.1f},0a{r:.1f},{r:.1f} 0 1,0 {-2 * r:.1f},0"


def fmt_share(x: float) -> str:
    """A kept fraction as a percentage label."""
    return f"{100 * x:.3g}%"


def line_chart(series: Sequence[Series], x_label: str, y_label: str, *, log_x: bool = False,
               x_format: Callable[[float], str] = lambda v: f"{v:g}", refs: Sequence[tuple[float, str]] = (),
               label: str = "") -> str:  # fmt: skip
    """An SVG line chart. ``refs`` are horizontal reference lines ``(y, label)`` (the full model, a
    threshold). Points with ``y=None`` are left out."""
    pts = [p for s in series for p in s.points if p.y is not None]
    if not pts:
        return '<p class="muted">no points to draw</p>'
    fx = (lambda v: math.log10(max(v, 1e-12))) if log_x else (lambda v: v)
    xs = [fx(p.x) for p in pts]
    ys = [v for p in pts for v in (p.y - p.err, p.y + p.err)] + [r[0] for r in refs]  # type: ignore[operator]
    ys = [v for v in ys if math.isfinite(v)]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    yt = _nice_ticks(min(ys), max(ys))
    y0, y1 = yt[0], yt[-1]
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    sx = lambda v: LEFT + (fx(v) - x0) / (x1 - x0) * pw  # noqa: E731
    sy = lambda v: TOP + (1 - (v - y0) / (y1 - y0)) * ph  # noqa: E731
    if log_x:
        xt = [10.0**k for k in range(math.ceil(x0 - 1e-9), math.floor(x1 + 1e-9) + 1)]
        if len(xt) < 2:
            xt = sorted({pts[0].x, pts[-1].x, *xt})
    else:
        xt = [t for t in _nice_ticks(x0, x1) if x0 - 1e-9 <= t <= x1 + 1e-9]
    out = [f'<svg class="chart" viewBox="0 0 {W} {H}" role="group" aria-label="{esc(label or y_label)}">']
    for t in yt:
        out.append(f'<line class="grid" x1="{LEFT}" x2="{W - RIGHT}" y1="{sy(t):.1f}" y2="{sy(t):.1f}"/>'
                   f'<text x="{LEFT - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{t:g}</text>')  # fmt: skip
    for t in xt:
        out.append(f'<line class="grid" y1="{TOP}" y2="{H - BOTTOM}" x1="{sx(t):.1f}" x2="{sx(t):.1f}"/>'
                   f'<text x="{sx(t):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{esc(x_format(t))}</text>')  # fmt: skip
    out.append(f'<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{H - BOTTOM}"/>'
               f'<line class="axis" x1="{LEFT}" x2="{W - RIGHT}" y1="{H - BOTTOM}" y2="{H - BOTTOM}"/>'
               f'<text x="{LEFT + pw / 2:.0f}" y="{H - 8}" text-anchor="middle">{esc(x_label)}</text>'
               f'<text transform="translate(14 {TOP + ph / 2:.0f}) rotate(-90)" text-anchor="middle">{esc(y_label)}</text>')  # fmt: skip
    for y, text in refs:
        out.append(f'<line class="ref" x1="{LEFT}" x2="{W - RIGHT}" y1="{sy(y):.1f}" y2="{sy(y):.1f}"/>'
                   f'<text class="reflabel" x="{W - RIGHT - 4}" y="{sy(y) - 4:.1f}" text-anchor="end">{esc(text)}</text>')  # fmt: skip
    for s in series:
        c = color(s.name)
        drawn = sorted((p for p in s.points if p.y is not None), key=lambda p: p.x)
        dash = ' stroke-dasharray="6 4"' if s.is_control else ""
        line = " ".join(f"{sx(p.x):.1f},{sy(p.y):.1f}" for p in drawn)  # type: ignore[arg-type]
        out.append(f'<g class="series" data-series="{esc(s.name)}">'
                   f'<polyline fill="none" stroke="{c}" stroke-width="2"{dash} points="{line}"/>')  # fmt: skip
        for p in drawn:
            if p.err:
                out.append(f'<line stroke="{c}" x1="{sx(p.x):.1f}" x2="{sx(p.x):.1f}" y1="{sy(p.y - p.err):.1f}" '  # type: ignore[operator]
                           f'y2="{sy(p.y + p.err):.1f}"/>')  # type: ignore[operator]  # fmt: skip
        for p in drawn:
            out.append(f'<path class="pt" tabindex="0" role="img" fill="{c}" stroke="#fff" '
                       f'd="{_marker(shape(s.name), sx(p.x), sy(p.y))}" data-tip="{esc(p.tip)}" '  # type: ignore[arg-type]
                       f'aria-label="{esc(p.tip.replace(chr(10), "; "))}"/>')  # fmt: skip
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


def chart_group(
    group_id: str, names: Sequence[str], figures: Sequence[tuple[str, str]], note: str = ""
) -> str:
    """Charts side by side (``(caption, svg)``) with one checkbox per series that shows or hides it
    in all of them, and a legend of colour, dash and marker."""
    boxes = []
    for name in names:
        style = "dashed" if name in CONTROLS else "solid"
        boxes.append(f'<label><input type="checkbox" checked data-group="{esc(group_id)}" data-series="{esc(name)}">'
                     f'<span class="swatch" style="border-top-color:{color(name)};border-top-style:{style}"></span>'
                     f"{esc(name)} ({shape(name)})</label>")  # fmt: skip
    figs = "".join(f"<figure>{svg}<figcaption>{esc(cap)}</figcaption></figure>" for cap, svg in figures)
    legend = f'<p class="legend">{esc(note)}</p>' if note else ""
    return (f'<div class="controls" role="group" aria-label="series shown">{"".join(boxes)}</div>{legend}'
            f'<div class="charts" id="{esc(group_id)}">{figs}</div>')  # fmt: skip
