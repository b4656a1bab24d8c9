"""Atomic writes: a file or folder appears complete or not at all (temp name in the same folder, then rename)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import Tensor

__all__ = ["atomic_dir", "atomic_file", "atomic_write_json", "atomic_save_safetensors"]


def _umask_mode(mode: int) -> int:
    """``mode`` filtered by the process umask (``mkstemp`` / ``mkdtemp`` create private 0600 / 0700 entries)."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; on a clean exit it replaces ``target``.

    An existing ``target`` is first renamed aside and removed only after the new folder is in place; on an
    exception the temporary folder is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        for path in tmp.rglob("*"):
            path.chmod(_umask_mode(0o777 if path.is_dir() else 0o666))
        tmp.chmod(_umask_mode(0o777))
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / target.name)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; on a clean exit it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _umask_mode(0o666))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_json(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (flushed to disk before the rename)."""
    with atomic_file(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def atomic_save_safetensors(tensors: dict[str, Tensor], path: str | Path,
                            metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` to a safetensors file at ``path`` atomically."""
    from safetensors.torch import save_file

    with atomic_file(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
    return Path(path)
