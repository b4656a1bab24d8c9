"""``load_model(spec)`` and ``wrap(obj)``: every accepted way in, offline, without unpickling anything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from interp.models.base import HookedModel

__all__ = ["load_model", "wrap", "ACCEPTED"]

ACCEPTED = (
    "'smollm2' (alias 'smollm2-135m'): the embedded SmolLM2-135M-Instruct; "
    "a path to a local Hugging Face checkpoint folder (config.json + safetensors) of a Llama-family, GPT-2, "
    "Mamba or Mamba-2 causal LM; "
    "or a model object: interp HookedModel, TransformerLens HookedTransformer or TransformerBridge, "
    "Hugging Face PreTrainedModel, nnsight model"
)


def load_model(spec: Any, *, dtype: torch.dtype = torch.float32,
               device: str | torch.device | None = None) -> HookedModel:
    """Return a hooked model for ``spec``.

    Accepted: ``"smollm2"`` / ``"smollm2-135m"`` (the embedded model), a path to a local HF checkpoint folder, or a
    model object (see :func:`wrap`). Nothing is fetched from a hub; weights load from safetensors only.
    """
    from interp.models.smollm2 import ALIASES, load_smollm2

    if isinstance(spec, (str, Path)):
        text = str(spec)
        if text.lower() in ALIASES:
            hf_model, tokenizer = load_smollm2(dtype=dtype, device=device)
            return wrap(hf_model, tokenizer=tokenizer)
        path = Path(text).expanduser()
        if path.is_dir():
            return _load_folder(path, dtype=dtype, device=device)
        if path.exists():
            raise ValueError(f"spec {text!r} is a file; expected a checkpoint folder holding config.json. "
                             f"Accepted: {ACCEPTED}")
        hint = " (model hubs are not reachable: pass a local folder)" if "/" in text and not path.is_absolute() else ""
        raise ValueError(f"unknown model spec {text!r}{hint}. Accepted: {ACCEPTED}")
    return wrap(spec)


def _load_folder(path: Path, *, dtype: torch.dtype, device) -> HookedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"spec {str(path)!r}: folder has no config.json; expected a Hugging Face checkpoint folder "
            "(config.json + *.safetensors)"
        )
    model_type = json.loads(config_file.read_text()).get("model_type")
    _check_supported(model_type, path)
    if not any(path.glob("*.safetensors")):
        raise FileNotFoundError(
            f"spec {str(path)!r}: no *.safetensors weights in the folder (pickled .bin weights are not loaded)"
        )
    hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True, use_safetensors=True)
    if device is not None:
        hf_model = hf_model.to(device)
    tokenizer = None
    if any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return wrap(hf_model, tokenizer=tokenizer)


def _check_supported(model_type: str | None, path: Path) -> None:
    from interp.models.architectures import table_for

    if model_type in ("mamba", "mamba2"):
        return
    try:
        table_for(model_type)
    except ValueError as err:
        raise ValueError(f"spec {str(path)!r}: {err}") from None


def wrap(obj: Any, tokenizer: Any = None) -> HookedModel:
    """Wrap a model object as a :class:`HookedModel` (no copy of its weights).

    Accepts an interp ``HookedModel`` (returned as is), a TransformerLens ``HookedTransformer`` or
    ``TransformerBridge``, a Hugging Face ``PreTrainedModel`` (Llama family, GPT-2, Mamba, Mamba-2), or an nnsight
    model (its underlying Hugging Face model and tokenizer are used).
    """
    if isinstance(obj, HookedModel):
        return obj
    kind = type(obj).__module__.split(".")[0]
    if kind == "nnsight":
        inner = obj.__dict__.get("_module") or obj.__dict__.get("_model")  # the Envoy's wrapped torch module
        if not isinstance(inner, nn.Module):
            raise TypeError("wrap(obj): this nnsight object holds no model (expected an NNsight/LanguageModel)")
        return wrap(inner, tokenizer=tokenizer or obj.__dict__.get("tokenizer"))
    if kind == "transformer_lens":
        from interp.models.tl_adapter import TLModel

        return TLModel(obj)
    from transformers import PreTrainedModel

    if isinstance(obj, PreTrainedModel):
        model_type = getattr(obj.config, "model_type", None)
        if model_type in ("mamba", "mamba2"):
            from interp.mamba import from_hf

            return from_hf(obj, tokenizer=tokenizer)
        from interp.models.hf_transformer import HFTransformer

        return HFTransformer(obj, tokenizer=tokenizer)
    raise TypeError(f"cannot wrap a {type(obj).__name__}. Accepted: {ACCEPTED}")
