"""``load_model(spec)`` and ``wrap(obj)``: every accepted way in, offline, without unpickling anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from interp.checks import check_device
from interp.errors import CheckpointError, import_failure
from interp.files import check_safetensors, read_json_object
from interp.models.base import HookedModel

__all__ = ["as_hooked", "load_model", "wrap", "ACCEPTED", "check_weight_files", "from_pretrained_checked",
           "transformers_origin"]

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
    model object (see :func:`wrap`). Nothing is fetched from a hub; weights load from safetensors only. A folder
    whose weights do not match its config exactly (a missing, unexpected or mis-shaped tensor, or a non-finite
    value) is an error naming them, never a model with randomly initialised parts.
    """
    from interp.models.smollm2 import ALIASES, load_smollm2

    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype such as torch.float32; got {dtype!r}")
    if device is not None:
        device = check_device(device)
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
    from transformers import AutoTokenizer

    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"spec {str(path)!r}: folder has no config.json; expected a Hugging Face checkpoint folder "
            "(config.json + *.safetensors)"
        )
    model_type = read_json_object(config_file, "a Hugging Face model config with a model_type").get("model_type")
    if model_type is None:
        raise ValueError(f"{config_file}: has no 'model_type'; expected a Hugging Face model config (e.g. "
                         "'model_type': 'llama')")
    _check_supported(model_type, path)
    hf_model = from_pretrained_checked(path, dtype)
    if device is not None:
        hf_model = hf_model.to(device)
    tokenizer = None
    if any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except Exception as err:
            raise ValueError(f"spec {str(path)!r}: the tokenizer files of the folder do not load "
                             f"({type(err).__name__}: {_first_line(err)}); fix or remove them") from None
    return wrap(hf_model, tokenizer=tokenizer)


def check_weight_files(path: Path) -> list[Path]:
    """The safetensors files of checkpoint folder ``path``, each checked to be a complete safetensors file (and the
    shard index, if any, to be valid and to name only files that exist)."""
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(
            f"spec {str(path)!r}: no *.safetensors weights in the folder (pickled .bin weights are not loaded)"
        )
    index_file = path / "model.safetensors.index.json"
    if index_file.exists():
        weight_map = read_json_object(index_file, "a safetensors shard index").get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index_file}: has no 'weight_map' object (tensor name -> shard file)")
        missing = sorted({str(f) for f in weight_map.values() if not (path / str(f)).is_file()})
        if missing:
            raise FileNotFoundError(f"{index_file}: names shard files that are not in the folder: {missing[:5]}")
    for file in files:
        check_safetensors(file)
    return files


def from_pretrained_checked(path: Path, dtype: torch.dtype):
    """``AutoModelForCausalLM.from_pretrained(path)`` from safetensors only, refusing any mismatch between the files
    and the model the config describes.

    transformers only logs missing / unexpected / mis-shaped weights (and initialises the missing ones at random);
    here each is an error naming the tensors, and so is a non-finite parameter."""
    from transformers import AutoModelForCausalLM

    try:
        read_json_object(path / "config.json", "a Hugging Face model config")
        check_weight_files(path)
    except FileNotFoundError:
        raise
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, local_files_only=True, use_safetensors=True, output_loading_info=True,
            ignore_mismatched_sizes=True,  # reported in info and refused below, with the shapes
        )
    except ImportError as err:  # the environment, not the files: say which module and where it came from
        raise import_failure(err, f"building the model of {path} with {transformers_origin()}") from None
    except Exception as err:
        raise ValueError(f"spec {str(path)!r}: {transformers_origin()} could not build the model from config.json "
                         f"and the weights ({type(err).__name__}: {_first_line(err)})") from None
    problems = []
    for key, label in (("missing_keys", "missing from the weight files"),
                       ("unexpected_keys", "in the weight files but not in the model config.json describes")):
        names = sorted(info.get(key) or ())
        if names:
            problems.append(f"{len(names)} weight(s) {label}: {_names(names)}")
    mismatched = sorted(info.get("mismatched_keys") or (), key=lambda t: t[0])
    if mismatched:
        shown = ", ".join(f"{n} (file {tuple(a)}, model {tuple(b)})" for n, a, b in mismatched[:5])
        more = f" and {len(mismatched) - 5} more" if len(mismatched) > 5 else ""
        problems.append(f"{len(mismatched)} weight(s) with the wrong shape: {shown}{more}")
    if info.get("error_msgs"):
        problems.append("errors: " + "; ".join(map(str, info["error_msgs"][:3])))
    if problems:
        raise CheckpointError(f"spec {str(path)!r}: the weights do not match the model config.json describes (the "
                         f"model would run with randomly initialised parts): {'; '.join(problems)}")
    bad = [name for name, p in model.named_parameters() if not _finite(p)]
    if bad:
        raise CheckpointError(f"spec {str(path)!r}: weight(s) hold nan/inf values: {_names(bad)}; the files are "
                              "corrupt")
    return model


def _finite(t: torch.Tensor) -> bool:
    """Whether every entry is finite, from two reductions and no temporary: max and min propagate nan, and an inf
    is the max or the min."""
    if not t.is_floating_point() or t.numel() == 0:
        return True
    with torch.no_grad():
        return bool(torch.isfinite(t.amax())) and bool(torch.isfinite(t.amin()))


def transformers_origin() -> str:
    """``transformers <version> (<folder>)``: which transformers an error came from."""
    import transformers

    return f"transformers {transformers.__version__} ({Path(transformers.__file__).parent})"


def _names(names: list[str], n: int = 8) -> str:
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else ""


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


def as_hooked(model: Any, fn: str) -> HookedModel:
    """``model`` for the analysis ``fn``: a :class:`HookedModel` as it is, anything :func:`wrap` accepts (a Hugging
    Face, TransformerLens or nnsight model) wrapped; anything else a TypeError naming ``fn``."""
    if isinstance(model, HookedModel):
        return model
    try:
        return wrap(model)
    except TypeError as err:
        raise TypeError(f"{fn}: model must be an interp HookedModel or a model interp.wrap accepts; {err}") from None
