"""Triton kernels for the sparse SAE ops (GPU; on CPU tensors only under ``TRITON_INTERPRET=1``).

Same signatures and semantics as :mod:`interp.kernels.reference`; each wrapper's docstring states the eager
expression it computes. Importing this module requires triton; :mod:`interp.kernels.backend` guards the import.
Accumulation is in float32 (float64 for float64 inputs).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from jaxtyping import Float, Int
from torch import Tensor

from interp.kernels.cpu_ops import latent_major


def _acc_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _block(n: int, cap: int) -> int:
    return max(16, min(cap, triton.next_power_of_2(n)))


@triton.jit
def _decode_kernel(vals_ptr, idx_ptr, w_ptr, out_ptr, K, D, s_vb, s_vk, s_ib, s_ik, s_wl, s_wd, s_ob, s_od,
                   BLOCK_D: tl.constexpr, ACC: tl.constexpr):
    b = tl.program_id(0)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = d < D
    acc = tl.zeros([BLOCK_D], dtype=ACC)
    for j in range(K):
        i = tl.load(idx_ptr + b * s_ib + j * s_ik)
        v = tl.load(vals_ptr + b * s_vb + j * s_vk).to(ACC)
        w = tl.load(w_ptr + i * s_wl + d * s_wd, mask=dmask, other=0.0).to(ACC)
        acc += v * w
    tl.store(out_ptr + b * s_ob + d * s_od, acc.to(out_ptr.dtype.element_ty), mask=dmask)


def sparse_decode(vals: Float[Tensor, "batch k"], idx: Int[Tensor, "batch k"],
                  W: Float[Tensor, "n_latents d"]) -> Float[Tensor, "batch d"]:
    """Equivalent to ``(vals[..., None] * W[idx]).sum(-2)``; W may be any strided view (e.g. ``W_enc.t()``)."""
    B, K = idx.shape
    D = W.shape[1]
    out = torch.empty(B, D, dtype=W.dtype, device=W.device)
    block = _block(D, 256)
    grid = (B, triton.cdiv(D, block))
    _decode_kernel[grid](vals, idx, W, out, K, D, *vals.stride(), *idx.stride(), *W.stride(), *out.stride(),
                         BLOCK_D=block, ACC=_acc_dtype(W.dtype))
    return out


@triton.jit
def _gather_dot_kernel(dy_ptr, idx_ptr, w_ptr, out_ptr, K, D, s_yb, s_yd, s_ib, s_ik, s_wl, s_wd, s_ob, s_ok,
                       BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr):
    b = tl.program_id(0)
    kk = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    kmask = kk < K
    rows = tl.load(idx_ptr + b * s_ib + kk * s_ik, mask=kmask, other=0)
    acc = tl.zeros([BLOCK_K], dtype=ACC)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        dmask = d < D
        y = tl.load(dy_ptr + b * s_yb + d * s_yd, mask=dmask, other=0.0).to(ACC)
        w = tl.load(w_ptr + rows[:, None] * s_wl + d[None, :] * s_wd, mask=kmask[:, None] & dmask[None, :],
                    other=0.0).to(ACC)
        acc += tl.sum(w * y[None, :], axis=1)
    tl.store(out_ptr + b * s_ob + kk * s_ok, acc.to(out_ptr.dtype.element_ty), mask=kmask)


def gather_dot(dy: Float[Tensor, "batch d"], idx: Int[Tensor, "batch k"],
               W: Float[Tensor, "n_latents d"]) -> Float[Tensor, "batch k"]:
    """Equivalent to ``(dy[:, None, :] * W[idx]).sum(-1)``."""
    B, K = idx.shape
    D = W.shape[1]
    out = torch.empty(B, K, dtype=dy.dtype, device=dy.device)
    block_k, block_d = _block(K, 64), _block(D, 128)
    grid = (B, triton.cdiv(K, block_k))
    _gather_dot_kernel[grid](dy, idx, W, out, K, D, *dy.stride(), *idx.stride(), *W.stride(), *out.stride(),
                             BLOCK_K=block_k, BLOCK_D=block_d, ACC=_acc_dtype(dy.dtype))
    return out


@triton.jit
def _scatter_outer_kernel(vals_ptr, rows_ptr, crow_ptr, dy_ptr, out_ptr, D, s_yb, s_yd, s_ol, s_od,
                          BLOCK_D: tl.constexpr, ACC: tl.constexpr):
    lat = tl.program_id(0)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = d < D
    start = tl.load(crow_ptr + lat)
    stop = tl.load(crow_ptr + lat + 1)
    acc = tl.zeros([BLOCK_D], dtype=ACC)
    for e in range(start, stop):
        r = tl.load(rows_ptr + e)
        v = tl.load(vals_ptr + e).to(ACC)
        acc += v * tl.load(dy_ptr + r * s_yb + d * s_yd, mask=dmask, other=0.0).to(ACC)
    tl.store(out_ptr + lat * s_ol + d * s_od, acc.to(out_ptr.dtype.element_ty), mask=dmask)


def scatter_outer(vals: Float[Tensor, "batch k"], idx: Int[Tensor, "batch k"], dy: Float[Tensor, "batch d"],
                  n_rows: int) -> Float[Tensor, "n_rows d"]:
    """Equivalent to
    ``zeros(n_rows, D).index_add_(0, idx.flatten(), (vals[..., None] * dy[:, None, :]).flatten(0, 1))``.

    Deterministic (no atomics): entries are sorted latent-major once, then one program per (latent, D-block) sums
    its segment."""
    D = dy.shape[1]
    crow, order, rows = latent_major(idx, n_rows)
    sorted_vals = vals.flatten()[order].contiguous()
    out = torch.empty(n_rows, D, dtype=dy.dtype, device=dy.device)
    block = _block(D, 256)
    grid = (n_rows, triton.cdiv(D, block))
    _scatter_outer_kernel[grid](sorted_vals, rows, crow, dy, out, D, *dy.stride(), *out.stride(),
                                BLOCK_D=block, ACC=_acc_dtype(dy.dtype))
    return out
