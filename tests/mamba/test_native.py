"""The fused C scans (``interp.mamba.native``) against the plain per-step references, and their dispatch."""

import os
import platform
import shutil

import pytest
import torch

from interp.mamba import native
from interp.mamba.scan import selective_scan_ref, ssd_scan_ref

HAS_CC = bool(os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang"))
pytestmark = pytest.mark.skipif(not HAS_CC, reason="no C compiler: the native scans cannot be built here")


def test_builds_where_a_compiler_exists():
    """With a compiler present the build must work (a silent fallback to the torch scans would hide a bug)."""
    assert native.native_available()


def _mamba1_inputs(b, T, d, N, dt_scale=0.5):
    x, dt = torch.randn(b, T, d), torch.rand(b, T, d) * dt_scale
    A = -torch.rand(d, N) * 8 - 0.01
    return x, dt, A, torch.randn(b, T, N), torch.randn(b, T, N), torch.randn(d)


def _mamba2_inputs(b, T, H, P, G, N, dt_scale=0.5):
    x, dt = torch.randn(b, T, H, P), torch.rand(b, T, H) * dt_scale
    A = -torch.rand(H) * 8 - 0.01
    return x, dt, A, torch.randn(b, T, G, N), torch.randn(b, T, G, N), torch.randn(H)


def _double(ts):
    return [t.double() for t in ts]


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 37, 70, 16), (3, 5, 130, 5), (1, 64, 64, 16), (2, 9, 100, 16)])
@pytest.mark.parametrize("with_h0", [False, True])
def test_mamba1_matches_reference(shape, with_h0):
    b, T, d, N = shape
    args = _mamba1_inputs(b, T, d, N)
    h0 = torch.randn(b, d, N) if with_h0 else None
    y_ref, s_ref = selective_scan_ref(*_double(args), h0=None if h0 is None else h0.double())
    y, states, final = native.mamba1_scan_native(*args, h0=h0, return_states=True)
    assert y.dtype == states.dtype == final.dtype == torch.float32
    assert states.shape == (b, T, d, N) and states.is_contiguous() and states._base is None
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(states.double(), s_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(final.double(), s_ref[:, -1], rtol=1e-5, atol=1e-5)
    y2, none, final2 = native.mamba1_scan_native(*args, h0=h0)
    assert none is None
    assert torch.equal(y2, y) and torch.equal(final2, final)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1, 1), (2, 37, 6, 8, 2, 12), (1, 20, 4, 3, 1, 128),
                                   (2, 9, 4, 5, 4, 33)])
