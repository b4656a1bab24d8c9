"""One vocabulary on every model kind: weights, components, capability flags, attention patterns, generation."""

import pytest
import torch

import interp


def _run(model, b=2, t=6):
    tokens = torch.randint(4, 100, (b, t))
    _, cache = model.run_with_cache(tokens)
    return tokens, cache


def test_components_name_real_sites(kind):
    model = kind.model
    sites = set(model.site_names())
    for layer in range(model.n_layers):
        comps = model.components(layer)
        assert {"resid_pre", "resid_post"} <= set(comps)
        assert set(comps.values()) <= sites
        if model.has_attention_heads:
            assert {"attn_out", "mlp_out", "resid_mid", "q", "k", "v", "z", "pattern"} <= set(comps)
        if model.has_ssm_state:
            assert {"mixer_out", "conv", "ssm_state", "gate", "out", "dt", "B", "C", "y"} <= set(comps)
    with pytest.raises(IndexError, match="layer"):
        model.components(model.n_layers)


def test_capability_flags(kind):
    model = kind.model
    sites = model.site_names()
    assert model.has_attention_heads == any(s.endswith("attn.hook_pattern") for s in sites)
    assert model.has_ssm_state == any(s.endswith("hook_ssm_state") for s in sites)
    assert model.has_implicit_attention == model.has_ssm_state
    assert model.has_mlp == any(s.endswith("hook_mlp_out") for s in sites)


