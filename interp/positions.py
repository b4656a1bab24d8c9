"""Position sets as masks: which (target, source) flows a knockout removes, for transformers and Mamba alike."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from interp.checks import index_list

__all__ = ["Positions", "position_mask", "flow_mask"]

Positions = int | Sequence[int] | Tensor


def position_mask(pos: Positions, batch: int, T: int, arg: str) -> Tensor:
    """``[batch, T]`` bool from positions (ints, negatives count from the end) or a bool tensor ``[T]``/``[b, T]``.
    Floats and bools are not positions (``1.7`` and ``True`` are refused, not read as 1)."""
    if isinstance(pos, Tensor) and pos.dtype == torch.bool:
        if pos.shape not in ((T,), (batch, T), (1, T)):
            raise ValueError(f"{arg}: a bool mask must have shape [{T}] or [{batch}, {T}]; got {tuple(pos.shape)}")
        return pos.reshape(-1, T).expand(batch, T).to(torch.bool)
    if isinstance(pos, Tensor) and pos.ndim > 1:
        raise ValueError(f"{arg}: integer positions must be a 1-d tensor (one list shared by the batch); got shape "
                         f"{tuple(pos.shape)} (use a bool mask [batch, pos] for per-row positions)")
    idx = index_list(pos, arg, what="position")
    bad = [p for p in idx if not -T <= p < T]
    if bad:
        raise IndexError(f"{arg}: positions {bad} are out of range for a sequence of {T} tokens")
    mask = torch.zeros(T, dtype=torch.bool)
    mask[[p % T for p in idx]] = True
    return mask.expand(batch, T)


def flow_mask(sources: Positions, targets: Positions, batch: int, T: int) -> Tensor:
    """``[batch, T, T]`` bool: ``[b, i, j]`` is True when the flow j -> i is removed (i in targets, j in sources,
    j <= i)."""
    src = position_mask(sources, batch, T, "sources")
    tgt = position_mask(targets, batch, T, "targets")
    return tgt[:, :, None] & src[:, None, :] & torch.ones(T, T, dtype=torch.bool).tril()
