"""Hooked transformers match Hugging Face numerically, and the per-head sites mean what they say."""

import pytest
import torch
import transformers

import interp

ARCHS = ["llama", "gpt2"]


def _pair(tiny_dir, arch):
    path = tiny_dir(arch)
    return interp.load_model(path), transformers.AutoModelForCausalLM.from_pretrained(path).eval()


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_match_hf_with_and_without_hooks(tiny_dir, arch):
    model, hf = _pair(tiny_dir, arch)
    tokens = torch.randint(0, model.d_vocab, (3, 13))
    ref = hf(tokens).logits
    assert (model(tokens) - ref).abs().max() <= 1e-4
    logits, cache = model.run_with_cache(tokens)  # every site hooked, eager attention everywhere
    assert (logits - ref).abs().max() <= 1e-4
    assert set(cache) == set(model.site_names())
    identity = model.run_with_hooks(tokens, fwd_hooks=[(lambda n: True, lambda act, hook: act.clone())])
    assert (identity - ref).abs().max() <= 1e-4


def test_gqa_shapes_and_counts(tiny_dir):
    model, _ = _pair(tiny_dir, "llama")
    assert (model.n_heads, model.n_kv_heads, model.d_head) == (4, 2, 16)
    _, cache = model.run_with_cache(torch.randint(0, 100, (2, 5)), names_filter=lambda n: n.startswith("blocks.0.attn"))
    assert cache["blocks.0.attn.hook_q"].shape == (2, 5, 4, 16)
    assert cache["blocks.0.attn.hook_k"].shape == (2, 5, 2, 16)
    assert cache["blocks.0.attn.hook_v"].shape == (2, 5, 2, 16)
    assert cache["blocks.0.attn.hook_z"].shape == (2, 5, 4, 16)
    assert cache["blocks.0.attn.hook_pattern"].shape == (2, 4, 5, 5)
    assert cache["blocks.0.attn.hook_result"].shape == (2, 5, 4, 64)


@pytest.mark.parametrize("arch", ARCHS)
def test_patterns_are_causal_distributions(tiny_dir, arch):
    model, _ = _pair(tiny_dir, arch)
    pats = model.attention_patterns(torch.randint(0, 100, (2, 9)))
    assert pats.shape == (model.n_layers, 2, model.n_heads, 9, 9)
    torch.testing.assert_close(pats.sum(-1), torch.ones(pats.shape[:-1]), atol=1e-5, rtol=0)
    assert pats.triu(diagonal=1).abs().max() == 0


