"""Plotly figures for what the hook layer returns (attention patterns, per-layer traces)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

__all__ = ["attention_heatmap", "attention_grid", "color_range"]


def _labels(str_tokens: Sequence[str] | None, n: int) -> list[str]:
    if str_tokens is None:
        return [str(i) for i in range(n)]
    if len(str_tokens) != n:
        raise ValueError(f"str_tokens has {len(str_tokens)} entries but the pattern has {n} positions")
    # plotly merges equal category labels: make each unique by its position
    return [f"{i}:{t!r}"[: 24] for i, t in enumerate(str_tokens)]


def color_range(data: Tensor) -> dict:
    """Heatmap colour arguments that fit the values: probabilities on a fixed [0, 1] scale; larger non-negative
    values (raw implicit attention |α|) on [0, max]; signed values (signed α, patching effects) on a diverging
    scale centred at 0."""
    lo, hi = float(data.min()), float(data.max())
    if lo < 0:
        bound = max(-lo, hi) or 1.0
        return dict(colorscale="RdBu", zmid=0, zmin=-bound, zmax=bound)
    return dict(colorscale="Blues", zmin=0, zmax=1 if hi <= 1 else hi)


def attention_heatmap(pattern: Tensor, str_tokens: Sequence[str] | None = None, title: str = ""):
    """Heatmap of one head's ``pattern [query, key]`` (query rows, key columns); the colour scale fits the values
    (:func:`color_range`)."""
    import plotly.graph_objects as go

    if pattern.ndim != 2 or pattern.shape[0] != pattern.shape[1]:
        raise ValueError(f"pattern must be [query, key] and square; got shape {tuple(pattern.shape)}")
    labels = _labels(str_tokens, pattern.shape[0])
    data = pattern.detach().float().cpu()
    fig = go.Figure(go.Heatmap(z=data.numpy(), x=labels, y=labels, **color_range(data),
                               hovertemplate="query %{y}<br>key %{x}<br>value=%{z:.3f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="key", yaxis_title="query", yaxis_autorange="reversed",
                      width=520, height=480)
    return fig


def attention_grid(patterns: Tensor, layer_labels: Sequence[int] | None = None, max_cols: int = 12):
    """Small multiples of ``patterns [layer, head, query, key]`` (one batch row): one tile per head, on one colour
    scale fitted to the values (:func:`color_range`)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if patterns.ndim != 4:
        raise ValueError(f"patterns must be [layer, head, query, key]; got shape {tuple(patterns.shape)}")
    n_layers, n_heads = patterns.shape[:2]
    layer_labels = list(layer_labels) if layer_labels is not None else list(range(n_layers))
    cols = min(n_heads, max_cols)
    rows = n_layers * -(-n_heads // cols)
    titles = [f"L{layer_labels[l_]}H{h}" for l_ in range(n_layers) for h in range(n_heads)]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.01, vertical_spacing=0.04)
    data = patterns.detach().float().cpu()
    colors = color_range(data)  # one scale for every tile, so tiles compare
    for i, (l_, h) in enumerate((l_, h) for l_ in range(n_layers) for h in range(n_heads)):
        fig.add_trace(go.Heatmap(z=data[l_, h].numpy(), showscale=i == 0, **colors),
                      row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False, autorange="reversed")
    fig.update_layout(height=max(300, 110 * rows), width=max(400, 95 * cols), margin=dict(l=10, r=10, t=40, b=10))
    return fig

