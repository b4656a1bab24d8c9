"""Pure pieces of the detectors against plain references: target masks, mask scores, the shared attention pass,
logits at rows, the copying score, ROUGE and copy-paste counting."""

import pytest
import torch

from interp import heads
from interp.heads import duplicate_token, induction, ngram, previous_token
from interp.heads.passes import attention_pass, logits_from_resid, mask_score
from interp.heads.retrieval import copy_paste, rouge1_recall


def test_expected_patterns_by_hand():
    t = torch.tensor([[5, 6, 7, 5, 6, 7]])
    prev = previous_token.expected_pattern(t)[0]
    assert prev.sum() == 5 and all(prev[i, i - 1] for i in range(1, 6))
    dup = duplicate_token.expected_pattern(t)[0]
    assert dup.nonzero().tolist() == [[3, 0], [4, 1], [5, 2]]
    ind = induction.expected_pattern(t)[0]
    assert ind.nonzero().tolist() == [[3, 1], [4, 2], [5, 3]]  # the token after each earlier occurrence
    assert torch.equal(ngram.expected_pattern(t, 1), induction.expected_pattern(t))


def _brute_ngram(tokens, k):
    b, T = tokens.shape
    out = torch.zeros(b, T, T, dtype=torch.bool)
    for r in range(b):
        for i in range(T):
            for j in range(i + 1):
                ok = all(j - 1 - m >= 0 and i - m >= 0 and tokens[r, j - 1 - m] == tokens[r, i - m] for m in range(k))
                out[r, i, j] = ok
    return out


@pytest.mark.parametrize("k", [1, 2, 3])
def test_ngram_mask_matches_the_definition(k):
    tokens = torch.randint(0, 3, (2, 17))
    assert torch.equal(ngram.expected_pattern(tokens, k), _brute_ngram(tokens, k))


def test_mask_score_matches_a_loop():
    pattern = torch.rand(3, 2, 4, 9, 9).tril()  # [layer, batch, head, q, k], rows not normalised
    mask = torch.rand(2, 9, 9) < 0.2
    got = mask_score(pattern, mask)
    ref = torch.zeros(3, 4)
    for layer in range(3):
        for h in range(4):
            vals = [float((pattern[layer, b, h, i] * mask[b, i]).sum() / pattern[layer, b, h, i].sum())
                    for b in range(2) for i in range(9) if mask[b, i].any()]
            ref[layer, h] = sum(vals) / len(vals)
    torch.testing.assert_close(got, ref)
    with pytest.raises(ValueError, match="no row with a target"):
        mask_score(pattern, torch.zeros(2, 9, 9, dtype=torch.bool))


@pytest.mark.parametrize("arch", ["llama", "mamba2"])
def test_attention_pass_equals_attention_patterns(tiny, arch):
    model = tiny(arch)
    tokens = heads.probes.repeated_tokens(model, 2, 8, seed=1)
    pats = model.attention_patterns(tokens)  # the reference: the contract's patterns, all at once
    for module in (previous_token, duplicate_token, induction):
        torch.testing.assert_close(module.score(model, tokens), module.score_patterns(pats, tokens))
    per_layer, resid, _ = attention_pass(model, tokens, lambda layer, p: p.clone())
    torch.testing.assert_close(torch.stack(per_layer), pats)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "mamba"])
def test_logits_from_resid_equals_the_forward_pass(tiny, arch):
    model = tiny(arch)
    tokens = torch.randint(4, 100, (3, 11))
    rows = torch.tensor([[0, 5, 10], [2, 2, 3], [9, 1, 4]])
    with torch.no_grad():
        full = model(tokens)
        got = logits_from_resid(model, model(tokens, stop_at_layer=model.n_layers), rows)
    torch.testing.assert_close(got, full.gather(1, rows[..., None].expand(-1, -1, full.shape[-1])), atol=1e-5,
                               rtol=1e-5)


def test_copying_score_equals_the_per_head_results(tiny):
    """Reference: each head's own ``hook_result`` (z @ W_O inside the model) through the final norm."""
    model = tiny("llama")
    half = 8
    tokens = heads.probes.repeated_tokens(model, 2, half, seed=2)
    got = induction.copying_score(model, batch=2, half=half, seed=2)
    sites = [model.components(layer)["result"] for layer in range(model.n_layers)]
    with torch.no_grad():
        resid, cache = model.run_with_cache(tokens, names_filter=sites, stop_at_layer=model.n_layers)
        rows, targets = induction.second_half_rows(tokens, half)
        off = tokens.shape[1] - 2 * half
        ref = torch.zeros(model.n_layers, model.n_heads)
        for layer in range(model.n_layers):
            for h in range(model.n_heads):
                vals = []
                for b in range(2):
                    for r, t in zip(rows[b].tolist(), targets[b].tolist()):
                        F = resid[b, r]
                        e = model.apply_ln_final(F) - model.apply_ln_final(F - cache[sites[layer]][b, r, h])
                        logit = e @ model.W_U
                        vals.append(float(logit[t] - logit[tokens[b, off:off + half]].mean()))
                ref[layer, h] = sum(vals) / len(vals)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_rouge_and_copy_paste():
    assert rouge1_recall([1, 2, 3, 9], [1, 2, 3, 4]) == 0.75
    assert rouge1_recall([1, 1, 1], [1, 2]) == 0.5  # clipped counts
    seq = torch.tensor([0, 7, 8, 9, 3, 3, 7])
    needle = (1, 4)
    generated = torch.tensor([8, 9])
    argmax = torch.tensor([[[2, 3], [2, 2]], [[5, 3], [6, 6]]])  # [layer, head, step]
    got = copy_paste(argmax, seq, needle, generated)
    ref = torch.tensor([[1.0, 0.5], [0.5, 0.0]])  # position 6 holds a 7 outside the needle
    assert torch.equal(got, ref)
