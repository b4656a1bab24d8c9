"""TransformerLens habits on every model kind: ``cfg``, ``blocks[i]`` views, ``hook_scale``, residual directions and
the cache's decompositions (their values against TransformerLens itself: ``tests/tl_compat/``)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from interp.errors import CapabilityError


def _tokens(model, b=2, T=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, min(model.d_vocab, 100), (b, T), generator=g)


def test_cfg_describes_the_model(kind):
    m = kind.model
    cfg = m.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_vocab) == (
        m.n_layers, m.d_model, m.n_heads, m.d_head, m.d_vocab)
    assert cfg.n_key_value_heads == (m.n_kv_heads if m.n_kv_heads != m.n_heads else None)
    assert len(cfg.layer_types) == m.n_layers
    assert cfg["n_layers"] == m.n_layers and cfg.to_dict()["d_model"] == m.d_model
    assert cfg.device == str(m.device)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.n_layers = 3
    with pytest.raises(KeyError, match="not a ModelConfig field"):
        cfg["n_layer"]
    if m.has_mlp:
        assert cfg.d_mlp == m.W_out.shape[1]
    if m.has_ssm_state:
        assert cfg.d_state is not None and cfg.normalization_type == "RMS" and cfg.d_mlp is None


def test_block_views_are_the_stacked_weights(kind):
    m = kind.model
    assert len(m.blocks) == m.n_layers
    last = m.blocks[-1]
    if m.has_attention_heads:
        for key in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_O"):
            torch.testing.assert_close(getattr(last.attn, key), getattr(m, key)[-1], rtol=0, atol=0)
        qk, ov = m.blocks[0].attn.QK, m.OV
        torch.testing.assert_close(qk.AB, m.W_Q[0] @ m.W_K[0].transpose(-2, -1), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ov.AB[0], m.W_V[0] @ m.W_O[0], rtol=1e-5, atol=1e-6)
    else:
        with pytest.raises(CapabilityError, match=r"mixer"):
            _ = last.attn
        assert last.mixer is m.blocks[m.n_layers - 1].mixer  # the module itself, for code that reached for it
    if m.has_mlp:
        torch.testing.assert_close(last.mlp.W_out, m.W_out[-1], rtol=0, atol=0)
        assert last.mlp.W_in.shape == (m.d_model, m.cfg.d_mlp)
    else:
        with pytest.raises(CapabilityError, match="no MLP"):
            _ = last.mlp
    with pytest.raises(IndexError):
        m.blocks[m.n_layers]
    assert [b._layer for b in m.blocks[1:]] == list(range(1, m.n_layers))


def test_block_view_edits_reach_the_model(tiny_dir):
    import interp

    m = interp.load_model(tiny_dir("llama"))
    t = _tokens(m)
    before = m(t)
    with torch.no_grad():
        m.blocks[1].attn.W_Q[2] *= 0  # a view of q_proj's weight: head 2 of layer 1 attends uniformly
    after, cache = m.run_with_cache(t)
    assert not torch.allclose(before, after)
    pat = cache["pattern", 1][:, 2]
    causal = torch.tril(torch.ones(t.shape[1], t.shape[1]))
    torch.testing.assert_close(pat, (causal / causal.sum(-1, keepdim=True)).expand_as(pat), rtol=1e-5, atol=1e-6)


def test_hook_scale_is_the_norms_scale_and_patches(kind):
    m = kind.model
    if "ln_final.hook_scale" not in m.site_names():
        pytest.skip(f"{kind.name}: no ln_final.hook_scale site (TransformerLens lists what fires once)")
    t = _tokens(m)
    logits, cache = m.run_with_cache(t)
    resid = cache["resid_post", -1]
    centred = resid - resid.mean(-1, keepdim=True) if m.cfg.normalization_type == "LN" else resid
    w, b = m._norm_weights("ln_final", None)["w"], m._norm_weights("ln_final", None)["b"]
    torch.testing.assert_close(centred / cache["scale"] * w + b, cache["ln_final.hook_normalized"],
                               rtol=1e-5, atol=1e-5)

    def doubled(scale, hook):
        return scale * 2

    _, patched = m.run_with_cache(t, fwd_hooks=[("ln_final.hook_scale", doubled)],
                                  names_filter="ln_final.hook_normalized")
    torch.testing.assert_close((patched["ln_final.hook_normalized"] - b) * 2, cache["ln_final.hook_normalized"] - b,
                               rtol=1e-5, atol=1e-5)


def test_hook_scale_gradient_is_the_scales_own(tiny_dir):
    """The gradient at hook_scale is d logit / d scale = -(normalized - b) · W_U[:, t] / scale, and hooking it leaves
    the gradient reaching the input unchanged (the site's value is a second evaluation, not a second path)."""
    import interp

    m = interp.load_model(tiny_dir("gpt2"))
    t = _tokens(m)
    resid = m(t, stop_at_layer=1).detach()
    acts, grads = {}, {}

    def save(act, hook):
        acts[hook.name] = act.detach()

    def keep(grad, hook):
        grads[hook.name] = grad

    def grad_at_input(hooked: bool):
        x = resid.clone().requires_grad_()
        fwd = [("ln_final.hook_scale", save), ("ln_final.hook_normalized", save)] if hooked else []
        with m.hooks(fwd, bwd_hooks=[("ln_final.hook_scale", keep)] if hooked else []):
            m(x, start_at_layer=1)[:, -1, 5].sum().backward()
        return x.grad

    plain, hooked = grad_at_input(False), grad_at_input(True)
    torch.testing.assert_close(hooked, plain, rtol=1e-5, atol=1e-6)
    b = m._norm_weights("ln_final", None)["b"].detach()
    want = -((acts["ln_final.hook_normalized"] - b) @ m.W_U[:, 5].detach())[..., None] / acts["ln_final.hook_scale"]
    grad = grads["ln_final.hook_scale"]
    torch.testing.assert_close(grad[:, -1], want[:, -1], rtol=1e-4, atol=1e-5)
    assert grad[:, :-1].abs().max() == 0


def test_residual_directions(kind):
    m = kind.model
    w = m._norm_weights("ln_final", None)["w"]
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    d = m.tokens_to_residual_directions(ids)
    assert d.shape == (2, 3, m.d_model)
    want = m.W_U[:, 10] * w
    if m.cfg.normalization_type in ("LN", "LNPre"):  # centred, as TransformerLens's folded W_U is
        want = want - want.mean()
    torch.testing.assert_close(d[1, 2], want, rtol=1e-6, atol=1e-7)
    assert m.tokens_to_residual_directions(5).shape == (m.d_model,)
    assert m.tokens_to_residual_directions(torch.tensor([5])).shape == (m.d_model,)  # as in TransformerLens
    with pytest.raises(ValueError, match="ids must be in"):
        m.tokens_to_residual_directions(m.d_vocab)
    with pytest.raises(TypeError, match="integer tensor"):
        m.tokens_to_residual_directions(torch.ones(3))


def test_decompositions_sum_to_the_stream_and_the_logits(kind):
    m = kind.model
    t = _tokens(m)
    logits, cache = m.run_with_cache(t)
    final = cache["resid_post", -1]
    parts, labels = cache.decompose_resid(return_labels=True)
    assert parts.shape[0] == len(labels) and labels[0] == "embed"
    torch.testing.assert_close(parts.sum(0), final, rtol=1e-4, atol=1e-4)
    if m.has_ssm_state:
        assert labels[1:] == [f"{i}_mixer_out" for i in range(m.n_layers)]
    # direct logit attribution: with the final norm's scale frozen, the parts sum to the logit difference
    good, bad = torch.tensor([11, 12]), torch.tensor([13, 14])
    attrs = cache.logit_attrs(parts[:, :, -1], good, bad, pos_slice=-1)
    rows = torch.arange(2)
    bias = (m.b_U[good] - m.b_U[bad]) + m._norm_weights("ln_final", None)["b"] @ (m.W_U[:, good] - m.W_U[:, bad])
    torch.testing.assert_close(attrs.sum(0) + bias, logits[rows, -1, good] - logits[rows, -1, bad],
                               rtol=1e-4, atol=1e-4)
    # logit lens: the last entry of the accumulated stream through the final norm gives the logits
    lens, labels = cache.accumulated_resid(apply_ln=True, return_labels=True)
    assert labels == [f"{i}_pre" for i in range(m.n_layers)] + ["final_post"]
    torch.testing.assert_close(lens[-1] @ m.W_U + m.b_U, logits, rtol=1e-4, atol=1e-4)
    if m.has_attention_heads and "blocks.0.attn.hook_z" in cache:
        heads, hl = cache.stack_head_results(incl_remainder=True, return_labels=True)
        assert hl[-1] == "remainder" and len(hl) == m.n_layers * m.n_heads + 1
        torch.testing.assert_close(heads.sum(0), final, rtol=1e-4, atol=1e-4)
        full = cache.get_full_resid_decomposition()
        torch.testing.assert_close(full.sum(0), final, rtol=1e-4, atol=1e-4)


def test_recurrent_models_say_what_they_have_instead(tiny_dir):
    import interp

    m = interp.load_model(tiny_dir("mamba2"))
    _, cache = m.run_with_cache(_tokens(m))
    with pytest.raises(CapabilityError, match="decompose_resid"):
        cache.stack_head_results()
    with pytest.raises(CapabilityError, match="resid_mid"):
        cache.accumulated_resid(incl_mid=True)
    with pytest.raises(CapabilityError, match="mode='all' or 'mixer'"):
        cache.decompose_resid(mode="attn")
    with pytest.raises(CapabilityError, match="no MLP"):
        cache.stack_neuron_results(1)
    assert cache.decompose_resid(mode="mixer", incl_embeds=False).shape[0] == m.n_layers
    scaled = cache.accumulated_resid(layer=1, apply_ln=True)  # ln1's cached scale of block 1
    torch.testing.assert_close(scaled[-1] * m._norm_weights("ln1", 1)["w"],
                               m.apply_ln1(1, cache["resid_pre", 1]), rtol=1e-5, atol=1e-5)


def test_batch_axis_helpers(tiny_dir):
    import interp

    m = interp.load_model(tiny_dir("llama"))
    t = _tokens(m, b=3)
    _, cache = m.run_with_cache(t)
    row = cache.apply_slice_to_batch_dim(1)
    assert not row.has_batch_dim and row["resid_pre", 0].shape == (7, m.d_model)
    torch.testing.assert_close(row.decompose_resid(), cache.decompose_resid()[:, 1], rtol=0, atol=0)
    with pytest.raises(ValueError, match="3 rows"):
        cache.remove_batch_dim()
    _, one = m.run_with_cache(t[:1])
    assert one.remove_batch_dim() is one and one["pattern", 0].shape == (m.n_heads, 7, 7)
    torch.testing.assert_close(one.accumulated_resid(apply_ln=True), cache.accumulated_resid(apply_ln=True)[:, 0],
                               rtol=1e-5, atol=1e-5)
    with pytest.warns(UserWarning, match="removed already"):
        assert one.remove_batch_dim() is one
    assert one.to("cpu") is one and one.cache_dict["hook_embed"].device.type == "cpu"
    with pytest.raises(TypeError):
        one.cache_dict["hook_embed"] = None


def test_helper_errors_name_what_is_missing(tiny_dir):
    import interp

    m = interp.load_model(tiny_dir("llama"))
    t = _tokens(m)
    _, partial = m.run_with_cache(t, names_filter=lambda n: n.endswith(("resid_pre", "resid_post", "hook_embed")))
    with pytest.raises(KeyError, match="ln_final.hook_scale"):
        partial.logit_attrs(partial.accumulated_resid()[:, :, -1], 5, pos_slice=-1)
    with pytest.raises(KeyError, match="hook_attn_out"):
        partial.decompose_resid()
    _, cache = m.run_with_cache(t)
    stack = cache.decompose_resid()
    with pytest.raises(ValueError, match="pos_slice"):
        cache.logit_attrs(stack[:, :, -1], 5)  # the stack is one position; the scale has seven
    with pytest.raises(ValueError, match="layer must be in"):
        cache.decompose_resid(layer=m.n_layers + 1)
    with pytest.raises(ValueError, match="same shape"):
        cache.logit_attrs(stack, torch.tensor([5, 6]), torch.tensor([5]))
    with pytest.raises(TypeError, match="pos_slice"):
        cache.decompose_resid(pos_slice="last")


def test_helpers_read_a_patched_run(tiny_dir):
    """A cache recorded inside a patch holds the patched run: its decomposition sums to the patched stream."""
    import interp

    m = interp.load_model(tiny_dir("llama"))
    t = _tokens(m)

    def zero_head(z, hook):
        z[:, :, 1] = 0
        return z

    with m.hooks([("blocks.0.attn.hook_z", zero_head)]):
        logits, cache = m.run_with_cache(t)
    heads = cache.stack_head_results(layer=1)
    assert heads[1].abs().max() == 0  # L0H1 was zeroed
    torch.testing.assert_close(cache.decompose_resid().sum(0), cache["resid_post", -1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, m.run_with_hooks(t, [("blocks.0.attn.hook_z", zero_head)]),
                               rtol=1e-5, atol=1e-5)


def test_position_embedding_weight(kind):
    m = kind.model
    if m.cfg.positional_embedding_type != "standard":
        with pytest.raises(CapabilityError, match="no learned position embedding"):
            _ = m.W_pos
        return
    t = _tokens(m, b=2, T=5)
    _, cache = m.run_with_cache(t, names_filter="hook_pos_embed")
    torch.testing.assert_close(cache["pos_embed"], m.W_pos[:5].expand(2, 5, m.d_model), rtol=0, atol=0)


def test_added_sites_are_sites_for_the_block(kind):
    """The public extension point SAE splicing uses: a site added for a block, fired by its owner inside the pass."""
    m = kind.model
    t = _tokens(m)
    after = m.components(0)["resid_post"]
    name = "blocks.0.hook_extra"

    def owner(act, hook):
        return m.fire_site(name, act)  # the owner computes the site's value and lets hooks see / replace it

    with m.added_sites([(name, after)]):
        sites = m.site_names()
        assert sites[sites.index(after) + 1] == name and name in m.hook_dict
        with m.hooks([(after, owner)]):
            _, cache = m.run_with_cache(t, names_filter=[name, after])
            torch.testing.assert_close(cache[name], cache[after], rtol=0, atol=0)
            patched = m.run_with_hooks(t, [(name, lambda a, hook: a * 0)])
        zeroed = m.run_with_hooks(t, [(after, lambda a, hook: a * 0)])
        torch.testing.assert_close(patched, zeroed, rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="already is a site"):
            with m.added_sites([(name, after)]):
                pass
    assert name not in m.site_names()
    with pytest.raises(KeyError, match="unknown hook site"):
        m.check_site(name)
    assert kind.torch_hooks() == 0 or kind.name == "bridge"
