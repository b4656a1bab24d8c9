"""The conventions every analysis result follows (``saes.metrics.SAEEval`` was the template).

A result is a small dataclass with per-field docstrings that defines ``to_dict()`` (JSON-ready values) and
``plot()`` (a plotly figure); :class:`Result` adds the rest once: ``to_json()``, ``save_json(path)``,
``save_html(path)`` (one self-contained page) and ``_repr_html_`` for Jupyter.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from interp.atomic import atomic_write_json

__all__ = ["Result", "to_jsonable"]


def to_jsonable(value: Any) -> Any:
    """Tensors, numpy arrays and numbers -> plain lists/floats/ints; dict keys -> str; NaN/inf -> None."""
    try:
        import torch

        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().tolist()
    except ImportError:  # pragma: no cover
        pass
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple, dict, str)):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


class Result:
    """Mixin for analysis results: subclasses define ``to_dict()`` and ``plot()`` (and may override
    ``_html_sections()`` for a richer page)."""

    title: str = "Result"

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def plot(self):  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def to_json(self, **kwargs) -> str:
        """The result as a JSON string (``to_dict()`` made JSON-safe)."""
        return json.dumps(to_jsonable(self.to_dict()), **kwargs)

    def save_json(self, path: str | Path) -> Path:
        """Write ``to_dict()`` as JSON, atomically."""
        atomic_write_json(to_jsonable(self.to_dict()), Path(path))
        return Path(path)

    def _html_sections(self) -> list:
        from interp.reports.html import figure_html

        return [figure_html(self.plot())]

    def save_html(self, path: str | Path) -> Path:
        """One self-contained HTML page (plotly inline, opens offline), written atomically."""
        from interp.reports.html import page, save_html

        return save_html(path, page(self.title, self._html_sections()))

    def _repr_html_(self) -> str:
        from interp.reports.html import notebook_figure

        return notebook_figure(self.plot())
