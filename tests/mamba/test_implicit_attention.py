"""Implicit attention (Ali et al. 2024): α reconstructs the scan exactly, on random inputs and on HookedMamba."""

from __future__ import annotations

import pytest
import torch

from interp.mamba.implicit_attention import mamba1_alpha, mamba2_alpha
from interp.mamba.scan import selective_scan_ref, ssd_scan_ref

F64 = torch.float64


def _mamba1_inputs(seed: int, b: int = 2, T: int = 13, d: int = 5, N: int = 3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, T, d, generator=g, dtype=F64)
    dt = torch.nn.functional.softplus(torch.randn(b, T, d, generator=g, dtype=F64))
    A = -torch.exp(torch.randn(d, N, generator=g, dtype=F64))
    B, C = torch.randn(b, T, N, generator=g, dtype=F64), torch.randn(b, T, N, generator=g, dtype=F64)
    D = torch.randn(d, generator=g, dtype=F64)
    return x, dt, A, B, C, D


def _mamba2_inputs(seed: int, b: int = 2, T: int = 11, H: int = 6, P: int = 4, G: int = 3, N: int = 5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, T, H, P, generator=g, dtype=F64)
    dt = torch.nn.functional.softplus(torch.randn(b, T, H, generator=g, dtype=F64))
    A = -torch.exp(torch.randn(H, generator=g, dtype=F64))
    B, C = torch.randn(b, T, G, N, generator=g, dtype=F64), torch.randn(b, T, G, N, generator=g, dtype=F64)
    D = torch.randn(H, generator=g, dtype=F64)
    return x, dt, A, B, C, D


@pytest.mark.parametrize("seed,T", [(0, 1), (1, 13), (2, 32)])
def test_mamba1_alpha_reconstructs_scan(seed, T):
    x, dt, A, B, C, D = _mamba1_inputs(seed, T=T)
    y_ref, _ = selective_scan_ref(x, dt, A, B, C, D)
    alpha = mamba1_alpha(dt, B, C, A)
    assert alpha.shape == (2, 5, T, T)
    assert torch.all(alpha.triu(1) == 0)
    y = torch.einsum("bdij,bjd->bid", alpha, x) + D * x
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)


def test_mamba1_alpha_matches_definition_and_rows():
    x, dt, A, B, C, D = _mamba1_inputs(3, T=7)
    alpha = mamba1_alpha(dt, B, C, A)
    b, d, i, j = 1, 2, 5, 2  # α_ij = C_i (Π_{k=j+1..i} exp(Δ_k A)) Δ_j B_j, written out
    decay = torch.exp(A[d] * dt[b, j + 1 : i + 1, d, None]).prod(0)
    expected = (C[b, i] * decay * dt[b, j, d] * B[b, j]).sum()
    torch.testing.assert_close(alpha[b, d, i, j], expected, rtol=1e-12, atol=1e-12)
    rows = [6, 0, 3]
    torch.testing.assert_close(mamba1_alpha(dt, B, C, A, rows=rows), alpha[:, :, rows])


@pytest.mark.parametrize("seed,T,G", [(0, 11, 3), (1, 16, 1), (2, 5, 6)])
def test_mamba2_alpha_reconstructs_scan(seed, T, G):
    x, dt, A, B, C, D = _mamba2_inputs(seed, T=T, G=G)
    y_ref, _ = ssd_scan_ref(x, dt, A, B, C, D)
    alpha = mamba2_alpha(dt, B, C, A)
    assert alpha.shape == (2, 6, T, T)
    y = torch.einsum("bhij,bjhp->bihp", alpha, x) + D[:, None] * x
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    heads, rows = [4, 1], [T - 1, 0]
    torch.testing.assert_close(mamba2_alpha(dt, B, C, A, rows=rows, heads=heads), alpha[:, heads][:, :, rows])


def test_long_decays_stay_finite():
    """Large Δ·A sums underflow to exact zeros instead of producing inf/nan (log-space segment sums)."""
    x, dt, A, B, C, D = _mamba1_inputs(4, T=64)
    dt = dt * 200.0
    alpha = mamba1_alpha(dt, B, C, A)
    assert torch.isfinite(alpha).all()
    y_ref, _ = selective_scan_ref(x, dt, A, B, C, D)
    torch.testing.assert_close(torch.einsum("bdij,bjd->bid", alpha, x) + D * x, y_ref, rtol=1e-9, atol=1e-9)


