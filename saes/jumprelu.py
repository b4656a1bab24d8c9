"""JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead: Improving Reconstruction Fidelity with JumpReLU Sparse
Autoencoders", arXiv:2407.14435).

z = JumpReLU_theta(pre) = pre * H(pre - theta), L = ||x - x_hat||^2 + lambda * ||z||_0. The step H has zero gradient
almost everywhere; the paper's straight-through estimators use a rectangle kernel K(u) = 1{|u| < 1/2} of bandwidth
epsilon for the threshold only (Eqs. 11-12):

    d JumpReLU / d theta = -(theta / eps) K((pre - theta) / eps),   d H(pre - theta) / d theta = -(1 / eps) K(...),

while d JumpReLU / d pre = H(pre - theta) and the L0 term passes no gradient to pre. theta is stored as
``log_threshold`` (positive by construction) and saved as ``threshold``, as SAELens does.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.autograd import Function

from interp.saes.base import SAE, SAEConfig, TrainOutput, reconstruction_metrics

__all__ = ["JumpReLUSAE", "jumprelu", "step"]


def _rectangle(u: Tensor) -> Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


def _sum_to(t: Tensor, like: Tensor) -> Tensor:
    return t.reshape(-1, like.shape[-1]).sum(0) if t.ndim > 1 else t


class _JumpReLU(Function):
    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        d_pre = grad * (pre > threshold)
        d_thr = -(threshold / eps) * _rectangle((pre - threshold) / eps) * grad
        return d_pre, _sum_to(d_thr, threshold), None


class _Step(Function):
    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        d_thr = -(1.0 / eps) * _rectangle((pre - threshold) / eps) * grad
        return None, _sum_to(d_thr, threshold), None


def jumprelu(pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    """``pre * (pre > threshold)`` with the rectangle-kernel straight-through gradient for ``threshold``."""
    return _JumpReLU.apply(pre, threshold, bandwidth)


def step(pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    """``(pre > threshold)`` as a float with the rectangle-kernel straight-through gradient for ``threshold``."""
    return _Step.apply(pre, threshold, bandwidth)


class JumpReLUSAE(SAE):
    """JumpReLU sparse autoencoder with the L0 penalty (Rajamanoharan et al. 2024); dense training path."""

    architecture = "jumprelu"

    def __init__(self, d_in: int, d_sae: int, l0_coefficient: float = 1e-3, *, threshold_init: float = 1e-3,
                 bandwidth: float = 1e-3, normalize_decoder: bool = True, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        cfg = SAEConfig(self.architecture, d_in, d_sae, l0_coefficient=l0_coefficient, threshold_init=threshold_init,
                        bandwidth=bandwidth, normalize_decoder=normalize_decoder)
        super().__init__(cfg, dtype=dtype, device=device)
        self.log_threshold = nn.Parameter(torch.full((d_sae,), math.log(threshold_init), dtype=self.W_enc.dtype,
                                                     device=self.W_enc.device))

    @property
    def threshold(self) -> Tensor:
        """Per-latent threshold theta = exp(log_threshold)."""
        return self.log_threshold.exp()

    def activation(self, pre_acts: Tensor) -> Tensor:
        return pre_acts * (pre_acts > self.threshold)

    def training_forward(self, x: Tensor, dead_mask: Tensor | None = None) -> TrainOutput:
        """Loss = batch mean of ||x - x_hat||^2 + l0_coefficient * ||z||_0; dead_mask is unused."""
        self._check_train_input(x, dead_mask)
        x = x.to(self.W_enc.dtype)
        pre = self.pre_acts(x)
        theta = self.threshold
        eps = self.cfg.bandwidth
        z = jumprelu(pre, theta, eps)
        x_hat = z @ self.W_dec + self.b_dec
        mse, fvu = reconstruction_metrics(x, x_hat)
        l0_loss = step(pre, theta, eps).sum(-1).mean()
        loss = mse + self.cfg.l0_coefficient * l0_loss
        active = z.detach() != 0
        metrics = {"mse": mse.detach(), "fvu": fvu, "l0": active.sum(-1).to(x.dtype).mean(),
                   "l0_loss": l0_loss.detach()}
        return TrainOutput(loss, x_hat, active.any(0), metrics)

    def extra_state_tensors(self) -> dict[str, Tensor]:
        return {"threshold": self.threshold.detach()}
