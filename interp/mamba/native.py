"""The fused CPU scans of ``scan_native.c``, compiled on first use and called through ctypes.

:func:`mamba1_scan_native` and :func:`mamba2_scan_native` compute what :func:`~interp.mamba.scan.selective_scan_ref`
and :func:`~interp.mamba.scan.ssd_scan_ref` define (same shapes) in one pass over the positions per batch row and
channel block (Mamba-1) or head (Mamba-2), the state held in cache and, if asked, every state written straight into
one ``[b, T, ...]`` tensor (:func:`~interp.mamba.buffers.empty_large`). They serve float32 CPU tensors outside
autograd; everything else (float64, CUDA, gradients) takes the torch scans of :mod:`interp.mamba.scan`, which are
also the fallback when no C compiler is found. :func:`mamba1_scan` / :func:`mamba2_scan` pick one of the two; the
mixers call them. Work is split over batch rows and channel blocks / heads with OpenMP, ``torch.get_num_threads()``
threads.

Build: :func:`interp._native_build.build_library` (the system C compiler, ``-O3 -march=native -fopenmp``, cached
per machine under ``<interp cache>/native/``). About 1 s, once per machine.

``INTERP_MAMBA_SCAN=torch`` turns the native scans off; ``=native`` makes a failed build an error rather than a
warning; ``auto`` (the default) uses them when they build.
"""

from __future__ import annotations

import ctypes
import os
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor

from interp._native_build import LazyLibrary, build_library
from interp.mamba.buffers import empty_large
from interp.mamba.scan import LOG2E, selective_scan_chunked, ssd_scan_chunked, ssd_states_chunked

__all__ = ["ENV_VAR", "native_available", "use_native", "mamba1_scan_native", "mamba2_scan_native", "mamba1_scan",
           "mamba2_scan"]

ENV_VAR = "INTERP_MAMBA_SCAN"
_NATIVE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _mode() -> str:
    mode = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if mode not in ("auto", "native", "torch"):
        raise ValueError(f"{ENV_VAR} must be 'auto', 'native' or 'torch', got {mode!r}")
    return mode


def _build(target: tuple[str, ...] | None = None, out_dir: Path | None = None) -> ctypes.CDLL:
    """Compile (or find already compiled) and load the library (:func:`interp._native_build.build_library`).
    ``target``: the CPU flags, ``("-march=native",)`` by default, falling back to none if the compiler refuses
    them; tests pass others to reach every code path."""
    source = resources.files("interp.mamba").joinpath("scan_native.c").read_bytes()
    return _load(build_library(source, "scan_native", target, out_dir))


def _load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.mamba1_scan.argtypes = [i64] * 4 + [ptr] * 11 + [ctypes.c_int]
    lib.mamba1_scan.restype = None
    lib.mamba2_scan.argtypes = [i64] * 6 + [ptr] * 10 + [ctypes.c_int]
    lib.mamba2_scan.restype = None
    lib.mamba1_block.argtypes = []
    lib.mamba1_block.restype = ctypes.c_int
    return lib


_native = LazyLibrary(
    lambda: _build(), "native Mamba scan", "the torch scans",
    lambda: f"{ENV_VAR}=native but the native scan could not be built" if _mode() == "native" else None)


def native_available() -> bool:
    """Whether the native scans are built (building them now if needed) and not turned off by the env var."""
    return _mode() != "torch" and _native.get() is not None


def use_native(*tensors: Tensor | None) -> bool:
    """Whether a scan over these tensors takes the native path: all on CPU, float32 (or 16-bit floats, which the
    torch scans also compute in float32), outside autograd, and the library available (``INTERP_MAMBA_SCAN`` not
    ``torch``)."""
    ts = [t for t in tensors if t is not None]
    if any(t.device.type != "cpu" or t.dtype not in _NATIVE_DTYPES for t in ts):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in ts):
        return False
    return native_available()


