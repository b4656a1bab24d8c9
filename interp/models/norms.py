"""The norms' scale as a hook site (``ln1.hook_scale``, ``ln2.hook_scale``, ``ln_final.hook_scale``), shared by every
wrapper: what TransformerLens caches to "freeze" a norm, e.g. for direct logit attribution (Elhage et al. 2021,
"A Mathematical Framework for Transformer Circuits": the final norm is linear once its scale is fixed).

A norm's output is ``w ⊙ (x - centre) / scale (+ b)`` with ``scale = sqrt(mean((x - centre)²) + eps)`` (``centre``:
the mean over ``d_model`` for LayerNorm, 0 for RMSNorm). The site holds ``scale`` ``[batch, pos, 1]`` in ``x``'s
dtype, computed in float32 as the norms themselves are. A hook that replaces it rescales the norm's output to
``(out - b) · scale / new + b``, which is the same norm with the new scale for any weight convention (``w`` or
``1 + w``); only then (or when gradients flow to the site) does the output differ from the module's own, by rounding.
With gradients, the ``scale`` in that ratio is a second evaluation of the same formula, so that the gradient at the
site is the loss's sensitivity to the scale alone (the output's dependence on ``x`` through ``(out - b) · scale`` is
``w``, and through the site ``-(out - b) / scale``: together the norm's own Jacobian).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["norm_scale", "rescaled", "module_eps"]


def norm_scale(x: Tensor, eps: float, centre: bool) -> Tensor:
    """``sqrt(mean((x - mean(x))²) + eps)`` (``centre``) or ``sqrt(mean(x²) + eps)`` over the last axis, kept as
    ``[..., 1]``, computed in float32 and returned in ``x``'s dtype."""
    h = x.float()
    if centre:
        h = h - h.mean(-1, keepdim=True)
    return (h.pow(2).mean(-1, keepdim=True) + eps).sqrt().to(x.dtype)


def rescaled(out: Tensor, scale: Tensor, new: Tensor, bias: Tensor | None) -> Tensor:
    """The norm output ``out`` (computed with ``scale``) as it is with the scale ``new`` instead."""
    ratio = scale.float() / new.float()
    if bias is None:
        return (out.float() * ratio).to(out.dtype)
    return ((out.float() - bias.float()) * ratio + bias.float()).to(out.dtype)


def module_eps(module: torch.nn.Module) -> float:
    """A norm module's epsilon (HF RMSNorms: ``variance_epsilon``; ``nn.LayerNorm``: ``eps``)."""
    for attr in ("variance_epsilon", "eps", "epsilon"):
        value = getattr(module, attr, None)
        if isinstance(value, (int, float)):
            return float(value)
    raise AttributeError(f"{type(module).__name__} has no epsilon attribute (variance_epsilon / eps): cannot compute "
                         "its scale for hook_scale")
