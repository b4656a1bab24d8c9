"""The sparse-autoencoder contract shared by every architecture, the trainer and the SAELens file format.

An SAE holds SAELens-named parameters ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_in]`` and
``b_dec [d_in]``; the encoder reads ``x - b_dec`` (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"):

    pre = (x - b_dec) @ W_enc + b_enc,   z = act(pre),   x_hat = z @ W_dec + b_dec.

Two entry points:

- ``sae(x) -> SAEOutput``: dense latents, for analysis and evaluation (any leading shape).
- ``sae.training_forward(x, dead_mask) -> TrainOutput``: one training step's loss on a ``[batch, d_in]`` batch. The
  loss is a MEAN over the batch (so data-parallel gradient averaging is exact); TopK-family SAEs run it on the
  sparse kernels of :mod:`interp.kernels`.

Trainer protocol, per optimizer step::

    out = sae.training_forward(x, dead_mask)   # dead_mask: BoolTensor[d_sae] or None
    out.loss.backward()
    sae.before_step()                          # removes the gradient component parallel to unit decoder rows
    optimizer.step()
    sae.after_step()                           # renormalises decoder rows to unit norm
    dead_counter.update(out.fired)

Both hooks do nothing when ``cfg.normalize_decoder`` is False.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from interp.kernels import native as native_kernels
from interp.kernels.backend import backend_name

__all__ = ["SAE", "SAEConfig", "SAEOutput", "TrainOutput", "reconstruction_metrics"]

_KNOWN_ARCHITECTURES = ("topk", "batchtopk", "relu", "jumprelu", "topk_transcoder")


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_positive_float(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class SAEConfig:
    """Architecture and hyper-parameters of an SAE; round-trips through ``to_dict`` / ``from_dict``.

    Fields that do not apply to ``architecture`` stay ``None`` (validated in ``__post_init__``).
    """

    architecture: str
    """One of "topk", "batchtopk", "relu", "jumprelu", "topk_transcoder"."""
    d_in: int
    """Width of the activations the SAE reads."""
    d_sae: int
    """Number of latents."""
    k: int | None = None
    """TopK: active latents per row. BatchTopK: mean active latents per row (k * batch kept over the batch)."""
    aux_k: int | None = None
    """TopK/BatchTopK AuxK: how many dead latents reconstruct the residual; None -> d_in // 2 (Gao et al. App. B.1)."""
    aux_coefficient: float | None = None
    """TopK/BatchTopK: weight of the AuxK loss (Gao et al. use 1/32)."""
    threshold_momentum: float | None = None
    """BatchTopK: EMA rate of the inference threshold towards the batch's smallest kept activation."""
    l1_coefficient: float | None = None
    """ReLU: weight of the decoder-norm-weighted L1 penalty sum_i |z_i| * ||W_dec[i]||."""
    l0_coefficient: float | None = None
    """JumpReLU: weight of the L0 penalty (Rajamanoharan et al. 2024)."""
    threshold_init: float | None = None
    """JumpReLU: initial value of every latent's threshold."""
    bandwidth: float | None = None
    """JumpReLU: width epsilon of the rectangle kernel of the straight-through estimators."""
    normalize_decoder: bool = True
    """Keep decoder rows at unit norm (``before_step`` / ``after_step``); ReLU with norm-weighted L1 needs no such
    constraint and defaults to False."""
    d_out: int | None = None
    """Transcoders only: width of the activation the decoder predicts (None for SAEs, whose output is d_in wide)."""

    def __post_init__(self) -> None:
        if self.architecture not in _KNOWN_ARCHITECTURES:
            raise ValueError(f"architecture must be one of {_KNOWN_ARCHITECTURES}, got {self.architecture!r}")
        _check_positive_int("d_in", self.d_in)
        _check_positive_int("d_sae", self.d_sae)
        needed = {
            "topk": ("k", "aux_coefficient"),
            "batchtopk": ("k", "aux_coefficient", "threshold_momentum"),
            "relu": ("l1_coefficient",),
            "jumprelu": ("l0_coefficient", "threshold_init", "bandwidth"),
            "topk_transcoder": ("k", "aux_coefficient"),
        }[self.architecture]
        if (self.architecture == "topk_transcoder") != (self.d_out is not None):
            raise ValueError(f"d_out is required for transcoders and only for them; got d_out={self.d_out!r} with "
                             f"architecture {self.architecture!r}")
        if self.d_out is not None:
            _check_positive_int("d_out", self.d_out)
        for name in ("k", "aux_k", "aux_coefficient", "threshold_momentum", "l1_coefficient", "l0_coefficient",
                     "threshold_init", "bandwidth"):
            value = getattr(self, name)
            if name in needed and value is None:
                raise ValueError(f"{name} is required for architecture {self.architecture!r}")
            if name not in needed and name != "aux_k" and value is not None:
                raise ValueError(f"{name} does not apply to architecture {self.architecture!r} (got {value!r})")
        if self.k is not None:
            _check_positive_int("k", self.k)
            if self.k >= self.d_sae:
                raise ValueError(f"k must be < d_sae={self.d_sae}, got k={self.k}")
        if self.aux_k is not None:
            if self.architecture not in ("topk", "batchtopk", "topk_transcoder"):
                raise ValueError(f"aux_k does not apply to architecture {self.architecture!r}")
            _check_positive_int("aux_k", self.aux_k)
        if self.aux_coefficient is not None and (self.aux_coefficient < 0):
            raise ValueError(f"aux_coefficient must be >= 0, got {self.aux_coefficient!r}")
        if self.threshold_momentum is not None and not 0 < self.threshold_momentum <= 1:
            raise ValueError(f"threshold_momentum must be in (0, 1], got {self.threshold_momentum!r}")
        for name in ("l1_coefficient", "l0_coefficient"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        for name in ("threshold_init", "bandwidth"):
            if getattr(self, name) is not None:
                _check_positive_float(name, getattr(self, name))

    @property
    def effective_aux_k(self) -> int:
        """The AuxK width actually used: ``aux_k`` or ``d_in // 2``, at least 1 and at most ``d_sae``."""
        return max(1, min(self.aux_k if self.aux_k is not None else self.d_in // 2, self.d_sae))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SAEConfig:
        """Inverse of ``to_dict``; unknown keys raise ValueError naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"SAEConfig.from_dict got unknown keys {unknown}; known: {sorted(names)}")
        return cls(**data)


class SAEOutput(NamedTuple):
    """Result of ``sae(x)`` (dense; for analysis and evaluation)."""

    x_hat: Tensor
    """Reconstruction, same shape as x."""
    latents: Tensor
    """Post-activation latents ``[..., d_sae]``."""
    pre_acts: Tensor
    """Encoder pre-activations ``(x - b_dec) @ W_enc + b_enc``, ``[..., d_sae]``."""


class TrainOutput(NamedTuple):
    """Result of ``sae.training_forward(x, dead_mask)``."""

    loss: Tensor
    """Scalar loss to backpropagate: batch mean of the squared error plus penalty / AuxK terms."""
    x_hat: Tensor
    """Reconstruction ``[batch, d_in]``."""
    fired: Tensor
    """BoolTensor[d_sae]: latents active at least once in this batch."""
    metrics: dict[str, Tensor]
    """0-dim detached tensors: always ``mse``, ``fvu``, ``l0``; plus ``aux`` / ``l1`` / ``l0_loss`` where relevant."""


def reconstruction_metrics(x: Tensor, x_hat: Tensor) -> tuple[Tensor, Tensor]:
    """``(mse, fvu)`` of a ``[batch, d_in]`` batch; ``mse`` keeps its graph, ``fvu`` is detached.

    mse = mean_b ||x_b - x_hat_b||^2 (sum over d_in: the SAELens convention, so coefficients carry over);
    FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 (DEFINITIONS.md).
    """
    err = (x_hat - x).pow(2).sum(-1)
    mse = err.mean()
    with torch.no_grad():
        total = (x - x.mean(0, keepdim=True)).pow(2).sum()
        fvu = err.sum() / total.clamp_min(torch.finfo(x.dtype).tiny)
    return mse, fvu


class SAE(nn.Module):
    """Base class: parameters, dense encode/decode, decoder-norm hooks, b_dec initialisation, saving.

    Subclasses set ``architecture`` and implement ``activation(pre_acts)`` and ``training_forward``.
    Initialisation (Gao et al. 2024, Sec. 2.4): decoder rows random unit vectors, ``W_enc = W_dec.T``, biases zero.
    """

    architecture: ClassVar[str] = ""
    metadata = None
    """Where the SAE belongs (:class:`interp.saes.metadata.SAEMetadata`: model, site, context, dataset), or None;
    set by ``train`` and ``load``, written to ``cfg.json`` by ``save``."""

    def __init__(self, cfg: SAEConfig, *, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        if not isinstance(cfg, SAEConfig):
            raise TypeError(f"cfg must be an SAEConfig, got {type(cfg).__name__}")
        if cfg.architecture != self.architecture:
            raise ValueError(f"cfg.architecture must be {self.architecture!r} for {type(self).__name__}, "
                             f"got {cfg.architecture!r}")
        self.cfg = cfg
        kw = {"dtype": dtype or torch.float32, "device": device}
        w_dec = torch.randn(cfg.d_sae, cfg.d_in, **kw)
        w_dec /= w_dec.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec)
        self.W_enc = nn.Parameter(w_dec.t().contiguous())  # row-major [d_in, d_sae], as fused Adam wants it
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, **kw))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in, **kw))

    # ----- dense path (analysis / evaluation) -------------------------------------------------------------
    def _check_input(self, x: Tensor, name: str = "x", width: int | None = None, same_dtype: bool = True) -> None:
        """Inputs must have the SAE's width, dtype and device: a float64 batch given to a float32 SAE is an error
        saying how to convert one or the other (never a silent cast, never a raw matmul error)."""
        width = self.cfg.d_in if width is None else width
        if not isinstance(x, Tensor) or x.ndim < 1 or x.shape[-1] != width:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a tensor of shape [..., {width}], got {shape}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be floating point, got {x.dtype}")
        p = self.W_enc
        if same_dtype and x.dtype != p.dtype:
            raise TypeError(f"{name} has dtype {x.dtype} but this SAE's parameters are {p.dtype}; convert the input "
                            f"({name}.to({p.dtype})) or the SAE (sae.to({x.dtype}))")
        if same_dtype and x.device != p.device:
            raise ValueError(f"{name} is on {x.device} but this SAE is on {p.device}; move one of them "
                             f"({name}.to('{p.device}') or sae.to('{x.device}'))")

    def pre_acts(self, x: Tensor) -> Tensor:
        """Encoder pre-activations ``(x - b_dec) @ W_enc + b_enc``."""
        self._check_input(x)
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def activation(self, pre_acts: Tensor) -> Tensor:
        """Dense post-activation latents from pre-activations (architecture specific)."""
        raise NotImplementedError

    def encode(self, x: Tensor) -> Tensor:
        """Dense latents ``[..., d_sae]``."""
        return self.activation(self.pre_acts(x))

    def decode(self, latents: Tensor) -> Tensor:
        """Reconstruction ``latents @ W_dec + b_dec``."""
        self._check_input(latents, "latents", self.cfg.d_sae)
        return latents @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> SAEOutput:
        pre = self.pre_acts(x)
        latents = self.activation(pre)
        return SAEOutput(self.decode(latents), latents, pre)

    # ----- training -----------------------------------------------------------------------------------
    def training_forward(self, x: Tensor, dead_mask: Tensor | None = None) -> TrainOutput:
        """Loss (batch mean) and metrics for one ``[batch, d_in]`` training batch."""
        raise NotImplementedError

    def _check_train_input(self, x: Tensor, dead_mask: Tensor | None) -> None:
        self._check_input(x)
        if x.ndim != 2:
            raise ValueError(f"x must be [batch, {self.cfg.d_in}] for training_forward, got {tuple(x.shape)}")
        self._check_dead_mask(dead_mask)

    def _check_dead_mask(self, dead_mask: Tensor | None) -> None:
        if dead_mask is not None and (dead_mask.dtype != torch.bool or tuple(dead_mask.shape) != (self.cfg.d_sae,)):
            raise ValueError(f"dead_mask must be a BoolTensor of shape [{self.cfg.d_sae}], "
                             f"got {dead_mask.dtype} {tuple(dead_mask.shape)}")

    @torch.no_grad()
    def before_step(self) -> None:
        """Call between ``loss.backward()`` and ``optimizer.step()``: removes from ``W_dec.grad`` the component
        parallel to each (unit-norm) decoder row, so the step moves along the sphere (Bricken et al. 2023;
        Gao et al. 2024). No-op unless ``cfg.normalize_decoder``."""
        grad = self.W_dec.grad
        if not self.cfg.normalize_decoder or grad is None:
            return
        w = self.W_dec.data
        if backend_name(w) == "native" and native_kernels.project_out_parallel_(grad, w):  # one pass, in C
            return
        # einsum (a batched dot, no temporary) and norm: measured 2-30x cheaper here than (grad * w).sum(-1)
        coef = torch.einsum("ld,ld->l", grad, w) / w.norm(dim=-1).square().clamp_min(torch.finfo(w.dtype).tiny)
        grad.addcmul_(coef[:, None], w, value=-1)

    @torch.no_grad()
    def after_step(self) -> None:
        """Call after ``optimizer.step()``: renormalises decoder rows to unit norm. No-op unless
        ``cfg.normalize_decoder``."""
        if self.cfg.normalize_decoder:
            w = self.W_dec.data
            w /= w.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)

    @torch.no_grad()
    def init_b_dec(self, x_sample: Tensor, method: str = "geometric_median") -> None:
        """Set ``b_dec`` to the geometric median (Bricken et al. 2023) or the mean of ``x_sample [n, d_in]``."""
        self._check_input(x_sample, "x_sample", same_dtype=False)
        if x_sample.ndim != 2 or x_sample.shape[0] == 0:
            raise ValueError(f"x_sample must be [n>0, {self.cfg.d_in}], got {tuple(x_sample.shape)}")
        self._set_b_dec(x_sample, method)

    def _set_b_dec(self, rows: Tensor, method: str) -> None:
        """``b_dec`` := the mean or geometric median of ``rows`` (computed in float64)."""
        sample = rows.to(self.b_dec.device, torch.float64)
        if method == "mean":
            center = sample.mean(0)
        elif method == "geometric_median":
            from interp.saes.geometric_median import geometric_median

            center = geometric_median(sample)
        else:
            raise ValueError(f"method must be 'geometric_median' or 'mean', got {method!r}")
        self.b_dec.copy_(center.to(self.b_dec.dtype))

    # ----- files --------------------------------------------------------------------------------------
    def extra_state_tensors(self) -> dict[str, Tensor]:
        """Architecture-specific tensors saved beside the four matrices (e.g. ``threshold``)."""
        return {}

    def save(self, path: str | Path) -> Path:
        """Write ``cfg.json`` + ``sae_weights.safetensors`` (SAELens format) atomically into folder ``path``."""
        from interp.saes.io import save_sae

        return save_sae(self, path)

    def extra_repr(self) -> str:
        fields = {k: v for k, v in self.cfg.to_dict().items() if v is not None and k != "architecture"}
        return ", ".join(f"{k}={v}" for k, v in fields.items())
