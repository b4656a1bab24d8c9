"""Mamba-1 implicit attention as chunked matrix products over the state (the algorithm and numerics:
:mod:`interp.mamba.alpha`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from interp.mamba.alpha._common import (
    BLOCK_ELEMENTS,
    EXACT_LEN,
    F64,
    FLUSH_LOG2,
    LOG2E,
    _abs,
    _check_rates,
    _compute_dtype,
    _decay,
    _fill,
    _in_place,
    _mul,
    _query_chunks,
    _rows,
    alpha_chunk,
)
from interp.mamba.buffers import empty_large

__all__ = ["mamba1_alpha", "mamba1_group_maps"]


class _Mamba1Chunked:
    """The pieces of the chunked Mamba-1 α (:mod:`interp.mamba.alpha`) for a slice of c channels, the sequence
    padded to whole chunks (Δ = 0, B = C = 0 there): ``Pz`` float64 ``[b, c, 1 + Tp]`` (``Pz[t + 1] = P_t``,
    ``Pz[0] = 0``); in ``dtype``: ``log2 Δ`` ``[b, c, Tp]``, ``Bᵀ`` ``[b, N, Tp]``, ``C`` ``[b, Tp, N]``,
    ``A2 = A log2(e)`` ``[c, N]``; ``unsafe [b, c, K, N]``: the (channel, state) pairs whose span in chunk k is too
    long to factorise (with a margin of 2 below the flush limit, so that no in-chunk left factor of a factorised
    pair is flushed); and ``extra [b, c, K, Q, Q]``: their in-chunk terms (None if there are none). Works in place
    unless autograd records the inputs (then differentiable)."""

    def __init__(self, dt: Tensor, B: Tensor, C: Tensor, A: Tensor, dtype: torch.dtype, Q: int) -> None:
        self.inplace = _in_place(dt, B, C, A)
        b, T, c = dt.shape
        pad = -T % Q
        P = torch.cumsum(dt.to(F64), dim=1).transpose(1, 2)
        self.Pz = torch.cat([P.new_zeros(b, c, 1), P, P[..., -1:].expand(b, c, pad)], -1)
        self.log2dt = F.pad(torch.log2(dt.to(dtype)).transpose(1, 2), (0, pad), value=-math.inf)
        self.Bt = F.pad(B.to(dtype).transpose(1, 2), (0, pad))
        self.C = F.pad(C.to(dtype), (0, 0, 0, pad))
        self.A2 = (A.to(F64) * LOG2E).to(dtype)
        self.dtype, self.Q = dtype, Q
        starts = torch.arange(0, T + pad, Q, device=dt.device)
        self.unsafe = self._too_long(starts, Q)
        self.extra = self._segments(starts, Q, self.unsafe) if bool(self.unsafe.any()) else None

    @property
    def P(self) -> Tensor:
        """``P_t`` for t in ``0..Tp-1`` ``[b, c, Tp]``."""
        return self.Pz[..., 1:]

    def _too_long(self, starts: Tensor, n: int) -> Tensor:
        """``[b, c, S, N]``: whether the span of the segments ``[start, start + n)`` exceeds the factorisable."""
        span = (self.Pz[..., starts + n] - self.Pz[..., starts]).to(self.dtype)[..., None] * -self.A2[:, None, :]
        return span > -FLUSH_LOG2[self.dtype] - 2

    def left(self, s: int, pos: Tensor | slice) -> Tensor:
        """``L[b, c, R, N] = C_i[n] exp(A_n (P_i - ρ))`` for the query positions ``pos`` of the chunk at ``s``."""
        diff = (self.P[..., pos] - self.Pz[..., s:s + 1]).to(self.dtype)
        return _mul(_decay(diff[..., None] * self.A2[:, None, :], self.inplace), self.C[:, None, pos], self.inplace)

    def right(self, s: int, e: int, buf: Tensor) -> Tensor:
        """``Rᵀ[b, c, N, e] = Δ_j B_j[n] exp(A_n (ρ - P_j))`` for keys ``0..e-1`` into ``buf`` (state-major, so
        that the product writes into strided outputs at full speed; Δ enters the exponent as ``log2 Δ``). The
        in-chunk keys of unsafe pairs are left out (their terms are in ``extra``)."""
        diff = (self.Pz[..., s:s + 1] - self.P[..., :e]).to(self.dtype)
        args = (self.log2dt[:, :, None, :e], self.A2[..., None], diff[:, :, None, :])
        R = torch.addcmul(*args, out=buf) if self.inplace else torch.addcmul(*args)
        unsafe = self.unsafe[:, :, s // self.Q]  # [b, c, N]
        if bool(unsafe.any()) and self.inplace:
            R[..., s:e].masked_fill_(unsafe[..., None], -math.inf)
        elif bool(unsafe.any()):
            R = R.masked_fill(unsafe[..., None] & (torch.arange(e, device=R.device) >= s), -math.inf)
        return _mul(_decay(R, self.inplace), self.Bt[:, None, :, :e], self.inplace)

    def block(self, s: int, e: int, pos: Tensor | slice, buf: Tensor, out: Tensor) -> Tensor:
        """α ``[b, c, R, e]`` for the query positions ``pos`` of ``[s, e)`` (a slice: all of them) and keys
        ``0..e-1``, written into ``out`` (any strides; ``buf`` holds at least ``b c N e`` numbers of scratch), or,
        where autograd records the inputs, returned as a new tensor (``out`` and ``buf`` unused)."""
        b, c = self.P.shape[:2]
        L = self.left(s, pos)
        R = self.right(s, e, buf[: b * c * self.Bt.shape[1] * e].view(b, c, -1, e))
        rows = slice(0, e - s) if isinstance(pos, slice) else pos - s
        pos = torch.arange(s, e, device=R.device) if isinstance(pos, slice) else pos
        above = torch.arange(s, e, device=R.device)[None, :] > pos[:, None]  # in-chunk keys after the query
        extra = None if self.extra is None else self.extra[:, :, s // self.Q, rows, : e - s]
        if not self.inplace:
            blk = L @ R
            inner = blk[..., s:e].masked_fill(above, 0.0)
            return torch.cat([blk[..., :s], inner if extra is None else inner + extra], -1)
        for k in range(b):
            torch.matmul(L[k], R[k], out=out[k])
        inner = out[..., s:e].masked_fill_(above, 0.0)
        if extra is not None:
            inner.add_(extra)
        return out

    def _segments(self, starts: Tensor, n: int, pairs: Tensor) -> Tensor:
        """The in-segment terms ``[b, c, S, n, n]`` (queries and keys ``start..start+n-1``, lower triangular) of
        the (b, c, state) ``pairs`` (``[b, c, S, N]`` bool) of the segments at ``starts`` ``[S]``, whose span is
        too long to factorise over the segment: the same scheme one level down, all segments at once. Each
        segment is cut into sub-segments of about a quarter of it (at least :data:`EXACT_LEN`): keys before a
        sub-segment factorise through its reference (both factors <= 1), keys inside it where its own span allows;
        the other pairs recurse; segments of at most :data:`EXACT_LEN` take exact segment sums."""
        b, c, S, _ = pairs.shape
        if n <= EXACT_LEN:
            return self._exact(starts, n, pairs)
        q = max(d for d in range(1, max(EXACT_LEN, n // 4) + 1) if n % d == 0)
        K, dev, ip = n // q, starts.device, self.inplace
        first = starts[:, None] + q * torch.arange(K, device=dev)  # [S, K]
        ref = self.Pz[..., first]  # ρ of each sub-segment: [b, c, S, K]
        rows = first[..., None] + torch.arange(q, device=dev)  # [S, K, q]
        keys = starts[:, None] + torch.arange(n, device=dev)  # [S, n]
        L = (self.P[..., rows] - ref[..., None]).to(self.dtype)[..., None] * self.A2[:, None, None, None, :]
        L = _fill(L, ~pairs[:, :, :, None, None, :], ip)  # [b, c, S, K, q, N]: only the pairs refined here
        L = _mul(_decay(L, ip), self.C[:, None, rows], ip)
        local = torch.arange(n, device=dev)
        after = local >= q * (torch.arange(K, device=dev)[:, None] + 1)  # keys after each sub-segment: [K, n]
        bias = self.log2dt[..., keys][:, :, :, None, None, :].masked_fill(after[:, None, :], -math.inf)
        diff = (ref[..., None] - self.P[..., keys][:, :, :, None, :]).to(self.dtype)  # [b, c, S, K, n]
        R = torch.addcmul(bias, self.A2[:, None, None, :, None], diff[:, :, :, :, None, :])  # [b, c, S, K, N, n]
        sub = pairs[:, :, :, None, :] & self._too_long(first.flatten(), q).unflatten(2, (S, K))  # [b, c, S, K, N]
        if ip:  # leave out the in-sub-segment keys of the pairs still too long there: they recurse below
            for k in range(K):
                R[:, :, :, k, :, k * q:(k + 1) * q].masked_fill_(sub[:, :, :, k, :, None], -math.inf)
        else:
            inside = (local // q)[None, :] == torch.arange(K, device=dev)[:, None]  # [K, n]
            R = R.masked_fill(sub[..., None] & inside[:, None, :], -math.inf)
        R = _mul(_decay(R, ip), self.Bt[:, None, :, keys].permute(0, 1, 3, 2, 4)[:, :, :, None], ip)
        blk = (L @ R).flatten(3, 4)  # [b, c, S, n, n]
        blk = blk.tril_() if ip else blk.tril()
        seg = sub.any(-1).any(0).any(0).flatten().nonzero().flatten()  # sub-segments that recurse
        if len(seg):
            deeper = self._segments(first.flatten()[seg], q, sub.flatten(2, 3)[:, :, seg])  # [b, c, S', q, q]
            k, parent = seg % K, seg // K
            off = (parent * n * n + k * q * (n + 1))[:, None, None] + local[:q, None] * n + local[None, :q]
            flat = blk.flatten(2)
            flat = flat.index_add_(2, off.flatten(), deeper.flatten(2)) if ip else \
                flat.index_add(2, off.flatten(), deeper.flatten(2))
            blk = flat.view_as(blk)
        return blk

    def _exact(self, starts: Tensor, n: int, pairs: Tensor) -> Tensor:
        """The in-segment terms ``[b, c, S, n, n]`` of ``pairs`` from exact segment sums."""
        bi, ci, si, ni = pairs.nonzero(as_tuple=True)
        local = torch.arange(n, device=pairs.device)
        pos = starts[si][:, None] + local  # [U, n]
        P = self.P[bi[:, None], ci[:, None], pos]
        seg = (P[:, :, None] - P[:, None, :]).to(self.dtype) * self.A2[ci, ni][:, None, None]  # [U, n, n]
        seg = (seg + self.log2dt[bi[:, None], ci[:, None], pos][:, None, :]).masked_fill(
            local[None, :] > local[:, None], -math.inf)
        terms = _decay(seg, self.inplace) * self.C[bi[:, None], pos, ni[:, None]][:, :, None]
        terms = terms * self.Bt[bi[:, None], ni[:, None], pos][:, None, :]
        shape = (*pairs.shape[:3], n, n)
        return terms.new_zeros(shape).index_put((bi, ci, si), terms, accumulate=True)


def _channel_step(batch: int, Q: int, T: int, channels: int, block_elements: int) -> int:
    if block_elements < 1:
        raise ValueError(f"block_elements must be a positive number of elements; got {block_elements}")
    return max(1, min(channels, block_elements // max(1, batch * Q * T)))


def mamba1_alpha(
    dt: Float[Tensor, "batch pos d_inner"],
    B: Float[Tensor, "batch pos d_state"],
    C: Float[Tensor, "batch pos d_state"],
    A: Float[Tensor, "d_inner d_state"],
    *,
    rows: Sequence[int] | Tensor | None = None,
    dtype: torch.dtype = F64,
    chunk: int | None = None,
    block_elements: int = BLOCK_ELEMENTS,
) -> Float[Tensor, "batch d_inner rows pos"]:
    """Mamba-1 implicit attention ``α[b, d, i, j]`` (Ali et al. 2024) for query ``rows`` (all by default), in
    ``dtype`` (float64 by default; float32 is accurate to float32 rounding, see the module docstring).

    ``dt`` is Δ after softplus (``hook_dt``), ``A = -exp(A_log)``; pass a slice of channels in ``dt`` and ``A`` to
    get those channels only. Equivalent to :func:`mamba1_alpha_ref` and to
    ``einsum('bin,bjn,bdnij->bdij', C, B, exp(segsum(Δ A))) * Δ_j``, computed as chunked matrix products over the
    state (module docstring); ``chunk`` overrides the query-chunk length (:func:`alpha_chunk`), ``block_elements``
    the scratch block size (:data:`BLOCK_ELEMENTS`), both speed knobs only.
    """
    dtype = _compute_dtype(dtype)
    _check_rates(dt, A)
    b, T, d = dt.shape
    rows_t = _rows(rows, T, dt.device)
    Q = chunk or alpha_chunk(T)
    if rows_t is None:  # every element is written below: no zero-fill pass over the whole output
        out = empty_large((b, d, T, T), dtype=dtype, device=dt.device)
    else:
        out = torch.zeros(b, d, len(rows_t), T, dtype=dtype, device=dt.device)
    step = _channel_step(b, Q, T, d, block_elements)
    buf = out.new_empty(b * step * B.shape[-1] * T)
    for c0 in range(0, d, step):
        c1 = min(d, c0 + step)
        part = _Mamba1Chunked(dt[..., c0:c1], B, C, A[c0:c1], dtype, Q)
        for s, e, sel in _query_chunks(T, Q, rows_t):
            full = isinstance(sel, slice)
            dst = out[:, c0:c1, sel, :e] if full else out.new_empty(b, c1 - c0, len(sel), e)
            blk = part.block(s, e, sel if full else rows_t[sel], buf, dst)
            if blk is not dst or not full:
                out[:, c0:c1, sel, :e] = blk
            if full:
                out[:, c0:c1, sel, e:] = 0.0
    return out


def mamba1_group_maps(
    dt: Float[Tensor, "batch pos d_inner"],
    B: Float[Tensor, "batch pos d_state"],
    C: Float[Tensor, "batch pos d_state"],
    A: Float[Tensor, "d_inner d_state"],
    n_groups: int,
    *,
    absolute: bool = True,
    dtype: torch.dtype = torch.float32,
    chunk: int | None = None,
    block_elements: int = BLOCK_ELEMENTS,
    progress: Callable[[int], None] | None = None,
) -> Float[Tensor, "batch group pos pos"]:
    """Mean over each of ``n_groups`` contiguous channel groups of ``|α|`` (``absolute=False``: of the signed α)
    of Mamba-1 (Ali et al. 2024), ``[b, group, query, key]``, reduced while computing: memory is
    ``O(groups T²)`` plus one scratch block (:data:`BLOCK_ELEMENTS`), never ``O(d_inner T²)``. Same numerics as
    :func:`mamba1_alpha` (``chunk``, ``block_elements`` likewise); ``progress(k)`` is called after each block of
    k channels."""
    dtype = _compute_dtype(dtype)
    _check_rates(dt, A)
    b, T, d = dt.shape
    if n_groups < 1 or d % n_groups:
        raise ValueError(f"n_groups must divide the {d} channels; got {n_groups}")
    width, Q = d // n_groups, chunk or alpha_chunk(T)
    acc = torch.zeros(b, n_groups, T, T, dtype=dtype, device=dt.device)
    step = _channel_step(b, Q, T, width, block_elements)
    scratch = torch.empty(b * step * Q * T, dtype=dtype, device=dt.device)
    buf = torch.empty(b * step * B.shape[-1] * T, dtype=dtype, device=dt.device)
    for g in range(n_groups):
        for c0 in range(g * width, (g + 1) * width, step):
            c1 = min((g + 1) * width, c0 + step)
            part = _Mamba1Chunked(dt[..., c0:c1], B, C, A[c0:c1], dtype, Q)
            for s, e, sel in _query_chunks(T, Q, None):
                dst = scratch[: b * (c1 - c0) * (e - s) * e].view(b, c1 - c0, e - s, e)
                blk = part.block(s, e, sel, buf, dst)
                acc[:, g, s:e, :e] += (_abs(blk, part.inplace) if absolute else blk).sum(1)
            if progress is not None:
                progress(c1 - c0)
    return acc.div_(width)
