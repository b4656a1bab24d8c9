"""ReLU SAE with a decoder-norm-weighted L1 penalty (Bricken et al. 2023, "Towards Monosemanticity"; Anthropic,
"Circuits Updates - April 2024": L = ||x - x_hat||^2 + lambda * sum_i |z_i| ||W_dec[i]||, no decoder constraint).

Saved as SAELens's "standard" architecture (ReLU encoder).
"""

from __future__ import annotations

import torch
from torch import Tensor

from interp.saes.base import SAE, SAEConfig, TrainOutput, reconstruction_metrics

__all__ = ["ReLUSAE"]


class ReLUSAE(SAE):
    """z = ReLU(W_enc(x - b_dec) + b_enc); dense training path (no k-sparsity to exploit)."""

    architecture = "relu"

    def __init__(self, d_in: int, d_sae: int, l1_coefficient: float = 5.0, *, normalize_decoder: bool = False,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        cfg = SAEConfig(self.architecture, d_in, d_sae, l1_coefficient=l1_coefficient,
                        normalize_decoder=normalize_decoder)
        super().__init__(cfg, dtype=dtype, device=device)

    def activation(self, pre_acts: Tensor) -> Tensor:
        return pre_acts.relu()

    def training_forward(self, x: Tensor, dead_mask: Tensor | None = None) -> TrainOutput:
        """Loss = batch mean of ||x - x_hat||^2 + l1_coefficient * sum_i z_i ||W_dec[i]||; dead_mask is unused."""
        self._check_train_input(x, dead_mask)
        x = x.to(self.W_enc.dtype)
        z = self.activation(self.pre_acts(x))
        x_hat = z @ self.W_dec + self.b_dec
        mse, fvu = reconstruction_metrics(x, x_hat)
        l1 = (z * self.W_dec.norm(dim=-1)).sum(-1).mean()
        loss = mse + self.cfg.l1_coefficient * l1
        active = z.detach() > 0
        metrics = {"mse": mse.detach(), "fvu": fvu, "l0": active.sum(-1).to(x.dtype).mean(), "l1": l1.detach()}
        return TrainOutput(loss, x_hat, active.any(0), metrics)
