"""The hook contract on the real model: padding, nesting, gradients, weights, generation, start/stop at a layer."""

import pytest
import torch

pytestmark = pytest.mark.integration

PROMPTS = ["The Eiffel Tower is located in the city of", "Paris is", "The capital of Japan is the city of"]


def test_left_padded_batch_equals_each_prompt_alone(smollm2):
    tokens, mask = smollm2.to_tokens(PROMPTS, padding_side="left", return_attention_mask=True)
    batched = smollm2(tokens, attention_mask=mask)
    unmasked = smollm2(tokens)  # what padding does without the mask: the rows read pad tokens as data
    worst_masked, worst_unmasked = 0.0, 0.0
    for row, text in enumerate(PROMPTS):
        alone = smollm2(smollm2.to_tokens(text))[0]
        n = alone.shape[0]
        worst_masked = max(worst_masked, (batched[row, -n:] - alone).abs().max().item())
        worst_unmasked = max(worst_unmasked, (unmasked[row, -n:] - alone).abs().max().item())
    assert worst_masked <= 1e-4
    assert worst_unmasked > 0.1  # the mask is what makes the difference
    last = smollm2.last_positions(mask)
    assert torch.equal(last, torch.full((3,), tokens.shape[1] - 1))


def test_nested_contexts_fire_once(smollm2):
    toks = smollm2.to_tokens("The Eiffel Tower is located in")
    site = "blocks.3.hook_resid_post"
    _, c0 = smollm2.run_with_cache(toks, names_filter=site)
    with smollm2.hooks([(site, lambda a, hook: a + 1)]):
        _, c1 = smollm2.run_with_cache(toks, names_filter=site)
    torch.testing.assert_close((c1[site] - c0[site]).mean(), torch.tensor(1.0), atol=1e-4, rtol=0)


def test_backward_hook_gradient_equals_autograd(smollm2):
    toks = smollm2.to_tokens("The Eiffel Tower is located in the city of")
    paris = smollm2.to_single_token(" Paris")
    site = "blocks.18.attn.hook_z"
    delta = {}

    def add(act, hook):
        delta["d"] = torch.zeros_like(act, requires_grad=True)
        return act + delta["d"]

    with smollm2.hooks([(site, add)]):
        loss = smollm2(toks)[0, -1].log_softmax(-1)[paris]
    (ref,) = torch.autograd.grad(loss, delta["d"])
    seen = {}
    with smollm2.hooks(bwd_hooks=[(site, lambda g, hook: seen.__setitem__("g", g.clone()))]):
        smollm2(toks)[0, -1].log_softmax(-1)[paris].backward()
    smollm2.zero_grad(set_to_none=True)
    torch.testing.assert_close(seen["g"], ref, atol=1e-6, rtol=1e-4)
    assert ref.abs().max() > 0


def test_weights_reproduce_the_sites(smollm2):
    toks = smollm2.to_tokens("The Eiffel Tower is located in the city of")
    layer = 18
    c = smollm2.components(layer)
    _, cache = smollm2.run_with_cache(toks, names_filter=[c["resid_pre"], c["q"], c["k"], c["z"], c["attn_out"]])
    with torch.no_grad():
        x = smollm2.apply_ln1(layer, cache[c["resid_pre"]])
        q = torch.einsum("bpd,hde->bphe", x, smollm2.W_Q[layer]) + smollm2.b_Q[layer]
        k = torch.einsum("bpd,hde->bphe", x, smollm2.W_K[layer])[:, :, ::3]
        out = torch.einsum("bphe,hed->bpd", cache[c["z"]], smollm2.W_O[layer])
    torch.testing.assert_close(q, cache[c["q"]], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(k, cache[c["k"]], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out, cache[c["attn_out"]], atol=1e-4, rtol=1e-4)


def test_greedy_generation_answers_paris(smollm2):
    out = smollm2.generate("The capital of France is", max_new_tokens=3, stop_at_eos=False)
    assert "Paris" in smollm2.to_string(out[0, -3:])
    batch = smollm2.generate(["The capital of France is", "The capital of Italy is the city of"], max_new_tokens=2,
                             stop_at_eos=False)
    assert "Paris" in smollm2.to_string(batch[0, -2:]) and "Rome" in smollm2.to_string(batch[1, -2:])


def test_stop_and_start_at_layer(smollm2):
    toks = smollm2.to_tokens("The Eiffel Tower is located in the city of")
    full = smollm2(toks)
    resid = smollm2(toks, stop_at_layer=15)
    torch.testing.assert_close(smollm2(resid, start_at_layer=15), full, atol=1e-4, rtol=0)
