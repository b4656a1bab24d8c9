"""The chunked implicit-attention kernels against their per-step float64 references, on fresh random inputs."""

from __future__ import annotations

import pytest
import torch

from interp.mamba.alpha import (
    alpha_chunk,
    mamba1_alpha,
    mamba1_alpha_ref,
    mamba1_group_maps,
    mamba2_alpha,
    mamba2_alpha_ref,
)
from interp.mamba.alpha.selective import _Mamba1Chunked
from interp.mamba.scan import selective_scan_ref, ssd_scan_ref

F64, F32 = torch.float64, torch.float32


def _mamba1_inputs(seed: int, b: int = 2, T: int = 13, d: int = 5, N: int = 3, dt_scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, T, d, generator=g, dtype=F64)
    dt = torch.nn.functional.softplus(torch.randn(b, T, d, generator=g, dtype=F64)) * dt_scale
    A = -torch.exp(torch.randn(d, N, generator=g, dtype=F64))
    B, C = torch.randn(b, T, N, generator=g, dtype=F64), torch.randn(b, T, N, generator=g, dtype=F64)
    return x, dt, A, B, C, torch.randn(d, generator=g, dtype=F64)


def _mamba2_inputs(seed: int, b: int = 2, T: int = 11, H: int = 6, P: int = 4, G: int = 3, N: int = 5,
                   dt_scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, T, H, P, generator=g, dtype=F64)
    dt = torch.nn.functional.softplus(torch.randn(b, T, H, generator=g, dtype=F64)) * dt_scale
    A = -torch.exp(torch.randn(H, generator=g, dtype=F64))
    B, C = torch.randn(b, T, G, N, generator=g, dtype=F64), torch.randn(b, T, G, N, generator=g, dtype=F64)
    return x, dt, A, B, C, torch.randn(H, generator=g, dtype=F64)


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest error relative to the largest reference value."""
    return ((a.double() - ref).abs().max() / ref.abs().max()).item()


# ---------------------------------------------------------------------------------------------- references
def test_references_unroll_the_scans():
    x, dt, A, B, C, D = _mamba1_inputs(0, T=9)
    y, _ = selective_scan_ref(x, dt, A, B, C, D)
    alpha = mamba1_alpha_ref(dt, B, C, A)
    torch.testing.assert_close(torch.einsum("bdij,bjd->bid", alpha, x) + D * x, y, rtol=1e-12, atol=1e-12)
    b, d, i, j = 1, 2, 7, 3  # α_ij = C_i (Π_{k=j+1..i} exp(Δ_k A)) Δ_j B_j, written out
    decay = torch.exp(A[d] * dt[b, j + 1: i + 1, d, None]).prod(0)
    torch.testing.assert_close(alpha[b, d, i, j], (C[b, i] * decay * dt[b, j, d] * B[b, j]).sum())
    x, dt, A, B, C, D = _mamba2_inputs(1, T=9, G=2)
    y, _ = ssd_scan_ref(x, dt, A, B, C, D)
    alpha = mamba2_alpha_ref(dt, B, C, A)
    rebuilt = torch.einsum("bhij,bjhp->bihp", alpha, x) + D[:, None] * x
    torch.testing.assert_close(rebuilt, y, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------- Mamba-1
@pytest.mark.parametrize("T,chunk,dt_scale", [
    (1, None, 1.0), (13, None, 1.0), (13, 4, 1.0), (32, 8, 1.0), (37, 8, 1.0), (64, 16, 1.0), (50, 16, 5.0),
    (64, 8, 30.0), (31, 32, 1.0),
])
def test_mamba1_alpha_equals_per_step_reference(T, chunk, dt_scale):
    _, dt, A, B, C, _ = _mamba1_inputs(T, T=T, dt_scale=dt_scale)
    ref = mamba1_alpha_ref(dt, B, C, A)
    alpha = mamba1_alpha(dt, B, C, A, chunk=chunk)
    assert alpha.dtype == F64 and alpha.shape == (2, 5, T, T)
    assert torch.all(alpha.triu(1) == 0)
    torch.testing.assert_close(alpha, ref, rtol=1e-10, atol=1e-10 * ref.abs().max().item())
    alpha32 = mamba1_alpha(dt.float(), B.float(), C.float(), A.float(), dtype=F32, chunk=chunk)
    assert alpha32.dtype == F32 and torch.all(alpha32.triu(1) == 0)
    assert _rel(alpha32, ref) < 2e-6


def test_mamba1_long_chunks_mix_factorised_and_exact_pairs():
    """Large Δ·A: some (channel, state) pairs span more than the flush limit inside a chunk and take the exact
    segment sums, the others the factorised product; both agree with the reference, and nothing overflows."""
    _, dt, A, B, C, _ = _mamba1_inputs(4, T=64, dt_scale=2.0)
    unsafe = _Mamba1Chunked(dt, B, C, A, F32, 16).unsafe
    assert unsafe.any() and not unsafe.all()
    ref = mamba1_alpha_ref(dt, B, C, A)
    for dtype in (F64, F32):
        alpha = mamba1_alpha(dt.to(dtype), B.to(dtype), C.to(dtype), A.to(dtype), dtype=dtype, chunk=16)
        assert torch.isfinite(alpha).all()
        assert _rel(alpha, ref) < (1e-12 if dtype == F64 else 2e-6)


def test_mamba1_huge_decays_underflow_to_zero():
    x, dt, A, B, C, D = _mamba1_inputs(5, T=64, dt_scale=200.0)
    alpha = mamba1_alpha(dt, B, C, A)
    assert torch.isfinite(alpha).all()
    y_ref, _ = selective_scan_ref(x, dt, A, B, C, D)
    torch.testing.assert_close(torch.einsum("bdij,bjd->bid", alpha, x) + D * x, y_ref, rtol=1e-9, atol=1e-9)
    alpha32 = mamba1_alpha(dt.float(), B.float(), C.float(), A.float(), dtype=F32)
    assert torch.isfinite(alpha32).all() and _rel(alpha32, mamba1_alpha_ref(dt, B, C, A)) < 2e-6


@pytest.mark.parametrize("rows", [[6, 0, 3], [12], [0, 12, 5, 5]])
def test_mamba1_rows(rows):
    _, dt, A, B, C, _ = _mamba1_inputs(6, T=13)
    full = mamba1_alpha(dt, B, C, A, chunk=4)
    torch.testing.assert_close(mamba1_alpha(dt, B, C, A, rows=rows, chunk=4), full[:, :, rows], rtol=0, atol=1e-13)


def test_mamba1_group_maps_reduce_while_computing():
    _, dt, A, B, C, _ = _mamba1_inputs(7, T=21, d=6, N=4, dt_scale=3.0)
    ref = mamba1_alpha_ref(dt, B, C, A)  # [b, 6, T, T]
    for absolute in (True, False):
        per_channel = ref.abs() if absolute else ref
        expected = per_channel.unflatten(1, (3, 2)).mean(2)
        for block_elements in (1, 10**6):  # one channel per block, or all at once
            maps = mamba1_group_maps(dt, B, C, A, 3, absolute=absolute, dtype=F64, chunk=8,
                                     block_elements=block_elements)
            assert maps.shape == (2, 3, 21, 21)
            torch.testing.assert_close(maps, expected, rtol=1e-10, atol=1e-12)
    maps32 = mamba1_group_maps(dt.float(), B.float(), C.float(), A.float(), 2)
    assert maps32.dtype == F32 and _rel(maps32, ref.abs().unflatten(1, (2, 3)).mean(2)) < 2e-6


def test_mamba1_bad_input():
    _, dt, A, B, C, _ = _mamba1_inputs(8, T=4)
    with pytest.raises(IndexError, match="rows"):
        mamba1_alpha(dt, B, C, A, rows=[4])
    for bad in (1.5, [1.0, 2.0], True, torch.tensor([1.0])):  # floats and bools are not positions
        with pytest.raises(TypeError, match="rows"):
            mamba1_alpha(dt, B, C, A, rows=bad)
    assert mamba1_alpha(dt, B, C, A, rows=[]).shape == (*dt.shape[::2], 0, 4)  # no rows: an empty map
    with pytest.raises(ValueError, match="A must be <= 0"):
        mamba1_alpha(dt, B, C, -A)
    with pytest.raises(ValueError, match="dt must be >= 0"):
        mamba1_alpha(-dt, B, C, A)
    with pytest.raises(ValueError, match="dtype"):
        mamba1_alpha(dt, B, C, A, dtype=torch.float16)
    with pytest.raises(ValueError, match="n_groups"):
        mamba1_group_maps(dt, B, C, A, 2)
    with pytest.raises(ValueError, match="block_elements"):
        mamba1_alpha(dt, B, C, A, block_elements=0)


# ---------------------------------------------------------------------------------------------- Mamba-2
@pytest.mark.parametrize("T,G,chunk,dt_scale", [
    (1, 3, None, 1.0), (11, 3, 4, 1.0), (16, 1, None, 1.0), (37, 6, 8, 1.0), (64, 2, 16, 1.0), (64, 2, 8, 200.0),
])
def test_mamba2_alpha_equals_per_step_reference(T, G, chunk, dt_scale):
    _, dt, A, B, C, _ = _mamba2_inputs(T, T=T, G=G, dt_scale=dt_scale)
    ref = mamba2_alpha_ref(dt, B, C, A)
    alpha = mamba2_alpha(dt, B, C, A, chunk=chunk)
    assert alpha.dtype == F64 and alpha.shape == (2, 6, T, T) and torch.all(alpha.triu(1) == 0)
    torch.testing.assert_close(alpha, ref, rtol=1e-10, atol=1e-10 * ref.abs().max().item())
    alpha32 = mamba2_alpha(dt.float(), B.float(), C.float(), A.float(), dtype=F32, chunk=chunk)
    assert torch.isfinite(alpha32).all() and _rel(alpha32, ref) < 2e-6
    heads, rows = [4, 1], [T - 1, 0]
    torch.testing.assert_close(mamba2_alpha(dt, B, C, A, rows=rows, heads=heads, chunk=chunk),
                               alpha[:, heads][:, :, rows], rtol=0, atol=1e-13 * ref.abs().max().item())
    torch.testing.assert_close(mamba2_alpha(dt, B, C, A, rows=rows, chunk=chunk), alpha[:, :, rows],
                               rtol=0, atol=1e-13 * ref.abs().max().item())


def test_mamba2_bad_input():
    _, dt, A, B, C, _ = _mamba2_inputs(9, H=6, G=4)
    with pytest.raises(ValueError, match="multiple"):
        mamba2_alpha(dt, B, C, A)
    _, dt, A, B, C, _ = _mamba2_inputs(9, H=6, G=3)
    with pytest.raises(IndexError, match="heads"):
        mamba2_alpha(dt, B, C, A, heads=[6])
    with pytest.raises(TypeError, match="heads"):
        mamba2_alpha(dt, B, C, A, heads=[1.0])
    with pytest.raises(ValueError, match="heads is empty"):
        mamba2_alpha(dt, B, C, A, heads=[])
    with pytest.raises(ValueError, match="A must be <= 0"):
        mamba2_alpha(dt, B, C, -A)


def test_alpha_chunk():
    assert [alpha_chunk(T) for T in (1, 13, 64, 1024)] == [1, 13, 32, 32]


# ---------------------------------------------------------------------------------------------- autograd
def _direct_mamba1(dt, B, C, A):
    """α from exp of masked segment sums in one einsum: differentiable, O(d N T²) (the plain formula)."""
    cs = torch.cumsum(dt[..., None] * A, 1)  # [b, T, d, N]
    seg = (cs[:, :, None] - cs[:, None]).permute(0, 3, 4, 1, 2)  # [b, d, N, i, j]
    T = dt.shape[1]
    seg = seg.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), -torch.inf)
    return torch.einsum("bin,bjn,bdnij->bdij", C, B, seg.exp()) * dt.transpose(1, 2)[:, :, None, :]


def _direct_mamba2(dt, B, C, A):
    H, G = dt.shape[2], B.shape[2]
    cs = torch.cumsum(dt * A, 1)  # [b, T, H]
    T = dt.shape[1]
    seg = (cs[:, :, None] - cs[:, None]).permute(0, 3, 1, 2)
    seg = seg.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), -torch.inf)
    cb = torch.einsum("bign,bjgn->bgij", C, B).repeat_interleave(H // G, 1)
    return cb * seg.exp() * dt.transpose(1, 2)[:, :, None, :]


@pytest.mark.parametrize("arch", ["mamba", "mamba2"])
def test_kernels_are_differentiable(arch):
    """Under autograd the kernels work out of place: same values, and the gradients of the plain formula."""
    if arch == "mamba":
        _, dt, A, B, C, _ = _mamba1_inputs(10, T=23, dt_scale=40.0)  # float64: spans past 2^400 need Δ A ~ 40
        kernel, direct, kw = mamba1_alpha, _direct_mamba1, {"chunk": 8}
        unsafe = _Mamba1Chunked(dt, B, C, A, F64, 8).unsafe
        assert unsafe.any() and not unsafe.all()
    else:
        _, dt, A, B, C, _ = _mamba2_inputs(10, T=23, G=3)
        kernel, direct, kw = mamba2_alpha, _direct_mamba2, {"chunk": 8}
    leaves = [t.clone().requires_grad_() for t in (dt, B, C)]
    weight = torch.randn(kernel(dt, B, C, A, **kw).shape, generator=torch.Generator().manual_seed(0), dtype=F64)
    for rows in (None, [22, 3]):
        got = kernel(*leaves, A, rows=rows, **kw)
        ref = direct(*leaves, A) if rows is None else direct(*leaves, A)[:, :, rows]
        torch.testing.assert_close(got, kernel(dt, B, C, A, rows=rows, **kw), rtol=0, atol=0)
        w = weight if rows is None else weight[:, :, rows]
        g_got = torch.autograd.grad((got * w).sum(), leaves)
        g_ref = torch.autograd.grad((ref * w).sum(), leaves)
        for a, b in zip(g_got, g_ref):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    if arch == "mamba":
        maps = mamba1_group_maps(*leaves, A, 5, dtype=F64, chunk=8)
        (g,) = torch.autograd.grad(maps.sum(), leaves[0])
        (g_ref,) = torch.autograd.grad(direct(*leaves, A).abs().unflatten(1, (5, 1)).mean(2).sum(), leaves[0])
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-9)
