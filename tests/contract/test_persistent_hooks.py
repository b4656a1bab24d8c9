"""Persistent hooks (``add_hook`` / ``reset_hooks``) beside context hooks, on every model kind: each registered pair
fires once per pass, in registration order (``prepend`` first), until removed; ``reset_hooks`` never takes an open
context's hooks; nothing stays attached after a reset."""

import pytest
import torch
import transformers

import interp
from interp.models import memory


def _tokens(model, b=2, t=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, min(model.d_vocab, 100), (b, t), generator=g)


def _site(model, layer=0, role="resid_post"):
    return model.components(layer)[role]


def _recorder(calls):
    def make(tag):
        def fn(act, hook):
            calls.append(tag)
        fn.__qualname__ = f"rec_{tag}"
        return fn
    return make


@pytest.fixture
def hk(kind):
    """The kind, checked clean before and left clean after (the models are shared by the whole session)."""
    model = kind.model
    assert not model._registry and not model._attached
    kind.baseline = kind.torch_hooks()
    yield kind
    model.reset_hooks(including_permanent=True)
    assert not model._registry and not model._attached and kind.torch_hooks() == kind.baseline


def test_add_hook_fires_in_every_pass_until_reset(hk):
    model, site = hk.model, _site(hk.model)
    toks = _tokens(model)
    calls: list[str] = []
    model.add_hook(site, _recorder(calls)("p"))
    assert site in model._attached
    model(toks)
    model(toks, return_type="loss")
    _, cache = model.run_with_cache(toks, names_filter=site)
    model.run_with_hooks(toks, fwd_hooks=[(site, lambda a, hook: None)])
    with model.hooks([(_site(model, 1), lambda a, hook: None)]):
        model(toks)
    model.generate(toks, max_new_tokens=3, stop_at_eos=False)
    assert calls == ["p"] * 8  # 5 passes and 3 generation steps
    model.reset_hooks()
    model(toks)
    assert calls == ["p"] * 8
    assert not model._registry and not model._attached and hk.torch_hooks() == hk.baseline


def test_persistent_hooks_fire_in_prefix_runs(hk):
    model = hk.model
    if not model.has_prefix_reuse:
        pytest.skip(f"{hk.name}: no record_prefix / run_suffix")
    toks = _tokens(model, t=6)
    resid = model(toks, stop_at_layer=1)  # blocks.1.hook_resid_pre: before the hooked site
    shapes: list[tuple[int, int]] = []
    model.add_hook(_site(model, 1), lambda a, hook: shapes.append(tuple(a.shape[:2])))
    prefix = model.record_prefix(toks)
    model.run_suffix(resid[:, 4:], 1, 4, prefix)
    assert shapes == [(2, 6), (2, 2)]


def test_persistent_patch_is_what_the_cache_records(hk):
    model = hk.model
    toks = _tokens(model)
    first, last = model.components(0)["resid_pre"], _site(model, model.n_layers - 1)
    _, clean = model.run_with_cache(toks, names_filter=[first, last])
    model.add_hook(first, lambda a, hook: a * 2)
    _, patched = model.run_with_cache(toks, names_filter=[first, last])
    torch.testing.assert_close(patched[first], clean[first] * 2)
    assert not torch.allclose(patched[last], clean[last])
    with model.hooks([(first, lambda a, hook: a + 1)]):  # a context hook added later runs after the patch
        _, both = model.run_with_cache(toks, names_filter=[first])
    torch.testing.assert_close(both[first], clean[first] * 2 + 1)
    model.reset_hooks()
    torch.testing.assert_close(model.run_with_cache(toks, names_filter=[first])[1][first], clean[first])


def test_is_permanent_survives_reset_hooks(hk):
    model, site = hk.model, _site(hk.model)
    toks = _tokens(model)
    calls: list[str] = []
    rec = _recorder(calls)
    model.add_hook(site, rec("perm"), is_permanent=True)
    model.add_perma_hook(site, rec("perm2"))
    model.add_hook(site, rec("temp"))
    model(toks)
    assert calls == ["perm", "perm2", "temp"]
    for remove in (model.reset_hooks, model.remove_all_hook_fns, lambda: model.reset_hooks(direction="fwd")):
        remove()
        calls.clear()
        model(toks)
        assert calls == ["perm", "perm2"]
    model.reset_hooks(direction="bwd", including_permanent=True)  # the other direction: nothing goes
    calls.clear()
    model(toks)
    assert calls == ["perm", "perm2"]
    model.reset_hooks(including_permanent=True)
    calls.clear()
    model(toks)
    assert calls == [] and not model._attached and hk.torch_hooks() == hk.baseline


