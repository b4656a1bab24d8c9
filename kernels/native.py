"""The fused CPU kernels of ``topk_native.c`` and ``sparse_backward.c`` (the "native" backend), compiled on first
use, called through ctypes.

- :func:`topk_encode`: each row's top-k encoder pre-activations (and the top ``k_aux`` among dead latents) with
  the dense ``[batch, d_sae]`` matrix never written: column blocks of ``W_enc`` go through the BLAS of the process
  (torch's MKL) into a per-thread block buffer that stays in cache, followed by a running per-row selection.
- :func:`batch_topk_encode`: the same for BatchTopK's selection over the whole batch (a per-thread candidate pool
  cut to the best n by quickselect whenever it fills, then merged).
- :func:`scatter_outer`, :func:`gather_dot`: the sparse backward products (same signatures as
  :mod:`interp.kernels.reference`); :func:`sparse_decode` is the torch one (``embedding_bag``).
  :func:`decode_backward` and :func:`encode_backward` compute a decoder's / an encoder's gradients in one
  latent-major pass each (a counting sort of the entries, then every gradient row written once, the encoder's
  in ``W_enc``'s own layout).
- :func:`project_out_parallel_`: ``SAE.before_step``'s projection in one pass over the decoder.

They serve float32 CPU tensors; other dtypes and devices take :mod:`interp.kernels.cpu_ops`. Work is split over
rows / latents with OpenMP, ``torch.get_num_threads()`` threads. Build: :func:`interp._native_build.build_library`
(about 1 s, once per machine). ``INTERP_SAE_KERNEL=native`` makes a failed build an error; unset, a failed build
warns once and the torch ops serve.

BLAS: the encoder calls MKL's packed GEMM (``cblas_sgemm_pack`` / ``cblas_sgemm_compute``) where the process has
it (torch's x86 wheels link MKL and export it), else the standard ``sgemm_`` (any BLAS); with neither, the encoder
is not fused (:func:`encoder_available` is False) and the dense ``addmm`` + ``topk`` path runs.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from pathlib import Path
from typing import NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp._native_build import LazyLibrary, build_library
from interp.kernels import cpu_ops

__all__ = ["available", "batch_topk_encode", "decode_backward", "encode_backward", "encoder_available", "gather_dot",
           "project_out_parallel_", "release_workspace", "scatter_outer", "sparse_decode", "topk_encode"]

ROW_TILE = 512
"""Rows of x per encoder task (fewer when the batch is small, so every thread gets work)."""
COL_BLOCK = 512
"""Latents per encoder block: a ROW_TILE x COL_BLOCK float32 block (1 MiB) stays in a core's L2 cache."""
CHUNK = 16
"""Latents per backward task (``CHUNK`` in topk_native.c; it sizes the scratch passed in)."""

_local = threading.local()  # per-thread encoder workspace, reused across calls (no page faults per step)


class Blas(NamedTuple):
    """Addresses of the BLAS entry points the encoder calls (0 where absent)."""

    sgemm: int
    pack_size: int
    pack: int
    compute: int
    threads_local: int

    @property
    def mode(self) -> str | None:
        """"packed" (MKL's packed API), "sgemm" (standard BLAS) or None."""
        if self.pack_size and self.pack and self.compute:
            return "packed"
        return "sgemm" if self.sgemm else None


class _Libraries:
    """The two compiled libraries (encoder, backward) behind one namespace of functions."""

    def __init__(self, *libs: ctypes.CDLL) -> None:
        self._libs = libs

    def __getattr__(self, name: str):
        for lib in self._libs:
            try:
                return getattr(lib, name)
            except AttributeError:
                continue
        raise AttributeError(name)


