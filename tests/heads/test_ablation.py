"""``ablate`` and the batched ablation conditions against plain references."""

import pytest
import torch

from interp import heads
from interp.heads.ablation import check_heads
from interp.heads.validation import random_head_sets, run_conditions


def test_zero_ablation_equals_removing_the_heads_result(tiny):
    """Reference: the per-head ``hook_result`` site (z @ W_O inside the model) zeroed for the same heads."""
    model = tiny("llama")
    tokens = torch.randint(4, 100, (2, 12))
    chosen = [(0, 1), (1, 3), (1, 0)]

    def zero_result(result, hook):
        result = result.clone()
        for layer, h in chosen:
            if layer == hook.layer:
                result[:, :, h] = 0
        return result

    with torch.no_grad():
        with heads.ablate(model, chosen, how="zero"):
            got = model(tokens)
        ref = model.run_with_hooks(tokens, fwd_hooks=[(lambda n: n.endswith("attn.hook_result"), zero_result)])
        clean = model(tokens)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert (got - clean).abs().max() > 1e-3


def test_mean_ablation_uses_the_mean_of_the_same_pass(tiny):
    model = tiny("gpt2")
    tokens = torch.randint(4, 100, (3, 10))
    site = model.components(1)["z"]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=[site])
        mean = cache[site][:, :, 2].mean((0, 1))

        def fill(z, hook):
            z = z.clone()
            z[:, :, 2] = mean
            return z

        ref = model.run_with_hooks(tokens, fwd_hooks=[(site, fill)])
        with heads.ablate(model, [(1, 2)], how="mean"):
            got = model(tokens)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["mamba", "mamba2"])
def test_mamba_ablation_zeroes_the_heads_channels(tiny, arch):
    model = tiny(arch)
    tokens = torch.randint(4, 100, (2, 9))
    site = model.components(1)["y"]
    with torch.no_grad():
        _, clean = model.run_with_cache(tokens, names_filter=[site])
        with heads.ablate(model, [(1, 3)], how="zero"):
            _, cache = model.run_with_cache(tokens, names_filter=[site])
    y, y0 = cache[site], clean[site]
    split = (lambda t: t.view(*t.shape[:2], model.n_heads, model.d_head)) if y.ndim == 3 else (lambda t: t)
    assert split(y)[:, :, 3].abs().max() == 0
    keep = [h for h in range(model.n_heads) if h != 3]
    torch.testing.assert_close(split(y)[:, :, keep], split(y0)[:, :, keep])


@pytest.mark.parametrize(("arch", "how"), [("llama", "zero"), ("llama", "mean"), ("mamba2", "mean")])
def test_batched_conditions_equal_separate_ablated_runs(tiny, arch, how):
    model = tiny(arch)
    tokens = torch.randint(4, 100, (3, 14))
    rows = torch.tensor([[3, 7, 12], [0, 5, 9], [10, 11, 12]])
    targets = tokens.gather(1, rows + 1)
    valid = torch.tensor([[True, True, False], [True, True, True], [False, True, True]])
    sets = [(), ((0, 1),), ((1, 0), (0, 3)), ((1, 2),)]
    loss, correct, n = run_conditions(model, tokens, rows, targets, sets, how=how, valid=valid)
    assert n == int(valid.sum())
    for c, chosen in enumerate(sets):
        with torch.no_grad(), heads.ablate(model, list(chosen), how=how):
            per_token = model(tokens, return_type="loss", loss_per_token=True)  # [b, T-1]: predicts t+1 at t
            logits = model(tokens)
        ref_loss = per_token.gather(1, rows)[valid].sum()
        ref_correct = (logits.argmax(-1).gather(1, rows) == targets)[valid].sum()
        torch.testing.assert_close(loss[c].float(), ref_loss.float(), atol=1e-4, rtol=1e-4)
        assert int(correct[c]) == int(ref_correct)


def test_random_head_sets():
    top = [(0, 0), (1, 1)]
    draws = random_head_sets(3, 4, top, 5, seed=7)
    assert len(draws) == 5 and all(len(d) == 2 and len(set(d)) == 2 and not set(d) & set(top) for d in draws)
    assert draws == random_head_sets(3, 4, top, 5, seed=7)
    # fewer than k other heads: draw from all heads
    assert all(len(d) == 3 for d in random_head_sets(1, 4, [(0, 0), (0, 1), (0, 2)], 2, seed=0))


def test_bad_heads(tiny):
    model = tiny("llama")
    assert check_heads(model, [(-1, -1), (1, 3), [0, 2]]) == [(1, 3), (0, 2)]
    with pytest.raises(TypeError, match="list of \\(layer, head\\) pairs"):
        check_heads(model, "0.1")
    with pytest.raises(IndexError, match="head 4 is out of range"):
        check_heads(model, [(0, 4)])
    with pytest.raises(IndexError, match="layer 5 is out of range"):
        check_heads(model, [(5, 0)])
    with pytest.raises(TypeError, match="not an int"):
        check_heads(model, [(0, True)])
    with pytest.raises(ValueError, match="how must be one of"):
        with heads.ablate(model, [(0, 0)], how="noise"):
            pass
