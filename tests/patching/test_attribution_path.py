"""Attribution patching (Nanda 2023) and path patching (Wang et al. 2022)."""

import pytest
import torch

import interp
from interp import patching


@pytest.fixture(scope="module")
def f64(tiny_dir):
    return {"llama": interp.load_model(tiny_dir("llama", seed=1, initializer_range=0.3), dtype=torch.float64)}


def _finite_difference(model, clean, corrupt, metric, name, cell, eps=1e-3):
    """d metric / d t of the corrupted run with the cell moved t of the way to its clean value, at t = 0 (central
    difference; the models compute their norms in float32, so eps cannot be tiny)."""
    _, cache = model.run_with_cache(clean, names_filter=[name])

    def moved(t):
        def hook(act, hook):
            act = act.clone()
            act[cell] = act[cell] + t * (cache[name][cell] - act[cell])
            return act
        return metric(model.run_with_hooks(corrupt, fwd_hooks=[(name, hook)])).mean()

    return float((moved(eps) - moved(-eps)) / (2 * eps))


@pytest.mark.parametrize("arch,site", [("llama", "resid"), ("llama", "heads"), ("llama", "heads_by_pos"),
                                       ("llama", "pattern_by_dest"), ("llama", "mlp_out"), ("mamba2", "resid"),
                                       ("mamba2", "ssm_state"), ("mamba2", "conv")])
def test_attribution_is_the_first_order_change(tiny, prompt_pair, arch, site):
    model = tiny(arch)
    clean, corrupt = prompt_pair()
    metric = patching.logit_diff(torch.tensor([5, 6]), torch.tensor([7, 8]))
    attr = patching.attribution_patch(model, clean, corrupt, metric, sites=site)[site]
    kind = patching.SITES[site]
    all_ = slice(None)
    for flat in attr.abs().flatten().argsort(descending=True)[:2].tolist():  # the two largest cells
        out_cell = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), attr.shape))
        layer, rest = out_cell[0], out_cell[1:]
        act_cell = {("layer", "pos"): (all_, *rest), ("layer", "pos", "head"): (all_, *rest),
                    ("layer", "head"): (all_, all_, *rest), ("layer", "head", "dest"): (all_, *rest)}[kind.axes]
        ref = _finite_difference(model, clean, corrupt, metric, model.components(layer)[kind.role], act_cell)
        assert abs(float(attr[out_cell]) - ref) < 2e-2 * abs(ref) + 1e-3, (site, out_cell, attr[out_cell], ref)
        assert abs(ref) > 1e-2  # a cell the metric depends on
    assert attr.shape == patching.patch_activations(model, clean, corrupt, metric, site, progress=False).shape


def test_attribution_correlates_with_exact_patching(tiny_dir, prompt_pair):
    """On a small-weight tiny Llama the sublayer outputs are nearly linear in their patches (r >= 0.9); the residual
    stream is not (patching it at layer 0 swaps a token's embedding wholesale): r there is reported, not required."""
    model = interp.load_model(tiny_dir("llama"))
    clean, corrupt = prompt_pair(n=4)
    metric = patching.logit_diff(5, 6)
    base = float(metric(model(corrupt)).mean())
    sites = ["attn_out", "mlp_out", "heads"]
    attr = patching.attribution_patch(model, clean, corrupt, metric, sites=sites)
    assert set(attr) == set(sites)
    for site in sites:
        exact = patching.patch_activations(model, clean, corrupt, metric, site, progress=False) - base
        r = torch.corrcoef(torch.stack([attr[site].flatten(), exact.flatten()]))[0, 1]
        assert r > 0.88, (site, r)
    torch.testing.assert_close(
        patching.attribution_patch(model, clean, corrupt, metric, sites="heads", batch_size=1)["heads"],
        attr["heads"], atol=1e-6, rtol=1e-4)


def test_path_patch_equals_the_hand_computed_path(f64, prompt_pair):
    """Sender head (0, 1) -> receivers: layer 1's values. With every other head and the MLPs frozen, layer 1's input
    is the clean one plus the sender's change times its W_O, and the values follow from W_V."""
    model = f64["llama"]
    clean, corrupt = prompt_pair()
    metric = patching.logit_diff(torch.tensor([5, 6]), torch.tensor([7, 8]))
    z0, v1, pre1 = "blocks.0.attn.hook_z", "blocks.1.attn.hook_v", "blocks.1.hook_resid_pre"
    _, c = model.run_with_cache(clean, names_filter=[z0, pre1, v1])
    _, k = model.run_with_cache(corrupt, names_filter=[z0])
    resid = c[pre1] + (k[z0][:, :, 1] - c[z0][:, :, 1]) @ model.W_O[0, 1]
    group = model.n_heads // model.n_kv_heads
    w_v, b_v = model.W_V[1, ::group], model.b_V[1, ::group]  # kv heads
    v = torch.einsum("bpd,kde->bpke", model.apply_ln1(1, resid), w_v) + b_v
    expected = metric(model.run_with_hooks(clean, fwd_hooks=[(v1, lambda act, hook: v)])).mean()
    got = patching.path_patch(model, clean, corrupt, metric, senders=[(0, 1)], receivers=[v1])
    torch.testing.assert_close(got, expected)
    assert abs(float(expected - metric(model(clean)).mean())) > 1e-3  # the path matters
    # only one kv head of the receiver: the other keeps its clean values
    one = patching.path_patch(model, clean, corrupt, metric, senders=[(0, 1)], receivers=[(v1, 0)])
    v_one = c[v1].clone()
    v_one[:, :, 0] = v[:, :, 0]
    torch.testing.assert_close(one, metric(model.run_with_hooks(clean, fwd_hooks=[(v1, lambda a, hook: v_one)])).mean())
    # straight to the logits: the direct effect through the final residual stream
    post = "blocks.1.hook_resid_post"
    _, c2 = model.run_with_cache(clean, names_filter=[post])
    final = c2[post] + (k[z0][:, :, 1] - c[z0][:, :, 1]) @ model.W_O[0, 1]
    direct = metric(model.apply_ln_final(final) @ model.W_U + model.b_U).mean()
    torch.testing.assert_close(patching.path_patch(model, clean, corrupt, metric, [(0, 1)], [post]), direct)


def test_path_patch_bad_input(f64, tiny, prompt_pair):
    model = f64["llama"]
    clean, corrupt = prompt_pair()
    metric = patching.logit_diff(5, 6)
    with pytest.raises(ValueError, match="senders is empty"):
        patching.path_patch(model, clean, corrupt, metric, senders=[], receivers=["blocks.1.hook_resid_pre"])
    with pytest.raises(IndexError, match="head 9 is out of range"):
        patching.path_patch(model, clean, corrupt, metric, senders=[(0, 9)], receivers=["blocks.1.hook_resid_pre"])
    with pytest.raises(KeyError, match="unknown hook site"):
        patching.path_patch(model, clean, corrupt, metric, senders=[(0, 1)], receivers=["blocks.1.hook_nothing"])
    with pytest.raises(interp.CapabilityError, match="no attention heads"):
        patching.path_patch(tiny("mamba"), clean, corrupt, metric, senders=[(0, 1)],
                            receivers=["blocks.1.hook_resid_pre"])
