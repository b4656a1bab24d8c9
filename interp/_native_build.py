"""Build a C source shipped with interp into a shared library on first use, cached per machine.

Used by the fused CPU kernels (:mod:`interp.mamba.native`, :mod:`interp.kernels.native`). The system C compiler
(``$CC``, else ``cc`` / ``gcc`` / ``clang``) compiles with ``-O3 -march=native -fopenmp``, then, if the compiler
refuses, without OpenMP (``-fopenmp-simd`` and ``-DSIMD_PRAGMAS``, then plain) and without ``-march=native``. The
library lands in ``<interp cache>/native/`` (``$INTERP_CACHE``, else e.g. ``~/.cache/interp``) under a name that
hashes the source, the flags, the compiler's version and the CPU's flags (a cache shared between machines never
runs code built for another CPU); it is compiled in a temporary folder and renamed into place, so concurrent first
uses are safe.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["LazyLibrary", "build_library", "compiler", "cpu_id", "native_cache_dir"]


class LazyLibrary:
    """A native library built on first use, once, under a lock. :meth:`get` returns it, or None once a build has
    failed (after one warning ``"{what} unavailable, using {fallback}: ..."``; or a RuntimeError when ``strict()``
    returns a message, e.g. an environment variable demanding the native path); :meth:`require` returns it or raises
    saying why it is missing. The state is ``lib`` (the built library) and ``failed`` (the reason, once failed)."""

    def __init__(self, build: Callable[[], Any], what: str, fallback: str,
                 strict: Callable[[], str | None] | None = None) -> None:
        self.build, self.what, self.fallback, self.strict = build, what, fallback, strict
        self.lib: Any = None
        self.failed: str | None = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        if self.lib is not None or self.failed is not None:
            return self.lib
        with self._lock:
            if self.lib is None and self.failed is None:
                try:
                    self.lib = self.build()
                except (OSError, RuntimeError, subprocess.SubprocessError) as err:
                    self.failed = str(err)
                    message = self.strict() if self.strict is not None else None
                    if message:
                        raise RuntimeError(f"{message}: {err}") from err
                    warnings.warn(f"{self.what} unavailable, using {self.fallback}: {err}", stacklevel=3)
        return self.lib

    def require(self) -> Any:
        lib = self.get()
        if lib is None:
            raise RuntimeError(f"the {self.what} {'are' if self.what.endswith('s') else 'is'} not available: "
                               f"{self.failed}")
        return lib


def cpu_id() -> str:
    """The lines of ``/proc/cpuinfo`` that name the CPU and its instruction-set flags (else the platform's name)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        import platform

        return platform.processor() or platform.machine()
    lines = [ln for ln in text.splitlines() if ln.startswith(("flags", "model name", "Features", "CPU part"))]
    return "\n".join(sorted(set(lines)))


def native_cache_dir() -> Path:
    """``<interp cache>/native``."""
    from interp.files import cache_dir

    return cache_dir() / "native"


def compiler() -> str | None:
    """The C compiler to use: ``$CC`` if set, else the first of cc, gcc, clang on the PATH (None if none)."""
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def build_library(source: bytes, stem: str, target: tuple[str, ...] | None = None,
                  out_dir: Path | None = None) -> Path:
    """Compile ``source`` (C11) into ``<out_dir>/<stem>-<hash>.so``, or find it already compiled; its path.

    ``target``: the CPU flags, ``("-march=native",)`` by default, falling back to none if the compiler refuses
    them (tests pass others to reach every code path). Raises RuntimeError listing the compiler's errors if no
    combination of flags compiles.
    """
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC or install gcc)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False).stdout
    out_dir = out_dir or native_cache_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    errors = []
    targets = [list(target)] if target is not None else [["-march=native"], []]
    for cpu in targets:
        for threads in (["-fopenmp"], ["-DSIMD_PRAGMAS", "-fopenmp-simd"], []):
            cmd = [cc, "-O3", *cpu, "-fPIC", "-shared", "-std=c11", *threads]
            key = hashlib.sha256(source + repr(cmd).encode() + version.encode() + cpu_id().encode()).hexdigest()
            path = out_dir / f"{stem}-{key[:16]}.so"
            if not path.exists():
                with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
                    src, obj = Path(tmp) / f"{stem}.c", Path(tmp) / f"{stem}.so"
                    src.write_bytes(source)
                    res = subprocess.run([*cmd, "-o", str(obj), str(src), "-lm"], capture_output=True, text=True)
                    if res.returncode != 0:
                        errors.append(f"{' '.join(cmd)}: {res.stderr.strip()[-500:]}")
                        continue
                    os.replace(obj, path)  # atomic: a concurrent build of the same key writes the same bytes
            return path
    raise RuntimeError(f"could not compile {stem}.c:\n" + "\n".join(errors))