def test_levels_select_what_reset_removes(hk):
    model, site = hk.model, _site(hk.model)
    toks = _tokens(model)
    calls: list[str] = []
    rec = _recorder(calls)
    model.add_hook(site, rec("none"))
    model.add_hook(site, rec("l3"), level=3)
    model.add_hook(site, rec("l3perm"), level=3, is_permanent=True)
    model.reset_hooks(level=4)
    model.reset_hooks(level=3)
    model(toks)
    assert calls == ["none", "l3perm"]
    model.reset_hooks(level=3, including_permanent=True)
    calls.clear()
    model(toks)
    assert calls == ["none"]


def test_order_persistent_context_and_prepend(hk):
    """Registration order at a site, older first (context or persistent alike); prepend=True goes first."""
    model, site = hk.model, _site(hk.model)
    toks = _tokens(model)
    calls: list[str] = []
    rec = _recorder(calls)
    model.add_hook(site, rec("p1"))
    with model.hooks([(site, rec("c1"))]):
        model.add_hook(site, rec("p2"))
        with model.hooks([(site, rec("c2")), (site, rec("c2"))]):
            model(toks)
            assert calls == ["p1", "c1", "p2", "c2", "c2"]
            model.add_hook(site, rec("p0"), prepend=True)
            calls.clear()
            model(toks)
            assert calls == ["p0", "p1", "c1", "p2", "c2", "c2"]
        calls.clear()
        model(toks)
        assert calls == ["p0", "p1", "c1", "p2"]
    calls.clear()
    model(toks)
    assert calls == ["p0", "p1", "p2"]


def test_every_site_fires_once_per_registration(hk):
    model = hk.model
    toks = _tokens(model)
    counts: dict[str, int] = {}

    def count(act, hook):
        counts[hook.name] = counts.get(hook.name, 0) + 1

    model.add_hook(lambda n: True, count)
    with model.hooks([(lambda n: True, count)]):
        with model.hooks([(model.site_names(), count)]):
            model(toks)
    assert counts == {n: 3 for n in model.site_names()}
    counts.clear()
    model(toks)
    assert counts == {n: 1 for n in model.site_names()}


def test_reset_inside_a_context_keeps_that_contexts_hooks(hk):
    model, site = hk.model, _site(hk.model)
    toks = _tokens(model)
    calls: list[str] = []
    rec = _recorder(calls)
    ctx_fn = rec("ctx")
    with model.hooks([(site, ctx_fn)]):
        model.add_hook(site, rec("p"))
        model.add_hook(_site(model, 1), rec("p_other"))
        model.reset_hooks(including_permanent=True)
        model(toks)
        assert calls == ["ctx"]
        assert model.hook_dict[site].fwd_hooks == (ctx_fn,)
        assert site in model._attached and _site(model, 1) not in model._attached
    calls.clear()
    model(toks)
    assert calls == [] and not model._registry and hk.torch_hooks() == hk.baseline


def test_hooks_reset_hooks_end_false_leaves_hooks_registered(hk):
    model, site = hk.model, _site(hk.model)
    toks = _tokens(model)
    calls: list[str] = []
    rec = _recorder(calls)
    with model.hooks([(site, rec("kept"))], reset_hooks_end=False):
        with model.hooks([(site, rec("inner"))], reset_hooks_end=False):
            pass
    model.run_with_hooks(toks, fwd_hooks=[(site, rec("run"))], reset_hooks_end=False)
    assert calls == ["kept", "inner", "run"]
    calls.clear()
    model(toks)
    assert calls == ["kept", "inner", "run"]
    model.reset_hooks(level=2)  # the inner block's nesting level
    calls.clear()
    model(toks)
    assert calls == ["kept", "run"]
    model.reset_hooks()
    calls.clear()
    model(toks)
    assert calls == [] and not model._attached


