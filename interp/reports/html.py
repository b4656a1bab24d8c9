"""One offline HTML file per report: plotly.js inlined once in the page, figures as divs, plain tables.

A page opens without network (no CDN): the plotly bundle of the installed ``plotly`` package is embedded in the
``<head>``; every figure after it is a ``<div>`` plus a small script. Files are written atomically.
"""

from __future__ import annotations

import html as _html
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from interp.atomic import atomic_file

__all__ = ["escape", "plotly_js", "figure_html", "table_html", "page", "save_html", "notebook_figure"]

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #555; font-size: 0.92em; } .warn { color: #a33; } code { background: #f5f5f5; padding: 0 0.2em; }
"""


def escape(text: Any) -> str:
    """HTML-escape ``str(text)``."""
    return _html.escape(str(text))


def plotly_js() -> str:
    """The installed plotly.js bundle, for inlining (about 4.5 MB)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def figure_html(fig, *, include_js: bool = False) -> str:
    """A plotly figure as an HTML fragment (a div and its script); ``include_js`` embeds plotly.js in it too."""
    return fig.to_html(full_html=False, include_plotlyjs=bool(include_js), config={"displaylogo": False})


_notebook_js_sent = False


def notebook_figure(fig) -> str:
    """A figure for ``_repr_html_`` in Jupyter, offline: plotly.js is embedded in the first figure shown in this
    process and reused by later ones (as plotly's own offline notebook mode does)."""
    global _notebook_js_sent
    include = not _notebook_js_sent
    _notebook_js_sent = True
    return figure_html(fig, include_js=include)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f'<td class="num">{value:.4g}</td>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="num">{value}</td>'
    if isinstance(value, RawHTML):
        return f"<td>{value}</td>"
    return f"<td>{escape(value)}</td>"


class RawHTML(str):
    """A string put into a table cell without escaping."""


def table_html(rows: Iterable[Sequence[Any]], header: Sequence[str] | None = None, caption: str | None = None) -> str:
    """A plain HTML table; floats are shown with 4 significant digits."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header) if header else ""
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}{'<thead><tr>' + head + '</tr></thead>' if head else ''}<tbody>{body}</tbody></table>"


def page(title: str, sections: Iterable[str | tuple[str, str]], *, subtitle: str | None = None) -> str:
    """A complete HTML document: ``sections`` are HTML fragments, or ``(heading, fragment)`` pairs; plotly.js is
    inlined once in the head, so figures made with :func:`figure_html` (default ``include_js=False``) render
    offline."""
    parts = []
    for section in sections:
        if isinstance(section, tuple):
            heading, body = section
            parts.append(f"<section><h2>{escape(heading)}</h2>{body}</section>")
        else:
            parts.append(section)
    sub = f'<p class="note">{escape(subtitle)}</p>' if subtitle else ""
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style>"
        f'<script type="text/javascript">{plotly_js()}</script></head>'
        f"<body><h1>{escape(title)}</h1>{sub}{''.join(parts)}</body></html>"
    )


def save_html(path: str | Path, document: str) -> Path:
    """Write ``document`` to ``path`` atomically (a complete file or none); returns the path."""
    path = Path(path)
    with atomic_file(path) as tmp:
        Path(tmp).write_text(document, encoding="utf-8")
    return path
