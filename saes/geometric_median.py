"""Geometric median by Weiszfeld's algorithm, used to initialise ``b_dec`` (Bricken et al. 2023)."""

from __future__ import annotations

import torch
from torch import Tensor


def geometric_median(points: Tensor, max_iter: int = 100, tol: float = 1e-7) -> Tensor:
    """argmin_y sum_i ||points_i - y|| for ``points [n, d]`` (Weiszfeld iterations from the mean; stops when the
    relative change of the objective is below ``tol``)."""
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError(f"points must be [n>0, d], got {tuple(points.shape)}")
    y = points.mean(0)
    prev = (points - y).norm(dim=-1).sum()
    for _ in range(max_iter):
        dist = (points - y).norm(dim=-1).clamp_min(1e-12)
        w = 1.0 / dist
        y = (w[:, None] * points).sum(0) / w.sum()
        obj = (points - y).norm(dim=-1).sum()
        if torch.abs(prev - obj) <= tol * obj.clamp_min(1e-30):
            break
        prev = obj
    return y