def test_backward_persistent_hook_sees_the_gradient(hk):
    model, site = hk.model, _site(hk.model)
    toks = _tokens(model)
    seen: list[torch.Tensor] = []

    def grab(g, hook):
        seen.append(g.detach().clone())

    def passthrough(g, hook):  # TransformerLens style: a 1-tuple
        return (g,)

    model.add_hook(site, passthrough, dir="bwd")
    model.add_hook(site, grab, dir="bwd")
    with torch.no_grad():
        model(toks)  # no gradients: persistent backward hooks are skipped, not an error
    model.generate(toks, max_new_tokens=2, stop_at_eos=False)
    _, cache = model.run_with_cache(toks, names_filter=site, grad=True)
    assert seen == []
    out = model(toks)
    out.square().sum().backward()
    assert len(seen) == 1
    model.reset_hooks()
    logits, cache = model.run_with_cache(toks, names_filter=site, grad=True)
    (want,) = torch.autograd.grad(logits.square().sum(), cache[site])
    torch.testing.assert_close(seen[0], want)
    model.zero_grad(set_to_none=True)


def test_reset_before_backward_silences_the_hook(hk):
    model, site = hk.model, _site(hk.model)
    seen = []
    model.add_hook(site, lambda g, hook: seen.append(1), dir="bwd")
    out = model(_tokens(model))
    model.reset_hooks()
    out.sum().backward()
    assert seen == []
    model.zero_grad(set_to_none=True)


def test_internal_runs_fire_no_persistent_hook(hk):
    model, site = hk.model, _site(hk.model)
    toks = _tokens(model)
    calls: list[str] = []
    model.add_hook(site, _recorder(calls)("p"))
    with model._registry.set_aside():
        model(toks)
    assert calls == []
    memory._TABLES.pop(model, None)  # the memory guard probes the model's shapes again on the next cache
    model.run_with_cache(toks, names_filter=site, memory_budget="1GiB")
    assert calls == ["p"]
    model(toks)
    assert calls == ["p", "p"]


def test_hook_dict_and_hook_points(hk):
    model = hk.model
    toks = _tokens(model)
    hd = model.hook_dict
    assert list(hd) == model.site_names() and len(hd) == len(model.site_names())
    site = _site(model, 1)
    hp = hd[site]
    assert hp.name == site and hp.layer() == 1 and hp == hd[site] and site in hd and "nope" not in hd
    first = model.site_names()[0]
    with pytest.raises(ValueError, match="outside the blocks"):
        hd[first].layer()
    with pytest.raises(KeyError, match="Did you mean"):
        hd[site.replace("resid", "resi")]
    with pytest.raises(TypeError):
        hd[site] = hp
    calls: list[str] = []
    rec = _recorder(calls)
    a, b, c = rec("a"), rec("b"), rec("c")
    hp.add_hook(a)
    hp.add_hook(b, prepend=True)
    hp.add_perma_hook(c)
    hp.add_hook(a, dir="bwd")
    assert hp.fwd_hooks == (b, a, c) and hp.bwd_hooks == (a,)
    assert repr(hp) == f"HookPoint({site!r}, 3 fwd, 1 bwd)"
    with model.hooks([(site, a)]):
        assert hp.fwd_hooks == (b, a, c, a)
    model(toks)
    assert calls == ["b", "a", "c"]
    hp.remove_hooks()  # forward, non-permanent
    assert hp.fwd_hooks == (c,) and hp.bwd_hooks == (a,)
    hp.remove_hooks("both", including_permanent=True)
    assert hp.fwd_hooks == () and hp.bwd_hooks == () and repr(hp) == f"HookPoint({site!r})"
    assert not model._attached and hk.torch_hooks() == hk.baseline
    other = _site(model, 0)
    model.add_hook(other, a)
    hp.remove_hooks()  # another site's hooks stay
    assert hd[other].fwd_hooks == (a,)


