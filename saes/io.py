"""SAE folders in SAELens's disk format (written against sae-lens 6.54.12): ``cfg.json`` + ``sae_weights.safetensors``.

Saving maps our architectures onto SAELens's: "topk" -> "topk" (``rescale_acts_by_decoder_norm: false``),
"relu" -> "standard", "jumprelu" -> "jumprelu" (``threshold`` = exp(log_threshold)), "batchtopk" -> "jumprelu" with
the global threshold repeated per latent (as SAELens saves BatchTopK). Our own config rides along in
``metadata.interp`` so :func:`load` rebuilds the exact class; SAELens ignores it.

Loading reads our folders and SAELens ones (topk, jumprelu, standard), folding SAELens options into plain weights:
``rescale_acts_by_decoder_norm`` (TopK) scales b_enc/W_enc by the decoder row norms and normalises W_dec (exactly as
SAELens's fold); ``apply_b_dec_to_input: false`` adds b_dec @ W_enc to b_enc (our encoder always reads x - b_dec).
Other input normalisations and ``hook_z`` reshaping are refused with a ValueError naming the key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from interp.atomic import atomic_dir, atomic_file
from interp.files import check_safetensors, read_json_object
from interp.saes.base import SAE, SAEConfig

__all__ = ["CFG_FILENAME", "SAELENS_FORMAT_VERSION", "WEIGHTS_FILENAME", "load", "save_sae"]

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"
SAELENS_FORMAT_VERSION = "6.54.12"
_SAELENS_ARCH = {"topk": "topk", "relu": "standard", "jumprelu": "jumprelu", "batchtopk": "jumprelu"}
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def saelens_config(sae: SAE) -> dict[str, Any]:
    """The ``cfg.json`` dict SAELens 6.x reads for ``sae``."""
    cfg = {
        "architecture": _SAELENS_ARCH[sae.cfg.architecture], "d_in": sae.cfg.d_in, "d_sae": sae.cfg.d_sae,
        "dtype": _dtype_name(sae.W_enc.dtype), "device": "cpu", "apply_b_dec_to_input": True,
        "normalize_activations": "none", "reshape_activations": "none",
        "metadata": {"sae_lens_version": SAELENS_FORMAT_VERSION, "sae_lens_training_version": SAELENS_FORMAT_VERSION,
                     "interp": sae.cfg.to_dict()},
    }
    if sae.cfg.architecture == "topk":
        cfg.update(k=sae.cfg.k, rescale_acts_by_decoder_norm=False)
    return cfg


def save_sae(sae: SAE, path: str | Path) -> Path:
    """Write ``sae`` to folder ``path`` in SAELens format; returns the folder.

    A new folder is written as a temp folder beside it and renamed; into an existing folder each of the two files
    is written to a temp file and ``os.replace``d (other files there are left alone)."""
    path = Path(path)
    tensors = {name: getattr(sae, name).detach().contiguous().cpu() for name in ("W_enc", "W_dec", "b_enc", "b_dec")}
    tensors.update({k: v.detach().contiguous().cpu() for k, v in sae.extra_state_tensors().items()})
    cfg_text = json.dumps(saelens_config(sae), indent=2)
    if path.exists() and not path.is_dir():
        raise ValueError(f"path must be a folder (or not exist yet), got the file {path}")
    if not path.exists():
        with atomic_dir(path) as tmp:
            save_file(tensors, str(tmp / WEIGHTS_FILENAME))
            (tmp / CFG_FILENAME).write_text(cfg_text)
        return path
    with atomic_file(path / WEIGHTS_FILENAME) as tmp:
        save_file(tensors, str(tmp))
    with atomic_file(path / CFG_FILENAME) as tmp:
        tmp.write_text(cfg_text)
    return path


def _read(path: Path, dtype: torch.dtype | None, device: str | torch.device | None) -> tuple[dict, dict[str, Tensor]]:
    cfg_file, weights_file = path / CFG_FILENAME, path / WEIGHTS_FILENAME
    if not cfg_file.is_file() or not weights_file.is_file():
        raise FileNotFoundError(f"path must be an SAE folder with {CFG_FILENAME} and {WEIGHTS_FILENAME}: {path}")
    cfg = read_json_object(cfg_file, "an SAE config")
    check_safetensors(weights_file)
    file_dtype = _DTYPES.get(str(cfg.get("dtype", "float32")).removeprefix("torch."), torch.float32)
    state = {}
    with safe_open(str(weights_file), framework="pt", device="cpu") as f:
        for key in f.keys():
            state[key] = f.get_tensor(key).to(dtype=dtype or file_dtype, device=device or "cpu")
    return cfg, state


def _fold_saelens_options(cfg: dict, state: dict[str, Tensor]) -> None:
    """Turn SAELens's inference options into plain weights (in place) or refuse them."""
    norm = cfg.get("normalize_activations", "none")
    if norm not in ("none", None):
        raise ValueError(f"normalize_activations={norm!r} in cfg.json is not supported (only 'none')")
    if cfg.get("reshape_activations", "none") not in ("none", None):
        raise ValueError(f"reshape_activations={cfg['reshape_activations']!r} in cfg.json is not supported")
    if "finetuning_scaling_factor" in state or "scaling_factor" in state:
        raise ValueError("a finetuning scaling_factor tensor is not supported")
    if cfg.get("rescale_acts_by_decoder_norm", False):
        w_norm = state["W_dec"].norm(dim=-1)
        state["b_enc"] = state["b_enc"] * w_norm
        state["W_enc"] = state["W_enc"] * w_norm[None, :]
        state["W_dec"] = state["W_dec"] / w_norm[:, None]
    if not cfg.get("apply_b_dec_to_input", True):
        state["b_enc"] = state["b_enc"] + state["b_dec"] @ state["W_enc"]