def _build(target: tuple[str, ...] | None = None, out_dir: Path | None = None) -> _Libraries:
    """Compile (or find already compiled) ``topk_native.c`` and ``sparse_backward.c`` and declare their functions.
    ``target``: CPU flags as in :func:`interp._native_build.build_library` (tests reach the AVX2 / plain-C code)."""
    libs = []
    for stem in ("topk_native", "sparse_backward"):
        source = (Path(__file__).parent / f"{stem}.c").read_bytes()
        libs.append(ctypes.CDLL(str(build_library(source, stem, target, out_dir))))
    enc, back = libs
    i64, ptr, i32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    enc.topk_encode_workspace.argtypes = [i64] * 5 + [i32, ptr, i64, i64, i64]
    enc.topk_encode_workspace.restype = i64
    enc.topk_encode.argtypes = [i64] * 3 + [ptr] * 2 + [i64] * 2 + [ptr, i64, i64, ptr, ptr, ptr, i64, i64, ptr, ptr,
                                                                    i64, i64, ptr] + [ptr] * 5 + [i32]
    enc.topk_encode.restype = i32
    back.sparse_backward.argtypes = [i64] * 4 + [ptr] * 3 + [i64, ptr, i32, ptr, ptr, i64, ptr, ptr, i32]
    back.sparse_backward.restype = i32
    back.gather_dot.argtypes = [i64] * 4 + [ptr, i64, ptr, ptr, i64, ptr, i32]
    back.gather_dot.restype = i32
    back.project_rows.argtypes = [i64, i64, ptr, ptr, ctypes.c_float, i32]
    back.project_rows.restype = None
    return _Libraries(enc, back)


_native = LazyLibrary(lambda: _build(), "native SAE kernels", "the torch ops")


def available() -> bool:
    """Whether the native kernels are built (building them now if needed)."""
    return _native.get() is not None


def require() -> _Libraries:
    """The library, or RuntimeError saying why it could not be built."""
    return _native.require()


def _symbol(lib: ctypes.CDLL, name: str) -> int:
    try:
        return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value or 0
    except AttributeError:
        return 0


def find_blas() -> Blas:
    """The BLAS entry points of this process: torch's own library first, then the global namespace."""
    libs = []
    suffix = ".dylib" if sys.platform == "darwin" else ".so"
    for path in (Path(torch.__file__).parent / "lib" / f"libtorch_cpu{suffix}", None):
        try:
            libs.append(ctypes.CDLL(str(path) if path else None))
        except OSError:
            continue
    for lib in libs:
        found = Blas(*(_symbol(lib, name) for name in ("sgemm_", "cblas_sgemm_pack_get_size", "cblas_sgemm_pack",
                                                        "cblas_sgemm_compute", "MKL_Set_Num_Threads_Local")))
        if found.mode is not None:
            return found
    return Blas(0, 0, 0, 0, 0)


_blas: Blas | None = None


def blas() -> Blas:
    """:func:`find_blas`, looked up once."""
    global _blas
    if _blas is None:
        _blas = find_blas()
    return _blas


def encoder_available() -> bool:
    """Whether :func:`topk_encode` can run here (library built and a BLAS found)."""
    return available() and blas().mode is not None


def _serves(*tensors: Tensor) -> bool:
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors) and available()


def _workspace(nbytes: int) -> Tensor:
    buf = getattr(_local, "work", None)
    if buf is None or buf.numel() < nbytes:
        buf = torch.empty(nbytes, dtype=torch.uint8)
        _local.work = buf
    return buf


def release_workspace() -> None:
    """Free this thread's encoder workspace (it is kept between calls; about the size of x plus W_enc)."""
    _local.work = None


