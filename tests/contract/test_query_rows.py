"""``query_rows``: chosen rows of the attention pattern, read beside the fast attention path; and ``hook_rot_q/k``,
which fire on the fast path too. Each checked against the full eager patterns on fresh random inputs."""

import pytest
import torch

import interp
from interp.errors import CapabilityError


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model(request, tiny_dir):
    return interp.load_model(tiny_dir(request.param))


def _tokens(b, t, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, 100, (b, t), generator=g)


def _rows(b, t, r, seed):
    g = torch.Generator().manual_seed(seed + 1)
    return torch.stack([torch.randperm(t, generator=g)[:r].sort().values for _ in range(b)])


def _patterns(model, tokens, rows=None, mask=None):
    names = [model.components(layer)["pattern"] for layer in range(model.n_layers)]
    got = {}

    def keep(p, hook):
        got[hook.name] = p.clone()

    if rows is None:
        logits = model.run_with_hooks(tokens, [(n, keep) for n in names], attention_mask=mask)
    else:
        with model.query_rows(rows):
            logits = model.run_with_hooks(tokens, [(n, keep) for n in names], attention_mask=mask)
    return logits, [got[n] for n in names]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rows_equal_the_full_patterns(model, seed):
    b, t, r = 3, 13, 4
    tokens, rows = _tokens(b, t, seed), _rows(b, t, r, seed)
    full_logits, full = _patterns(model, tokens)
    logits, picked = _patterns(model, tokens, rows)
    for f, p in zip(full, picked):
        assert p.shape == (b, model.n_heads, r, t)
        want = f.gather(2, rows[:, None, :, None].expand(-1, f.shape[1], -1, t))
        torch.testing.assert_close(p, want, atol=1e-6, rtol=0)
    torch.testing.assert_close(logits, full_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits, model(tokens), atol=1e-6, rtol=0)  # the fast path's output, unchanged


def test_rows_with_padding(model):
    tokens = _tokens(2, 9, 5)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, :3] = 0  # left padding: rows 0..2 of batch row 1 see no key
    rows = torch.tensor([[0, 4, 8], [1, 5, 8]])
    _, full = _patterns(model, tokens, mask=mask)
    _, picked = _patterns(model, tokens, rows, mask=mask)
    for f, p in zip(full, picked):
        torch.testing.assert_close(p, f.gather(2, rows[:, None, :, None].expand(-1, f.shape[1], -1, 9)), atol=1e-6,
                                   rtol=0)
    assert bool((picked[0][1, :, 0] == 0).all())  # a padding query row is all zeros, as in the full pattern


def test_replacing_a_row_pattern_raises(model):
    name = model.components(0)["pattern"]
    with model.query_rows(torch.tensor([[1]])), pytest.raises(RuntimeError, match="cannot be changed"):
        model.run_with_hooks(_tokens(1, 5, 0), [(name, lambda p, hook: p * 0)])
    model(_tokens(1, 5, 0))  # nothing left behind


def test_bad_rows_name_the_argument(model):
    with pytest.raises(ValueError, match="rows must be an integer tensor"):
        with model.query_rows(torch.tensor([1.0])):
            pass
    name = model.components(0)["pattern"]
    with model.query_rows(torch.tensor([[7]])), pytest.raises(ValueError, match="query_rows"):
        model.run_with_hooks(_tokens(1, 5, 0), [(name, lambda p, hook: None)])
    with model.query_rows(torch.tensor([[1]])), pytest.raises(RuntimeError, match="do not nest"):
        with model.query_rows(torch.tensor([[1]])):
            pass
    assert model._registry.query_rows is None


def test_two_wrappers_full_and_rows_refuse_to_mix(tiny_dir):
    first = interp.load_model(tiny_dir("llama"))
    second = interp.wrap(first.hf_model)
    name = first.components(0)["pattern"]
    with first.query_rows(torch.tensor([[1]])), first.hooks([(name, lambda p, hook: None)]), \
            second.hooks([(name, lambda p, hook: None)]), pytest.raises(RuntimeError, match="separate passes"):
        first(_tokens(1, 5, 0))


def test_models_without_rows_say_so(tiny_dir):
    mamba = interp.load_model(tiny_dir("mamba"))
    assert not mamba.has_query_rows
    with pytest.raises(CapabilityError, match="has_query_rows"):
        with mamba.query_rows(torch.tensor([[0]])):
            pass


def test_rot_hooks_fire_and_patch_on_the_fast_path(tiny_dir):
    model = interp.load_model(tiny_dir("llama"))
    tokens = _tokens(2, 8, 3)
    q_name, k_name = model.components(1)["rot_q"], model.components(1)["rot_k"]
    seen = {}
    logits = model.run_with_hooks(tokens, [(q_name, lambda x, hook: seen.setdefault("q", x.clone())),
                                           (k_name, lambda x, hook: seen.setdefault("k", x.clone()))])
    assert seen["q"].shape == (2, 8, model.n_heads, model.d_head)
    assert seen["k"].shape == (2, 8, model.n_kv_heads, model.d_head)
    torch.testing.assert_close(logits, model(tokens), atol=1e-6, rtol=0)
    # scaling the keys of layer 1 by 0 makes its attention uniform over the causal prefix: compare with the
    # eager path (a pattern hook forces it) doing the same
    pattern = model.components(1)["pattern"]
    zero_k = (k_name, lambda x, hook: x * 0)
    fast = model.run_with_hooks(tokens, [zero_k])
    eager = model.run_with_hooks(tokens, [zero_k, (pattern, lambda p, hook: None)])
    torch.testing.assert_close(fast, eager, atol=1e-5, rtol=0)
    assert not torch.allclose(fast, logits, atol=1e-3)
