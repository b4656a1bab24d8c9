"""Average causal traces over prompts by token role (Meng et al. 2022, Figure 2 / section 2.2).

Prompts differ in length, so ROME averages the indirect effect over token *categories*: the first, middle and last
subject tokens, the first token after the subject, the further tokens, and the last token. With ``restore="span"``
the subject is one unit (``subject span``). Tokens before the subject (always 0 effect) are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from interp.reports import Result, figure_html, table_html
from interp.tracing.result import TraceResult

__all__ = ["CATEGORIES", "token_categories", "average_trace", "AverageTrace"]

CATEGORIES = ("first subject token", "middle subject tokens", "last subject token", "subject span",
              "first subsequent token", "further tokens", "last token")


def token_categories(result: TraceResult) -> list[str | None]:
    """The category of each unit (column) of ``result``; None for units before the subject."""
    start, stop = result.subject_span
    last = len(result.str_tokens) - 1
    out: list[str | None] = []
    for unit in result.units:
        first = unit[0]
        if len(unit) > 1:
            out.append("subject span")
        elif first == last:
            out.append("last token")
        elif first < start:
            out.append(None)
        elif first < stop:
            out.append("first subject token" if first == start else
                       "last subject token" if first == stop - 1 else "middle subject tokens")
        else:
            out.append("first subsequent token" if first == stop else "further tokens")
    return out


@dataclass(frozen=True, eq=False)
class AverageTrace(Result):
    """Mean indirect effect per token category and layer over several traces (ROME's average-effect figure)."""

    categories: list[str]
    """Rows of ``effect`` (the categories present)."""
    effect: Tensor = field(repr=False)
    """``[category, layer]``: mean indirect effect."""
    layers: list[int]
    n_prompts: int
    site: str
    restore: str
    mean_total_effect: float
    """Mean total effect ``P_clean - P_corrupt`` over the prompts."""

    title = "Average causal trace"

    def to_dict(self) -> dict[str, Any]:
        return {"categories": self.categories, "effect": self.effect, "layers": self.layers,
                "n_prompts": self.n_prompts, "site": self.site, "restore": self.restore,
                "mean_total_effect": self.mean_total_effect}

    def peak(self, category: str) -> tuple[int, float]:
        """``(layer, mean indirect effect)`` where ``category`` peaks."""
        row = self.effect[self.categories.index(category)]
        i = int(row.argmax())
        return self.layers[i], float(row[i])

    def plot(self):
        import plotly.graph_objects as go

        fig = go.Figure(go.Heatmap(z=self.effect.numpy(), x=self.layers, y=self.categories, colorscale="Purples",
                                   zmin=0, colorbar_title="mean IE",
                                   hovertemplate="%{y} layer %{x}<br>mean IE=%{z:.4f}<extra></extra>"))
        fig.update_layout(title=f"Average indirect effect over {self.n_prompts} prompts ({self.site}, restore "
                                f"{self.restore}); mean total effect {self.mean_total_effect:.3f}",
                          xaxis_title="layer", yaxis_autorange="reversed")
        return fig

    def _html_sections(self) -> list:
        rows = [(c, *self.peak(c)) for c in self.categories]
        return [("Peaks", table_html(rows, ["category", "layer", "mean IE"])), ("Heatmap", figure_html(self.plot()))]


def average_trace(results: Sequence[TraceResult]) -> AverageTrace:
    """Average the indirect effects of ``results`` (same model, site, restore mode and layers) by token category."""
    if not results:
        raise ValueError("results is empty")
    first = results[0]
    for r in results[1:]:
        if (r.site, r.restore, r.layers) != (first.site, first.restore, first.layers):
            raise ValueError("results must share site, restore mode and layers to be averaged")
    sums: dict[str, Tensor] = {}
    counts: dict[str, int] = {}
    for r in results:
        per: dict[str, list[Tensor]] = {}
        for column, category in enumerate(token_categories(r)):
            if category is not None:
                per.setdefault(category, []).append(r.indirect_effect[:, column])
        for category, cols in per.items():  # one value per prompt and category (middle tokens averaged first)
            sums[category] = sums.get(category, 0) + torch.stack(cols).mean(0)
            counts[category] = counts.get(category, 0) + 1
    cats = [c for c in CATEGORIES if c in sums]
    effect = torch.stack([sums[c] / counts[c] for c in cats])
    return AverageTrace(cats, effect, list(first.layers), len(results), first.site, first.restore,
                        float(sum(r.total_effect for r in results) / len(results)))
