"""Implicit attention (Ali et al. 2024) on HookedMamba: α reconstructs the scan exactly; head-level patterns.

The kernels themselves are tested against their per-step references in ``test_alpha.py``."""

from __future__ import annotations

import pytest
import torch


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
    pats = model64.attention_patterns(tokens)
    assert pats.shape == (model64.n_layers, 1, model64.n_heads, 9, 9) and pats.dtype == torch.float64
    assert (pats >= 0).all() and torch.all(pats.triu(1) == 0)
    rows = pats.sum(-1)  # normalize=True is the default: rows sum to 1 like attention probabilities
    torch.testing.assert_close(rows, torch.ones_like(rows))
    alpha = implicit_attention(model64, tokens, 1)
    if model64.arch == "mamba":
        grouped = alpha.unflatten(1, (model64.n_heads, model64.d_inner // model64.n_heads))
        raw, signed = grouped.abs().mean(2), grouped.mean(2)
    else:
        raw, signed = alpha.abs(), alpha
    torch.testing.assert_close(pats[1], raw / raw.sum(-1, keepdim=True))
    torch.testing.assert_close(attention_patterns(model64, tokens, layers=[1], normalize=False)[0], raw)
    got = attention_patterns(model64, tokens, layers=[1], absolute=False, normalize=False)[0]
    assert (got < 0).any()
    torch.testing.assert_close(got, signed)
    got = attention_patterns(model64, tokens, layers=[1], absolute=False)[0]
    torch.testing.assert_close(got, signed / signed.abs().sum(-1, keepdim=True))


def test_forward_stops_after_the_last_layer_needed(model64):
    from interp.mamba.implicit_attention import attention_patterns, implicit_attention

    fired: list[str] = []
    later = [f"blocks.{model64.n_layers - 1}.hook_resid_pre", "ln_final.hook_normalized"]
    with model64.hooks([(name, lambda act, *, hook: fired.append(hook.name)) for name in later]):
        implicit_attention(model64, _tokens(4, b=1, T=5), 0)
        attention_patterns(model64, _tokens(4, b=1, T=5), layers=[0])
        assert fired == []
        attention_patterns(model64, _tokens(4, b=1, T=5))
    assert fired == later[:1]


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


def test_attention_mask_zeroes_padded_keys(model64):
    """Left padding with an attention_mask: Δ = 0 at the pads, so a padded row's α over its real tokens equals its
    unpadded run's and every padded key gets α = 0 (per channel, and in the head maps)."""
    from interp.mamba.implicit_attention import attention_patterns, implicit_attention

    tokens, pad = _tokens(7, b=2, T=11), 4
    mask = torch.ones_like(tokens)
    mask[1, :pad] = 0
    alpha = implicit_attention(model64, tokens, 1, attention_mask=mask)
    alone = implicit_attention(model64, tokens[1:, pad:], 1)
    assert alone.abs().max() > 1e-3
    torch.testing.assert_close(alpha[1:, :, pad:, pad:], alone, rtol=1e-9, atol=1e-12)
    assert torch.all(alpha[1, :, :, :pad] == 0)
    torch.testing.assert_close(alpha[:1], implicit_attention(model64, tokens[:1], 1))
    pats = attention_patterns(model64, tokens, layers=[1], attention_mask=mask)[0]
    torch.testing.assert_close(pats[1:, :, pad:, pad:], attention_patterns(model64, tokens[1:, pad:], layers=[1])[0])
    assert torch.all(pats[1, :, :, :pad] == 0)


def test_rejects_transformers(tmp_path):
    from interp.mamba.implicit_attention import implicit_attention

    class Fake:
        arch = "llama"

    with pytest.raises(TypeError, match="HookedMamba"):
        implicit_attention(Fake(), _tokens(3), 0)


@pytest.mark.parametrize("name", ["mamba1-facts", "mamba2-facts"])
def test_zoo_models_float32(name):
    """The trained zoo models (float32): α rebuilds hook_y to float32 accuracy, equals the float64 per-step
    reference of the same recorded Δ, B, C, and the head maps' rows sum to 1."""
    from interp import zoo
    from interp.mamba.alpha import mamba1_alpha_ref, mamba2_alpha_ref
    from interp.mamba.implicit_attention import attention_patterns, implicit_attention, scan_sites, ssm_params

    model = zoo.load(name)
    tokens = torch.randint(4, model.d_vocab, (1, 150), generator=torch.Generator().manual_seed(5))
    layer = model.n_layers - 1
    s = scan_sites(layer)
    _, cache = model.run_with_cache(tokens, names_filter=[s[k] for k in ("x", "dt", "B", "C", "y")])
    x, dt, B, C, y = (cache[s[k]] for k in ("x", "dt", "B", "C", "y"))
    alpha = implicit_attention(model, tokens, layer)
    assert alpha.dtype == torch.float32
    A, D = ssm_params(model, layer)
    if model.arch == "mamba":
        ref = mamba1_alpha_ref(dt, B, C, A)
        rebuilt = torch.einsum("bdij,bjd->bid", alpha, x) + D * x
    else:
        ref = mamba2_alpha_ref(dt, B, C, A)
        rebuilt = torch.einsum("bhij,bjhp->bihp", alpha, x) + D[:, None] * x
    assert ((alpha.double() - ref).abs().max() / ref.abs().max()).item() < 2e-6
    torch.testing.assert_close(rebuilt, y, rtol=1e-4, atol=1e-4 * y.abs().max().item())
    pats = attention_patterns(model, tokens)
    rows = pats.sum(-1)
    torch.testing.assert_close(rows, torch.ones_like(rows))
    # from the cache (no forward): the same maps bit for bit
    assert torch.equal(implicit_attention(model, None, layer, cache=cache), alpha)
    _, everything = model.run_with_cache(tokens)
    assert torch.equal(attention_patterns(model, None, cache=everything), pats)
    assert torch.equal(implicit_attention(model, tokens, 0, channels=[2, 1], cache=everything),
                       implicit_attention(model, tokens, 0, channels=[2, 1]))


# ---------------------------------------------------------------------------------------------- from a cache
def _from_cache_equals_forward(model, tokens) -> None:
    """Every variant of implicit_attention / attention_patterns with cache= equals the run without it, bit for bit
    (same dtype), from a cache of every site and from one holding only Δ, B, C; the cache is left unchanged."""
    from interp.mamba.implicit_attention import attention_patterns, implicit_attention

    _, full = model.run_with_cache(tokens)
    _, few = model.run_with_cache(tokens, names_filter=lambda n: n.endswith(("hook_dt", "hook_B", "hook_C")))
    assert len(few) == 3 * model.n_layers < len(full)
    before = {n: t.clone() for n, t in few.items()}
    n_maps = model.d_inner if model.arch == "mamba" else model.n_heads
    for cache in (full, few, dict(few)):  # an ActivationCache, or any mapping from full site name to tensor
        for layer in range(model.n_layers):
            for channels in ([n_maps - 1, 0, 3], None):
                ref = implicit_attention(model, tokens, layer, channels=channels)
                got = implicit_attention(model, None, layer, channels=channels, cache=cache)
                assert got.dtype == ref.dtype and torch.equal(got, ref), (layer, channels)
            assert torch.equal(implicit_attention(model, tokens, layer, cache=cache), ref)  # tokens given too
        for kw in ({}, {"normalize": False}, {"absolute": False}, {"absolute": False, "normalize": False}):
            for layers in (None, [1], [-1, 0, 1]):
                ref = attention_patterns(model, tokens, layers, **kw)
                got = attention_patterns(model, None, layers, cache=cache, **kw)
                assert got.dtype == ref.dtype and torch.equal(got, ref), (kw, layers)
        assert torch.equal(model.attention_patterns(None, [0], cache=cache), model.attention_patterns(tokens, [0]))
    assert all(torch.equal(t, before[n]) for n, t in few.items())


def test_from_cache_equals_forward(model64):
    _from_cache_equals_forward(model64, _tokens(11, b=3, T=23))


def test_from_cache_equals_forward_float32(pair, arch):
    """The float32 tiny random-init models of conftest.py (the fused C scans record Δ, B, C there)."""
    _from_cache_equals_forward(pair(arch)[1], _tokens(12, b=2, T=37))


def test_from_cache_runs_no_forward(model64):
    """With cache=, no site fires (a hook on every site counts); without it the same counter sees the forward."""
    from interp.mamba.implicit_attention import attention_patterns, implicit_attention

    tokens = _tokens(13, b=2, T=7)
    _, cache = model64.run_with_cache(tokens)
    fired: list[str] = []
    with model64.hooks([(lambda name: True, lambda act, *, hook: fired.append(hook.name))]):
        implicit_attention(model64, None, 1, cache=cache)
        attention_patterns(model64, tokens, cache=cache)
        model64.attention_patterns(None, cache=cache)
        assert fired == []
        implicit_attention(model64, tokens, 1)
    assert "hook_embed" in fired and "blocks.1.mixer.hook_C" in fired


def test_from_cache_of_a_grad_run_is_detached(model64):
    """A cache recorded with grad=True gives the same α, detached (as without a cache)."""
    from interp.mamba.implicit_attention import implicit_attention

    tokens = _tokens(14, b=1, T=9)
    _, cache = model64.run_with_cache(tokens, names_filter=lambda n: n.startswith("blocks.0.mixer."), grad=True)
    assert cache["blocks.0.mixer.hook_dt"].requires_grad
    got = implicit_attention(model64, None, 0, cache=cache)
    assert not got.requires_grad
    torch.testing.assert_close(got, implicit_attention(model64, tokens, 0), rtol=0, atol=0)


def test_from_cache_after_masked_run(model64):
    """A cache recorded with an attention_mask holds the masked Δ: reading it equals the masked forward."""
    from interp.mamba.implicit_attention import attention_patterns, implicit_attention

    tokens, mask = _tokens(15, b=2, T=10), torch.ones(2, 10, dtype=torch.long)
    mask[0, :3] = 0
    _, cache = model64.run_with_cache(tokens, attention_mask=mask)
    assert torch.equal(implicit_attention(model64, tokens, 0, cache=cache),
                       implicit_attention(model64, tokens, 0, attention_mask=mask))
    assert torch.equal(attention_patterns(model64, None, cache=cache),
                       attention_patterns(model64, tokens, attention_mask=mask))
