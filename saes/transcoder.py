"""TopK transcoder (Dunefsky, Chlenski & Nanda 2024, "Transcoders Find Interpretable LLM Feature Circuits",
arXiv:2406.11944; TopK activation as Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

A transcoder reads one site and predicts another: typically the MLP input ``blocks.{l}.ln2.hook_normalized`` and the
MLP output ``blocks.{l}.hook_mlp_out``, so that spliced in place of the MLP it gives a sparse, linear-in-latents
replacement of it (the building block of attribution graphs). With ``x`` the input and ``y`` the target:

    z = ReLU(TopK(x @ W_enc + b_enc)),   y_hat = z @ W_dec + b_dec,   L = ||y - y_hat||^2 + AuxK,

with no decoder bias subtracted from the input (its width is ``d_out``, not ``d_in``): SAELens's transcoder
convention (``apply_b_dec_to_input: false``). AuxK (Gao et al. App. A.2): the top ``aux_k`` dead latents reconstruct
the residual ``y - y_hat``, weighted as in :mod:`interp.saes.topk`. Training runs on the same sparse kernels
(:mod:`interp.kernels`) as the TopK SAE: the encoder forward is the only dense product.

Training rows are pairs ``[x, y]`` concatenated along the last axis (``d_in + d_out`` wide), so the activation store,
its shuffling buffer and the trainer serve transcoders unchanged (:meth:`TopKTranscoder.split`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from interp.saes.base import SAE, SAEConfig, TrainOutput
from interp.saes.topk import sparse_topk_step, topk_activation

__all__ = ["TopKTranscoder"]


class TopKTranscoder(SAE):
    """TopK transcoder: encoder reads ``d_in``-wide activations, decoder writes ``d_out``-wide ones."""

    architecture = "topk_transcoder"

    def __init__(self, d_in: int, d_sae: int, k: int, *, d_out: int | None = None, aux_k: int | None = None,
                 aux_coefficient: float = 1 / 32, normalize_decoder: bool = True, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        cfg = SAEConfig(self.architecture, d_in, d_sae, k=k, aux_k=aux_k, aux_coefficient=aux_coefficient,
                        normalize_decoder=normalize_decoder, d_out=d_in if d_out is None else d_out)
        super().__init__(cfg, dtype=dtype, device=device)
        kw = {"dtype": self.W_enc.dtype, "device": self.W_enc.device}
        w_dec = torch.randn(cfg.d_sae, cfg.d_out, **kw)  # the base class made d_in-wide ones
        self.W_dec = nn.Parameter(w_dec / w_dec.norm(dim=-1, keepdim=True))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_out, **kw))
        self.register_buffer("_no_input_bias", torch.zeros(cfg.d_in, **kw), persistent=False)

    @property
    def d_out(self) -> int:
        return self.cfg.d_out

    def pre_acts(self, x: Tensor) -> Tensor:
        """Encoder pre-activations ``x @ W_enc + b_enc`` (no decoder bias: it lives in the output space)."""
        self._check_input(x)
        return x @ self.W_enc + self.b_enc

    def activation(self, pre_acts: Tensor) -> Tensor:
        return topk_activation(pre_acts, self.cfg.k)

    def split(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """``(x [n, d_in], y [n, d_out])`` from paired training rows ``[n, d_in + d_out]``."""
        width = self.cfg.d_in + self.cfg.d_out
        if not isinstance(rows, Tensor) or rows.ndim != 2 or rows.shape[1] != width:
            got = tuple(rows.shape) if isinstance(rows, Tensor) else type(rows).__name__
            raise ValueError(f"transcoder training rows must be [batch, d_in + d_out = {self.cfg.d_in} + "
                             f"{self.cfg.d_out}] (input and target side by side); got {got}")
        return rows[:, : self.cfg.d_in], rows[:, self.cfg.d_in:]

    def training_forward(self, x: Tensor, dead_mask: Tensor | None = None) -> TrainOutput:
        """Loss (batch mean) on paired rows ``x = [input, target]``; see the module docstring."""
        inp, target = self.split(x)
        self._check_dead_mask(dead_mask)
        dtype = self.W_enc.dtype
        return sparse_topk_step(self, inp.to(dtype), target.to(dtype), self._no_input_bias, dead_mask)[0]

    @torch.no_grad()
    def init_b_dec(self, x_sample: Tensor, method: str = "geometric_median") -> None:
        """Set ``b_dec`` to the geometric median or mean of the targets: ``x_sample`` is ``[n, d_out]`` targets or
        ``[n, d_in + d_out]`` paired training rows. With paired rows, ``b_enc`` is also set to ``-mean(x) @ W_enc``,
        so the encoder starts on centred inputs, as an SAE's does through ``x - b_dec`` (without it, the mean of an
        uncentred input such as the normalised MLP input picks the same latents for every token, and most die)."""
        if isinstance(x_sample, Tensor) and x_sample.ndim == 2 and x_sample.shape[1] == self.cfg.d_in + self.cfg.d_out:
            x_in, x_sample = self.split(x_sample)
            mean_in = x_in.to(self.W_enc.device, torch.float64).mean(0)
            self.b_enc.copy_((-(mean_in @ self.W_enc.double())).to(self.b_enc.dtype))
        if not (isinstance(x_sample, Tensor) and x_sample.ndim == 2 and x_sample.shape[1] == self.cfg.d_out
                and x_sample.shape[0] > 0 and x_sample.is_floating_point()):
            got = tuple(x_sample.shape) if isinstance(x_sample, Tensor) else type(x_sample).__name__
            raise ValueError(f"x_sample must be float [n>0, d_out={self.cfg.d_out}] targets or [n>0, "
                             f"{self.cfg.d_in + self.cfg.d_out}] paired rows; got {got}")
        self._set_b_dec(x_sample, method)
