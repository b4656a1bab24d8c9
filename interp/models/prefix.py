"""Continuing a recorded run from any (layer, position): the model-level support for fast patching.

In a causal model a change made at position ``p`` of layer ``l`` leaves every position before ``p`` (at every
layer) and every layer before ``l`` exactly as they were. A patched run can therefore start from the recorded
residual stream at layer ``l`` and compute only the positions ``p..``, provided each block can read what the
earlier positions would have given it:

- transformers: the keys and values of positions ``< p`` (attention is the only place positions meet);
- Mamba: the recurrent state after position ``p - 1`` and the last ``d_conv - 1`` conv inputs before ``p``.

:meth:`HookedModel.record_prefix` runs token ids once and keeps that per layer for every position (a
:class:`Prefix`); :meth:`HookedModel.run_suffix` runs blocks ``start_at_layer..`` on positions ``start_pos..`` of
that recorded sequence. The base-class logic (validation, muting the earlier sites, stopping at a layer) lives
here; a model provides ``_record_prefix(tokens)`` and ``_run_suffix(layer, pos, resid, prefix, rows)``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from interp.errors import CapabilityError
from interp.hooks import StopForward
from interp.models.memory import tensor_bytes

if TYPE_CHECKING:
    from interp.models.base import HookedModel

__all__ = ["Prefix", "record_prefix", "run_suffix"]


@dataclass(frozen=True, eq=False)
class Prefix:
    """What a continuation of a recorded run needs, for every layer and position (see the module docstring)."""

    length: int
    """Positions recorded (the ``pos`` of the tokens)."""
    batch: int
    """Rows recorded."""
    data: Any
    """Model-specific payload (per-layer keys/values, or conv inputs and SSM states); read only by the model."""
    owner: int
    """``id`` of the model that recorded it (a prefix is only valid for that model)."""

    def nbytes(self) -> int:
        """Bytes held by the tensors of the payload."""
        return tensor_bytes(self.data)



def _require(model: HookedModel, what: str) -> None:
    if not model.has_prefix_reuse:
        raise CapabilityError(
            f"{what}: this {model.arch} model cannot continue a run from cached keys/values or states "
            "(see has_prefix_reuse); run the full sequence with model(resid, start_at_layer=...) instead"
        )


def record_prefix(model: HookedModel, tokens) -> Prefix:
    """See :meth:`HookedModel.record_prefix`."""
    _require(model, "record_prefix")
    tokens, mask = model._prepare(tokens, None)
    if mask is not None:
        raise ValueError("record_prefix: padded text is not supported; pass equal-length token ids")
    with torch.no_grad(), model._registry.running():  # a pass of this model: its persistent hooks fire
        data = model._record_prefix(tokens)
    return Prefix(length=tokens.shape[1], batch=tokens.shape[0], data=data, owner=id(model))


def _check_rows(rows, batch: int, prefix: Prefix) -> Tensor:
    if rows is None:
        if prefix.batch == batch:
            return torch.arange(batch)
        if prefix.batch == 1:
            return torch.zeros(batch, dtype=torch.long)
        raise ValueError(f"resid has {batch} rows but the prefix has {prefix.batch}; pass rows= (the prefix row of "
                         "each resid row)")
    rows = torch.as_tensor(rows)
    if rows.dtype.is_floating_point or rows.dtype == torch.bool or rows.shape != (batch,):
        raise ValueError(f"rows must be integer indices of shape [{batch}] (one prefix row per resid row); got "
                         f"{rows.dtype} {tuple(rows.shape)}")
    if batch and (int(rows.min()) < 0 or int(rows.max()) >= prefix.batch):
        raise IndexError(f"rows holds indices in [{int(rows.min())}, {int(rows.max())}]; the prefix has rows "
                         f"0..{prefix.batch - 1}")
    return rows.long()


def run_suffix(model: HookedModel, resid: Tensor, start_at_layer: int, start_pos: int, prefix: Prefix, *,
               rows=None, stop_at_layer: int | None = None) -> Tensor:
    """See :meth:`HookedModel.run_suffix`."""
    _require(model, "run_suffix")
    if not isinstance(prefix, Prefix):
        raise TypeError(f"prefix must be a Prefix from model.record_prefix(tokens); got {type(prefix).__name__}")
    if prefix.owner != id(model):
        raise ValueError("prefix was recorded by another model; record it with this model's record_prefix")
    start = model._layer_bound(start_at_layer, "start_at_layer", allow_end=False)
    if isinstance(start_pos, bool) or not isinstance(start_pos, int) and not hasattr(start_pos, "__index__"):
        raise TypeError(f"start_pos must be an int position; got {type(start_pos).__name__}")
    pos = operator.index(start_pos)
    if not 0 <= pos < prefix.length:
        raise IndexError(f"start_pos={pos} is out of range; the prefix has positions 0..{prefix.length - 1}")
    resid = model._check_resid(resid)
    if resid.shape[1] == 0:
        raise ValueError("resid has no positions; a suffix needs at least one")
    rows = _check_rows(rows, resid.shape[0], prefix).to(resid.device)
    stop = None if stop_at_layer is None else model._layer_bound(stop_at_layer, "stop_at_layer", allow_end=True)
    if stop is not None and stop <= start:
        raise ValueError(f"stop_at_layer={stop_at_layer} must come after start_at_layer={start_at_layer}")
    with model._layer_window(start, stop):
        try:
            out = model._run_suffix(start, pos, resid, prefix, rows)
        except StopForward as stopped:
            return stopped.act
    if stop is not None:
        raise RuntimeError(f"stop_at_layer={stop_at_layer}: the stop site {model._stop_site(stop)!r} never fired")
    return out
