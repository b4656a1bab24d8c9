"""Gradients through hooks on every model kind: ``run_with_cache(grad=True)`` and backward hooks."""

import pytest
import torch


def _grad_sites(model):
    comps = model.components(model.n_layers - 1)
    sites = [model.components(0)["resid_post"]]
    if model.has_attention_heads:
        sites += [comps["z"], comps["result"]] if "result" in comps else [comps["z"]]
    if model.has_ssm_state:
        sites += [comps["y"], comps["mixer_out"], comps["ssm_state"]]
    return sites


def _loss(logits):
    return logits[:, -1].log_softmax(-1)[:, 5].sum() + logits[:, 2, 7].sum()


def _reference_grads(model, tokens, sites):
    """dL/d(site) via a zero tensor added at each site (independent of the backward-hook machinery)."""
    deltas = {}

    def add_delta(act, hook):
        d = torch.zeros_like(act, requires_grad=True)
        deltas[hook.name] = d
        return act + d

    with model.hooks([(s, add_delta) for s in sites]):
        loss = _loss(model(tokens))
    grads = torch.autograd.grad(loss, [deltas[s] for s in sites])
    return dict(zip(sites, grads))


def test_backward_hooks_see_the_gradient(kind):
    model = kind.model
    tokens = torch.randint(4, 100, (2, 6))
    sites = _grad_sites(model)
    ref = _reference_grads(model, tokens, sites)
    seen: dict = {}
    before = kind.torch_hooks()
    with model.hooks(bwd_hooks=[(s, lambda g, hook: seen.__setitem__(hook.name, g.clone())) for s in sites]):
        _loss(model(tokens)).backward()
    model.zero_grad(set_to_none=True)
    assert set(seen) == set(sites)
    for s in sites:
        torch.testing.assert_close(seen[s], ref[s], atol=1e-5, rtol=1e-4)
    assert not model._registry and kind.torch_hooks() == before


def test_run_with_cache_grad_keeps_activations_in_the_graph(kind):
    model = kind.model
    tokens = torch.randint(4, 100, (2, 6))
    sites = _grad_sites(model)
    ref = _reference_grads(model, tokens, sites)
    logits, cache = model.run_with_cache(tokens, names_filter=sites, grad=True)
    grads = torch.autograd.grad(_loss(logits), [cache[s] for s in sites])
    for s, g in zip(sites, grads):
        torch.testing.assert_close(g, ref[s], atol=1e-5, rtol=1e-4)
    _, detached = model.run_with_cache(tokens, names_filter=sites)
    assert not any(t.requires_grad for t in detached.values())


def test_backward_hook_may_replace_the_gradient(kind):
    model = kind.model
    tokens = torch.randint(4, 100, (1, 5))
    last, first = model.components(model.n_layers - 1)["resid_post"], model.components(0)["resid_pre"]
    seen = {}
    with model.hooks(bwd_hooks=[(last, lambda g, hook: torch.zeros_like(g)),
                                (first, lambda g, hook: seen.__setitem__("g", g.clone()))]):
        _loss(model(tokens)).backward()
    model.zero_grad(set_to_none=True)
    assert seen["g"].abs().max() == 0  # everything upstream of the zeroed gradient is zero


def test_backward_hooks_need_gradients(kind):
    model = kind.model
    site = model.components(0)["resid_post"]
    with pytest.raises(RuntimeError, match="backward hook.*no_grad"):
        with torch.no_grad(), model.hooks(bwd_hooks=[(site, lambda g, hook: None)]):
            model(torch.randint(4, 100, (1, 5)))
    assert not model._registry
