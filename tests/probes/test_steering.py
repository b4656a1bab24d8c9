"""Interventions along a direction through the hook layer: add / subtract / project out at a site, in a forward
pass and in greedy generation; the coefficient sweep; direction sources (probe, vector, SAE decoder row)."""

import pytest
import torch

import interp
from interp.probes import LinearProbe, MassMeanProbe, sae_direction, steer, steering_curve
from interp.probes.steering import generate_steered, steering_hook, token_prob_metric

SITE = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def llama(tiny_dir):
    return interp.load_model(str(tiny_dir("llama")))


def _after(model, tokens, fwd_hooks=()):
    _, cache = model.run_with_cache(tokens, [SITE], fwd_hooks=fwd_hooks)
    return cache[SITE]


@pytest.mark.parametrize("mode", ["add", "subtract", "project"])
def test_modes_change_the_site_as_stated(llama, mode):
    tokens = llama.to_tokens("hello there")
    g = torch.Generator().manual_seed(0)
    v = torch.randn(llama.d_model, generator=g)
    u = v / v.norm()
    clean = _after(llama, tokens)
    with steer(llama, SITE, v, 0.7, mode=mode):
        moved = _after(llama, tokens)
        logits = llama(tokens)
    expected = {"add": clean + 0.7 * u, "subtract": clean - 0.7 * u,
                "project": clean - 0.7 * (clean @ u)[..., None] * u}[mode]
    torch.testing.assert_close(moved, expected, rtol=1e-5, atol=1e-6)
    if mode == "project":
        with steer(llama, SITE, v, 1.0, mode="project"):
            assert float((_after(llama, tokens) @ u).abs().max()) < 1e-5
    # the change propagates: the same as patching the site by hand
    ref = llama.run_with_hooks(tokens, [(SITE, lambda a, hook: expected)])
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(_after(llama, tokens), clean)  # gone after the block


def test_positions_and_unnormalised_vectors(llama):
    tokens = llama.to_tokens("abcd")
    v = torch.zeros(llama.d_model)
    v[3] = 2.0
    clean = _after(llama, tokens)
    moved = _after(llama, tokens, [(SITE, steering_hook(v, 1.5, positions=[-1], normalize=False))])
    delta = moved - clean
    assert float(delta[:, :-1].abs().max()) == 0.0
    assert float(delta[0, -1, 3]) == pytest.approx(3.0)


def test_generation_sees_the_steering(llama):
    prompt = "ab"
    plain = llama.generate(prompt, 6, stop_at_eos=False)
    probe_dir = llama.W_U[:, llama.to_single_token("z")]          # push towards "z" at the last residual
    last = f"blocks.{llama.n_layers - 1}.hook_resid_post"
    with steer(llama, last, probe_dir, 50.0):
        pushed = llama.generate(prompt, 6, stop_at_eos=False)
    assert not torch.equal(plain, pushed)
    assert (pushed[0, -6:] == llama.to_single_token("z")).float().mean() > 0.5
    texts = generate_steered(llama, prompt, last, probe_dir, [0.0, 50.0], max_new_tokens=6)
    assert texts[0.0] == llama.to_string(plain[0, -6:]) and texts[50.0].count("z") >= 3


def test_steering_curve_and_directions(llama):
    last = f"blocks.{llama.n_layers - 1}.hook_resid_post"
    z = llama.to_single_token("z")
    direction = llama.W_U[:, z].clone()
    metric = token_prob_metric(llama, ["z"])
    curve = steering_curve(llama, ["ab", "hello", "q"], last, direction, [-20.0, 0.0, 20.0, 60.0], metric)
    assert curve.values.shape == (4, 3) and curve.site_norm > 0
    assert (curve.mean.diff() > 0).all()                           # more "z" the more we add
    plain = llama(llama.to_tokens("hello"))[0, -1].softmax(-1)[z].detach()
    assert float(curve.values[1, 1]) == pytest.approx(float(plain), rel=1e-5)
    assert "coefficient" in curve.plot().to_json() and curve.to_dict()["metric"].startswith("P(")
    # directions: probes (towards a class), SAE decoder rows, raw vectors
    X = torch.randn(200, 4)
    y = (X[:, 2] > 0).long()
    for probe in (LinearProbe.fit(X, y), MassMeanProbe.fit(X, y)):
        assert int(probe.direction().abs().argmax()) == 2 and probe.direction()[2] > 0
        torch.testing.assert_close(probe.direction(0), -probe.direction())

    class SAE:
        W_dec = torch.arange(12.0).view(3, 4)

    torch.testing.assert_close(sae_direction(SAE(), 1), torch.tensor([4.0, 5, 6, 7]))
    with pytest.raises(IndexError, match="latent must be"):
        sae_direction(SAE(), 3)


def test_bad_input(llama):
    with pytest.raises(ValueError, match="mode must be one of"):
        steering_hook(torch.ones(3), mode="scale")
    with pytest.raises(ValueError, match="the direction has 3 entries"):
        with steer(llama, SITE, torch.ones(3), 1.0):
            llama(llama.to_tokens("ab"))
    with pytest.raises(TypeError, match="direction must be"):
        with steer(llama, SITE, [1.0, 2.0]):
            pass
    with pytest.raises(ValueError, match="finite, non-zero"):
        with steer(llama, SITE, torch.zeros(llama.d_model)):
            pass
    with pytest.raises(KeyError, match="unknown hook site"):
        with steer(llama, "blocks.0.hook_resid_pots", torch.ones(llama.d_model)):
            pass
