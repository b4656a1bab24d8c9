"""Attention figures fit their colour scale to the values (probabilities, raw implicit attention, signed maps)."""

import torch

from interp.plotting import attention_grid, attention_heatmap, color_range


def test_color_range_fits_the_values():
    assert color_range(torch.tensor([0.0, 0.5, 1.0])) == dict(colorscale="Blues", zmin=0, zmax=1)
    assert color_range(torch.tensor([0.0, 3.5]))["zmax"] == 3.5
    signed = color_range(torch.tensor([-2.0, 1.0]))
    assert signed["zmid"] == 0 and signed["zmin"] == -2 and signed["zmax"] == 2


def test_figures_use_the_fitted_scale():
    raw = torch.rand(5, 5).tril() * 7  # raw |alpha| is not bounded by 1
    fig = attention_heatmap(raw)
    assert fig.data[0].zmax == float(raw.max())
    grid = attention_grid(torch.randn(2, 3, 4, 4))
    assert all(trace.zmid == 0 for trace in grid.data)