@pytest.mark.parametrize("arch", ARCHS)
def test_result_sums_to_attn_out(tiny_dir, arch):
    model, hf = _pair(tiny_dir, arch)
    _, cache = model.run_with_cache(torch.randint(0, 100, (2, 7)))
    for layer in range(model.n_layers):
        attn = model.hf_model.get_submodule(model.table.layers)[layer].get_submodule(model.table.attn)
        o_proj = attn.get_submodule(model.table.o_proj)
        bias = o_proj.bias if o_proj.bias is not None else 0
        summed = cache[f"blocks.{layer}.attn.hook_result"].sum(2) + bias
        torch.testing.assert_close(summed, cache[f"blocks.{layer}.hook_attn_out"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_zeroing_one_head_changes_exactly_its_contribution(tiny_dir, arch):
    model, _ = _pair(tiny_dir, arch)
    tokens = torch.randint(0, 100, (2, 8))
    layer, head = 1, 2
    names = [f"blocks.{layer}.attn.hook_result", f"blocks.{layer}.hook_attn_out", f"blocks.{layer}.hook_resid_pre"]
    _, clean = model.run_with_cache(tokens, names_filter=names)

    def zero_head(z, hook):
        z = z.clone()
        z[:, :, head] = 0
        return z

    _, patched = model.run_with_cache(tokens, names_filter=names,
                                      fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero_head)])
    res_c, res_p = clean[names[0]], patched[names[0]]
    assert res_p[:, :, head].abs().max() == 0
    others = [h for h in range(model.n_heads) if h != head]
    torch.testing.assert_close(res_p[:, :, others], res_c[:, :, others], atol=1e-6, rtol=0)
    expected_out = clean[names[1]] - res_c[:, :, head]
    torch.testing.assert_close(patched[names[1]], expected_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(patched[names[2]], clean[names[2]], atol=0, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_replacements_take_effect_downstream(tiny_dir, arch):
    """A replacement at a site changes what is computed after it (resid_mid patched, pattern replaced, ...)."""
    model, _ = _pair(tiny_dir, arch)
    tokens = torch.randint(0, 100, (1, 6))
    _, clean = model.run_with_cache(tokens, names_filter=["blocks.0.hook_resid_mid", "blocks.0.hook_resid_post"])
    target = torch.randn_like(clean["blocks.0.hook_resid_mid"])
    _, patched = model.run_with_cache(
        tokens, names_filter=["blocks.0.hook_resid_mid", "blocks.0.ln2.hook_normalized"],
        fwd_hooks=[("blocks.0.hook_resid_mid", lambda act, hook: target)],
    )
    torch.testing.assert_close(patched["blocks.0.hook_resid_mid"], target)
    # the MLP reads the patched residual: its input norm equals the norm of the target
    ln2 = model.hf_model.get_submodule(model.table.layers)[0].get_submodule(model.table.ln2)
    torch.testing.assert_close(patched["blocks.0.ln2.hook_normalized"], ln2(target), atol=1e-5, rtol=1e-5)
    # a uniform causal pattern replaces the softmax
    n = tokens.shape[1]
    uniform = torch.tril(torch.ones(n, n)) / torch.arange(1, n + 1)[:, None]

    def set_uniform(p, hook):
        return uniform.expand_as(p).clone()

    _, cache = model.run_with_cache(tokens, names_filter=["blocks.0.attn.hook_z", "blocks.0.attn.hook_v"],
                                    fwd_hooks=[("blocks.0.attn.hook_pattern", set_uniform)])
    v = cache["blocks.0.attn.hook_v"].repeat_interleave(model.n_heads // model.n_kv_heads, dim=2)
    expected_z = torch.einsum("qk,bkhd->bqhd", uniform, v)
    torch.testing.assert_close(cache["blocks.0.attn.hook_z"], expected_z, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_hooks_removed_on_every_exit_path(tiny_dir, arch):
    model, _ = _pair(tiny_dir, arch)
    tokens = torch.randint(0, 100, (1, 4))

    def count_module_hooks():
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())

    before = count_module_hooks()

    def boom(act, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_mlp_out", boom), ("blocks.0.attn.hook_pattern", boom)])
    assert count_module_hooks() == before and not model._registry
    with pytest.raises(KeyError):
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_pre", lambda a, hook: a), ("nope", boom)])
    assert count_module_hooks() == before and not model._registry
    with model.hooks([("blocks.0.hook_resid_pre", lambda a, hook: a)]):
        assert count_module_hooks() > before
    assert count_module_hooks() == before


def test_predicate_hooks_and_hook_info(tiny_dir):
    model, _ = _pair(tiny_dir, "llama")
    seen = []
    model.run_with_hooks(torch.randint(0, 100, (1, 3)),
                         fwd_hooks=[(lambda n: n.endswith("hook_resid_post"),
                                     lambda a, hook: seen.append((hook.name, hook.layer)))])
    assert seen == [("blocks.0.hook_resid_post", 0), ("blocks.1.hook_resid_post", 1)]


def test_tokens_round_trip(tiny_dir):
    model, _ = _pair(tiny_dir, "llama")
    toks = model.to_tokens(["ab", "abcd"])
    assert toks.dtype == torch.long and toks.shape == (2, 5) and toks[0, 0] == model.tokenizer.bos_token_id
    assert model.to_str_tokens("ab", prepend_bos=False) == ["a", "b"]
    assert model.to_tokens("ab", prepend_bos=False).shape == (1, 2)
    assert model(["ab", "abcd"]).shape == (2, 5, model.d_vocab)
