"""record_prefix / run_suffix on every model kind: a run continued from any (layer, position) of a recorded one
equals the same positions of the full run; hooks see the suffix; kinds without support say so."""

import pytest
import torch

from interp.errors import CapabilityError

T = 9


def _tokens(model, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, min(model.d_vocab, 100), (b, T), generator=g)


def _resid_pre(model, tokens):
    names = [model.components(layer)["resid_pre"] for layer in range(model.n_layers)]
    logits, cache = model.run_with_cache(tokens, names_filter=names)
    return logits, [cache[n] for n in names]


def _needs_support(kind):
    if not kind.model.has_prefix_reuse:
        with pytest.raises(CapabilityError, match="has_prefix_reuse"):
            kind.model.record_prefix(_tokens(kind.model))
        pytest.skip(f"{kind.name}: no prefix reuse (CapabilityError checked)")


@pytest.mark.parametrize("pos", [0, 1, 4, T - 1])
def test_suffix_equals_full_run(kind, pos):
    _needs_support(kind)
    model = kind.model
    tokens = _tokens(model)
    logits, resid = _resid_pre(model, tokens)
    prefix = model.record_prefix(tokens)
    for layer in range(model.n_layers):
        out = model.run_suffix(resid[layer][:, pos:], layer, pos, prefix)
        torch.testing.assert_close(out, logits[:, pos:], atol=1e-4, rtol=0)
        if layer + 1 < model.n_layers:
            mid = model.run_suffix(resid[layer][:, pos:], layer, pos, prefix, stop_at_layer=layer + 1)
            torch.testing.assert_close(mid, resid[layer + 1][:, pos:], atol=1e-4, rtol=0)


def test_suffix_of_a_different_input_equals_the_patched_full_run(kind):
    """A changed residual at position p (patching) continued from the prefix equals the full patched run."""
    _needs_support(kind)
    model = kind.model
    tokens = _tokens(model)
    layer, pos = model.n_layers - 1, 3
    site = model.components(layer)["resid_pre"]
    _, resid = _resid_pre(model, tokens)
    new = torch.randn(tokens.shape[0], model.d_model)

    def patch(act, hook):
        act = act.clone()
        act[:, pos] = new
        return act

    full = model.run_with_hooks(tokens, fwd_hooks=[(site, patch)])
    start = resid[layer][:, pos:].clone()
    start[:, 0] = new
    out = model.run_suffix(start, layer, pos, model.record_prefix(tokens))
    torch.testing.assert_close(out, full[:, pos:], atol=1e-4, rtol=0)


def test_hooks_see_the_suffix_and_rows_select_prefix_rows(kind):
    _needs_support(kind)
    model = kind.model
    tokens = _tokens(model)
    pos, layer = 5, model.n_layers - 1
    out_site = model.components(layer)["resid_post"]
    _, cache = model.run_with_cache(tokens, names_filter=[out_site, model.components(layer)["resid_pre"]])
    prefix = model.record_prefix(tokens)
    seen = {}

    def record(act, hook):
        seen[hook.name] = act.clone()

    early = model.components(0)["resid_post"]
    rows = torch.tensor([1, 0, 1])
    start = cache[model.components(layer)["resid_pre"]][rows, pos:]
    with model.hooks([(out_site, record), (early, record)] if layer > 0 else [(out_site, record)]):
        model.run_suffix(start, layer, pos, prefix, rows=rows)
    assert early not in seen or layer == 0  # sites before start_at_layer are muted
    torch.testing.assert_close(seen[out_site], cache[out_site][rows, pos:], atol=1e-4, rtol=0)
    if model.has_attention_heads:
        pattern = model.components(layer)["pattern"]
        with model.hooks([(pattern, record)]):
            model.run_suffix(start, layer, pos, prefix, rows=rows)
        assert seen[pattern].shape == (3, model.n_heads, T - pos, T)
        full = model.run_with_cache(tokens, names_filter=pattern)[1][pattern]
        torch.testing.assert_close(seen[pattern], full[rows, :, pos:], atol=1e-5, rtol=0)


def test_bad_input(kind):
    _needs_support(kind)
    model = kind.model
    tokens = _tokens(model)
    prefix = model.record_prefix(tokens)
    resid = torch.zeros(2, 3, model.d_model)
    with pytest.raises(IndexError, match="start_pos"):
        model.run_suffix(resid, 0, T, prefix)
    with pytest.raises(ValueError, match="rows"):
        model.run_suffix(torch.zeros(3, 3, model.d_model), 0, 1, prefix)
    with pytest.raises(IndexError, match="rows"):
        model.run_suffix(resid, 0, 1, prefix, rows=torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="d_model"):
        model.run_suffix(torch.zeros(2, 3, model.d_model + 1), 0, 1, prefix)
    with pytest.raises(TypeError, match="Prefix"):
        model.run_suffix(resid, 0, 1, "not a prefix")
    with pytest.raises(ValueError, match="stop_at_layer"):
        model.run_suffix(resid, 1, 1, prefix, stop_at_layer=1)
