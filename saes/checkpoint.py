"""Atomic files and training checkpoints (safetensors + JSON; never pickle).

A checkpoint is a folder ``step_XXXXXXXX`` inside the run's ``checkpoint_dir``:

- ``trainer.safetensors``: every tensor needed to continue bit-for-bit: the SAE ``state_dict`` (``sae.*``), the
  Adam moments and step counters (``optim.<param index>.<key>``), the activation store's buffer and generator
  state (``store.*``), the dead-latent counters and the torch CPU RNG state as a uint8 tensor (``rng.cpu``);
- ``trainer.json``: the step, the ``TrainConfig``, Adam's param groups, the store's position, the metric history;
- ``sae/``: the SAE in the SAELens format (``cfg.json`` + ``sae_weights.safetensors``), loadable on its own.

The folder is written under a temporary name and renamed into place, then ``latest.json`` is replaced
atomically, so a crash at any point leaves the previous checkpoint intact. What a killed write leaves behind (the
temporary ``.step_*.tmp`` folder, a set-aside ``.step_*.old`` one, a temporary ``latest.json``) is removed by
:func:`prepare_checkpoint_dir` when the next run starts in the same folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from interp.atomic import atomic_dir, atomic_write_json
from interp.files import load_safetensors, read_json_object

__all__ = [
    "clean_stale_writes",
    "latest_checkpoint",
    "load_checkpoint",
    "optimizer_from_flat",
    "optimizer_to_flat",
    "prepare_checkpoint_dir",
    "save_checkpoint",
]

LATEST = "latest.json"


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (``optim.<i>.<key>``) and a JSON-able rest."""
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().clone()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Inverse of ``optimizer_to_flat``: load the state into ``optimizer``."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for idx, rest in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(rest)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _step_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:08d}"


def save_checkpoint(root: str | Path, step: int, tensors: dict[str, Tensor], meta: dict[str, Any],
                    sae=None, keep: int = 2) -> Path:
    """Write checkpoint ``step`` atomically under ``root`` and point ``latest.json`` at it.

    ``tensors`` and ``meta`` go to ``trainer.safetensors`` / ``trainer.json``; ``sae`` (optional) is also saved in
    its own format under ``sae/``. Only the newest ``keep`` checkpoints are kept.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = _step_dir(root, step)
    with atomic_dir(final) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp / "trainer.safetensors")
        with open(tmp / "trainer.json", "w") as f:
            json.dump({**meta, "step": step}, f, indent=1)
        if sae is not None:
            sae.save(tmp / "sae")
    atomic_write_json({"step": step, "path": final.name}, root / LATEST)
    old = sorted(p for p in root.glob("step_*") if p.is_dir() and p != final)
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def clean_stale_writes(root: str | Path) -> list[Path]:
    """Remove what killed checkpoint writes left in ``root`` (``.step_*.tmp`` / ``.step_*.old`` folders, temporary
    ``latest.json`` files); return them. Only while no other process writes checkpoints into ``root``."""
    root = Path(root)
    if not root.is_dir():
        return []
    stale = [p for p in root.glob(".step_*") if p.suffix in (".tmp", ".old")]
    stale += [p for p in root.glob(f".{LATEST}.*") if p.suffix == ".tmp"]
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return stale


def prepare_checkpoint_dir(root: str | Path) -> list[Path]:
    """Called when a run starts: check that ``root`` is a folder (or does not exist yet) and remove what killed
    writes of an earlier run left there (:func:`clean_stale_writes`); return the removed paths."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"checkpoint_dir {root} is a file; expected a folder (or a path that does not "
                                 "exist yet)")
    return clean_stale_writes(root)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The folder ``latest.json`` in ``root`` points at, or None when there is none."""
    pointer = Path(root) / LATEST
    if not pointer.is_file():
        return None
    name = read_json_object(pointer, "the pointer to the latest checkpoint").get("path")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{pointer}: has no 'path' (the name of the latest step_* folder); corrupt checkpoint dir")
    path = Path(root) / name
    if not (path / "trainer.json").is_file():
        raise FileNotFoundError(f"{pointer} points at {path}, which holds no trainer.json (corrupt checkpoint dir?)")
    return path


def load_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(tensors, meta)`` of a checkpoint folder written by ``save_checkpoint``."""
    path = Path(path)
    meta = read_json_object(path / "trainer.json", "a training checkpoint's metadata")
    return load_safetensors(path / "trainer.safetensors"), meta