def test_bad_rows_and_groups():
    x, dt, A, B, C, D = _mamba1_inputs(5, T=4)
    with pytest.raises(IndexError, match="rows"):
        mamba1_alpha(dt, B, C, A, rows=[4])
    x, dt, A, B, C, D = _mamba2_inputs(6, H=6, G=4)
    with pytest.raises(ValueError, match="multiple"):
        mamba2_alpha(dt, B, C, A)


# ---------------------------------------------------------------------------------------------- HookedMamba
def _hooked(arch: str, path, dtype=torch.float64):
    import transformers as tf

    from interp.mamba import from_hf
    from interp.testing import make_tiny

    make_tiny(arch, path, seed=3)
    cls = tf.MambaForCausalLM if arch == "mamba" else tf.Mamba2ForCausalLM
    return from_hf(cls.from_pretrained(path).to(dtype))


@pytest.fixture(scope="module", params=["mamba", "mamba2"])
def model64(request, tmp_path_factory):
    return _hooked(request.param, tmp_path_factory.mktemp(request.param))


def _tokens(seed: int, b: int = 2, T: int = 19) -> torch.Tensor:
    return torch.randint(4, 100, (b, T), generator=torch.Generator().manual_seed(seed))


def test_model_alpha_reconstructs_hook_y(model64):
    from interp.mamba.implicit_attention import implicit_attention, ssm_params

    tokens = _tokens(0)
    layer = model64.n_layers - 1
    p = f"blocks.{layer}.mixer."
    _, cache = model64.run_with_cache(tokens, names_filter=[p + "hook_conv_out", p + "hook_y"])
    x, y = cache[p + "hook_conv_out"], cache[p + "hook_y"]
    alpha = implicit_attention(model64, tokens, layer)
    assert alpha.dtype == torch.float64
    _, D = ssm_params(model64, layer)
    if model64.arch == "mamba":
        assert alpha.shape == (2, model64.d_inner, 19, 19)
        rebuilt = torch.einsum("bdij,bjd->bid", alpha, x) + D * x
    else:
        assert alpha.shape == (2, model64.n_heads, 19, 19)
        rebuilt = torch.einsum("bhij,bjhp->bihp", alpha, x) + D[:, None] * x
    assert y.abs().max() > 1e-3  # the check is not vacuous
    torch.testing.assert_close(rebuilt, y, rtol=1e-9, atol=1e-9)
    chans = [5, 0, 3]
    torch.testing.assert_close(implicit_attention(model64, tokens, layer, channels=chans), alpha[:, chans])


def test_attention_patterns_head_axis(model64):
    from interp.mamba.implicit_attention import attention_patterns, implicit_attention

    tokens = _tokens(1, b=1, T=9)
    pats = model64.attention_patterns(tokens, normalize=False)
    assert pats.shape == (model64.n_layers, 1, model64.n_heads, 9, 9)
    assert (pats >= 0).all() and torch.all(pats.triu(1) == 0)
    alpha = implicit_attention(model64, tokens, 1)
    if model64.arch == "mamba":
        width = model64.d_inner // model64.n_heads
        expected = alpha.abs().reshape(1, model64.n_heads, width, 9, 9).mean(2)
    else:
        expected = alpha.abs()
    torch.testing.assert_close(pats[1], expected)
    signed = attention_patterns(model64, tokens, layers=[1], absolute=False, normalize=False)
    assert (signed < 0).any()
    rows = attention_patterns(model64, tokens, layers=0, normalize=True).sum(-1)
    torch.testing.assert_close(rows, torch.ones_like(rows))


def test_budget_and_bad_input(model64):
    from interp.mamba.implicit_attention import attention_patterns, implicit_attention

    tokens = _tokens(2, b=1, T=12)
    with pytest.raises(ValueError, match="max_len=8"):
        implicit_attention(model64, tokens, 0, max_len=8)
    with pytest.raises(ValueError, match="channels"):
        attention_patterns(model64, tokens, max_elements=100)
    with pytest.raises(IndexError, match="channels"):
        implicit_attention(model64, tokens, 0, channels=[10_000])
    with pytest.raises(IndexError, match="layer"):
        implicit_attention(model64, tokens, 7)


def test_rejects_transformers(tmp_path):
    from interp.mamba.implicit_attention import implicit_attention

    class Fake:
        arch = "llama"

    with pytest.raises(TypeError, match="HookedMamba"):
        implicit_attention(Fake(), _tokens(3), 0)
