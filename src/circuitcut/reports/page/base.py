"""The pieces of a report page: escaping, numbers, tables, sections, the page shell and its writing.

A page is one HTML file with its style sheet and script inline (``assets/report.css`` and
``assets/report.js``, read from the package), so it opens offline, from a mail attachment or a
copied folder, and prints. Every page carries ``<meta name="generator" content="circuitcut ...">``:
a file at a report's path without it is not circuitcut's and is never replaced.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from circuitcut.errors import OutputError
from circuitcut.io import write_text

#: marks a page circuitcut wrote (checked before a page is replaced)
GENERATOR = "circuitcut report/1"
#: what the index page and the run pages are called
PAGE_NAME = "report.html"


def esc(value: Any) -> str:
    """Text for HTML (elements and quoted attributes)."""
    return html.escape(str(value), quote=True)


def num(value: Any, digits: int = 3) -> str:
    """A number for a table: ``digits`` significant decimals, ``-`` for missing values."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}".replace(",", " ") if abs(value) >= 10000 else str(value)
    if value != value:  # NaN
        return "-"
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}g}"


def pct(value: float | None, signed: bool = True, digits: int = 1) -> str:
    """A relative change or share as a percentage (``-`` when missing)."""
    if value is None:
        return "-"
    return f"{100 * value:+.{digits}f}%" if signed else f"{100 * value:.{digits}f}%"


def slug(text: str) -> str:
    """An id made of letters, digits and dashes."""
    out = "".join(c if c.isalnum() else "-" for c in text.lower())
    return "-".join(p for p in out.split("-") if p) or "x"


def table(head: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = (), table_id: str = "",
          caption: str = "", row_tips: Sequence[str] | None = None) -> str:  # fmt: skip
    """A table in a horizontally scrolling wrapper. Cells are escaped unless they are :class:`Raw`;
    columns in ``numeric`` align right; ``row_tips`` makes each row focusable with that tooltip."""
    nums = set(numeric)
    ident = f' id="{esc(table_id)}"' if table_id else ""
    parts = [f'<div class="scroll"><table{ident}>']
    if caption:
        parts.append(f'<caption class="legend">{esc(caption)}</caption>')
    parts.append("<thead><tr>" + "".join(
        f'<th scope="col"{" class=num" if i in nums else ""}>{esc(h)}</th>' for i, h in enumerate(head)
    ) + "</tr></thead><tbody>")  # fmt: skip
    for r, row in enumerate(rows):
        tip = row_tips[r] if row_tips is not None else ""
        attrs = f' tabindex="0" data-tip="{esc(tip)}"' if tip else ""
        cells = "".join(
            f"<td{' class=num' if i in nums else ''}>{cell if isinstance(cell, Raw) else esc(cell)}</td>"
            for i, cell in enumerate(row)
        )
        parts.append(f"<tr{attrs}>{cells}</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts)


class Raw(str):
    """HTML that is already safe (built by these helpers): not escaped again."""


def json_script(element_id: str, data: Any) -> str:
    """Data for the page's script, as an inert JSON block (``</`` escaped so it cannot end the block)."""
    text = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return f'<script type="application/json" id="{esc(element_id)}">{text}</script>'


@dataclass
class Section:
    """A titled part of a page (listed in the page's table of contents)."""

    title: str
    body: str
    ident: str = ""

    def __post_init__(self) -> None:
        self.ident = self.ident or slug(self.title)


@dataclass
class Page:
    """A report page: title, headline, sections, provenance."""

    title: str
    headline: str = ""
    sections: list[Section] = field(default_factory=list)

    def add(self, title: str, body: str, ident: str = "") -> None:
        """Append a section."""
        self.sections.append(Section(title, body, ident))

    def html(self) -> str:
        """The whole page, style and script inline."""
        toc = "".join(f'<a href="#{esc(s.ident)}">{esc(s.title)}</a>' for s in self.sections)
        body = "\n".join(f'<section id="{esc(s.ident)}" aria-labelledby="{esc(s.ident)}-h">'
                         f'<h2 id="{esc(s.ident)}-h">{esc(s.title)}</h2>\n{s.body}</section>'
                         for s in self.sections)  # fmt: skip
        headline = f'<p class="headline">{self.headline}</p>' if self.headline else ""
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="generator" content="{GENERATOR}">'
            f"<title>{esc(self.title)}</title><style>{_asset('report.css')}</style></head>\n"
            f'<body><header><h1>{esc(self.title)}</h1>{headline}<nav class="toc" aria-label="sections">{toc}</nav>'
            f"</header>\n<main>\n{body}\n</main>\n"
            '<div id="tip" role="tooltip" hidden></div>'
            f"<script>{_asset('report.js')}</script></body></html>\n"
        )


@cache
def _asset(name: str) -> str:
    return resources.files("circuitcut.reports.page").joinpath("assets", name).read_text(encoding="utf-8")


def versions() -> dict[str, str]:
    """Installed versions of circuitcut and the libraries behind a run (read from package metadata,
    without importing them)."""
    out = {}
    for name in ("circuitcut", "torch", "transformers", "safetensors", "tokenizers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def now() -> str:
    """The current time, UTC, to the second (ISO 8601)."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def is_ours(path: Path) -> bool:
    """Whether an existing file is a page circuitcut wrote (its generator mark in the first 2 kB)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return f'content="{GENERATOR}"' in fh.read(2048)
    except OSError:
        return False


def check_page_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a place for a page: refused (:class:`OutputError`) when a file there is not a
    circuitcut page."""
    p = Path(path)
    if p.is_dir() or (p.exists() and not is_ours(p)):
        raise OutputError(f"{p} exists and is not a circuitcut report; move it or choose another folder")
    return p


def write_page(path: str | os.PathLike[str], page: Page) -> Path:
    """Write a page atomically, never over a file circuitcut did not write."""
    return write_text(check_page_path(path), page.html())
