"""Selections of the active latents for :func:`interp.kernels.sparse_encode`, fusable with the encoder.

A selector maps dense pre-activations ``pre [B, L]`` to ``(vals [B, W], idx [B, W])`` with ReLU applied after the
selection; ``vals[:, :n_main]`` is the main part, the rest the AuxK part: the top ``k_aux`` pre-activations among
dead latents per row (Gao et al. 2024, "Scaling and evaluating sparse autoencoders", App. A.2).

- :class:`TopKSelect`: each row's top k (Gao et al. 2024).
- :class:`BatchTopKSelect`: the top ``k * B`` of the whole batch, rows padded to the widest (Bussmann et al. 2024,
  "BatchTopK Sparse Autoencoders"); padding entries have value 0 at latent 0.

Called on a dense matrix they run torch (:func:`topk_lowest_index`: ``topk``, then rows where equal values straddle
the cut are redone with a stable sort, so equal values resolve towards the lower (flat) index).
:func:`~interp.kernels.sparse_encode` instead calls :meth:`FusedSelector.fused` where :meth:`FusedSelector.fuses`
says the native backend applies: the same selection from ``xc``, ``W_enc`` and ``b_enc`` with the dense matrix never
stored (:mod:`interp.kernels.native`), with the same tie rule, so both paths select the same latents.
"""

from __future__ import annotations

import torch
from torch import Tensor

from interp.kernels import native
from interp.kernels.backend import backend_name
from interp.kernels.cpu_ops import stable_argsort

__all__ = ["BatchTopKSelect", "FusedSelector", "TopKSelect", "batch_topk_dense", "pad_rows", "topk_lowest_index"]


