"""Plain eager references for the sparse SAE ops; every fast implementation is tested against these.

A k-sparse batch of latents is a pair ``(vals [B, K], idx [B, K] int64)``: row b's latent ``idx[b, j]`` has value
``vals[b, j]`` (repeated indices add up; zero values are allowed as padding).
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor


def sparse_decode(vals: Float[Tensor, "batch k"], idx: Int[Tensor, "batch k"],
                  W: Float[Tensor, "n_latents d"]) -> Float[Tensor, "batch d"]:
    """``[B, D]`` rows of W summed with weights; equivalent to ``(vals[..., None] * W[idx]).sum(-2)``."""
    return (vals[..., None] * W[idx]).sum(-2)


def gather_dot(dy: Float[Tensor, "batch d"], idx: Int[Tensor, "batch k"],
               W: Float[Tensor, "n_latents d"]) -> Float[Tensor, "batch k"]:
    """``[B, K]`` dot products of dy's rows with the selected rows of W;
    equivalent to ``(dy[:, None, :] * W[idx]).sum(-1)``."""
    return (dy[:, None, :] * W[idx]).sum(-1)


def scatter_outer(vals: Float[Tensor, "batch k"], idx: Int[Tensor, "batch k"], dy: Float[Tensor, "batch d"],
                  n_rows: int) -> Float[Tensor, "n_rows d"]:
    """``[n_rows, D]`` transposed sparse product ``A^T @ dy`` with ``A[b, idx[b, j]] += vals[b, j]``; equivalent to
    ``zeros(n_rows, D).index_add_(0, idx.flatten(), (vals[..., None] * dy[:, None, :]).flatten(0, 1))``."""
    out = torch.zeros(n_rows, dy.shape[-1], dtype=dy.dtype, device=dy.device)
    return out.index_add_(0, idx.flatten(), (vals[..., None] * dy[:, None, :]).flatten(0, 1))
