"""TransformerLens's own hook tests (``tests/integration/test_hooks.py`` of TransformerLens 3.x), ported to every model
kind, and the same sequence of hook calls on a TransformerLens model and on its wrapper firing the same hooks."""

import pytest
import torch


class Counter:
    def __init__(self):
        self.count = 0

    def inc(self, *args, **kwargs):
        self.count += 1


def _tokens(model, b=1, t=5):
    return torch.arange(4, 4 + b * t).view(b, t) % model.d_vocab


@pytest.fixture
def m(kind):
    model = kind.model
    baseline = kind.torch_hooks()
    yield model
    model.remove_all_hook_fns(including_permanent=True)
    assert not model._registry and not model._attached and kind.torch_hooks() == baseline


def _embed(model):
    """TransformerLens's tests hook ``hook_embed``; every kind has it (a bridge lists ``embed.hook_in`` first)."""
    assert "hook_embed" in model.hook_dict
    return lambda name: name == "hook_embed"


def test_hook_attaches_normally(m):
    c = Counter()
    m.run_with_hooks(_tokens(m), fwd_hooks=[(_embed(m), c.inc)])
    assert all(len(hp.fwd_hooks) == 0 for hp in m.hook_dict.values())
    assert c.count == 1


def test_perma_hook_attaches_normally(m):
    c = Counter()
    m.add_perma_hook(_embed(m), c.inc)
    assert len(m.hook_dict["hook_embed"].fwd_hooks) == 1
    m.run_with_hooks(_tokens(m), fwd_hooks=[])
    assert len(m.hook_dict["hook_embed"].fwd_hooks) == 1
    assert c.count == 1


def test_hook_context_manager(m):
    c = Counter()
    with m.hooks(fwd_hooks=[(_embed(m), c.inc)]):
        assert len(m.hook_dict["hook_embed"].fwd_hooks) == 1
        m.forward(_tokens(m))
    assert len(m.hook_dict["hook_embed"].fwd_hooks) == 0
    assert c.count == 1


def test_nested_hook_context_manager(m):
    c = Counter()
    with m.hooks(fwd_hooks=[(_embed(m), c.inc)]):
        assert len(m.hook_dict["hook_embed"].fwd_hooks) == 1
        m.forward(_tokens(m))
        assert c.count == 1
        with m.hooks(fwd_hooks=[(_embed(m), c.inc)]):
            assert len(m.hook_dict["hook_embed"].fwd_hooks) == 2
            m.forward(_tokens(m))
            assert c.count == 3
        assert len(m.hook_dict["hook_embed"].fwd_hooks) == 1
    assert len(m.hook_dict["hook_embed"].fwd_hooks) == 0
    assert c.count == 3


def test_context_manager_run_with_cache(m):
    c = Counter()
    with m.hooks(fwd_hooks=[(_embed(m), c.inc)]):
        assert len(m.hook_dict["hook_embed"].fwd_hooks) == 1
        m.run_with_cache(_tokens(m))
        assert len(m.hook_dict["hook_embed"].fwd_hooks) == 1
    assert len(m.hook_dict["hook_embed"].fwd_hooks) == 0
    assert c.count == 1


@pytest.mark.parametrize("returns", ["tuple", "tensor", "none"])
def test_backward_hook_runs_successfully(m, returns):
    c = Counter()
    site = m.components(0)["resid_post"]

    def hook(grad, hook):
        c.inc()
        return {"tuple": (grad,), "tensor": grad, "none": None}[returns]

    with m.hooks(bwd_hooks=[(site, hook)]):
        assert len(m.hook_dict[site].bwd_hooks) == 1
        out = m(_tokens(m))
        assert c.count == 0
        out.sum().backward()
        assert len(m.hook_dict[site].bwd_hooks) == 1
    assert len(m.hook_dict[site].bwd_hooks) == 0
    assert c.count == 1
    m.zero_grad(set_to_none=True)


def test_hook_context_manager_with_permanent_hook(m):
    c = Counter()
    m.add_perma_hook(_embed(m), c.inc)
    assert len(m.hook_dict["hook_embed"].fwd_hooks) == 1
    with m.hooks(fwd_hooks=[(_embed(m), c.inc)]):
        assert len(m.hook_dict["hook_embed"].fwd_hooks) == 2
        m.forward(_tokens(m))
    assert len(m.hook_dict["hook_embed"].fwd_hooks) == 1
    assert c.count == 2


def test_nested_context_manager_with_failure(m):
    def fail_hook(z, hook):
        raise ValueError("fail")

    c = Counter()
    with m.hooks(fwd_hooks=[(_embed(m), c.inc)]):
        with pytest.raises(ValueError):
            with m.hooks(fwd_hooks=[(_embed(m), fail_hook)]):
                assert len(m.hook_dict["hook_embed"].fwd_hooks) == 2
                m.forward(_tokens(m))
        assert len(m.hook_dict["hook_embed"].fwd_hooks) == 1
        assert c.count == 1
    assert len(m.hook_dict["hook_embed"].fwd_hooks) == 0