def _check_shapes(**named: tuple[Tensor, tuple[int, ...]]) -> None:
    """The C kernels index raw memory: every shape must be exactly what the loops assume."""
    for name, (t, shape) in named.items():
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} to match x; got {tuple(t.shape)}")


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _c(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().to(torch.float32).contiguous()


def mamba1_scan_native(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, h0: Tensor | None = None,
                       return_states: bool = False) -> tuple[Tensor, Tensor | None, Tensor]:
    """Mamba-1 scan (shapes as :func:`~interp.mamba.scan.selective_scan_ref`; float32 CPU, no autograd).
    Returns ``(y [b, T, d], states [b, T, d, N] or None, final state [b, d, N])``."""
    lib = _native.require()
    if x.ndim != 3 or A.ndim != 2:
        raise ValueError(f"x must be [batch, pos, d_inner] and A [d_inner, d_state]; got x {tuple(x.shape)}, "
                         f"A {tuple(A.shape)}")
    b, T, d = x.shape
    N = A.shape[1]
    _check_shapes(dt=(dt, (b, T, d)), A=(A, (d, N)), B=(B, (b, T, N)), C=(C, (b, T, N)), D=(D, (d,)))
    x, dt, B, C, D = (_c(t) for t in (x, dt, B, C, D))
    A2T = (A.detach().float() * LOG2E).t().contiguous()  # [N, d]: the kernel's vector axis is the channel
    h0 = None if h0 is None else _c(h0.expand(b, d, N))
    y, final = x.new_empty(b, T, d), x.new_empty(b, d, N)
    states = empty_large((b, T, d, N), torch.float32) if return_states else None
    block = lib.mamba1_block()  # channels per task; the kernel allocates nothing, its scratch comes from here
    work = x.new_zeros(b * -(-d // block) * 2 * N * block)
    lib.mamba1_scan(b, T, d, N, _ptr(x), _ptr(dt), _ptr(A2T), _ptr(B), _ptr(C), _ptr(D), _ptr(h0), _ptr(y),
                    _ptr(final), _ptr(states), _ptr(work), torch.get_num_threads())
    return y, states, final


def mamba2_scan_native(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, h0: Tensor | None = None,
                       return_states: bool = False) -> tuple[Tensor, Tensor | None, Tensor]:
    """Mamba-2 scan (shapes as :func:`~interp.mamba.scan.ssd_scan_ref`; float32 CPU, no autograd).
    Returns ``(y [b, T, H, P], states [b, T, H, P, N] or None, final state [b, H, P, N])``."""
    lib = _native.require()
    if x.ndim != 4 or B.ndim != 4:
        raise ValueError(f"x must be [batch, pos, heads, head_dim] and B [batch, pos, groups, d_state]; got x "
                         f"{tuple(x.shape)}, B {tuple(B.shape)}")
    b, T, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    if G == 0 or H % G:
        raise ValueError(f"B has {G} groups, which does not divide the {H} heads of x")
    _check_shapes(dt=(dt, (b, T, H)), A=(A, (H,)), B=(B, (b, T, G, N)), C=(C, (b, T, G, N)), D=(D, (H,)))
    x, dt, B, C, D = (_c(t) for t in (x, dt, B, C, D))
    A2 = (A.detach().float() * LOG2E).contiguous()
    h0 = None if h0 is None else _c(h0.expand(b, H, P, N))
    y, final = x.new_empty(b, T, H, P), x.new_empty(b, H, P, N)
    states = empty_large((b, T, H, P, N), torch.float32) if return_states else None
    lib.mamba2_scan(b, T, H, P, G, N, _ptr(x), _ptr(dt), _ptr(A2), _ptr(B), _ptr(C), _ptr(D), _ptr(h0), _ptr(y),
                    _ptr(final), _ptr(states), torch.get_num_threads())
    return y, states, final


# ---------------------------------------------------------------------------------------------- dispatch
def mamba1_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, h0: Tensor | None = None,
                return_states: bool = False) -> tuple[Tensor, Tensor | None, Tensor]:
    """The Mamba-1 scan the mixer runs: native when :func:`use_native`, else
    :func:`~interp.mamba.scan.selective_scan_chunked`. Returns ``(y, states or None, final state)``."""
    if use_native(x, dt, A, B, C, D, h0):
        return mamba1_scan_native(x, dt, A, B, C, D, h0, return_states)
    return selective_scan_chunked(x, dt, A, B, C, D, h0, return_states=return_states)


def mamba2_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, h0: Tensor | None = None,
                return_states: bool = False, chunk_size: int = 64) -> tuple[Tensor, Tensor | None, Tensor]:
    """The Mamba-2 scan the mixer runs: native when :func:`use_native`, else chunked SSD
    (:func:`~interp.mamba.scan.ssd_scan_chunked` with ``chunk_size``, or :func:`~interp.mamba.scan.
    ssd_states_chunked` for the states). Returns ``(y, states or None, final state)``."""
    if use_native(x, dt, A, B, C, D, h0):
        return mamba2_scan_native(x, dt, A, B, C, D, h0, return_states)
    if return_states:
        return ssd_states_chunked(x, dt, A, B, C, D, h0)
    y, final = ssd_scan_chunked(x, dt, A, B, C, D, h0, chunk_size=min(chunk_size, x.shape[1]))
    return y, None, final
