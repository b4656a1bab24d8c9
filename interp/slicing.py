"""``Slice``: TransformerLens's slice arguments (``pos_slice=``, ``batch_slice=``, ``neuron_slice=``) with the same
meaning, so cache helpers accept what TransformerLens code passes.

``None``: everything; an int: that index (the axis is dropped, ``x[..., 3, :]``); a tuple: ``slice(*tuple)``
(``(k,)`` is ``:k``, ``(a, b)`` is ``a:b``, ``(a, b, s)`` is ``a:b:s``); a ``slice``; a list, numpy array or 1-D
integer tensor of indices (the axis keeps its rank). A TransformerLens ``Slice`` object is read as its own slice.
"""

from __future__ import annotations

import operator

import torch
from torch import Tensor

from interp.checks import is_index

__all__ = ["Slice"]


class Slice:
    """One axis's selection; :meth:`apply` takes it along an axis of a tensor."""

    def __init__(self, value=None, arg: str = "slice") -> None:
        if isinstance(value, Slice):
            self.value, self.mode = value.value, value.mode
            return
        if hasattr(value, "mode") and hasattr(value, "slice") and type(value).__name__ == "Slice":
            value = value.slice  # TransformerLens's Slice: its slice, int or index array
        if value is None:
            self.value, self.mode = slice(None), "identity"
        elif is_index(value) and not isinstance(value, Tensor):
            self.value, self.mode = operator.index(value), "int"
        elif isinstance(value, tuple):
            if not 1 <= len(value) <= 3 or not all(v is None or is_index(v) for v in value):
                raise ValueError(f"{arg}: a tuple means slice(*tuple): 1 to 3 ints or None; got {value!r}")
            self.value, self.mode = slice(*value), "slice"
        elif isinstance(value, slice):
            self.value, self.mode = value, "slice"
        elif isinstance(value, (list, Tensor)) or type(value).__module__ == "numpy":
            idx = torch.as_tensor(value)
            if idx.ndim == 0:
                self.value, self.mode = int(idx), "int"
            elif idx.ndim != 1 or idx.dtype.is_floating_point or idx.dtype == torch.bool:
                raise ValueError(f"{arg}: an index list must be 1-D integers; got shape {tuple(idx.shape)}, "
                                 f"{idx.dtype}")
            else:
                self.value, self.mode = idx.long(), "array"
        else:
            raise TypeError(f"{arg} must be None, an int, a (start, stop[, step]) tuple, a slice, or a list/tensor of "
                            f"indices; got {type(value).__name__}")

    def apply(self, x: Tensor, dim: int = 0) -> Tensor:
        """``x`` with this selection taken along ``dim`` (negative counts from the end)."""
        if self.mode == "identity":
            return x
        index = [slice(None)] * x.ndim
        index[dim] = self.value.to(x.device) if self.mode == "array" else self.value
        return x[tuple(index)]

    def indices(self, size: int) -> Tensor:
        """The selected indices of an axis of length ``size`` (1-D, also for an int)."""
        return self.apply(torch.arange(size)).reshape(-1)

    def __repr__(self) -> str:
        return f"Slice({self.value!r}, mode={self.mode!r})"
