"""HookedMamba against Hugging Face's MambaForCausalLM / Mamba2ForCausalLM, the site contract, state patching."""

import pytest
import torch
import torch.nn.functional as F

from interp.mamba import HookedMamba, from_hf
from interp.mamba.scan import selective_scan_ref, ssd_scan_ref

TOL = dict(rtol=0, atol=1e-4)


def ids(b=3, T=37, seed=1):
    return torch.randint(0, 128, (b, T), generator=torch.Generator().manual_seed(seed))


def expected_shapes(model, b, T):
    s = model.spec
    if model.arch == "mamba":
        mixer = dict(x=(s.d_inner,), gate=(s.d_inner,), conv_out=(s.d_inner,), dt=(s.d_inner,), B=(s.d_state,),
                     C=(s.d_state,), ssm_state=(s.d_inner, s.d_state), y=(s.d_inner,), out=(s.d_model,))
    else:
        H, P, G, N = s.n_ssm_heads, s.head_dim, s.n_groups, s.d_state
        mixer = dict(x=(s.conv_dim,), gate=(s.d_inner,), conv_out=(H, P), dt=(H,), B=(G, N), C=(G, N),
                     ssm_state=(H, P, N), y=(H, P), out=(s.d_model,))
    shapes = {"hook_embed": (b, T, s.d_model), "ln_final.hook_normalized": (b, T, s.d_model),
              "ln_final.hook_scale": (b, T, 1)}
    for layer in range(model.n_layers):
        shapes[f"blocks.{layer}.ln1.hook_scale"] = (b, T, 1)
        for site in ("hook_resid_pre", "hook_mixer_out", "hook_resid_post"):
            shapes[f"blocks.{layer}.{site}"] = (b, T, s.d_model)
        for k, v in mixer.items():
            shapes[f"blocks.{layer}.mixer.hook_{k}"] = (b, T, *v)
    return shapes


def test_logits_match_hf(pair, arch):
    hf, model = pair(arch)
    tokens = ids()
    with torch.no_grad():
        want = hf(tokens).logits
    torch.testing.assert_close(model(tokens), want, **TOL)
    logits, cache = model.run_with_cache(tokens)  # every site hooked: the per-step path in every layer
    torch.testing.assert_close(logits, want, **TOL)
    assert len(cache) == len(model.site_names())


def test_logits_in_pooled_memory_are_exact_and_never_shared(pair, arch, monkeypatch):
    """Outside autograd the LM head writes into a pooled buffer (``empty_large``, threshold lowered here so that the
    tiny model's logits qualify): the values are ``F.linear``'s bit for bit, logits a caller still holds are never
    handed to a later forward, and freed ones are reused."""
    from interp.mamba import buffers

    monkeypatch.setattr(buffers, "HUGEPAGE_MIN_BYTES", 1 << 10)
    buffers.empty_cache()
    _, model = pair(arch)
    one, two = ids(2, 9), ids(2, 9, seed=2)
    with torch.no_grad():
        first, cache = model.run_with_cache(one, names_filter=["ln_final.hook_normalized"])
        assert torch.equal(first, F.linear(cache["ln_final.hook_normalized"], model.unembed.weight))
        kept = first.clone()
        second = model(two)
        assert second.data_ptr() != first.data_ptr() and torch.equal(first, kept)
        assert not torch.equal(second, first)
        if buffers._enabled():
            assert buffers.pool_stats()["buffers"] == 2
            ptr = second.data_ptr()
            del second
            assert model(one).data_ptr() == ptr and torch.equal(model(one), kept)
    buffers.empty_cache()


def test_sites_and_shapes(pair, arch):
    _, model = pair(arch)
    _, cache = model.run_with_cache(ids(2, 9))
    want = expected_shapes(model, 2, 9)
    assert list(cache) == model.site_names()
    assert {k: tuple(v.shape) for k, v in cache.items()} == want
    assert model.arch == arch and model.n_kv_heads == model.n_heads and model.n_heads * model.d_head == model.d_inner
    if arch == "mamba2":
        assert (model.n_heads, model.d_head) == (model.spec.n_ssm_heads, model.spec.head_dim)


