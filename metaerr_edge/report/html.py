"""The few HTML pieces the report is made of: escaped text, tables, embedded figures, sections, the page.

Everything is inline (one ``<style>`` block, images as ``data:`` URIs), so the file opens anywhere,
offline, and reads without JavaScript.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f; margin: 0;
       background: #fafafa; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; }
header { border-bottom: 1px solid #ddd; margin-bottom: 18px; }
h1 { font-size: 26px; margin: 8px 0 4px; } h2 { font-size: 20px; margin: 0 0 6px; }
h3 { font-size: 16px; margin: 18px 0 6px; }
.sub { color: #555; margin: 0 0 12px; }
nav a { margin-right: 14px; color: #0b57d0; text-decoration: none; }
section { background: #fff; border: 1px solid #e3e3e3; border-radius: 8px; padding: 18px 22px; margin: 18px 0; }
details.read { background: #f3f6fb; border-left: 3px solid #0b57d0; padding: 6px 12px; margin: 6px 0 12px; }
details.read summary { cursor: pointer; font-weight: 600; color: #0b57d0; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid #e6e6e6; padding: 4px 9px; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; font-weight: 600; } td:first-child, th:first-child { text-align: left; }
td.best { font-weight: 700; background: #e7f4e8; }
tr.meta td:first-child { font-weight: 600; color: #0b57d0; }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: 3px 18px; margin: 6px 0; }
dl.kv dt { color: #555; } dl.kv dd { margin: 0; font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px; }
figure { margin: 12px 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 13px; }
.note { color: #8a5a00; background: #fff6e0; border-radius: 4px; padding: 4px 8px; }
.scroll { overflow-x: auto; }
footer { color: #777; font-size: 12px; margin-top: 30px; }
"""


def esc(text: object) -> str:
    """``text`` as HTML text (``<``, ``&`` and quotes escaped)."""
    return html.escape(str(text), quote=True)


def fmt(value: object, digits: int = 4, scale: float = 1.0) -> str:
    """A number for a table cell: ``-`` for None/NaN, else ``scale * value`` with ``digits`` decimals."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if math.isnan(value):
        return "-"
    return f"{scale * value:.{digits}f}"


@dataclass(frozen=True)
class Column:
    """One table column: its header, the formatter of a row's value, and which way is better (for marking the best).

    ``better``: ``"high"``, ``"low"`` or None (nothing marked).
    """

    header: str
    key: str
    digits: int = 4
    scale: float = 1.0
    better: str | None = None


def table(columns: Sequence[Column], rows: Sequence[tuple[str, dict]], *, first: str = "name",
          highlight: Iterable[str] = (), best_of: Iterable[str] | None = None) -> str:
    """An HTML table: one row per ``(label, values)``, the best value of each ``better`` column marked.

    ``highlight``: row labels drawn as MetaErr rows. ``best_of``: the labels competing for "best"
    (default: every row). Several rows tied at the best value are all marked.
    """
    best_of = set(best_of) if best_of is not None else {label for label, _ in rows}
    best: dict[str, float] = {}
    for col in columns:
        values = [v[col.key] for label, v in rows if label in best_of and _is_number(v.get(col.key))]
        if col.better and values:
            best[col.key] = max(values) if col.better == "high" else min(values)
    marked = set(highlight)
    out = ['<div class="scroll"><table>', "<thead><tr>" + f"<th>{esc(first)}</th>"
           + "".join(f"<th>{esc(c.header)}</th>" for c in columns) + "</tr></thead><tbody>"]
    for label, values in rows:
        cells = []
        for col in columns:
            value = values.get(col.key)
            is_best = col.key in best and label in best_of and _is_number(value) and value == best[col.key]
            text = fmt(value, col.digits, col.scale) if _is_number(value) or value is None else esc(value)
            cells.append(f'<td class="best">{text}</td>' if is_best else f"<td>{text}</td>")
        cls = ' class="meta"' if label in marked else ""
        out.append(f"<tr{cls}><td>{esc(label)}</td>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def key_values(pairs: Iterable[tuple[str, object]]) -> str:
    """A definition list of ``name: value`` pairs (values shown as code)."""
    return '<dl class="kv">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in pairs) + "</dl>"


def figure(png: bytes, alt: str, caption: str = "") -> str:
    """A PNG embedded as a ``data:`` URI, with its alt text and an optional caption."""
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}">{cap}</figure>'


@dataclass(frozen=True)
class Section:
    """One part of the page: an anchor id, a title, a "how to read this" paragraph and the HTML body."""

    id: str
    title: str
    how_to_read: str
    body: str

    def render(self) -> str:
        read = f'<details class="read" open><summary>How to read this</summary><p>{esc(self.how_to_read)}</p></details>'
        return f'<section id="{esc(self.id)}"><h2>{esc(self.title)}</h2>\n{read}\n{self.body}\n</section>'


def page(title: str, subtitle: str, sections: Sequence[Section], footer: str) -> str:
    """The whole document: a header with a table of contents, the sections, a footer."""
    nav = "".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in sections)
    body = "\n".join(s.render() for s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(title)}</title>\n<style>{_CSS}</style></head>\n<body><main>\n"
            f'<header><h1>{esc(title)}</h1><p class="sub">{esc(subtitle)}</p><nav>{nav}</nav></header>\n'
            f"{body}\n<footer>{esc(footer)}</footer>\n</main></body></html>\n")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
