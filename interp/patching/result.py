"""``PatchResult``: one activation-patching sweep with its baselines, as a plot, JSON and an offline HTML page."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from interp.models.loading import as_hooked
from interp.models.memory import BudgetLike
from interp.reports import Result, figure_html, table_html
from interp.reports.html import escape

__all__ = ["PatchResult", "sweep"]


@dataclass(frozen=True, eq=False)
class PatchResult(Result):
    """Metric of the corrupted run with one clean activation slice patched in, per cell (Vig et al. 2020)."""

    site: str
    """Site keyword (:data:`interp.patching.SITES`)."""
    axes: tuple[str, ...]
    """Axes of ``values``, e.g. ``("layer", "pos")``."""
    values: Tensor = field(repr=False)
    """Patched metric per cell (mean over prompts)."""
    clean_metric: float
    """Metric of the clean run."""
    corrupt_metric: float
    """Metric of the corrupted run (what a patch that changes nothing scores)."""
    layers: list[int]
    positions: list[int]
    heads: list[int]
    clean_str_tokens: list[str]
    """Tokens of the first clean prompt."""
    corrupt_str_tokens: list[str]
    """Tokens of the first corrupted prompt."""
    metric: str
    """What the metric measures."""

    title = "Activation patching"

    def normalized(self) -> Tensor:
        """``(value - corrupt) / (clean - corrupt)``: 0 = no recovery, 1 = the clean run's metric."""
        gap = self.clean_metric - self.corrupt_metric
        if gap == 0:
            raise ValueError("clean and corrupted metrics are equal; the normalised effect is undefined")
        return (self.values - self.corrupt_metric) / gap

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site, "axes": list(self.axes), "values": self.values, "clean_metric": self.clean_metric,
                "corrupt_metric": self.corrupt_metric, "layers": self.layers, "positions": self.positions,
                "heads": self.heads, "clean_str_tokens": self.clean_str_tokens,
                "corrupt_str_tokens": self.corrupt_str_tokens, "metric": self.metric}

    def _pos_labels(self) -> list[str]:
        return [f"{p}:{self.clean_str_tokens[p]!r}"[:24] if p < len(self.clean_str_tokens) else str(p)
                for p in self.positions]

    def plot(self):
        """Heatmap of the normalised effect (the raw metric when the clean and corrupted metrics tie): layers
        down, positions or heads across (``[layer, pos, head]``: one column per (position, head))."""
        import plotly.graph_objects as go

        from interp.plotting import color_range

        try:
            data, label = self.normalized(), "normalised effect"
        except ValueError:
            data, label = self.values, "metric"
        pos, heads = self._pos_labels(), [f"H{h}" for h in self.heads]
        if self.axes == ("layer", "pos"):
            x = pos
        elif self.axes == ("layer", "head"):
            x = heads
        elif self.axes == ("layer", "pos", "head"):
            x, data = [f"{p} {h}" for p in pos for h in heads], data.flatten(1)
        else:  # ("layer", "head", "dest")
            x, data = [f"{h} {p}" for h in heads for p in pos], data.flatten(1)
        fig = go.Figure(go.Heatmap(z=data.numpy(), x=x, y=[f"L{layer}" for layer in self.layers],
                                   **color_range(data), colorbar_title=label,
                                   hovertemplate="%{y} %{x}<br>" + label + "=%{z:.3f}<extra></extra>"))
        fig.update_layout(title=f"Patching {self.site}: {self.metric} (clean {self.clean_metric:.3f}, corrupted "
                                f"{self.corrupt_metric:.3f})", yaxis_autorange="reversed", xaxis_title=" x ".join(
                                    a for a in self.axes if a != "layer"), yaxis_title="layer",
                          height=max(360, 22 * len(self.layers) + 160))
        return fig

    def _html_sections(self) -> list:
        flat = self.values.flatten()
        best = int(flat.argmax())
        idx = []
        for size in reversed(self.values.shape):
            idx.append(best % size)
            best //= size
        idx.reverse()
        cell = ", ".join(f"{a}={v}" for a, v in zip(self.axes, idx))
        rows = [("site", self.site), ("metric", self.metric), ("clean metric", self.clean_metric),
                ("corrupted metric", self.corrupt_metric), ("largest cell", f"{cell}: {float(flat.max()):.4g}"),
                ("clean prompt", "".join(self.clean_str_tokens)),
                ("corrupted prompt", "".join(self.corrupt_str_tokens))]
        return [("Summary", table_html(rows, ["", ""])), ("Heatmap", figure_html(self.plot())),
                ("Notes", f"<p class='note'>{escape(self._note())}</p>")]

    def _note(self) -> str:
        return ("Each cell: the corrupted run with that one activation slice copied from the clean run, scored by "
                "the metric and averaged over prompts; normalised as (value - corrupted) / (clean - corrupted).")


def sweep(model, clean_tokens, corrupt_tokens, metric, site: str = "resid", *, positions: Sequence[int] | None = None,
          layers: Sequence[int] | None = None, batch_size: int | None = None, memory_budget: BudgetLike = None,
          progress: bool = True) -> PatchResult:
    """Activation patching of ``site`` as a :class:`PatchResult` (values as :func:`interp.patching.patch_activations`
    returns them, plus baselines and token strings for the plot and the HTML report)."""
    model = as_hooked(model, "sweep")
    from interp.patching.activation import run_patching
    from interp.patching.inputs import show_tokens
    from interp.patching.metrics import Metric, bind_metric

    metric = bind_metric(metric, model)
    run = run_patching(model, clean_tokens, corrupt_tokens, metric, site, positions=positions, layers=layers,
                       batch_size=batch_size, memory_budget=memory_budget, progress=progress)
    describe = metric.describe() if isinstance(metric, Metric) else getattr(metric, "__name__", "metric")
    return PatchResult(site, run.axes, run.values, run.clean_metric, run.corrupt_metric, run.layers, run.positions,
                       run.heads, [str(t) for t in show_tokens(model, run.clean_tokens[0])],
                       [str(t) for t in show_tokens(model, run.corrupt_tokens[0])], describe)
