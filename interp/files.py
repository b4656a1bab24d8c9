"""The toolkit's files: where its cache lives (:func:`cache_dir`), and reading input files with errors that name the
file (JSON objects and safetensors files).

A corrupt, truncated or foreign file (``SafetensorError: header too large``, ``AttributeError: 'list' object has
no attribute 'get'``) becomes a ValueError saying which file and what was expected.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

__all__ = ["cache_dir", "check_safetensors", "load_safetensors", "read_json_object"]


def cache_dir() -> Path:
    """Root of the interp cache (``$INTERP_CACHE`` overrides; default the user cache dir): converted models, native
    builds, statistics."""
    env = os.environ.get("INTERP_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("interp"))


def read_json_object(path: str | Path, what: str = "") -> dict[str, Any]:
    """The JSON object in ``path``; FileNotFoundError if missing, ValueError if it is not valid JSON or not an
    object (``what`` describes the expected content in the message, e.g. "a Hugging Face model config")."""
    path = Path(path)
    expect = f" ({what})" if what else ""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; expected a JSON object{expect}")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a JSON text file ({err.reason}); expected a JSON object{expect}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON ({err.msg} at line {err.lineno} column {err.colno}); expected a "
                         f"JSON object{expect}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: holds a JSON {_json_kind(value)}; expected a JSON object{expect}")
    return value


def _json_kind(value: Any) -> str:
    return {list: "list", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(value), "null")


def check_safetensors(path: str | Path) -> list[str]:
    """The tensor names of a safetensors file, after checking its header and that the file holds exactly the bytes
    the header describes; a ValueError naming the file if it is corrupt, truncated or not safetensors."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; expected a safetensors file")
    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except Exception as err:  # SafetensorError, OSError: the library's message does not name the file
        raise ValueError(f"{path}: not a readable safetensors file ({_first_line(err)}); it is corrupt, truncated or "
                         "in another format (pickled .bin/.pt weights are never loaded)") from None


def load_safetensors(path: str | Path, device: str = "cpu") -> dict:
    """All tensors of a safetensors file (checked first with :func:`check_safetensors`)."""
    from safetensors.torch import load_file

    check_safetensors(path)
    try:
        return load_file(str(path), device=device)
    except Exception as err:
        raise ValueError(f"{path}: could not read the tensors ({_first_line(err)}); the file is corrupt") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def remove_paths(paths: list[Path]) -> list[Path]:
    """Delete each of ``paths`` (folders with their contents; links and files themselves); return ``paths``."""
    for p in paths:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return paths