def test_embed_and_unembed(kind):
    model = kind.model
    assert model.W_E.shape == (model.d_vocab, model.d_model)
    assert model.W_U.shape == (model.d_model, model.d_vocab)
    assert model.b_U.shape == (model.d_vocab,)
    tokens, cache = _run(model)
    logits = model(tokens)
    final = cache["ln_final.hook_normalized"]
    torch.testing.assert_close(final @ model.W_U + model.b_U, logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(model.apply_ln_final(cache[model.components(model.n_layers - 1)["resid_post"]]),
                               final, atol=1e-5, rtol=1e-5)
    if "hook_embed" in cache:
        torch.testing.assert_close(cache["hook_embed"], model.W_E[tokens])


def test_attention_weights_reproduce_the_sites(kind):
    model = kind.model
    if not model.has_attention_heads:
        for name in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_O"):
            with pytest.raises(interp.CapabilityError, match="attention heads"):
                getattr(model, name)
        return
    L, H, d, dh = model.n_layers, model.n_heads, model.d_model, model.d_head
    for name in ("W_Q", "W_K", "W_V"):
        assert getattr(model, name).shape == (L, H, d, dh)
    assert model.W_O.shape == (L, H, dh, d)
    tokens, cache = _run(model)
    group = model.n_heads // model.n_kv_heads
    for layer in range(L):
        c = model.components(layer)
        x = model.apply_ln1(layer, cache[c["resid_pre"]])
        q = torch.einsum("bpd,hde->bphe", x, model.W_Q[layer]) + model.b_Q[layer]
        torch.testing.assert_close(q, cache[c["q"]], atol=1e-4, rtol=1e-4)
        k = torch.einsum("bpd,hde->bphe", x, model.W_K[layer]) + model.b_K[layer]
        torch.testing.assert_close(k[:, :, ::group], cache[c["k"]], atol=1e-4, rtol=1e-4)
        v = torch.einsum("bpd,hde->bphe", x, model.W_V[layer]) + model.b_V[layer]
        torch.testing.assert_close(v[:, :, ::group], cache[c["v"]], atol=1e-4, rtol=1e-4)
        out = torch.einsum("bphe,hed->bpd", cache[c["z"]], model.W_O[layer]) + model.b_O[layer]
        torch.testing.assert_close(out, cache[c["attn_out"]], atol=1e-4, rtol=1e-4)


def test_mlp_and_norm_access(kind):
    model = kind.model
    tokens, cache = _run(model)
    if not model.has_mlp:
        with pytest.raises(interp.CapabilityError, match="MLP"):
            model.apply_mlp(0, cache["hook_embed"])
        return
    for layer in range(model.n_layers):
        c = model.components(layer)
        normed = model.apply_ln2(layer, cache[c["resid_mid"]])
        torch.testing.assert_close(model.apply_mlp(layer, normed), cache[c["mlp_out"]], atol=1e-5, rtol=1e-5)
        if kind.name != "hooked_transformer":  # TransformerLens's hook_normalized is before the norm's weight
            torch.testing.assert_close(normed, cache[c["ln2"]], atol=1e-5, rtol=1e-5)


def test_attention_patterns_contract(kind):
    model = kind.model
    tokens = torch.randint(4, 100, (2, 7))
    pats = model.attention_patterns(tokens)
    assert pats.shape == (model.n_layers, 2, model.n_heads, 7, 7)
    assert pats.min() >= 0 and pats.triu(1).abs().max() == 0
    torch.testing.assert_close(pats.sum(-1), torch.ones(pats.shape[:-1]), atol=1e-5, rtol=0)
    raw = model.attention_patterns(tokens, layers=[1], normalize=False)
    if model.has_attention_heads:
        torch.testing.assert_close(raw, pats[1:])  # probabilities already
    else:  # raw mean |alpha|: rows are not distributions, but normalising them gives the default
        torch.testing.assert_close(raw / raw.sum(-1, keepdim=True), pats[1:], atol=1e-5, rtol=1e-4)


def test_attention_patterns_from_cache(kind):
    """cache=: the maps read from a run_with_cache cache without a forward pass (no site fires): bit for bit the
    cached patterns (transformers), and bit for bit the maps from tokens when the cache is of the same computation.
    Recording ``attn.hook_result`` makes the HF wrappers sum the heads' results themselves (so patches there flow
    on), which can change later layers in the last bit; a cache without it is the unhooked run."""
    model = kind.model
    tokens = torch.randint(4, 100, (2, 7))
    _, full = model.run_with_cache(tokens)
    _, plain = model.run_with_cache(tokens, names_filter=lambda n: not n.endswith("hook_result"))
    fired: list[str] = []
    with model.hooks([(model.components(0)["resid_pre"], lambda act, *, hook: fired.append(hook.name))]):
        for layers in (None, [1, 0]):
            ref = model.attention_patterns(tokens, layers)
            got = model.attention_patterns(None, layers, cache=plain)
            assert torch.equal(got, ref) and not got.requires_grad
            got = model.attention_patterns(tokens, layers, cache=full)
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
            if model.has_attention_heads:
                names = [model.components(layer)["pattern"] for layer in model.check_layers(layers)]
                assert torch.equal(got, torch.stack([full[n] for n in names]))
        assert len(fired) == 2  # the two runs without a cache fired it; the cached reads did not


def test_single_tokens(kind):
    model = kind.model
    assert model.to_single_token("a") == model.to_tokens("a", prepend_bos=False)[0, 0]
    with pytest.raises(ValueError, match="single token"):
        model.to_single_token("abc")


def test_greedy_generation_matches_argmax_loop(kind):
    model = kind.model
    tokens = torch.randint(4, 100, (2, 4))
    out = model.generate(tokens, max_new_tokens=5, stop_at_eos=False)
    assert out.shape == (2, 9) and torch.equal(out[:, :4], tokens)
    ref = tokens
    for _ in range(5):
        ref = torch.cat([ref, model(ref)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, ref)


def test_generation_runs_hooks_and_samples_reproducibly(kind):
    model = kind.model
    tokens = torch.randint(4, 100, (1, 4))
    site = model.components(0)["resid_post"]
    calls = []
    with model.hooks([(site, lambda a, hook: calls.append(a.shape[1]))]):
        model.generate(tokens, max_new_tokens=3, stop_at_eos=False)
    assert len(calls) == 3
    a = model.generate(tokens, max_new_tokens=6, do_sample=True, temperature=1.5, seed=3, stop_at_eos=False)
    b = model.generate(tokens, max_new_tokens=6, do_sample=True, temperature=1.5, seed=3, stop_at_eos=False)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(tokens, max_new_tokens=-1)


class _VocabOutputs(torch.overrides.TorchFunctionMode):
    """Counts torch calls whose result is ``[batch, pos, d_vocab]`` (the unembedding, and anything shaped like it)."""

    def __init__(self, shape):
        super().__init__()
        self.shape, self.count = tuple(shape), 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and tuple(out.shape) == self.shape:
            self.count += 1
        return out


def test_return_type_none_skips_the_unembedding(kind):
    """``return_type=None`` returns None, records every site exactly as a logits run does (the final norm's hooks
    included) and, where the final norm is the last site (all but the TransformerLens wrappers, whose unembedding
    fires sites of its own), runs no unembedding matmul; with ``stop_at_layer`` it still returns the residual
    stream."""
    model = kind.model
    tokens = torch.randint(4, 100, (2, 6))
    shape = (2, 6, model.d_vocab)
    with _VocabOutputs(shape) as full:
        logits, want = model.run_with_cache(tokens)
    with _VocabOutputs(shape) as short:
        none, got = model.run_with_cache(tokens, return_type=None)
    assert tuple(logits.shape) == shape and none is None
    assert set(got) == set(want) and "ln_final.hook_normalized" in got
    for name in want:
        assert torch.equal(got[name], want[name]), name
    if model.site_names()[-1] == "ln_final.hook_normalized":
        assert full.count - short.count >= 1  # the logits run made at least one more [batch, pos, d_vocab] tensor
    else:
        assert kind.name in ("hooked_transformer", "bridge")
    with torch.no_grad():
        assert torch.equal(model(tokens, return_type=None, stop_at_layer=1), model(tokens, stop_at_layer=1))
