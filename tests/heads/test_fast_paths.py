"""Head detection's shortcuts (query rows beside the fast attention path, validation conditions sharing the clean
prefix) against the plain reference (``plain_passes``: full patterns, every condition from the tokens), on fresh
random inputs, on tiny transformers and Mamba, and on SmolLM2's real retrieval trials."""

import warnings

import pytest
import torch

from interp import heads
from interp.heads.passes import attention_pass, plain_passes, shortcuts
from interp.heads.validation import random_head_sets, run_conditions


def _tokens(model, b, t, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, min(model.d_vocab, 100), (b, t), generator=g)


def test_plain_passes_is_scoped():
    assert shortcuts()
    with plain_passes():
        assert not shortcuts()
        with plain_passes():
            assert not shortcuts()
        assert not shortcuts()
    assert shortcuts()


@pytest.mark.parametrize("arch", ["llama", "gpt2", "mamba2"])
def test_attention_pass_rows_equal_the_full_pattern(tiny, arch):
    model = tiny(arch)
    tokens = _tokens(model, 3, 12, 7)
    rows = torch.tensor([[2, 11], [0, 5], [7, 8]])
    got, resid, _ = attention_pass(model, tokens, lambda layer, p: p.clone(), rows=rows)
    full, full_resid, _ = attention_pass(model, tokens, lambda layer, p: p.clone())
    with plain_passes():
        plain, _, _ = attention_pass(model, tokens, lambda layer, p: p.clone(), rows=rows)
    for g, f, p in zip(got, full, plain):
        want = f.gather(2, rows[:, None, :, None].expand(-1, f.shape[1], -1, f.shape[-1]))
        torch.testing.assert_close(g, want, atol=1e-6, rtol=0)
        torch.testing.assert_close(p, want, atol=0, rtol=0)
    torch.testing.assert_close(resid, full_resid, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["llama", "mamba"])
@pytest.mark.parametrize("how", ["mean", "zero"])
@pytest.mark.parametrize("seed", [0, 1])
def test_conditions_from_the_shared_prefix_equal_full_runs(tiny, arch, how, seed):
    model = tiny(arch)
    tokens = _tokens(model, 3, 10, seed)
    rows = torch.arange(9).expand(3, -1)
    targets = tokens[:, 1:]
    valid = torch.rand(3, 9, generator=torch.Generator().manual_seed(seed)) > 0.2
    top = [(1, 0), (1, 2)]
    sets = [(), *random_head_sets(model.n_layers, model.n_heads, top, 4, seed), tuple(top), ((0, 1),)]
    fast = run_conditions(model, tokens, rows, targets, sets, how=how, valid=valid)
    with plain_passes():
        plain = run_conditions(model, tokens, rows, targets, sets, how=how, valid=valid)
    torch.testing.assert_close(fast[0], plain[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(fast[1], plain[1], atol=0, rtol=0)
    assert fast[2] == plain[2] == int(valid.sum())
    assert not torch.allclose(fast[0][0], fast[0][-2])  # the ablations did something


def test_detect_equals_the_plain_reference(tiny):
    model = tiny("llama")
    opts = dict(repeat_half=10, ngram_length=24, retrieval_lengths=(24, 40), progress=False, draws=3, top_k=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fast = heads.detect(model, **opts)
        with plain_passes():
            plain = heads.detect(model, **opts)
    assert fast.scores.keys() == plain.scores.keys() and fast.skipped == plain.skipped
    for kind in fast.scores:
        torch.testing.assert_close(fast.scores[kind], plain.scores[kind], atol=1e-5, rtol=0)
        a, b = fast.validation[kind], plain.validation[kind]
        assert a.causal == b.causal and a.heads == b.heads and a.random_heads == b.random_heads, kind
        if a.reason is None:
            assert abs(a.clean - b.clean) < 1e-5 and abs(a.ablated - b.ablated) < 1e-5, kind
            assert max(abs(x - y) for x, y in zip(a.random, b.random)) < 1e-5, kind
    work = [sum(e["tokens"] for e in r.passes.values()) for r in (fast, plain)]
    assert work[0] <= work[1]  # the shortcuts never run more


def test_condition_groups_merge_only_when_cheaper():
    from interp.heads.validation import _PASS_OVERHEAD, _merge

    groups = [(2, [1]), (3, [2]), (20, [3, 4])]
    # big batches: each group from its own start layer
    assert _merge(groups, 4000, 30) == groups
    # tiny batches: the per-pass overhead dominates, so close starts share a pass
    assert _merge(groups, 4, 30) == [(2, [1, 2, 3, 4])]
    # in between: neighbours merge, a far start keeps its own pass
    assert _merge(groups, 100, 30) == [(2, [1, 2]), (20, [3, 4])]
    assert _PASS_OVERHEAD > 4
    assert _merge([], 10, 30) == []


@pytest.mark.integration
def test_smollm2_retrieval_rows_equal_the_plain_run(smollm2):
    trials = heads.haystack.make_trials(smollm2, (96, 160), (0.3, 0.7), seed=3)
    with torch.no_grad():
        fast = heads.retrieval.run_trials(smollm2, trials)
        with plain_passes():
            plain = heads.retrieval.run_trials(smollm2, trials)
    assert sum(r.reproduced for r in fast) >= 2
    for a, b in zip(fast, plain):
        assert a.generated == b.generated and a.rouge == b.rouge
        assert a.teacher_forced_correct == b.teacher_forced_correct
        if b.copy is None:
            assert a.copy is None
        else:
            torch.testing.assert_close(a.copy, b.copy, atol=0, rtol=0)
