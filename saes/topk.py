"""TopK SAE with AuxK (Gao et al. 2024, "Scaling and evaluating sparse autoencoders", arXiv:2406.04093).

z = ReLU(TopK(W_enc(x - b_dec) + b_enc)), x_hat = W_dec z + b_dec. AuxK (Gao et al. Sec. 2.4 / App. A.2): the
top ``aux_k`` dead latents' pre-activations reconstruct the residual e = x - x_hat (no bias):
L = ||x - x_hat||^2 + aux_coefficient * scale * ||e - W_dec z_aux||^2, scale = min(n_dead / aux_k, 1) as in
EleutherAI sparsify and SAELens. Training runs on the sparse kernels of :mod:`interp.kernels`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from interp.kernels import BatchTopKSelect, TopKSelect, sparse_decode_autograd, sparse_encode
from interp.kernels.selectors import topk_lowest_index
from interp.saes.base import SAE, SAEConfig, TrainOutput, reconstruction_metrics

__all__ = ["TopKSAE", "sparse_topk_step", "sparse_training_step", "topk_activation"]


def topk_activation(pre_acts: Tensor, k: int) -> Tensor:
    """Dense ``ReLU(TopK(pre_acts))`` along the last axis (ReLU after the selection, as Gao et al. and SAELens);
    among equal values the lower latent is kept, as in training (:func:`interp.kernels.selectors.topk_lowest_index`)."""
    flat = pre_acts.reshape(-1, pre_acts.shape[-1])
    vals, idx = topk_lowest_index(flat, k)
    vals, idx = vals.reshape(*pre_acts.shape[:-1], k), idx.reshape(*pre_acts.shape[:-1], k)
    return torch.zeros_like(pre_acts).scatter(-1, idx, vals.relu())


class TopKSAE(SAE):
    """TopK sparse autoencoder (Gao et al. 2024) with the AuxK dead-latent loss."""

    architecture = "topk"

    def __init__(self, d_in: int, d_sae: int, k: int, *, aux_k: int | None = None, aux_coefficient: float = 1 / 32,
                 normalize_decoder: bool = True, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        cfg = SAEConfig(self.architecture, d_in, d_sae, k=k, aux_k=aux_k, aux_coefficient=aux_coefficient,
                        normalize_decoder=normalize_decoder)
        super().__init__(cfg, dtype=dtype, device=device)

    def activation(self, pre_acts: Tensor) -> Tensor:
        return topk_activation(pre_acts, self.cfg.k)

    def training_forward(self, x: Tensor, dead_mask: Tensor | None = None) -> TrainOutput:
        """Sparse-kernel training step; see the module docstring for the loss. On float32 CPU tensors the encoder
        is fused with the selection (:class:`interp.kernels.TopKSelect`)."""
        return sparse_training_step(self, x, dead_mask)[0]


def sparse_training_step(sae: SAE, x: Tensor, dead_mask: Tensor | None, batch: bool = False
                         ) -> tuple[TrainOutput, Tensor, Tensor]:
    """Shared TopK/BatchTopK step on the sparse kernels: ``(TrainOutput, main_vals, main_idx)``; the active latents
    are each row's top ``cfg.k`` (:class:`~interp.kernels.TopKSelect`), or with ``batch`` the batch's top
    ``cfg.k * batch`` (:class:`~interp.kernels.BatchTopKSelect`), and the AuxK part is appended when latents are
    dead. On the native backend the selection is fused with the encoder."""
    sae._check_train_input(x, dead_mask)
    x = x.to(sae.W_enc.dtype)
    return sparse_topk_step(sae, x, x, sae.b_dec, dead_mask, batch)


def sparse_topk_step(sae: SAE, inp: Tensor, target: Tensor, input_bias: Tensor, dead_mask: Tensor | None,
                     batch: bool = False) -> tuple[TrainOutput, Tensor, Tensor]:
    """The TopK step on checked inputs in the SAE's dtype: encode ``inp - input_bias`` (the SAE's ``b_dec``; zeros
    for a transcoder), reconstruct ``target`` (``inp`` itself for an SAE) from the selected latents, AuxK on the
    residual (module docstring). Returns ``(TrainOutput, main_vals, main_idx)``."""
    cfg = sae.cfg
    n_dead = int(dead_mask.sum()) if dead_mask is not None else 0
    k_aux = min(cfg.effective_aux_k, n_dead)
    select = (BatchTopKSelect if batch else TopKSelect)(cfg.k, dead_mask, k_aux)
    vals, idx = sparse_encode(inp, sae.W_enc, sae.b_enc, input_bias, select)
    main_vals, main_idx = vals[:, :select.n_main], idx[:, :select.n_main]
    y_hat = sparse_decode_autograd(main_vals, main_idx, sae.W_dec) + sae.b_dec
    mse, fvu = reconstruction_metrics(target, y_hat)
    loss = mse
    aux = torch.zeros((), dtype=target.dtype, device=target.device)
    if k_aux:
        residual = (target - y_hat).detach()
        e_hat = sparse_decode_autograd(vals[:, select.n_main:], idx[:, select.n_main:], sae.W_dec)
        aux = (e_hat - residual).pow(2).sum(-1).mean()
        loss = loss + cfg.aux_coefficient * min(n_dead / cfg.effective_aux_k, 1.0) * aux
    active = main_vals.detach() > 0
    fired = torch.zeros(cfg.d_sae, dtype=torch.bool, device=target.device)
    fired[main_idx[active]] = True
    metrics = {"mse": mse.detach(), "fvu": fvu, "l0": active.sum(-1).to(target.dtype).mean(), "aux": aux.detach()}
    return TrainOutput(loss, y_hat, fired, metrics), main_vals.detach(), main_idx
