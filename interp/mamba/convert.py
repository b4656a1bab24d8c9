"""Hugging Face ``MambaForCausalLM`` / ``Mamba2ForCausalLM`` -> :class:`~interp.mamba.model.HookedMamba`.

Parameter names inside the mixers are HF's, so conversion is a renaming of the outer modules:
``backbone.embeddings`` -> ``embed``, ``backbone.layers.{l}`` -> ``layers.{l}`` (``model.blocks[l]`` is the
TransformerLens-style view of it), ``backbone.norm_f`` ->
``ln_final``, ``lm_head`` -> ``unembed``.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from interp.mamba.config import spec_from_hf
from interp.mamba.model import HookedMamba

__all__ = ["from_hf", "convert_state_dict"]

_OUTER = (("backbone.embeddings.", "embed."), ("backbone.embedding.", "embed."), ("backbone.layers.", "layers."),
          ("backbone.norm_f.", "ln_final."), ("lm_head.", "unembed."))


def convert_state_dict(hf_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename an HF Mamba(2)ForCausalLM state dict to HookedMamba's names; unknown keys raise ``KeyError``."""
    out = {}
    for key, value in hf_state.items():
        for old, new in _OUTER:
            if key.startswith(old):
                out[new + key[len(old):]] = value
                break
        else:
            raise KeyError(f"unexpected parameter {key!r} in the Hugging Face Mamba state dict")
    return out


@torch.no_grad()
def from_hf(hf_model: nn.Module, tokenizer=None, *, ignore_fields: tuple[str, ...] = ()) -> HookedMamba:
    """A :class:`HookedMamba` with the weights, dtype and device of an HF ``MambaForCausalLM``/``Mamba2ForCausalLM``.

    The config is checked by :func:`~interp.mamba.config.spec_from_hf` (unknown fields that may change the math
    raise, naming the field; ``ignore_fields`` accepts named ones anyway). The embedding is tied to the
    unembedding exactly when the HF model ties them. ``tokenizer`` is attached as ``model.tokenizer``.
    """
    config = getattr(hf_model, "config", None)
    if config is None or getattr(config, "model_type", None) not in ("mamba", "mamba2"):
        raise TypeError(
            "hf_model must be a transformers MambaForCausalLM or Mamba2ForCausalLM; got "
            f"{type(hf_model).__name__} (model_type {getattr(config, 'model_type', None)!r})"
        )
    if not (hasattr(hf_model, "backbone") and hasattr(hf_model, "lm_head")):
        raise TypeError(
            f"hf_model must be a causal LM with an lm_head (MambaForCausalLM / Mamba2ForCausalLM); got "
            f"{type(hf_model).__name__}"
        )
    spec = spec_from_hf(config, ignore_fields)
    emb, head = hf_model.backbone.embeddings.weight, hf_model.lm_head.weight
    tied = emb.data_ptr() == head.data_ptr() or (emb.shape == head.shape and torch.equal(emb, head))
    spec = dataclasses.replace(spec, tie_embeddings=bool(tied))
    state = convert_state_dict(hf_model.state_dict())
    if tied:
        state.pop("unembed.weight", None)
    model = HookedMamba(spec, tokenizer=tokenizer).to(device=emb.device, dtype=emb.dtype)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (tied and k == "unembed.weight")]
    if missing or unexpected:
        raise ValueError(
            f"weights do not fit the {spec.arch} layout: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model.eval()
