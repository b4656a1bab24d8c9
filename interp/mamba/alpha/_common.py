"""Shared pieces of the implicit-attention kernels (:mod:`interp.mamba.alpha`): constants, input checks, and
the in-place-or-differentiable elementwise steps."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from interp.checks import index_list

F64 = torch.float64
LOG2E = 1.0 / math.log(2.0)
FLUSH_LOG2 = {torch.float32: -40.0, torch.float64: -400.0}
"""log2 of the smallest decay factor kept, per compute dtype (smaller ones are exact zeros); also the largest
in-chunk span (in log2 units) that the factorised in-chunk product accepts."""
EXACT_LEN = 8
"""Chunks (or sub-chunks) of at most this many positions take exact segment sums for the pairs they cannot
factorise; longer ones are split again (:meth:`~interp.mamba.alpha.selective._Mamba1Chunked._segments`)."""
BLOCK_ELEMENTS = 2**21
"""Size (numbers) of the scratch block one query chunk of a group of Mamba-1 channels is computed into: sets how many
channels go through the matrix products at a time (a speed knob: any value gives the same result)."""


def alpha_chunk(length: int) -> int:
    """Query-chunk length Q for sequences of ``length``: 32 (``length`` if shorter). Longer chunks mean fewer,
    larger products and fewer per-chunk factors (~T²/Q of them), shorter ones less in-chunk work and fewer pairs
    whose span is too long to factorise; 32 measured best or near it here from T = 64 to 1024 (bench/
    mamba_vs_transformer_lens.py). A speed knob only: any Q gives the same α."""
    return max(1, min(32, length))


def _rows(rows: Sequence[int] | Tensor | None, T: int, device) -> Tensor | None:
    if rows is None:
        return None
    if isinstance(rows, Tensor) and not (rows.is_floating_point() or rows.is_complex() or rows.dtype == torch.bool):
        r = rows.to(device=device, dtype=torch.long).flatten()
    else:  # floats and bools are not positions; no rows at all give an empty map (e.g. no flow to block)
        idx = [] if isinstance(rows, (list, tuple)) and not rows else index_list(rows, "rows", what="position")
        r = torch.tensor(idx, dtype=torch.long, device=device)
    if r.numel() and (int(r.min()) < 0 or int(r.max()) >= T):
        raise IndexError(f"rows must be query positions in 0..{T - 1}; got {r.tolist()}")
    return r


def _check_rates(dt: Tensor, A: Tensor) -> None:
    if bool((A > 0).any()):
        raise ValueError("A must be <= 0 everywhere (A = -exp(A_log)); the decays would grow without bound")
    if bool((dt < 0).any()):
        raise ValueError("dt must be >= 0 everywhere (Δ = softplus(...)); got negative time steps")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype not in FLUSH_LOG2:
        raise ValueError(f"dtype must be torch.float32 or torch.float64; got {dtype}")
    return dtype


def _in_place(*inputs: Tensor) -> bool:
    """Whether the kernels may work in place (``out=``, ``mul_``, ...): not when autograd records ``inputs``."""
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in inputs))


def _decay(exponent: Tensor, inplace: bool) -> Tensor:
    """``exp2`` of a log2-scaled exponent, flushing factors below ``2**FLUSH_LOG2`` to exact zeros."""
    if inplace:
        return F.threshold_(exponent, FLUSH_LOG2[exponent.dtype], -math.inf).exp2_()
    return F.threshold(exponent, FLUSH_LOG2[exponent.dtype], -math.inf).exp2()


def _mul(x: Tensor, y: Tensor, inplace: bool) -> Tensor:
    return x.mul_(y) if inplace else x * y


def _fill(x: Tensor, mask: Tensor, inplace: bool) -> Tensor:
    """``x`` with ``-inf`` where ``mask`` (an exponent whose factor is left out)."""
    return x.masked_fill_(mask, -math.inf) if inplace else x.masked_fill(mask, -math.inf)


def _abs(x: Tensor, inplace: bool) -> Tensor:
    return x.abs_() if inplace else x.abs()


def _query_chunks(T: int, Q: int, rows: Tensor | None):
    """``(s, e, sel)`` per query chunk ``[s, e)`` holding requested rows: ``sel`` indexes the chunk's rows in the
    output: ``slice(s, e)`` for all rows, else the indices ``i`` with ``rows[i]`` in the chunk."""
    for s in range(0, T, Q):
        e = min(s + Q, T)
        if rows is None:
            yield s, e, slice(s, e)
            continue
        sel = ((rows >= s) & (rows < e)).nonzero().flatten()
        if sel.numel():
            yield s, e, sel


def _heads(heads: Sequence[int] | Tensor | None, H: int, device) -> Tensor | None:
    if heads is None:
        return None
    h = torch.tensor(index_list(heads, "heads"), dtype=torch.long, device=device)
    if int(h.min()) < 0 or int(h.max()) >= H:
        raise IndexError(f"heads must be a non-empty list of head indices in 0..{H - 1}; got {h.tolist()}")
    return h