def topk_lowest_index(pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``pre.topk(k, dim=-1, sorted=False)`` with a defined tie rule: among equal values the lower index is kept
    (torch.topk leaves that unspecified), NaN above every number. ``torch.topk`` first; only the rows where values
    equal to the k-th largest are left out (a tie across the cut) are redone with a stable descending sort, which
    costs one compare pass over ``pre`` when there are none. Works on the last axis of a 1-d or 2-d tensor."""
    vals, idx = pre.topk(k, dim=-1, sorted=False)
    if k == 0 or pre.numel() == 0:
        return vals, idx
    kth = torch.where(vals.isnan(), torch.inf, vals).min(dim=-1, keepdim=True).values  # smallest selected number
    left_out = (pre == kth).sum(-1) - (vals == kth).sum(-1)  # values equal to it outside the selection
    if pre.is_floating_point():
        left_out += pre.isnan().sum(-1) - vals.isnan().sum(-1)  # NaN left out: the selection is all NaN
    two_d = pre.ndim == 2
    rows = (left_out > 0).nonzero()[:, 0] if two_d else torch.arange(int(bool(left_out > 0)), device=pre.device)
    if rows.numel():
        sub = pre.index_select(0, rows) if two_d else pre[None]
        order = _stable_descending(sub)[:, :k]
        picked = sub.gather(1, order)
        if not two_d:
            return picked[0], order[0]
        idx = idx.index_copy(0, rows, order)
        vals = vals.index_copy(0, rows, picked)
    return vals, idx


def _stable_descending(t: Tensor) -> Tensor:
    """Per row, the indices of ``t [R, L]`` in descending order, NaN first, equal values by increasing index."""
    if not t.is_floating_point():
        return torch.sort(t, dim=-1, descending=True, stable=True).indices
    order = torch.sort(torch.where(t.isnan(), torch.inf, t), dim=-1, descending=True, stable=True).indices
    nan_first = torch.sort(t.isnan().gather(1, order).to(torch.uint8), dim=-1, descending=True, stable=True).indices
    return order.gather(1, nan_first)


class FusedSelector:
    """Base: the main selection plus AuxK over ``dead_mask`` (``k_aux`` of them per row, 0 for none)."""

    def __init__(self, k: int, dead_mask: Tensor | None = None, k_aux: int = 0) -> None:
        self.k, self.k_aux, self.n_main = k, k_aux, 0
        self.dead = None if dead_mask is None or k_aux == 0 else dead_mask.nonzero()[:, 0]

    def main(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        """Dense main selection (ReLU applied)."""
        raise NotImplementedError

    def main_fused(self, xc: Tensor, W_enc: Tensor, b_enc: Tensor) -> tuple[Tensor, Tensor, Tensor | None,
                                                                               Tensor | None]:
        """Fused main selection (not yet ReLU'd) and the raw aux part."""
        raise NotImplementedError

    def __call__(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        vals, idx = self.main(pre)
        self.n_main = vals.shape[1]
        if self.dead is None:
            return vals, idx
        aux_vals, aux_pos = topk_lowest_index(pre.index_select(1, self.dead), self.k_aux)
        return torch.cat([vals, aux_vals.relu_()], 1), torch.cat([idx, self.dead[aux_pos]], 1)

    def fuses(self, xc: Tensor, W_enc: Tensor, b_enc: Tensor) -> bool:
        """Whether :func:`~interp.kernels.sparse_encode` runs :meth:`fused` for these tensors: float32 CPU, the
        native backend selected and a BLAS found."""
        return (backend_name(W_enc) == "native" and all(t.dtype == torch.float32 and t.device.type == "cpu"
                                                         for t in (xc, W_enc, b_enc)) and native.encoder_available())

    def fused(self, xc: Tensor, W_enc: Tensor, b_enc: Tensor) -> tuple[Tensor, Tensor]:
        """``self(torch.addmm(b_enc, xc, W_enc))`` without the dense matrix (ties to the lower index)."""
        vals, idx, aux_vals, aux_idx = self.main_fused(xc, W_enc, b_enc)
        vals.relu_()
        self.n_main = vals.shape[1]
        if aux_vals is None:
            return vals, idx
        return torch.cat([vals, aux_vals.relu_()], 1), torch.cat([idx, aux_idx], 1)


class TopKSelect(FusedSelector):
    """Each row's ``k`` largest pre-activations (Gao et al. 2024), then AuxK."""

    def main(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        vals, idx = topk_lowest_index(pre, self.k)
        return vals.relu_(), idx

    def main_fused(self, xc, W_enc, b_enc):
        return native.topk_encode(xc, W_enc, b_enc, self.k, self.dead, self.k_aux)


class BatchTopKSelect(FusedSelector):
    """The ``k * B`` largest pre-activations of the batch (Bussmann et al. 2024), rows padded, then AuxK."""

    def main(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        return batch_topk_dense(pre, self.k)

    def main_fused(self, xc, W_enc, b_enc):
        B, L = xc.shape[0], W_enc.shape[1]
        flat_vals, flat_idx, aux_vals, aux_idx = native.batch_topk_encode(xc, W_enc, b_enc, min(self.k * B, B * L),
                                                                          self.dead, self.k_aux)
        return (*pad_rows(flat_vals, flat_idx, B, L), aux_vals, aux_idx)


def pad_rows(flat_vals: Tensor, flat_idx: Tensor, B: int, L: int) -> tuple[Tensor, Tensor]:
    """Entries ``(flat_vals, flat_idx = b * L + l)`` sorted by flat index -> ``(vals [B, W], idx [B, W])``, W the
    largest count in a row (at least 1), each row's entries first and then padding (value 0, latent 0)."""
    rows = torch.div(flat_idx, L, rounding_mode="floor")
    counts = torch.bincount(rows, minlength=B)
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.arange(flat_idx.numel(), device=flat_idx.device) - starts[rows]
    width = max(int(counts.max()) if counts.numel() else 0, 1)
    vals = torch.zeros(B, width, dtype=flat_vals.dtype, device=flat_vals.device)
    idx = torch.zeros(B, width, dtype=torch.int64, device=flat_idx.device)
    vals[rows, pos] = flat_vals
    idx[rows, pos] = flat_idx - rows * L
    return vals, idx


def batch_topk_dense(pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The top ``k * B`` entries of ``ReLU(pre [B, L])`` over the batch, padded per row to ``[B, max count]``
    (padding: value 0 at latent 0)."""
    B, L = pre.shape
    n = min(k * B, pre.numel())
    flat_vals, flat_idx = topk_lowest_index(pre.flatten(), n)
    order = stable_argsort(flat_idx)
    return pad_rows(flat_vals[order].relu_(), flat_idx[order], B, L)