def test_reset_hooks_in_context_manager(m):
    """A deliberate difference: TransformerLens's reset_hooks() also removes the open block's hooks (its test
    expects 0 inside the block); here they stay until the block exits."""
    c = Counter()
    with m.hooks(fwd_hooks=[(_embed(m), c.inc)]):
        assert len(m.hook_dict["hook_embed"].fwd_hooks) == 1
        m.reset_hooks()
        assert len(m.hook_dict["hook_embed"].fwd_hooks) == 1
        m.forward(_tokens(m))
    assert len(m.hook_dict["hook_embed"].fwd_hooks) == 0
    assert c.count == 1


def test_remove_hook(m):
    c = Counter()
    m.add_perma_hook(_embed(m), c.inc)
    assert len(m.hook_dict["hook_embed"].fwd_hooks) == 1
    m.remove_all_hook_fns()
    assert len(m.hook_dict["hook_embed"].fwd_hooks) == 1  # permanent: not removed without the flag
    m.remove_all_hook_fns(including_permanent=True)
    assert len(m.hook_dict["hook_embed"].fwd_hooks) == 0
    m.run_with_hooks(_tokens(m), fwd_hooks=[])
    assert c.count == 0


@pytest.mark.parametrize("zero_attach_pos,prepend", [(z, p) for z in range(2) for p in (True, False)])
def test_prepending_hooks(m, zero_attach_pos, prepend):
    """Two hooks at one site, one zeroing the activation, one replacing it by noise: the site ends up zero exactly
    when the zeroing hook runs last (attached last XOR prepended). TransformerLens reads the logits (its unembedding
    bias); here the cache, which records the site after its hooks."""
    site = m.components(0)["resid_post"]

    def set_to_zero(z, hook):
        z[:] = 0.0
        return z

    def set_to_randn(z, hook):
        return torch.randn_like(z) * 0.1 + 1

    m.reset_hooks()
    for hook_idx in range(2):
        m.add_hook(site, set_to_zero if hook_idx == zero_attach_pos else set_to_randn, prepend=prepend)
    _, cache = m.run_with_cache(_tokens(m), names_filter=site)
    zero_last = (zero_attach_pos == 1) != prepend
    assert bool((cache[site] == 0).all()) == zero_last


def test_same_calls_fire_the_same_hooks_as_transformer_lens(_kinds):
    """One script of add_hook / hooks / reset_hooks / hook_dict calls, run on the TransformerLens model itself and
    on its wrapper: the same hooks fire in the same order at every step."""
    model = _kinds("hooked_transformer").model
    tl = model.tl_model
    sites = [model.components(0)["resid_pre"], model.components(1)["resid_post"]]
    tokens = _tokens(model, 2, 6)

    def script(obj) -> list[list[tuple[str, str]]]:
        log: list[tuple[str, str]] = []
        steps: list[list[tuple[str, str]]] = []

        def make(tag):
            return lambda act, hook: log.append((tag, hook.name))

        def run():
            log.clear()
            obj(tokens)
            steps.append(list(log))

        obj.add_hook(sites[0], make("a"))
        obj.add_hook(sites[0], make("b"), prepend=True)
        obj.add_hook(lambda n: n in sites, make("perm"), is_permanent=True)
        obj.add_hook(sites[1], make("lvl"), level=3)
        run()
        obj.reset_hooks(level=3)
        run()
        with obj.hooks(fwd_hooks=[(sites[1], make("ctx"))]):
            run()
        with obj.hooks(fwd_hooks=[(sites[0], make("kept"))], reset_hooks_end=False):
            pass
        run()
        obj.remove_all_hook_fns()
        run()
        obj.hook_dict[sites[1]].add_hook(make("hp"), prepend=True)
        obj.hook_dict[sites[0]].add_hook(make("hp0"))
        run()
        obj.hook_dict[sites[1]].remove_hooks()
        run()
        obj.reset_hooks(including_permanent=True)
        run()
        return steps

    theirs = script(tl)
    ours = script(model)
    assert ours == theirs
    assert theirs[0] == [("b", sites[0]), ("a", sites[0]), ("perm", sites[0]), ("perm", sites[1]), ("lvl", sites[1])]
    assert theirs[-1] == []
    assert not model._registry and not model._attached


def test_transformer_lens_differs_on_reset_inside_a_block(_kinds):
    """The difference test_reset_hooks_in_context_manager documents, checked on TransformerLens itself."""
    model = _kinds("hooked_transformer").model
    tl, c = model.tl_model, Counter()
    with tl.hooks(fwd_hooks=[("hook_embed", c.inc)]), model.hooks(fwd_hooks=[("hook_embed", c.inc)]):
        tl.reset_hooks()
        model.reset_hooks()
        assert len(tl.hook_dict["hook_embed"].fwd_hooks) == 0  # TransformerLens: the block's hook is gone
        assert len(model.hook_dict["hook_embed"].fwd_hooks) == 1  # here: it stays until the block exits
        model(_tokens(model))
    assert c.count == 1
    assert not model._registry and not model._attached
