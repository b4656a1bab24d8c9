"""The hook contract, on every model kind: sites fire exactly once, contexts nest, exceptions leave nothing behind."""

import pytest
import torch


def _tokens(model, b=2, t=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, min(model.d_vocab, 100), (b, t), generator=g)


def _resid(model, layer=0):
    return model.components(layer)["resid_post"]


def test_logit_parity(kind):
    tokens = _tokens(kind.model)
    ours, ref = kind.model(tokens), kind.reference(tokens)
    if kind.log_probs_only:
        ours, ref = ours.log_softmax(-1), ref.log_softmax(-1)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)
    logits, _ = kind.model.run_with_cache(tokens)  # every site hooked
    torch.testing.assert_close(logits, kind.model(tokens), atol=1e-4, rtol=0)


def test_every_site_fires_exactly_once(kind):
    model = kind.model
    counts: dict[str, int] = {}

    def count(act, hook):
        counts[hook.name] = counts.get(hook.name, 0) + 1

    with model.hooks([(lambda n: True, count)]):
        model(_tokens(model))
    sites = model.site_names()
    assert {n: counts.get(n, 0) for n in sites if counts.get(n, 0) != 1} == {}
    assert set(counts) == set(sites)


def test_snippet_from_the_issue_gives_one(kind):
    model, site = kind.model, _resid(kind.model)
    toks = _tokens(model)

    def plus1(a, hook):
        return a + 1

    _, c0 = model.run_with_cache(toks, names_filter=site)
    with model.hooks([(site, plus1)]):
        _, c1 = model.run_with_cache(toks, names_filter=site)
    assert torch.allclose(c1[site] - c0[site], torch.ones(()), atol=1e-5)


def test_nested_contexts_fire_in_order_and_unwind(kind):
    model, site = kind.model, _resid(kind.model)
    toks = _tokens(model)
    calls: list[str] = []

    def make(tag):
        def fn(act, hook):
            calls.append(tag)
        return fn

    a, b, c = make("a"), make("b"), make("c")
    before = kind.torch_hooks()
    with model.hooks([(site, a)]):
        with model.hooks([(site, b), (site, a)]):  # the same function twice: two registrations
            with model.hooks([(site, c)]):
                model(toks)
                assert calls == ["a", "b", "a", "c"]
                calls.clear()
                _, cache = model.run_with_cache(toks, names_filter=site, fwd_hooks=[(site, c)])
                assert calls == ["a", "b", "a", "c", "c"] and site in cache
                calls.clear()
            model(toks)
            assert calls == ["a", "b", "a"]
            calls.clear()
        model.run_with_hooks(toks, fwd_hooks=[(site, b)])
        assert calls == ["a", "b"]
        calls.clear()
        model(toks)
        assert calls == ["a"]
        calls.clear()
    model(toks)
    assert calls == []
    assert not model._registry and kind.torch_hooks() == before


def test_patch_outer_cache_inner_sees_patch_once(kind):
    model = kind.model
    toks = _tokens(model)
    first, last = model.components(0)["resid_pre"], _resid(model, model.n_layers - 1)
    _, clean = model.run_with_cache(toks, names_filter=[first, last])
    with model.hooks([(first, lambda a, hook: a * 2)]):
        with model.hooks([(first, lambda a, hook: a + 0)]):
            _, patched = model.run_with_cache(toks, names_filter=[first, last])
    torch.testing.assert_close(patched[first], clean[first] * 2)
    assert not torch.allclose(patched[last], clean[last])


class Boom(RuntimeError):
    pass


def test_exceptions_in_hooks_leave_nothing_behind(kind):
    model, site = kind.model, _resid(kind.model)
    toks = _tokens(model)
    before = kind.torch_hooks()

    def boom(a, hook):
        raise Boom

    with pytest.raises(Boom):
        with model.hooks([(lambda n: True, lambda a, hook: None)]):
            with model.hooks([(site, boom)]):
                model(toks)
    assert not model._registry and kind.torch_hooks() == before
    with pytest.raises(Boom):
        model.run_with_cache(toks, fwd_hooks=[(site, boom)])
    assert not model._registry and kind.torch_hooks() == before

    def bwd_boom(g, hook):
        raise Boom

    with pytest.raises(Boom):
        with model.hooks(bwd_hooks=[(site, bwd_boom)]):
            model(toks).sum().backward()
    assert not model._registry and kind.torch_hooks() == before
    model.zero_grad(set_to_none=True)


def test_run_with_cache_raises_when_a_requested_site_does_not_fire(kind):
    model = kind.model
    late = _resid(model, model.n_layers - 1)
    with pytest.raises(ValueError, match="stop_at_layer"):
        model.run_with_cache(_tokens(model), names_filter=[late], stop_at_layer=1)
    resid, cache = model.run_with_cache(_tokens(model), names_filter=lambda n: True, stop_at_layer=1)
    stop = model.components(1)["resid_pre"]  # the residual returned: blocks.1.hook_resid_pre, after its hooks
    sites = model.site_names()  # forward order: everything up to the stop site fired, nothing after
    assert list(cache) == sites[: sites.index(stop) + 1]
    assert model.components(0)["resid_post"] in cache
    torch.testing.assert_close(resid, cache[stop])


def test_hook_returning_a_non_float_tensor_is_an_error(kind):
    model, site = kind.model, _resid(kind.model)
    for bad in (lambda a, hook: a.long(), lambda a, hook: a > 0, lambda a, hook: a.to(torch.complex64)):
        with pytest.raises(TypeError, match=f"at {site!r} returned dtype"):
            model.run_with_hooks(_tokens(model), fwd_hooks=[(site, bad)])
    assert not model._registry


def test_stop_and_start_at_layer(kind):
    model = kind.model
    toks = _tokens(model)
    names = [model.components(1)["resid_pre"]]
    full, cache = model.run_with_cache(toks, names_filter=names)
    resid = model(toks, stop_at_layer=1)
    torch.testing.assert_close(resid, cache[names[0]])
    counts: dict[str, int] = {}
    with model.hooks([(lambda n: True, lambda a, hook: counts.__setitem__(hook.name, counts.get(hook.name, 0) + 1))]):
        rest = model(resid, start_at_layer=1)
    torch.testing.assert_close(rest, full, atol=1e-5, rtol=0)
    assert not any(n.startswith("blocks.0.") or n in ("hook_embed", "hook_pos_embed") for n in counts)
    assert counts[names[0]] == 1
