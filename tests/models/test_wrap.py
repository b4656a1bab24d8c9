"""Every accepted object wraps into the same interface: HF objects, TransformerLens models, nnsight models."""

import torch
import transformers

import interp


def test_wrap_hf_object_equals_load_from_folder(tiny_dir):
    path = tiny_dir("gpt2")
    hf = transformers.AutoModelForCausalLM.from_pretrained(path)
    wrapped, loaded = interp.wrap(hf), interp.load_model(path)
    tokens = torch.randint(0, 100, (2, 6))
    torch.testing.assert_close(wrapped(tokens), loaded(tokens))
    assert interp.wrap(wrapped) is wrapped


def test_hooked_transformer_sites_match_transformer_lens():
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=2, d_model=32, n_ctx=16, d_head=8, n_heads=4, d_vocab=50,
                                  act_fn="gelu", normalization_type="LN")
    tl = HookedTransformer(cfg)
    model = interp.wrap(tl)
    assert (model.n_layers, model.n_heads, model.d_model, model.d_vocab) == (2, 4, 32, 50)
    tokens = torch.randint(0, 50, (2, 7))
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith(("hook_pattern", "hook_z")))
    ref_logits, ref = tl.run_with_cache(tokens)
    torch.testing.assert_close(logits, ref_logits.detach())
    for name, t in cache.items():
        torch.testing.assert_close(t, ref[name])
    # patching through our interface equals patching through TransformerLens
    def zero(z, hook):
        z = z.clone()
        z[:, :, 1] = 0
        return z

    ours = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.attn.hook_z", zero)])
    theirs = tl.run_with_hooks(tokens, fwd_hooks=[("blocks.1.attn.hook_z", zero)])
    torch.testing.assert_close(ours, theirs.detach())
    assert all(not hp._forward_hooks for hp in tl.hook_dict.values())


def test_transformer_bridge(tiny_dir):
    from transformer_lens.model_bridge import TransformerBridge

    path = tiny_dir("llama")
    bridge = TransformerBridge.boot_transformers(str(path), device="cpu")
    bridge.enable_compatibility_mode()  # classic names; folds/centres weights: log-probs unchanged
    model = interp.wrap(bridge)
    hf = transformers.AutoModelForCausalLM.from_pretrained(path)
    tokens = torch.randint(0, 100, (2, 6))
    torch.testing.assert_close(model(tokens).log_softmax(-1), hf(tokens).logits.log_softmax(-1), atol=1e-5, rtol=0)
    pats = model.attention_patterns(tokens, layers=[1])
    ours = interp.load_model(path).attention_patterns(tokens, layers=[1])
    torch.testing.assert_close(pats, ours, atol=1e-5, rtol=0)


def test_nnsight_model(tiny_dir):
    from nnsight import NNsight

    path = tiny_dir("llama")
    hf = transformers.AutoModelForCausalLM.from_pretrained(path)
    model = interp.wrap(NNsight(hf))
    assert model.hf_model is hf
    tokens = torch.randint(0, 100, (1, 5))
    torch.testing.assert_close(model(tokens), hf(tokens).logits)


def test_wrap_does_not_change_unhooked_outputs(tiny_dir):
    path = tiny_dir("llama")
    hf = transformers.AutoModelForCausalLM.from_pretrained(path)
    tokens = torch.randint(0, 100, (2, 6))
    before = hf(tokens).logits
    interp.wrap(hf)
    torch.testing.assert_close(hf(tokens).logits, before, atol=1e-6, rtol=0)


def test_nnsight_language_model_brings_its_tokenizer(tiny_dir):
    from nnsight import LanguageModel

    path = tiny_dir("llama")
    hf = transformers.AutoModelForCausalLM.from_pretrained(path)
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = interp.wrap(LanguageModel(hf, tokenizer=tok))
    assert model.hf_model is hf and model.tokenizer is tok
    assert model.to_str_tokens("ab") == ["<bos>", "a", "b"]
