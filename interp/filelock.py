"""Cross-process locks and build-once folders: the second process waits for the first and reuses its result.

``build_once(target, stamp, build)`` makes folder ``target`` once: under an exclusive ``fcntl`` lock on a file
beside it, it returns at once if ``target/interp_source.json`` already equals ``stamp`` (another process built it
while this one waited), else removes what killed builds left beside it (``.{name}.*.tmp`` / ``.old`` folders; no
other process can be writing them while the lock is held), builds into a temporary folder and renames it into place
(:func:`interp.atomic.atomic_dir`). The kernel drops the lock when its holder exits, however it exits (an exception,
Ctrl-C, SIGKILL), so a crashed build never blocks the next one.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from interp.atomic import atomic_dir

__all__ = ["STAMP_FILE", "build_once", "file_lock", "stamp_matches"]

STAMP_FILE = "interp_source.json"
_log = logging.getLogger("interp")


@contextmanager
def file_lock(path: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on the file ``path`` (created if needed, never removed: removing it would let two
    processes lock two different files) for the ``with`` block; waits while another process holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def stamp_matches(target: Path, stamp: dict) -> bool:
    """Whether folder ``target`` is complete and was built from ``stamp``."""
    file = Path(target) / STAMP_FILE
    try:
        return json.loads(file.read_text()) == stamp
    except (OSError, ValueError):
        return False


def remove_stale(target: Path) -> list[Path]:
    """Remove the temporary folders and files killed writes of ``target`` left beside it; return them.
    Call it only while no other process can be writing ``target`` (under its lock)."""
    target = Path(target)
    stale = [p for p in target.parent.glob(f".{target.name}.*") if p.suffix in (".tmp", ".old")]
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return stale


def build_once(target: str | Path, stamp: dict, build: Callable[[Path], None], *, what: str = "") -> Path:
    """Folder ``target`` built by ``build(tmp_folder)`` unless it already holds ``stamp``; see the module docstring.

    ``build`` writes the folder's content into ``tmp_folder``; ``stamp`` (a JSON-able dict describing the source)
    is written last as ``interp_source.json``. Concurrent callers build it once: the others wait and reuse it."""
    target = Path(target)
    if stamp_matches(target, stamp):
        return target
    with file_lock(target.parent / f".{target.name}.lock"):
        if stamp_matches(target, stamp):  # built by another process while this one waited
            return target
        remove_stale(target)
        _log.info("building %s%s (once; later loads reuse it)", target, f" ({what})" if what else "")
        with atomic_dir(target) as tmp:
            build(tmp)
            (tmp / STAMP_FILE).write_text(json.dumps(stamp))
    return target
