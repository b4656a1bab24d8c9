"""Two wrappers of one Hugging Face model each keep working hooks."""

import torch
import transformers

import interp


def test_two_wrappers_of_one_hf_model(tiny_dir):
    hf = transformers.AutoModelForCausalLM.from_pretrained(tiny_dir("llama")).eval()
    w1 = interp.wrap(hf)
    w2 = interp.wrap(hf)
    tokens = torch.randint(4, 100, (1, 6))
    clean = w1(tokens)
    site = "blocks.1.attn.hook_pattern"
    uniform = lambda p, hook: torch.tril(torch.ones_like(p)) / torch.arange(1, p.shape[-1] + 1).view(-1, 1)
    for w in (w1, w2):
        patched = w.run_with_hooks(tokens, fwd_hooks=[(site, uniform)])
        assert (patched - clean).abs().max() > 1e-3
        assert w.attention_patterns(tokens, layers=[1]).shape == (1, 1, 4, 6, 6)
    # hooks live on the shared model while a context is open, whichever wrapper runs it
    with w1.hooks([(site, uniform)]):
        torch.testing.assert_close(w2(tokens), w1.run_with_hooks(tokens, fwd_hooks=[(site, uniform)]))
    with w1.hooks([(site, uniform)]), w2.hooks([(site, lambda p, hook: p * 0 + p)]):
        torch.testing.assert_close(w1(tokens), w2(tokens))
    torch.testing.assert_close(w2(tokens), clean)
