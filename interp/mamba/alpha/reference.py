"""Per-step float64 references of the implicit-attention kernels (same signatures, no chunking): the recurrence
run once per key, as the scan computes it (Ali et al. 2024; Gu & Dao 2023; Dao & Gu 2024)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from interp.mamba.alpha._common import F64, _heads, _rows

__all__ = ["mamba1_alpha_ref", "mamba2_alpha_ref"]


def mamba1_alpha_ref(
    dt: Float[Tensor, "batch pos d_inner"],
    B: Float[Tensor, "batch pos d_state"],
    C: Float[Tensor, "batch pos d_state"],
    A: Float[Tensor, "d_inner d_state"],
    *,
    rows: Sequence[int] | Tensor | None = None,
) -> Float[Tensor, "batch d_inner rows pos"]:
    """The per-step float64 reference of :func:`mamba1_alpha` (same signature, no chunking): the scan run once per
    key, ``h^(j)_j = Δ_j B_j``, ``h^(j)_i = exp(Δ_i A) h^(j)_{i-1}``, ``α_ij = C_i · h^(j)_i`` -- the product
    ``Π_{k=j+1..i} Ā_k`` step by step, as the recurrence computes it (Ali et al. 2024, eq. for α)."""
    dt, B, C, A = dt.to(F64), B.to(F64), C.to(F64), A.to(F64)
    b, T, d = dt.shape
    rows_t = _rows(rows, T, dt.device)
    states = dt.new_zeros(b, d, A.shape[1], T)  # [b, d, N, key]: every key's state at the current step
    out = dt.new_zeros(b, d, T, T)
    for i in range(T):
        states *= torch.exp(dt[:, i, :, None] * A)[..., None]
        states[..., i] = dt[:, i, :, None] * B[:, i, None, :]
        out[:, :, i] = torch.einsum("bn,bdnj->bdj", C[:, i], states)
    return out if rows_t is None else out[:, :, rows_t]


def mamba2_alpha_ref(
    dt: Float[Tensor, "batch pos n_heads"],
    B: Float[Tensor, "batch pos n_groups d_state"],
    C: Float[Tensor, "batch pos n_groups d_state"],
    A: Float[Tensor, " n_heads"],
    *,
    rows: Sequence[int] | Tensor | None = None,
    heads: Sequence[int] | Tensor | None = None,
) -> Float[Tensor, "batch heads rows pos"]:
    """The per-step float64 reference of :func:`mamba2_alpha` (same signature): each key's decay multiplied by
    ``exp(Δ_i A_h)`` step by step, ``α_ij = (C_i · B_j) Δ_j Π_{k=j+1..i} exp(Δ_k A_h)`` (Dao & Gu 2024, SSD)."""
    dt, B, C, A = dt.to(F64), B.to(F64), C.to(F64), A.to(F64)
    b, T, H = dt.shape
    G = B.shape[2]
    if H % G:
        raise ValueError(f"the number of heads ({H}) must be a multiple of the number of B/C groups ({G})")
    rows_t = _rows(rows, T, dt.device)
    heads_t = torch.arange(H) if heads is None else _heads(heads, H, dt.device)
    CB = torch.einsum("bign,bjgn->bgij", C, B)[:, heads_t // (H // G)]  # [b, h, T, T]
    dt, A = dt[:, :, heads_t], A[heads_t]
    decay = dt.new_zeros(b, len(heads_t), T)  # [b, h, key]
    out = dt.new_zeros(b, len(heads_t), T, T)
    for i in range(T):
        decay *= torch.exp(dt[:, i] * A)[..., None]
        decay[..., i] = 1.0
        out[:, :, i] = CB[:, :, i] * decay * dt.transpose(1, 2)
    return out if rows_t is None else out[:, :, rows_t]