def _our_config(cfg: dict) -> SAEConfig:
    ours = (cfg.get("metadata") or {}).get("interp")
    if ours is not None:
        return SAEConfig.from_dict(ours)
    arch = cfg.get("architecture", "standard")
    if arch == "standard" and cfg.get("activation_fn") == "topk":  # pre-6.0 SAELens TopK
        arch, cfg["k"] = "topk", cfg.get("activation_fn_kwargs", {}).get("k")
    for key in ("d_in", "d_sae"):
        if not isinstance(cfg.get(key), int) or isinstance(cfg.get(key), bool):
            raise ValueError(f"cfg.json: has no '{key}' (an int); got {cfg.get(key)!r}")
    d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    if arch == "topk":
        return SAEConfig("topk", d_in, d_sae, k=int(cfg["k"]), aux_coefficient=1 / 32)
    if arch == "standard":
        if cfg.get("activation_fn", "relu") != "relu":
            raise ValueError(f"activation_fn={cfg['activation_fn']!r} in cfg.json is not supported (only 'relu')")
        return SAEConfig("relu", d_in, d_sae, l1_coefficient=float(cfg.get("l1_coefficient", 5.0)),
                         normalize_decoder=False)
    if arch == "jumprelu":
        return SAEConfig("jumprelu", d_in, d_sae, l0_coefficient=1e-3, threshold_init=1e-3, bandwidth=1e-3)
    raise ValueError(f"architecture={arch!r} in cfg.json is not supported; known: topk, standard, jumprelu")


def load(path: str | Path, *, dtype: torch.dtype | None = None, device: str | torch.device | None = None) -> SAE:
    """Load an SAE folder written by :func:`save_sae` or by SAELens (``SAE.save_model``) into our classes.

    ``dtype`` defaults to the file's; ``device`` to CPU. SAELens folders get default training hyper-parameters
    (they hold none we use)."""
    from interp.saes.registry import sae_from_config

    path = Path(path)
    cfg, state = _read(path, dtype, device)
    sae_cfg = _our_config(cfg)
    _fold_saelens_options(cfg, state)
    sae = sae_from_config(sae_cfg, dtype=state["W_enc"].dtype, device=state["W_enc"].device)
    expected = {"W_enc": (sae_cfg.d_in, sae_cfg.d_sae), "W_dec": (sae_cfg.d_sae, sae_cfg.d_in),
                "b_enc": (sae_cfg.d_sae,), "b_dec": (sae_cfg.d_in,)}
    if sae_cfg.architecture in ("jumprelu", "batchtopk"):
        expected["threshold"] = (sae_cfg.d_sae,)
    for name, shape in expected.items():
        if name not in state or tuple(state[name].shape) != shape:
            got = tuple(state[name].shape) if name in state else "missing"
            raise ValueError(f"{path / WEIGHTS_FILENAME}: tensor {name} must have shape {shape}, got {got}")
    with torch.no_grad():
        for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
            getattr(sae, name).copy_(state[name])
        if sae_cfg.architecture == "jumprelu":
            # theta <= 0 behaves as ReLU in SAELens (relu(pre) * (pre > theta)); the smallest positive theta matches.
            tiny = torch.finfo(state["threshold"].dtype).tiny
            sae.log_threshold.copy_(state["threshold"].clamp_min(tiny).log())
        elif sae_cfg.architecture == "batchtopk":
            sae.threshold.fill_(float(state["threshold"].double().mean()))
    return sae