@pytest.mark.parametrize("with_h0", [False, True])
def test_mamba2_matches_reference(shape, with_h0):
    b, T, H, P, G, N = shape
    args = _mamba2_inputs(b, T, H, P, G, N)
    h0 = torch.randn(b, H, P, N) if with_h0 else None
    y_ref, s_ref = ssd_scan_ref(*_double(args), h0=None if h0 is None else h0.double())
    y, states, final = native.mamba2_scan_native(*args, h0=h0, return_states=True)
    assert states.shape == (b, T, H, P, N) and states.is_contiguous() and states._base is None
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(states.double(), s_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(final.double(), s_ref[:, -1], rtol=1e-5, atol=1e-5)
    y2, none, final2 = native.mamba2_scan_native(*args, h0=h0)
    assert none is None
    torch.testing.assert_close(y2, y, rtol=0, atol=1e-6)  # the state-writing pass reads the same rows
    assert torch.equal(final2, final)


def test_shapes_are_checked_before_the_kernel_runs():
    x, dt, A, B, C, D = _mamba1_inputs(2, 5, 6, 4)
    with pytest.raises(ValueError, match=r"B must have shape \(2, 5, 4\)"):
        native.mamba1_scan_native(x, dt, A, B[..., :3], C, D)
    with pytest.raises(ValueError, match="D must have shape"):
        native.mamba1_scan_native(x, dt, A, B, C, D[:-1])
    with pytest.raises(ValueError, match="x must be"):
        native.mamba1_scan_native(x[0], dt, A, B, C, D)
    with pytest.raises(RuntimeError, match="expand"):  # h0 that does not broadcast to [b, d, N]
        native.mamba1_scan_native(x, dt, A, B, C, D, h0=torch.zeros(3, 6, 4))
    x, dt, A, B, C, D = _mamba2_inputs(2, 5, 4, 3, 2, 6)
    with pytest.raises(ValueError, match="dt must have shape"):
        native.mamba2_scan_native(x, dt[:, :4], A, B, C, D)
    with pytest.raises(ValueError, match="does not divide"):
        native.mamba2_scan_native(x, dt, A, B[:, :, :1].expand(2, 5, 3, 6), C, D)
    with pytest.raises(ValueError, match="C must have shape"):
        native.mamba2_scan_native(x, dt, A, B, C[..., :5], D)


def test_extreme_and_patched_decays():
    """Decays far below 2^-126 are exactly 0 (as exp underflows); a patched negative Δ (growth) still matches."""
    b, T, d, N = 1, 12, 9, 4
    x, _, A, B, C, D = _mamba1_inputs(b, T, d, N)
    for dt in (torch.full((b, T, d), 50.0), -torch.rand(b, T, d) * 0.3):
        y_ref, s_ref = selective_scan_ref(*_double((x, dt, A, B, C, D)))
        y, states, _ = native.mamba1_scan_native(x, dt, A, B, C, D, return_states=True)
        torch.testing.assert_close(y.double(), y_ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(states.double(), s_ref, rtol=1e-4, atol=1e-4)
    x2, _, A2, B2, C2, D2 = _mamba2_inputs(1, T, 3, 4, 1, 5)
    dt2 = -torch.rand(1, T, 3) * 0.3
    y_ref, _ = ssd_scan_ref(*_double((x2, dt2, A2, B2, C2, D2)))
    torch.testing.assert_close(native.mamba2_scan_native(x2, dt2, A2, B2, C2, D2)[0].double(), y_ref,
                               rtol=1e-4, atol=1e-4)  # growing states: float32 rounding grows with them


def test_non_contiguous_and_half_inputs():
    x, dt, A, B, C, D = _mamba1_inputs(2, 16, 24, 8)
    xt = x.transpose(0, 1).contiguous().transpose(0, 1)  # same values, other strides
    assert not xt.is_contiguous()
    ref = native.mamba1_scan_native(x, dt, A, B, C, D)[0]
    assert torch.equal(native.mamba1_scan_native(xt, dt, A, B, C, D)[0], ref)
    xb = x.to(torch.bfloat16)
    assert native.use_native(xb, dt, A, B, C, D)
    y, _, _ = native.mamba1_scan(xb, dt, A, B, C, D)
    assert torch.equal(y, native.mamba1_scan_native(xb.float(), dt, A, B, C, D)[0])


def test_thread_count_does_not_change_the_bits():
    args1 = _mamba1_inputs(2, 40, 200, 16)
    args2 = _mamba2_inputs(2, 40, 6, 8, 2, 16)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = native.mamba1_scan_native(*args1, return_states=True), native.mamba2_scan_native(*args2,
                                                                                             return_states=True)
        torch.set_num_threads(2)
        two = native.mamba1_scan_native(*args1, return_states=True), native.mamba2_scan_native(*args2,
                                                                                             return_states=True)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two):
        for s, t in zip(a, b):
            assert torch.equal(s, t)


def test_dispatch(monkeypatch):
    x, dt, A, B, C, D = _mamba1_inputs(1, 4, 3, 2)
    assert native.use_native(x, dt, A, B, C, D)
    assert not native.use_native(x.double(), dt, A, B, C, D)
    assert not native.use_native(x.requires_grad_(), dt, A, B, C, D)
    with torch.no_grad():
        assert native.use_native(x, dt, A, B, C, D)
    monkeypatch.setenv(native.ENV_VAR, "torch")
    assert not native.use_native(dt, A, B, C, D)
    monkeypatch.setenv(native.ENV_VAR, "fortran")
    with pytest.raises(ValueError, match="INTERP_MAMBA_SCAN must be"):
        native.use_native(dt)


def test_torch_and_native_model_paths_agree(pair, arch, monkeypatch):
    """The whole model on either scan path: the same logits as HF, the same recorded states."""
    hf, model = pair(arch)
    ids = torch.randint(0, hf.config.vocab_size, (2, 19))
    names = [f"blocks.{layer}.mixer.hook_ssm_state" for layer in range(model.n_layers)]
    with torch.no_grad():
        ref = hf(ids).logits
    runs = {}
    for mode in ("native", "torch"):
        monkeypatch.setenv(native.ENV_VAR, mode)
        logits, cache = model.run_with_cache(ids, names_filter=names)
        torch.testing.assert_close(logits, ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(model(ids), ref, rtol=1e-4, atol=1e-4)
        runs[mode] = [cache[n] for n in names]
    for a, b in zip(runs["native"], runs["torch"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_failed_build_falls_back_with_one_warning(monkeypatch, tmp_path):
    monkeypatch.delenv(native.ENV_VAR, raising=False)
    monkeypatch.setattr(native._native, "lib", None)
    monkeypatch.setattr(native._native, "failed", None)
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path))  # nothing built there yet
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    x, dt, A, B, C, D = _mamba1_inputs(1, 6, 5, 3)
    with pytest.warns(UserWarning, match="native Mamba scan unavailable"):
        assert not native.use_native(x, dt, A, B, C, D)
    y, _, _ = native.mamba1_scan(x, dt, A, B, C, D)  # the torch scan, no second warning
    torch.testing.assert_close(y.double(), selective_scan_ref(*_double((x, dt, A, B, C, D)))[0],
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="not available"):
        native.mamba1_scan_native(x, dt, A, B, C, D)
    monkeypatch.setattr(native._native, "failed", None)
    monkeypatch.setenv(native.ENV_VAR, "native")
    with pytest.raises(RuntimeError, match="INTERP_MAMBA_SCAN=native but the native scan could not be built"):
        native.use_native(x)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 code paths")
@pytest.mark.parametrize("target", [("-march=x86-64-v3",), ("-march=x86-64", "-mno-avx")])
def test_other_instruction_sets_match_reference(target, tmp_path, monkeypatch):
    """The AVX2 and the plain-C paths of the kernels (this machine may run AVX-512 by default)."""
    try:
        lib = native._build(target, tmp_path)
    except RuntimeError as err:
        pytest.skip(f"compiler refused {target}: {err}")
    monkeypatch.setattr(native._native, "lib", lib)
    args1 = _mamba1_inputs(2, 21, 70, 16)
    y, states, _ = native.mamba1_scan_native(*args1, return_states=True)
    y_ref, s_ref = selective_scan_ref(*_double(args1))
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(states.double(), s_ref, rtol=1e-5, atol=1e-5)
    args2 = _mamba2_inputs(2, 21, 4, 5, 2, 37)  # N 37: vector body and scalar tail
    y, states, _ = native.mamba2_scan_native(*args2, return_states=True)
    y_ref, s_ref = ssd_scan_ref(*_double(args2))
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(states.double(), s_ref, rtol=1e-5, atol=1e-5)
