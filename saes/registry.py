"""Architecture names -> SAE classes, and ``build_sae``."""

from __future__ import annotations

import dataclasses

import torch

from interp.saes.base import SAE, SAEConfig
from interp.saes.batchtopk import BatchTopKSAE
from interp.saes.jumprelu import JumpReLUSAE
from interp.saes.relu import ReLUSAE
from interp.saes.topk import TopKSAE
from interp.saes.transcoder import TopKTranscoder

__all__ = ["ARCHITECTURES", "build_sae", "sae_from_config"]

ARCHITECTURES: dict[str, type[SAE]] = {
    "topk": TopKSAE,
    "batchtopk": BatchTopKSAE,
    "relu": ReLUSAE,
    "jumprelu": JumpReLUSAE,
    "topk_transcoder": TopKTranscoder,
}


def _class_for(architecture: str) -> type[SAE]:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown SAE architecture {architecture!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[architecture]


def build_sae(architecture: str, d_in: int, d_sae: int, *, dtype: torch.dtype | None = None,
              device: torch.device | str | None = None, **kw) -> SAE:
    """A freshly initialised SAE, e.g. ``build_sae("topk", 512, 16384, k=32)``."""
    return _class_for(architecture)(d_in=d_in, d_sae=d_sae, dtype=dtype, device=device, **kw)


def sae_from_config(cfg: SAEConfig, *, dtype: torch.dtype | None = None,
                    device: torch.device | str | None = None) -> SAE:
    """A freshly initialised SAE whose ``cfg`` equals ``cfg``."""
    kw = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
          if f.name != "architecture" and getattr(cfg, f.name) is not None}
    sae = build_sae(cfg.architecture, dtype=dtype, device=device, **kw)
    assert sae.cfg == cfg, (sae.cfg, cfg)
    return sae