def test_cache_values_are_consistent(pair, arch):
    """resid_post = resid_pre + mixer_out; mixer_out = hook_out; y = scan(conv_out, dt, B, C); embed = resid_pre."""
    _, model = pair(arch)
    _, c = model.run_with_cache(ids(2, 21))
    torch.testing.assert_close(c["hook_embed"], c["blocks.0.hook_resid_pre"])
    for layer in range(model.n_layers):
        p = f"blocks.{layer}."
        torch.testing.assert_close(c[p + "hook_resid_post"], c[p + "hook_resid_pre"] + c[p + "hook_mixer_out"])
        torch.testing.assert_close(c[p + "hook_mixer_out"], c[p + "mixer.hook_out"])
        mixer = model.blocks[layer].mixer
        ref = selective_scan_ref if arch == "mamba" else ssd_scan_ref
        y, states = ref(*(c[p + f"mixer.hook_{k}"] for k in ("conv_out", "dt")), mixer.A,
                        c[p + "mixer.hook_B"], c[p + "mixer.hook_C"], mixer.D.float())
        torch.testing.assert_close(c[p + "mixer.hook_y"], y, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(c[p + "mixer.hook_ssm_state"], states, rtol=1e-5, atol=1e-5)
    normed = c["ln_final.hook_normalized"]
    torch.testing.assert_close(normed.pow(2).mean(-1), torch.ones(normed.shape[:2]), rtol=1e-3, atol=1e-3)


def test_recorded_states_are_kept_without_a_copy(pair, arch):
    """At the bench lengths (T a multiple of the scan chunk) the per-step states are written into one fresh
    contiguous tensor that the cache keeps as is (a view would be cloned: a second full-size copy), and the
    scan inputs the conv hands on are channel-contiguous [b, T, ...] (a transposed view, T innermost, slowed the
    state writes ~2-3x)."""
    _, model = pair(arch)
    names = [f"blocks.{layer}.mixer.hook_ssm_state" for layer in range(model.n_layers)]
    seen = {}

    def grab(act, *, hook):
        seen[hook.name] = act

    _, cache = model.run_with_cache(ids(2, 64), names_filter=names,
                                    fwd_hooks=[("blocks.0.mixer.hook_conv_out", grab)])
    for name in names:
        assert cache[name]._base is None and cache[name].is_contiguous()
    assert seen["blocks.0.mixer.hook_conv_out"].stride(-1) == 1
    ref_logits = model(ids(2, 64))
    torch.testing.assert_close(model.run_with_cache(ids(2, 64), names_filter=names)[0], ref_logits, **TOL)


def test_last_state_equals_hf_recurrent_state(pair, arch):
    hf, model = pair(arch)
    tokens = ids(2, 19)
    with torch.no_grad():
        out = hf(tokens, use_cache=True)
    names = [f"blocks.{layer}.mixer.hook_ssm_state" for layer in range(model.n_layers)]
    logits, cache = model.run_with_cache(tokens, names_filter=names)
    torch.testing.assert_close(logits, out.logits, **TOL)
    for layer, name in enumerate(names):
        torch.testing.assert_close(cache[name][:, -1], out.cache_params.get_recurrent_state(layer), **TOL)


@pytest.mark.parametrize("in_place", [True, False])
def test_patched_state_continues_the_scan(pair, arch, in_place):
    """Patching h_t of row 0 changes y at t and later (as a manual recurrence from the patched state), never
    earlier, and leaves row 1 alone."""
    _, model = pair(arch)
    tokens, t, layer = ids(2, 23), 9, 1
    p = f"blocks.{layer}.mixer."
    _, clean = model.run_with_cache(tokens, names_filter=lambda n: n.startswith(p))
    patched_state = clean[p + "hook_ssm_state"][0, t] * 0.5 + 0.3

    def patch(act, hook):
        out = act if in_place else act.clone()
        out[0, t] = patched_state
        return None if in_place else out

    _, run = model.run_with_cache(tokens, names_filter=[p + "hook_y"], fwd_hooks=[(p + "hook_ssm_state", patch)])
    y0, y1 = clean[p + "hook_y"], run[p + "hook_y"]
    assert torch.equal(y1[0, :t], y0[0, :t])
    assert torch.equal(y1[1], y0[1])
    assert ((y1[0, t:] - y0[0, t:]).flatten(1).abs().amax(-1) > 1e-6).all()
    mixer = model.blocks[layer].mixer
    x, dt, B, C = (clean[p + f"hook_{k}"][0:1, t + 1:] for k in ("conv_out", "dt", "B", "C"))
    ref = selective_scan_ref if arch == "mamba" else ssd_scan_ref
    y_after, _ = ref(x, dt, mixer.A, B, C, mixer.D.float(), h0=patched_state[None])
    torch.testing.assert_close(y1[0:1, t + 1:], y_after, rtol=1e-5, atol=1e-5)
    h = patched_state
    Ct = clean[p + "hook_C"][0, t]
    if arch == "mamba":
        y_t = (h * Ct).sum(-1)
    else:
        y_t = (h * Ct.repeat_interleave(model.n_heads // Ct.shape[0], 0)[:, None]).sum(-1)
    D = mixer.D.float() if arch == "mamba" else mixer.D.float()[:, None]
    torch.testing.assert_close(y1[0, t], y_t + D * clean[p + "hook_conv_out"][0, t], rtol=1e-5, atol=1e-5)


def test_two_patched_steps_are_both_taken(pair, arch):
    _, model = pair(arch)
    tokens, layer = ids(1, 15), 0
    name = f"blocks.{layer}.mixer.hook_ssm_state"

    def zero(act, hook):
        act[:, 4] = 0
        act[:, 10] = 0

    _, cache = model.run_with_cache(tokens, names_filter=[f"blocks.{layer}.mixer.hook_{k}" for k in
                                                          ("conv_out", "dt", "B", "C", "y")],
                                    fwd_hooks=[(name, zero)])
    D = model.blocks[layer].mixer.D.float()
    D = D if arch == "mamba" else D[:, None]
    x = cache[f"blocks.{layer}.mixer.hook_conv_out"]
    y = cache[f"blocks.{layer}.mixer.hook_y"]
    for t in (4, 10):  # a zero state reads out only the skip term
        torch.testing.assert_close(y[0, t], D * x[0, t], rtol=1e-6, atol=1e-6)


def test_replacing_dt_changes_the_scan(pair, arch):
    _, model = pair(arch)
    tokens, p = ids(2, 17), "blocks.0.mixer."
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.startswith(p),
                                    fwd_hooks=[(p + "hook_dt", lambda act, hook: act * 2)])
    mixer = model.blocks[0].mixer
    ref = selective_scan_ref if arch == "mamba" else ssd_scan_ref
    y, _ = ref(cache[p + "hook_conv_out"], cache[p + "hook_dt"], mixer.A, cache[p + "hook_B"], cache[p + "hook_C"],
               mixer.D.float())
    torch.testing.assert_close(cache[p + "hook_y"], y, rtol=1e-5, atol=1e-5)
    _, clean = model.run_with_cache(tokens, names_filter=p + "hook_dt")
    torch.testing.assert_close(cache[p + "hook_dt"], clean[p + "hook_dt"] * 2)


def test_ablating_the_gate_and_block_sites(pair, arch):
    hf, model = pair(arch)
    tokens = ids(2, 12)
    with torch.no_grad():
        want = hf(tokens).logits
    fast = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_resid_post", lambda a, hook: None)])
    torch.testing.assert_close(fast, want, **TOL)
    zeroed = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.mixer.hook_gate", lambda a, hook: torch.zeros_like(a))])
    assert (zeroed - want).abs().max() > 1e-3
    # a zero gate silences the mixer: its output is out_proj's bias (none here)
    _, c = model.run_with_cache(tokens, names_filter="blocks.0.hook_mixer_out",
                                fwd_hooks=[("blocks.0.mixer.hook_gate", lambda a, hook: torch.full_like(a, -1e4))])
    assert c["blocks.0.hook_mixer_out"].abs().max() < 1e-6


@pytest.mark.parametrize("arch_, overrides", [
    ("mamba", dict(tie_word_embeddings=False, use_bias=True, use_conv_bias=False, time_step_rank=3)),
    ("mamba2", dict(tie_word_embeddings=False, time_step_limit=(0.05, 0.2), use_bias=True, n_groups=4)),
    ("mamba2", dict(residual_in_fp32=False, chunk_size=4)),
])
def test_config_variants_match_hf(pair, arch_, overrides):
    hf, model = pair(arch_, **overrides)
    tokens = ids(2, 21)
    with torch.no_grad():
        want = hf(tokens).logits
    torch.testing.assert_close(model(tokens), want, **TOL)
    torch.testing.assert_close(model.run_with_cache(tokens)[0], want, **TOL)
    assert model.spec.tie_embeddings == overrides.get("tie_word_embeddings", True)
    if "time_step_limit" in overrides:
        dt = model.run_with_cache(tokens, names_filter="blocks.0.mixer.hook_dt")[1]["blocks.0.mixer.hook_dt"]
        assert dt.min() >= 0.05 and dt.max() <= 0.2


def test_unknown_config_field_raises(hf_mamba, arch):
    import transformers as tf

    from interp.testing import tiny_config

    cfg = tiny_config(arch)
    cfg.use_fancy_norm = True
    hf = (tf.MambaForCausalLM if arch == "mamba" else tf.Mamba2ForCausalLM)(cfg)
    with pytest.raises(ValueError, match="use_fancy_norm"):
        from_hf(hf)
    assert isinstance(from_hf(hf, ignore_fields=("use_fancy_norm",)), HookedMamba)
    cfg = tiny_config(arch)
    cfg.hidden_act = "gelu"
    with pytest.raises(ValueError, match="hidden_act"):
        from_hf((tf.MambaForCausalLM if arch == "mamba" else tf.Mamba2ForCausalLM)(cfg))


def test_from_hf_rejects_other_models(pair):
    hf, _ = pair("mamba")
    with pytest.raises(TypeError, match="MambaForCausalLM"):
        from_hf(hf.backbone)
    with pytest.raises(TypeError, match="hf_model"):
        from_hf(torch.nn.Linear(2, 2))


def test_load_model_and_wrap(hf_mamba, arch):
    import interp

    hf, folder = hf_mamba(arch)
    tokens = ids(2, 10)
    with torch.no_grad():
        want = hf(tokens).logits
    loaded = interp.load_model(folder)
    wrapped = interp.wrap(hf)
    for model in (loaded, wrapped):
        assert isinstance(model, HookedMamba) and model.arch == arch
        torch.testing.assert_close(model(tokens), want, **TOL)
    assert loaded.tokenizer is not None
    text_logits = loaded("hello")
    assert text_logits.shape == (1, 6, 128)


def test_attention_patterns_delegate_to_implicit_attention(pair, arch):
    from interp.mamba.implicit_attention import attention_patterns

    _, model = pair(arch)
    tokens = ids(1, 8)
    out = model.attention_patterns(tokens, layers=[1])
    assert out.shape == (1, 1, model.n_heads, 8, 8)
    torch.testing.assert_close(out, attention_patterns(model, tokens, [1]))


def test_gradients_match_hf_on_both_paths(pair, arch):
    hf, model = pair(arch)
    tokens = ids(2, 13)

    def grads(run, params):
        for q in params:
            q.grad = None
        run().log_softmax(-1)[..., 5].sum().backward()
        out = [q.grad.clone() for q in params]
        for q in params:
            q.grad = None
        return out

    ours = [model.blocks[0].mixer.in_proj.weight, model.blocks[1].mixer.A_log, model.embed.weight]
    theirs = [hf.backbone.layers[0].mixer.in_proj.weight, hf.backbone.layers[1].mixer.A_log,
              hf.backbone.embeddings.weight]
    want = grads(lambda: hf(tokens).logits, theirs)
    fast = grads(lambda: model(tokens), ours)
    per_step = grads(lambda: model.run_with_hooks(
        tokens, fwd_hooks=[(lambda n: n.endswith("hook_ssm_state"), lambda a, hook: None)]), ours)
    for w, f, s in zip(want, fast, per_step):
        torch.testing.assert_close(f, w, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(s, w, rtol=1e-4, atol=1e-5)


def test_bfloat16_weights_run_close_to_hf(hf_mamba, arch):
    from transformers import AutoModelForCausalLM

    _, folder = hf_mamba(arch)
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, local_files_only=True).eval()
    model = from_hf(hf)
    assert model.embed.weight.dtype == torch.bfloat16
    tokens = ids(2, 11)
    with torch.no_grad():
        want = hf(tokens).logits
    torch.testing.assert_close(model(tokens), want, rtol=0, atol=0.1)  # bf16 rounding only
    torch.testing.assert_close(model.run_with_cache(tokens)[0], want, rtol=0, atol=0.1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(pair, arch):
    import copy

    _, model = pair(arch)
    gpu = copy.deepcopy(model).to("cuda")
    tokens = ids(2, 33)
    want_logits, want = model.run_with_cache(tokens, names_filter=lambda n: n.endswith(("hook_ssm_state", "hook_y")))
    torch.testing.assert_close(gpu(tokens.cuda()).cpu(), model(tokens), rtol=1e-4, atol=1e-4)
    logits, cache = gpu.run_with_cache(tokens.cuda(), names_filter=lambda n: n.endswith(("hook_ssm_state", "hook_y")))
    torch.testing.assert_close(logits.cpu(), want_logits, rtol=1e-4, atol=1e-4)
    for name in want:
        torch.testing.assert_close(cache[name].cpu(), want[name], rtol=1e-4, atol=1e-4)
