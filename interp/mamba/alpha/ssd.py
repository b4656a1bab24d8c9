"""Mamba-2 implicit attention: ``C Bᵀ`` per group scaled by decays factorised through chunk references (the
algorithm and numerics: :mod:`interp.mamba.alpha`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from interp.mamba.alpha._common import (
    F64,
    LOG2E,
    _check_rates,
    _compute_dtype,
    _decay,
    _heads,
    _in_place,
    _mul,
    _query_chunks,
    _rows,
    alpha_chunk,
)
from interp.mamba.buffers import empty_large

__all__ = ["mamba2_alpha"]


def mamba2_alpha(
    dt: Float[Tensor, "batch pos n_heads"],
    B: Float[Tensor, "batch pos n_groups d_state"],
    C: Float[Tensor, "batch pos n_groups d_state"],
    A: Float[Tensor, " n_heads"],
    *,
    rows: Sequence[int] | Tensor | None = None,
    heads: Sequence[int] | Tensor | None = None,
    dtype: torch.dtype = F64,
    chunk: int | None = None,
) -> Float[Tensor, "batch heads rows pos"]:
    """Mamba-2 implicit attention ``α[b, h, i, j] = (C_i · B_j) Δ_j exp(A_h (P_i - P_j))`` (Ali et al. 2024; the
    masked matrix ``M = L ∘ (C Bᵀ)`` of Dao & Gu 2024 times Δ_j) in ``dtype`` (float64 by default).

    ``dt``, ``A`` hold all ``H`` heads (head h reads group ``h // (H // G)``); ``heads`` selects some of them.
    ``C Bᵀ`` is one matrix product per group, shared by the group's heads; each query chunk scales it by the two
    decay factors through the chunk's reference and takes the in-chunk decays from exact segment sums (module
    docstring). Equivalent to :func:`mamba2_alpha_ref`.
    """
    dtype = _compute_dtype(dtype)
    b, T, H = dt.shape
    G = B.shape[2]
    if H % G:
        raise ValueError(f"the number of heads ({H}) must be a multiple of the number of B/C groups ({G})")
    _check_rates(dt, A)
    rows_t = _rows(rows, T, dt.device)
    heads_t = _heads(heads, H, dt.device)
    Q = chunk or alpha_chunk(T)
    Cq = C if rows_t is None else C[:, rows_t]
    CB = torch.einsum("bign,bjgn->bgij", Cq.to(dtype), B.to(dtype))  # [b, G, R, T]
    if heads_t is not None:  # one "group" per selected head: [b, h, 1, R, T]
        CB, dt, A = CB[:, heads_t // (H // G), None], dt[:, :, heads_t], A[heads_t]
    else:  # heads of a group side by side: [b, G, 1, R, T] against [b, G, H/G, R, T]
        CB = CB[:, :, None]
    n_h = dt.shape[2]
    split = (CB.shape[1], n_h // CB.shape[1])
    P = torch.cumsum(dt.to(F64), dim=1).transpose(1, 2).unflatten(1, split)  # [b, G', hpg, T]
    dts = dt.to(dtype).transpose(1, 2).unflatten(1, split)
    A2 = (A.to(F64) * LOG2E).to(dtype).unflatten(0, split)[..., None]  # [G', hpg, 1]
    if rows_t is None:  # every element is written below: no zero-fill pass over the whole output
        out = empty_large((b, n_h, T, T), dtype=dtype, device=dt.device)
    else:
        out = torch.zeros(b, n_h, len(rows_t), T, dtype=dtype, device=dt.device)
    out5 = out.unflatten(1, split)
    ip = _in_place(dt, B, C, A)
    for s, e, sel in _query_chunks(T, Q, rows_t):
        full = isinstance(sel, slice)
        pos = torch.arange(s, e, device=dt.device) if full else rows_t[sel]
        cb = CB[..., sel, :e]
        ref = P[..., s - 1: s] if s else torch.zeros_like(P[..., :1])
        # keys before the chunk: C Bᵀ scaled by exp(A (P_i - ρ)) and Δ_j exp(A (ρ - P_j)), both <= 1
        left = _decay((P[..., pos] - ref).to(dtype) * A2, ip)
        right = _mul(_decay((ref - P[..., :s]).to(dtype) * A2, ip), dts[..., :s], ip)
        seg = (P[..., pos, None] - P[..., None, s:e]).to(dtype) * A2[..., None]  # in-chunk segment sums
        seg = seg.masked_fill(torch.arange(s, e, device=pos.device)[None, :] > pos[:, None], -math.inf)
        inner = _decay(seg, ip)
        if ip and full:  # straight into the output
            dst = out5[..., sel, :e]
            torch.mul(cb[..., :s], left[..., None], out=dst[..., :s]).mul_(right[..., None, :])
            torch.mul(cb[..., s:e], inner, out=dst[..., s:e]).mul_(dts[..., None, s:e])
        else:
            dst = torch.cat([cb[..., :s] * left[..., None] * right[..., None, :],
                             cb[..., s:e] * inner * dts[..., None, s:e]], -1)
            out[:, :, sel, :e] = dst.flatten(1, 2)
        if full:
            out[:, :, sel, e:] = 0.0
    return out
