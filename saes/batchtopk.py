"""BatchTopK SAE (Bussmann, Leask & Nanda 2024, "BatchTopK Sparse Autoencoders", arXiv:2412.06410).

Training keeps the top ``k * batch`` ReLU pre-activations over the whole batch (rows get varying counts, mean k);
inference replaces the batch selection by a global threshold theta, estimated during training as an EMA of the
smallest kept activation per batch (as SAELens): z = ReLU(pre) * (pre > theta). AuxK as in :mod:`interp.saes.topk`.
SAELens saves BatchTopK SAEs as JumpReLU SAEs with threshold = theta for every latent; so does :func:`save`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from interp.kernels.selectors import batch_topk_dense
from interp.saes.base import SAE, SAEConfig, TrainOutput
from interp.saes.topk import sparse_training_step

__all__ = ["BatchTopKSAE", "batch_topk_select"]


def batch_topk_select(pre: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The top ``k * B`` entries of ``ReLU(pre [B, L])`` over the batch, padded per row to ``[B, max count]``
    (padding: value 0 at latent 0); the dense form of :class:`interp.kernels.BatchTopKSelect`."""
    return batch_topk_dense(pre, k)


class BatchTopKSAE(SAE):
    """BatchTopK sparse autoencoder (Bussmann et al. 2024); buffer ``threshold`` is the inference threshold."""

    architecture = "batchtopk"

    def __init__(self, d_in: int, d_sae: int, k: int, *, aux_k: int | None = None, aux_coefficient: float = 1 / 32,
                 threshold_momentum: float = 0.01, normalize_decoder: bool = True,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        cfg = SAEConfig(self.architecture, d_in, d_sae, k=k, aux_k=aux_k, aux_coefficient=aux_coefficient,
                        threshold_momentum=threshold_momentum, normalize_decoder=normalize_decoder)
        super().__init__(cfg, dtype=dtype, device=device)
        self.register_buffer("threshold", torch.zeros((), dtype=torch.float64, device=self.W_enc.device))

    def activation(self, pre_acts: Tensor) -> Tensor:
        return pre_acts.relu() * (pre_acts > self.threshold.to(pre_acts.dtype))

    def training_forward(self, x: Tensor, dead_mask: Tensor | None = None) -> TrainOutput:
        """Sparse-kernel training step with the batch-wide selection (fused with the encoder on the native
        backend); in train mode it also moves ``threshold`` towards the smallest kept activation (EMA, no grad)."""
        out, main_vals, _ = sparse_training_step(self, x, dead_mask, batch=True)
        active = main_vals > 0
        if self.training and bool(active.any()):
            with torch.no_grad():
                m = self.cfg.threshold_momentum
                self.threshold.mul_(1 - m).add_(m * main_vals[active].min().to(torch.float64))
        out.metrics["threshold"] = self.threshold.detach().clone()
        return out

    def extra_state_tensors(self) -> dict[str, Tensor]:
        return {"threshold": self.threshold.to(self.W_enc.dtype).expand(self.cfg.d_sae).contiguous()}