def test_tl_style_hook_functions(hk):
    """``def fn(act, hook)`` using ``hook.name``, ``hook.layer()`` (TransformerLens) and ``hook.layer``, and a
    per-site ``hook.ctx`` kept across passes."""
    model = hk.model
    toks = _tokens(model)
    sites = [model.components(layer)["resid_pre"] for layer in range(model.n_layers)]
    seen = []

    def fn(act, hook):
        seen.append((hook.name, hook.layer(), hook.layer, isinstance(hook.layer, int)))
        hook.ctx["n"] = hook.ctx.get("n", 0) + 1

    def outside(act, hook):
        seen.append((hook.name, hook.layer))

    model.add_hook(lambda n: n in sites, fn)
    first = model.site_names()[0]
    model.add_hook(first, outside)
    model(toks)
    model(toks)
    assert seen[:3] == [(first, None)] + [(s, i, i, True) for i, s in enumerate(sites)]
    assert [model.hook_dict[s].ctx for s in sites] == [{"n": 2}] * len(sites)  # one scratch space per site
    model.add_perma_hook(sites[0], fn)
    model.reset_hooks()  # clear_contexts=True: the scratch goes, the permanent hook stays
    model(toks)
    assert [model.hook_dict[s].ctx for s in sites] == [{"n": 1}] + [{}] * (len(sites) - 1)
    model.reset_hooks(clear_contexts=False, including_permanent=True)
    assert model._registry._ctx == {}  # no hook left at all: the scratch goes too


def test_bad_arguments_name_the_argument(hk):
    model, site = hk.model, _site(hk.model)
    fn = lambda a, hook: None  # noqa: E731
    with pytest.raises(ValueError, match=r"dir must be one of 'fwd', 'bwd'; got 'forward'"):
        model.add_hook(site, fn, dir="forward")
    with pytest.raises(KeyError, match=r"unknown hook site .*Did you mean"):
        model.add_hook(site[:-1], fn)
    with pytest.raises(KeyError, match="out of range"):
        model.add_hook(f"blocks.{model.n_layers}.hook_resid_pre", fn)
    with pytest.raises(TypeError, match=r"hook must be a function fn\(act, \*, hook\); got int"):
        model.add_hook(site, 3)
    with pytest.raises(TypeError, match="name must be a site name"):
        model.add_hook(3, fn)
    with pytest.raises(TypeError, match="is_permanent must be True or False"):
        model.add_hook(site, fn, is_permanent="yes")
    with pytest.raises(TypeError, match="level must be an int or None"):
        model.add_hook(site, fn, level="top")
    with pytest.raises(ValueError, match=r"direction must be one of 'fwd', 'bwd', 'both'"):
        model.reset_hooks(direction="up")
    with pytest.raises(ValueError, match=r"dir must be one of 'fwd', 'bwd', 'both'"):
        model.hook_dict[site].remove_hooks("sideways")
    with pytest.raises(TypeError, match="reset_hooks_end must be True or False"):
        with model.hooks([(site, fn)], reset_hooks_end=None):
            pass
    with pytest.raises(TypeError, match="backward hooks must outlive the forward pass; pass reset_hooks_end=False"):
        model.run_with_hooks(_tokens(model), bwd_hooks=[(site, fn)])
    assert not model._registry and not model._attached


def test_two_wrappers_do_not_see_each_others_persistent_hooks(tiny_dir):
    hf = transformers.AutoModelForCausalLM.from_pretrained(tiny_dir("llama")).eval()
    w1, w2 = interp.wrap(hf), interp.wrap(hf)
    tokens = torch.randint(4, 100, (1, 6))
    clean = w1(tokens)
    site = "blocks.1.attn.hook_pattern"
    uniform = lambda p, hook: torch.tril(torch.ones_like(p)) / torch.arange(1, p.shape[-1] + 1).view(-1, 1)  # noqa: E731
    patched = w1.run_with_hooks(tokens, fwd_hooks=[(site, uniform)])
    calls: list[str] = []
    rec = _recorder(calls)
    w1.add_hook(site, uniform)
    w1.add_hook("blocks.0.hook_resid_post", rec("w1"))
    w2.add_hook("blocks.0.hook_resid_post", rec("w2"))
    torch.testing.assert_close(w2(tokens), clean)
    assert calls == ["w2"]
    calls.clear()
    torch.testing.assert_close(w1(tokens), patched)
    assert calls == ["w1"]
    calls.clear()
    w2.generate(tokens, max_new_tokens=2, stop_at_eos=False)
    assert calls == ["w2", "w2"]
    calls.clear()
    w2.record_prefix(tokens)
    w2.run_with_cache(tokens, names_filter="blocks.0.hook_resid_post")
    assert calls == ["w2", "w2"]
    w1.reset_hooks()
    w2.reset_hooks()
    hooks_left = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in hf.modules())
    assert hooks_left == 0 and not w1._attached and not w2._attached
    torch.testing.assert_close(w2(tokens), clean)
