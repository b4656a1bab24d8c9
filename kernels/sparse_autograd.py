"""Autograd functions for k-sparse SAE training: only the encoder forward is dense.

For a TopK-style step (Gao et al. 2024, "Scaling and evaluating sparse autoencoders", Sec. 5 / App. D) five of the
six large products touch only the K selected latents per row: decoder forward (``sparse_decode``), latent gradient
(``gather_dot``), decoder-weight gradient and encoder-weight gradient (``scatter_outer``), and input gradient
(``sparse_decode`` on ``W_enc.T``). The ops come from :func:`interp.kernels.backend.ops_for`.

The encoder forward is dense, but its ``[B, L]`` result need not be stored: with a
:class:`~interp.kernels.selectors.FusedSelector` (TopK, BatchTopK) on the native backend, the C kernel computes it
block by block inside the selection (:mod:`interp.kernels.native`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.autograd import Function

from interp.kernels.backend import ops_for
from interp.kernels.selectors import FusedSelector

Selector = Callable[[Tensor], tuple[Tensor, Tensor]]
"""``select(pre [B, L]) -> (vals [B, K], idx [B, K])``: the kept activations (zero for padding) and their latents;
d vals / d pre[idx] is 1 where vals != 0 and 0 elsewhere (TopK followed by ReLU)."""


class _SparseDecode(Function):
    @staticmethod
    def forward(ctx, vals: Tensor, idx: Tensor, W: Tensor) -> Tensor:
        ctx.save_for_backward(vals, idx, W)
        return ops_for(W).sparse_decode(vals, idx, W)

    @staticmethod
    def backward(ctx, dy: Tensor):
        vals, idx, W = ctx.saved_tensors
        dy = dy.contiguous()
        ops = ops_for(W)
        if ctx.needs_input_grad[0] and ctx.needs_input_grad[2] and hasattr(ops, "decode_backward"):
            dvals, dW = ops.decode_backward(vals, idx, dy, W)  # both from one pass over dy
            return dvals, None, dW
        dvals = ops.gather_dot(dy, idx, W) if ctx.needs_input_grad[0] else None
        dW = ops.scatter_outer(vals, idx, dy, W.shape[0]) if ctx.needs_input_grad[2] else None
        return dvals, None, dW


def sparse_decode(vals: Tensor, idx: Tensor, W: Tensor) -> Tensor:
    """Differentiable (in vals and W) ``(vals[..., None] * W[idx]).sum(-2)`` without touching unselected rows."""
    if idx.dtype != torch.int64 or idx.shape != vals.shape or idx.ndim != 2:
        raise ValueError(f"idx must be int64 [B, K] like vals {tuple(vals.shape)}, got {idx.dtype} {tuple(idx.shape)}")
    if W.ndim != 2:
        raise ValueError(f"W must be [n_latents, D], got {tuple(W.shape)}")
    return _SparseDecode.apply(vals, idx, W)


class _SparseEncode(Function):
    @staticmethod
    def forward(ctx, x: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor, select: Selector):
        xc = x - b_dec
        with torch.no_grad():
            if isinstance(select, FusedSelector) and select.fuses(xc, W_enc, b_enc):
                vals, idx = select.fused(xc, W_enc, b_enc)
            else:
                pre = torch.addmm(b_enc, xc, W_enc)
                vals, idx = select(pre)
                del pre
        ctx.save_for_backward(xc, W_enc, vals, idx)
        ctx.mark_non_differentiable(idx)
        return vals, idx

    @staticmethod
    def backward(ctx, dvals: Tensor, _didx: Tensor | None):
        xc, W_enc, vals, idx = ctx.saved_tensors
        need_x, need_w, need_be, need_bd = ctx.needs_input_grad[:4]
        dpre = torch.where(vals != 0, dvals, torch.zeros((), dtype=dvals.dtype, device=dvals.device))
        ops = ops_for(W_enc)
        n_lat = W_enc.shape[1]
        dW_enc = db_enc = None
        if need_w and hasattr(ops, "encode_backward"):  # dW_enc in W_enc's layout and db_enc, one pass
            dW_enc, db_enc = ops.encode_backward(dpre, idx, xc, W_enc)
        elif need_w:
            dW_enc = ops.scatter_outer(dpre, idx, xc, n_lat).t()
        if db_enc is None and (need_be or need_bd):
            db_enc = torch.zeros(n_lat, dtype=dpre.dtype, device=dpre.device).index_add_(0, idx.flatten(),
                                                                                            dpre.flatten())
        dx = ops.sparse_decode(dpre, idx, W_enc.t()) if need_x else None
        # sum_b dxc[b] = W_enc @ (column sums of dpre) = W_enc @ db_enc: the bias gradient needs no sparse product.
        db_dec = -(W_enc @ db_enc) if need_bd else None
        return dx, dW_enc, db_enc if need_be else None, db_dec, None


def sparse_encode(x: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor, select: Selector) -> tuple[Tensor, Tensor]:
    """``select((x - b_dec) @ W_enc + b_enc)`` with a backward that touches only the selected latents.

    Differentiable in x, W_enc, b_enc and b_dec; the dense ``[B, L]`` pre-activations are freed after selection,
    or, for a :class:`~interp.kernels.selectors.FusedSelector` on the native backend, never stored.
    """
    if x.ndim != 2 or W_enc.ndim != 2 or x.shape[1] != W_enc.shape[0]:
        raise ValueError(f"x must be [B, {W_enc.shape[0]}] for W_enc {tuple(W_enc.shape)}, got {tuple(x.shape)}")
    return _SparseEncode.apply(x, W_enc, b_enc, b_dec, select)
