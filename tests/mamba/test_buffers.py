"""``empty_large``: huge-page backed state buffers and the pool that hands freed ones out again."""

import pytest
import torch

from interp.mamba import buffers


@pytest.fixture(autouse=True)
def _small_threshold(monkeypatch):
    """Pool 1 MiB buffers (the real threshold is 16 MiB) and start and end with an empty pool."""
    monkeypatch.setattr(buffers, "HUGEPAGE_MIN_BYTES", 1 << 20)
    monkeypatch.delenv("INTERP_HUGEPAGES", raising=False)
    monkeypatch.delenv("INTERP_BUFFER_POOL_MIB", raising=False)
    buffers.empty_cache()
    yield
    buffers.empty_cache()


SHAPE = (4, 256, 512)  # 2 MiB of float32


def test_small_buffers_are_plain_tensors():
    t = buffers.empty_large((10, 10))
    assert t.shape == (10, 10) and buffers.pool_stats()["buffers"] == 0


@pytest.mark.skipif(not buffers._enabled(), reason="no MADV_HUGEPAGE on this platform")
def test_large_buffer_is_an_ordinary_aligned_tensor():
    t = buffers.empty_large(SHAPE, torch.float64)
    assert t.shape == SHAPE and t.dtype == torch.float64 and t.is_contiguous() and t._base is None
    assert t.data_ptr() % (2 << 20) == 0
    t.fill_(3.0)
    assert float(t.sum()) == 3.0 * t.numel()
    assert buffers.pool_stats() == {"buffers": 1, "bytes": t.numel() * 8, "free_buffers": 0, "free_bytes": 0}


@pytest.mark.skipif(not buffers._enabled(), reason="no MADV_HUGEPAGE on this platform")
def test_freed_buffer_is_reused_and_live_ones_never_are():
    a = buffers.empty_large(SHAPE)
    ptr = a.data_ptr()
    del a
    assert buffers.pool_stats()["free_buffers"] == 1
    b = buffers.empty_large(SHAPE)
    assert b.data_ptr() == ptr  # handed out again
    view = b[1]
    del b  # a view still uses it
    c = buffers.empty_large(SHAPE)
    assert c.data_ptr() != ptr
    arr = c.numpy()
    del c  # so does a NumPy array
    d = buffers.empty_large(SHAPE)
    assert d.data_ptr() not in (ptr, arr.ctypes.data)
    view.fill_(1.0)
    arr[:] = 2.0
    assert float(d.fill_(0.0).sum()) == 0.0 and float(view.sum()) == view.numel()  # nothing shared
    assert buffers.empty_large((2, *SHAPE[1:])).data_ptr() not in (ptr, arr.ctypes.data, d.data_ptr())


@pytest.mark.skipif(not buffers._enabled(), reason="no MADV_HUGEPAGE on this platform")
def test_pool_cap_and_empty_cache(monkeypatch):
    monkeypatch.setenv("INTERP_BUFFER_POOL_MIB", "5")  # room for two 2 MiB buffers
    kept = [buffers.empty_large(SHAPE) for _ in range(3)]
    assert buffers.pool_stats()["buffers"] == 2  # the third did not fit: not pooled
    ptrs = [t.data_ptr() for t in kept]
    del kept
    assert buffers.pool_stats() == {"buffers": 2, "bytes": 4 << 20, "free_buffers": 2, "free_bytes": 4 << 20}
    again = buffers.empty_large(SHAPE)
    assert again.data_ptr() == ptrs[1]  # the most recently pooled one
    other = buffers.empty_large((8, *SHAPE[1:]))  # 4 MiB: the free buffer is dropped, but 2 + 4 > 5: not pooled
    assert buffers.pool_stats() == {"buffers": 1, "bytes": 2 << 20, "free_buffers": 0, "free_bytes": 0}
    del other
    small = buffers.empty_large((2, *SHAPE[1:]))  # 1 MiB fits beside the one in use
    assert buffers.pool_stats()["buffers"] == 2
    del small
    buffers.empty_cache()
    assert buffers.pool_stats() == {"buffers": 1, "bytes": 2 << 20, "free_buffers": 0, "free_bytes": 0}
    assert again.data_ptr() == ptrs[1]


def test_switches(monkeypatch):
    monkeypatch.setenv("INTERP_BUFFER_POOL_MIB", "0")
    t = buffers.empty_large(SHAPE)
    assert t.shape == SHAPE and buffers.pool_stats()["buffers"] == 0
    monkeypatch.setenv("INTERP_HUGEPAGES", "0")
    monkeypatch.setenv("INTERP_BUFFER_POOL_MIB", "2048")
    t = buffers.empty_large(SHAPE)
    assert t.shape == SHAPE and buffers.pool_stats()["buffers"] == 0
    monkeypatch.setenv("INTERP_HUGEPAGES", "1")
    monkeypatch.setenv("INTERP_BUFFER_POOL_MIB", "lots")
    with pytest.raises(ValueError, match="INTERP_BUFFER_POOL_MIB must be a number"):
        buffers.empty_large(SHAPE)