def topk_encode(xc: Float[Tensor, "batch d_in"], W_enc: Float[Tensor, "d_in d_sae"], b_enc: Float[Tensor, " d_sae"],
                k: int, dead: Int[Tensor, " n_dead"] | None = None, k_aux: int = 0, *, blas_mode: str | None = None
                ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """``(vals [B, k], idx [B, k], aux_vals [B, k_aux], aux_idx [B, k_aux])``, rows sorted best first; equivalent to
    ``pre = torch.addmm(b_enc, xc, W_enc); pre.topk(k)`` and ``pre[:, dead].topk(k_aux)`` (indices mapped back to
    latents), except that among equal values the lower latent index wins (torch.topk leaves that order unspecified)
    and the ``[B, d_sae]`` pre-activations are never materialised. NaN ranks above every number, as in torch.topk.

    ``dead``: sorted latent indices (``dead_mask.nonzero()[:, 0]``); the aux part is None when ``k_aux`` is 0.
    ``blas_mode``: "packed" or "sgemm" to force one (tests); default the best found. float32 CPU tensors only.
    """
    L = W_enc.shape[-1]
    if not 0 < k <= L:
        raise ValueError(f"k must be in [1, d_sae={L}], got {k}")
    vals = xc.new_empty(xc.shape[0], k)
    idx = torch.empty(xc.shape[0], k, dtype=torch.int64)
    return (vals, idx, *_encode(xc, W_enc, b_enc, k, 0, vals, idx, dead, k_aux, blas_mode))


def batch_topk_encode(xc: Float[Tensor, "batch d_in"], W_enc: Float[Tensor, "d_in d_sae"],
                      b_enc: Float[Tensor, " d_sae"], n: int, dead: Int[Tensor, " n_dead"] | None = None,
                      k_aux: int = 0, *, blas_mode: str | None = None
                      ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """``(vals [n], flat_idx [n], aux_vals [B, k_aux], aux_idx [B, k_aux])``: the n largest entries of the whole
    pre-activation matrix, in increasing flat index ``b * d_sae + l``; equivalent to
    ``torch.addmm(b_enc, xc, W_enc).flatten().topk(n)`` re-sorted by index, with ties to the lower flat index and
    the matrix never materialised (BatchTopK, Bussmann et al. 2024). The aux part as in :func:`topk_encode`."""
    B, L = xc.shape[0], W_enc.shape[-1]
    if not 0 < n <= B * L:
        raise ValueError(f"n must be in [1, batch * d_sae = {B * L}], got {n}")
    vals = xc.new_empty(n)
    idx = torch.empty(n, dtype=torch.int64)
    return (vals, idx, *_encode(xc, W_enc, b_enc, 0, n, vals, idx, dead, k_aux, blas_mode))


def _encode(xc, W_enc, b_enc, k, n_sel, vals, idx, dead, k_aux, blas_mode):
    """Checks and runs ``topk_encode`` of topk_native.c; returns the aux part ``(aux_vals, aux_idx)``."""
    lib = require()
    found = blas()
    mode = blas_mode or found.mode
    if not {"packed": found.mode == "packed", "sgemm": bool(found.sgemm)}.get(mode, False):
        raise RuntimeError(f"no BLAS for the fused encoder here (found {found.mode!r}, asked {blas_mode!r})")
    for name, t in (("xc", xc), ("W_enc", W_enc), ("b_enc", b_enc)):
        if t.device.type != "cpu" or t.dtype != torch.float32:
            raise ValueError(f"{name} must be a float32 CPU tensor, got {t.dtype} on {t.device}")
    if xc.ndim != 2 or W_enc.ndim != 2 or xc.shape[1] != W_enc.shape[0] or tuple(b_enc.shape) != (W_enc.shape[1],):
        raise ValueError(f"shapes must be xc [B, D], W_enc [D, L], b_enc [L]; got {tuple(xc.shape)}, "
                         f"{tuple(W_enc.shape)}, {tuple(b_enc.shape)}")
    B, D = xc.shape
    L = W_enc.shape[1]
    n_dead = 0 if dead is None else dead.numel()
    if not 0 <= k_aux <= n_dead:
        raise ValueError(f"k_aux must be in [0, number of dead latents = {n_dead}], got {k_aux}")
    if max(B, D, L) >= 2**31:
        raise ValueError("the BLAS takes 32-bit sizes: B, d_in and d_sae must each be below 2**31")
    xc, b_enc = xc.contiguous(), b_enc.contiguous()
    ws0, ws1 = W_enc.stride()
    if not ((ws1 == 1 and ws0 >= L) or (ws0 == 1 and ws1 >= D)):  # the BLAS takes row- or column-major W
        W_enc = W_enc.contiguous()
        ws0, ws1 = W_enc.stride()
    threads = torch.get_num_threads()
    per_thread = -(-B // threads)
    rows = min(ROW_TILE, max(16, -(-per_thread // 16) * 16))
    packed = mode == "packed"
    pack_size = found.pack_size if packed else 0
    work = _workspace(lib.topk_encode_workspace(B, D, L, rows, COL_BLOCK, threads, pack_size or None, k, k_aux,
                                                n_sel))
    aux_vals = aux_idx = dead_c = None
    if k_aux:
        dead_c = dead.to(torch.int64).contiguous()
        aux_vals = xc.new_empty(B, k_aux)
        aux_idx = torch.empty(B, k_aux, dtype=torch.int64)
    rc = lib.topk_encode(B, D, L, xc.data_ptr(), W_enc.data_ptr(), ws0, ws1, b_enc.data_ptr(), k, n_sel,
                         vals.data_ptr(), idx.data_ptr(), dead_c.data_ptr() if k_aux else None,
                         n_dead if k_aux else 0, k_aux, aux_vals.data_ptr() if k_aux else None,
                         aux_idx.data_ptr() if k_aux else None, rows, COL_BLOCK, work.data_ptr(), found.sgemm or None,
                         pack_size or None, (found.pack if packed else 0) or None,
                         (found.compute if packed else 0) or None, found.threads_local or None, threads)
    if rc != 0:
        raise ValueError(f"dead must hold sorted, distinct latent indices in [0, {L}), got {dead}")
    return aux_vals, aux_idx


def _empty_rows(n_rows: int, D: int) -> Tensor:
    """A float32 ``[n_rows, D]`` gradient buffer. Large ones come from the huge-page buffer pool
    (:func:`interp.mamba.buffers.empty_large`): a training step's two ``[d_sae, d_in]`` weight gradients die at
    ``zero_grad`` and are handed out again next step, so the step does not page-fault 2 x 32 MiB of fresh memory."""
    from interp.mamba.buffers import empty_large

    return empty_large((n_rows, D), torch.float32)


def _latent_major(idx: Tensor, w: Tensor, X: Tensor, n_rows: int, *, out_t: bool = False, colsum: bool = False,
                  Wd: Tensor | None = None) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``sparse_backward`` of topk_native.c: ``(out, colsum or None, dots or None)`` (see the C docstring)."""
    B, K = idx.shape
    D = X.shape[1]
    idx, w = idx.contiguous(), w.contiguous()
    if X.stride(1) != 1:
        X = X.contiguous()
    if Wd is not None and Wd.stride(1) != 1:
        Wd = Wd.contiguous()
    out = _empty_rows(D, n_rows) if out_t else _empty_rows(n_rows, D)
    sums = w.new_empty(n_rows) if colsum else None
    dots = w.new_empty(B, K) if Wd is not None else None
    threads = torch.get_num_threads()
    work = torch.empty(n_rows + 1 + B * K + -(-threads * CHUNK * D // 2), dtype=torch.int64)
    rc = require().sparse_backward(B, K, D, n_rows, idx.data_ptr(), w.data_ptr(), X.data_ptr(), X.stride(0),
                                   out.data_ptr(), int(out_t), sums.data_ptr() if colsum else None,
                                   Wd.data_ptr() if Wd is not None else None, Wd.stride(0) if Wd is not None else 0,
                                   dots.data_ptr() if dots is not None else None, work.data_ptr(), threads)
    if rc != 0:
        raise IndexError(f"idx holds a latent outside [0, {n_rows})")
    return out, sums, dots


def scatter_outer(vals: Float[Tensor, "batch k"], idx: Int[Tensor, "batch k"], dy: Float[Tensor, "batch d"],
                  n_rows: int) -> Float[Tensor, "n_rows d"]:
    """Equivalent to
    ``zeros(n_rows, D).index_add_(0, idx.flatten(), (vals[..., None] * dy[:, None, :]).flatten(0, 1))``:
    entries sorted latent-major by a counting sort, then each latent's row summed in order, every row written once."""
    if not _serves(vals, dy):
        return cpu_ops.scatter_outer(vals, idx, dy, n_rows)
    return _latent_major(idx, vals, dy, n_rows)[0]


def decode_backward(vals: Float[Tensor, "batch k"], idx: Int[Tensor, "batch k"], dy: Float[Tensor, "batch d"],
                    W: Float[Tensor, "n_latents d"]) -> tuple[Tensor, Tensor]:
    """Both gradients of ``sparse_decode(vals, idx, W)`` from one latent-major pass over dy:
    ``(gather_dot(dy, idx, W), scatter_outer(vals, idx, dy, W.shape[0]))``."""
    if not _serves(vals, dy, W):
        return cpu_ops.gather_dot(dy, idx, W), cpu_ops.scatter_outer(vals, idx, dy, W.shape[0])
    dW, _, dvals = _latent_major(idx, vals, dy, W.shape[0], Wd=W)
    return dvals, dW


def encode_backward(dpre: Float[Tensor, "batch k"], idx: Int[Tensor, "batch k"], xc: Float[Tensor, "batch d_in"],
                    W_enc: Float[Tensor, "d_in d_sae"]) -> tuple[Tensor, Tensor]:
    """``(dW_enc, db_enc)`` of ``pre = xc @ W_enc + b_enc`` sampled at idx, with dW_enc in W_enc's memory layout
    (so autograd and a fused optimizer take it as is); equivalent to
    ``(scatter_outer(dpre, idx, xc, L).t(), zeros(L).index_add_(0, idx.flatten(), dpre.flatten()))``."""
    L = W_enc.shape[1]
    if not _serves(dpre, xc, W_enc):
        dW = cpu_ops.scatter_outer(dpre, idx, xc, L).t()
        return dW, torch.zeros(L, dtype=dpre.dtype, device=dpre.device).index_add_(0, idx.flatten(), dpre.flatten())
    row_major = W_enc.stride(1) == 1 and W_enc.stride(0) >= L  # [D, L] in memory: write the gradient that way
    out, db, _ = _latent_major(idx, dpre, xc, L, out_t=row_major, colsum=True)
    return (out if row_major else out.t()), db


def gather_dot(dy: Float[Tensor, "batch d"], idx: Int[Tensor, "batch k"],
               W: Float[Tensor, "n_latents d"]) -> Float[Tensor, "batch k"]:
    """Equivalent to ``(dy[:, None, :] * W[idx]).sum(-1)``."""
    if not _serves(dy, W):
        return cpu_ops.gather_dot(dy, idx, W)
    B, K = idx.shape
    if dy.stride(1) != 1:
        dy = dy.contiguous()
    if W.stride(1) != 1:
        W = W.contiguous()
    idx = idx.contiguous()
    out = dy.new_empty(B, K)
    rc = require().gather_dot(B, K, dy.shape[1], W.shape[0], dy.data_ptr(), dy.stride(0), idx.data_ptr(),
                              W.data_ptr(), W.stride(0), out.data_ptr(), torch.get_num_threads())
    if rc != 0:
        raise IndexError(f"idx holds a latent outside [0, {W.shape[0]})")
    return out


sparse_decode = cpu_ops.sparse_decode


def project_out_parallel_(grad: Tensor, w: Tensor) -> bool:
    """In place ``grad -= (rowwise dot(grad, w) / |w|^2)[:, None] * w`` (float32 CPU, contiguous); returns False,
    touching nothing, where it does not apply (the caller then runs the torch expression)."""
    if not (_serves(grad, w) and grad.is_contiguous() and w.is_contiguous() and grad.shape == w.shape
            and grad.ndim == 2):
        return False
    require().project_rows(w.shape[0], w.shape[1], grad.data_ptr(), w.data_ptr(), torch.finfo(w.dtype).tiny,
                           torch.get_num_threads())
    return True
