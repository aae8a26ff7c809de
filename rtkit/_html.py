"""Small escaped HTML tables for notebook summaries (``_repr_html_``).

Every summary has the same shape as ``Case._repr_html_`` and
``Plan._repr_html_``: ``<div><b>rtkit Kind</b> title<table>...</table></div>``,
with every text value passed through :func:`html.escape`.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any


def cell(value: Any) -> str:
    """An escaped table cell."""
    return f"<td>{html.escape(str(value))}</td>"


def swatch(rgb: Sequence[int]) -> str:
    """A cell holding a small square of colour ``rgb`` (0-255) and its value."""
    r, g, b = (int(c) for c in rgb[:3])
    return (f'<td><span style="display:inline-block;width:1em;height:1em;vertical-align:middle;'
            f'border:1px solid #444;background-color:rgb({r},{g},{b})"></span> '
            f"{html.escape(f'{r}, {g}, {b}')}</td>")


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """``<table>`` of header names (escaped) and rows of ready cells (from :func:`cell` / :func:`swatch`)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def summary(kind: str, title: str, body: str, notes: Iterable[str] = ()) -> str:
    """The whole summary: kind in bold, an escaped title, ``body`` (HTML), an escaped note list."""
    items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return (f"<div><b>rtkit {html.escape(kind)}</b> {html.escape(title)}" + body
            + (f"<ul>{items}</ul>" if items else "") + "</div>")


def number(x: float | None, digits: int = 2) -> str:
    """A fixed-point number, ``-`` for None or NaN."""
    if x is None:
        return "-"
    x = float(x)
    return "-" if x != x else f"{x:.{digits}f}"
