"""Large output buffers for per-step states: transparent huge pages, and reuse of freed buffers.

Recording every per-step SSM state writes a lot of fresh memory: Mamba-2 with 24 heads of 64 channels and N 128
writes 768 MiB per layer at T 1024. On Linux, memory the process has not touched yet is mapped on first write,
one 4 KiB page at a time, and those page faults, not the arithmetic, dominated the state-recording run: filling
768 MiB of fresh ``torch.empty`` memory took 0.29-0.62 s here, the same fill into memory already touched 0.035 s.
PyTorch's CPU allocator hands such large blocks straight to ``mmap`` and unmaps them on free, so every call pays
again. Two remedies, both for buffers of at least :data:`HUGEPAGE_MIN_BYTES`:

- :func:`empty_large` maps the buffer itself with ``madvise(MADV_HUGEPAGE)``, so that the kernel maps it 2 MiB at a
  time (0.05-0.09 s for the same 768 MiB fill here, once this VM had backed the memory; ``/sys/kernel/mm/
  transparent_hugepage/enabled`` was ``madvise``). Where huge pages are not available (not Linux, THP ``never``)
  the advice is ignored and the mapping behaves like ``torch.empty``.
- Buffers are pooled, like CUDA's caching allocator: a pooled buffer whose tensors have all died (PyTorch's
  storage use count is back to the pool's own reference) is handed out again for a request of the same size,
  already mapped. The pool holds at most ``INTERP_BUFFER_POOL_MIB`` (default 2048) MiB of buffers, in use or free,
  so at most that much stays mapped once every tensor is gone: a request that does not fit drops free buffers,
  least recently used first, and if it still does not fit its buffer is not pooled (it is unmapped when its tensors
  die, like any tensor). :func:`empty_cache` unmaps the free ones now. A buffer still referenced anywhere (a cache,
  a view, a NumPy array of it) is never handed out.

Each buffer is an ordinary contiguous CPU tensor (not a view) that owns its mapping through its storage.
``INTERP_HUGEPAGES=0`` turns both off (plain ``torch.empty``); ``INTERP_BUFFER_POOL_MIB=0`` turns off the pool only.
"""

from __future__ import annotations

import math
import mmap
import os
import threading
from collections import OrderedDict

import torch

__all__ = ["HUGEPAGE_MIN_BYTES", "empty_cache", "empty_large", "pool_stats"]

HUGEPAGE_MIN_BYTES = 2 << 20
"""Buffers smaller than this (one huge page) come from ``torch.empty``. From one page up, pooling also spares a
repeated call the page faults of its fresh outputs (the per-step states and logits of a short sequence are a few
MiB: at 16 MiB, the threshold before, those were mapped anew on every call)."""

_HUGE = 2 << 20
_lock = threading.Lock()
_pool: OrderedDict[int, tuple[torch.Tensor, int]] = OrderedDict()  # id -> (uint8 tensor over the mapping, bytes)


def _enabled() -> bool:
    return hasattr(mmap, "MADV_HUGEPAGE") and os.environ.get("INTERP_HUGEPAGES", "1").strip() not in ("0", "false")


def _pool_cap() -> int:
    raw = os.environ.get("INTERP_BUFFER_POOL_MIB", "2048").strip()
    try:
        mib = float(raw)
    except ValueError as err:
        raise ValueError(f"INTERP_BUFFER_POOL_MIB must be a number of MiB, got {raw!r}") from err
    if not hasattr(torch._C, "_storage_Use_Count"):  # pragma: no cover - the pool needs PyTorch's use counts
        return 0
    return int(mib * (1 << 20))


def _is_free(raw: torch.Tensor) -> bool:
    """Whether only the pool's own tensor still references this buffer's storage."""
    return torch._C._storage_Use_Count(raw.untyped_storage()._cdata) <= 2  # the pool's tensor + this temporary


def _make_room(nbytes: int, cap: int) -> bool:
    """Drop free pooled buffers, least recently used first, until ``nbytes`` more fit under ``cap`` bytes in all
    (free or in use); whether they fit."""
    total = sum(n for _, n in _pool.values())
    for key, (raw, n) in list(_pool.items()):
        if total + nbytes <= cap:
            break
        if _is_free(raw):
            del _pool[key]
            total -= n
    return total + nbytes <= cap


def empty_cache() -> None:
    """Unmap every pooled buffer that no tensor uses any more."""
    with _lock:
        for key in [key for key, (raw, _) in _pool.items() if _is_free(raw)]:
            del _pool[key]


def pool_stats() -> dict[str, int]:
    """``{"buffers", "bytes", "free_buffers", "free_bytes"}`` of the pool (free: no tensor uses it)."""
    with _lock:
        free = [n for raw, n in _pool.values() if _is_free(raw)]
        return {"buffers": len(_pool), "bytes": sum(n for _, n in _pool.values()), "free_buffers": len(free),
                "free_bytes": sum(free)}


def _as_tensor(raw: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    offset = (-raw.data_ptr()) % _HUGE  # start on a 2 MiB boundary so that every page can be huge
    out = torch.empty(0, dtype=dtype)
    return out.set_(raw.untyped_storage(), offset // out.element_size(), shape)


def empty_large(shape: tuple[int, ...] | torch.Size, dtype: torch.dtype = torch.float32,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """An uninitialised contiguous tensor like ``torch.empty(shape, dtype=dtype, device=device)``; on CPU, from
    :data:`HUGEPAGE_MIN_BYTES` up, in an anonymous mapping advised to use transparent huge pages, reusing a freed
    pooled buffer of the same size if there is one (module docstring)."""
    nbytes = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
    if torch.device(device).type != "cpu" or nbytes < HUGEPAGE_MIN_BYTES or not _enabled():
        return torch.empty(shape, dtype=dtype, device=device)
    shape, cap = tuple(shape), _pool_cap()
    with _lock:
        for key, (raw, n) in reversed(_pool.items()):  # the most recently used first: likeliest in cache
            if n == nbytes and _is_free(raw):
                _pool.move_to_end(key)
                return _as_tensor(raw, shape, dtype)
        pooled = cap > 0 and _make_room(nbytes, cap)
    try:
        mapping = mmap.mmap(-1, nbytes + _HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        mapping.madvise(mmap.MADV_HUGEPAGE)
    except (OSError, ValueError):  # pragma: no cover - refused mapping or advice: fall back
        return torch.empty(shape, dtype=dtype, device=device)
    raw = torch.frombuffer(mapping, dtype=torch.uint8)  # the storage holds the mapping alive
    out = _as_tensor(raw, shape, dtype)
    if pooled:
        with _lock:
            _pool[id(raw)] = (raw, nbytes)
    return out
