"""Reports: self-contained HTML pages (plotly inline, no CDN) and the result-type conventions every analysis shares.

- :class:`Result`: a mixin for analysis results (dataclasses) giving ``to_json()``, ``save_json(path)``,
  ``save_html(path)`` and ``_repr_html_`` from two methods the result defines: ``to_dict()`` and ``plot()``.
- :func:`page`, :func:`figure_html`, :func:`table_html`, :func:`save_html`: build and write one offline HTML file.
"""

from interp.reports.html import escape, figure_html, page, save_html, table_html
from interp.reports.result import Result, to_jsonable

__all__ = ["Result", "to_jsonable", "page", "figure_html", "table_html", "save_html", "escape"]
