"""splice(): reconstruction in place of the activation, latents as hook sites, the error term, several SAEs,
transcoders in place of the MLP; on transformers and Mamba, against plain hook references."""

from __future__ import annotations

import pytest
import torch

import interp
from interp.saes import SAEMetadata, SiteMismatchError, TopKSAE, TopKTranscoder, latent_site_name, splice

KINDS = ["llama", "gpt2", "mamba", "mamba2"]


@pytest.fixture(scope="module", params=KINDS)
def model(request, tiny_dir):
    return interp.load_model(str(tiny_dir(request.param)))


def _tokens(seed=0, b=3, t=11):
    return torch.randint(4, 100, (b, t), generator=torch.Generator().manual_seed(seed))


def _sae(model, site, d_sae=40, k=5, seed=0):
    torch.manual_seed(seed)
    width = interp.saes.store.site_activations(model, site, _tokens()[:1, :2]).shape[-1]
    sae = TopKSAE(width, d_sae, k=k)
    with torch.no_grad():
        sae.b_dec.normal_(std=0.1)
    sae.metadata = SAEMetadata(hook_name=site)
    return sae


def _sites(model):
    inner = model.components(1)["mlp_out" if model.has_mlp else "out"]
    return ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_post", inner]


def _reference(model, toks, pairs, edit=None, error_term=False):
    """Plain hooks: each site's activation replaced by decode(edit(encode(x))) (+ x - decode(encode(x)))."""
    def make(sae):
        def hook(act, *, hook):
            x = act.reshape(*act.shape[:2], -1)
            z = sae.encode(x)
            out = sae.decode(edit(z) if edit else z)
            if error_term:
                out = out + (x - sae.decode(z))
            return out.reshape(act.shape)
        return hook
    return model.run_with_hooks(toks, fwd_hooks=[(site, make(sae)) for site, sae in pairs])


@torch.no_grad()
def test_splice_replaces_each_site_by_its_reconstruction(model):
    toks = _tokens()
    for site in _sites(model):
        sae = _sae(model, site)
        with splice(model, sae) as names:
            ours = model(toks)
        assert names == {site: latent_site_name(site)}
        torch.testing.assert_close(ours, _reference(model, toks, [(site, sae)]), rtol=0, atol=1e-6)
        assert (ours - model(toks)).abs().max() > 1e-3  # the SAE is far from exact: the splice changed the output


@torch.no_grad()
def test_error_term_gives_the_exact_forward_and_latents_are_hook_sites(model):
    toks = _tokens(1)
    clean = model(toks)
    for site in _sites(model):
        sae = _sae(model, site)
        name = latent_site_name(site)
        with splice(model, sae, error_term=True):
            assert torch.equal(model(toks), clean)
            _, cache = model.run_with_cache(toks, names_filter=[site, name])
            x = interp.saes.store.site_activations(model, site, toks)
            torch.testing.assert_close(cache[name], sae.encode(x), rtol=0, atol=0)
            assert name in model.site_names()

            def ablate(z, *, hook):
                z = z.clone()
                z[..., 3] = 0
                return z

            edited = model.run_with_hooks(toks, fwd_hooks=[(name, ablate)])
        ref = _reference(model, toks, [(site, sae)], edit=lambda z: ablate(z, hook=None), error_term=True)
        torch.testing.assert_close(edited, ref, rtol=0, atol=1e-5)
        with pytest.raises(KeyError, match="unknown hook site"):  # gone after the block
            model.check_site(name)


def test_latent_gradients_flow_through_the_decoder(model):
    site = _sites(model)[1]
    sae = _sae(model, site)
    name = latent_site_name(site)
    toks = _tokens(2)
    grads = {}

    def keep(g, *, hook):
        grads[hook.name] = g

    with splice(model, sae, error_term=True):
        with model.hooks(bwd_hooks=[(name, keep), (site, keep)]):
            model(toks, return_type="loss").backward()
    torch.testing.assert_close(grads[name], grads[site] @ sae.W_dec.detach().T, rtol=1e-5, atol=1e-6)
    model.zero_grad(set_to_none=True)


@torch.no_grad()
def test_several_saes_at_once_and_nesting(model):
    toks = _tokens(3)
    s1, s2 = _sites(model)[0], _sites(model)[2]
    a, b = _sae(model, s1, seed=1), _sae(model, s2, seed=2)
    ref = _reference(model, toks, [(s1, a), (s2, b)])
    with splice(model, [a, b]) as names:
        torch.testing.assert_close(model(toks), ref, rtol=0, atol=1e-6)
    assert set(names) == {s1, s2}
    with splice(model, {s1: a, s2: b}):
        torch.testing.assert_close(model(toks), ref, rtol=0, atol=1e-6)
    ref_a = _reference(model, toks, [(s1, a)])
    with splice(model, a):
        with splice(model, b):
            torch.testing.assert_close(model(toks), ref, rtol=0, atol=1e-6)
        torch.testing.assert_close(model(toks), ref_a, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="two SAEs replace the same site"):
        with splice(model, [a, _sae(model, s1, seed=3)]):
            pass
    with pytest.raises(ValueError, match="already exists"):
        with splice(model, a), splice(model, a):
            pass


@torch.no_grad()
def test_start_at_layer_runs_fire_the_latents(model):
    site = "blocks.1.hook_resid_pre"
    sae = _sae(model, site)
    toks = _tokens(4)
    resid = model(toks, stop_at_layer=1)
    with splice(model, sae):
        full = model(toks)
        part, cache = model.run_with_cache(resid, names_filter=[latent_site_name(site)], start_at_layer=1)
    torch.testing.assert_close(part, full, rtol=0, atol=1e-5)
    torch.testing.assert_close(cache[latent_site_name(site)], sae.encode(resid), rtol=0, atol=1e-6)


@torch.no_grad()
def test_transcoder_in_place_of_the_mlp(tiny_dir):
    model = interp.load_model(str(tiny_dir("llama")))
    c = model.components(1)
    torch.manual_seed(0)
    tc = TopKTranscoder(model.d_model, 48, k=6, d_out=model.d_model)
    tc.metadata = SAEMetadata(hook_name=c["ln2"], hook_name_out=c["mlp_out"])
    toks = _tokens(5)
    clean = model(toks)

    def record(act, *, hook):
        record.x = act

    def replace(act, *, hook):
        return tc(record.x).x_hat

    ref = model.run_with_hooks(toks, fwd_hooks=[(c["ln2"], record), (c["mlp_out"], replace)])
    with splice(model, tc) as names:
        torch.testing.assert_close(model(toks), ref, rtol=0, atol=1e-6)
    assert names == {c["mlp_out"]: latent_site_name(c["mlp_out"])}
    with splice(model, tc, error_term=True):
        assert torch.equal(model(toks), clean)
    with pytest.raises(SiteMismatchError, match="transcoder"):
        with splice(model, tc, (c["ln2"], c["attn_out"])):
            pass
    with pytest.raises(ValueError, match="comes after its output site"):
        with splice(model, tc, (c["mlp_out"], c["ln2"]), allow_site_mismatch=True):
            pass


def test_bad_input(tiny_dir):
    model = interp.load_model(str(tiny_dir("llama")))
    site = "blocks.0.hook_resid_post"
    sae = TopKSAE(32, 64, k=4)
    sae.metadata = SAEMetadata(hook_name=site)
    with splice(model, sae):
        with pytest.raises(ValueError, match=r"splice: the SAE's d_in is 32 but site 'blocks.0.hook_resid_post' has "
                                             r"width 64"):
            model(_tokens())
    with pytest.raises(KeyError, match="unknown hook site"):
        with splice(model, sae, "blocks.0.hook_resid_postt", allow_site_mismatch=True):
            pass
    with pytest.raises(SiteMismatchError, match="'blocks.1.hook_resid_post' is not the site"):
        with splice(model, sae, "blocks.1.hook_resid_post"):
            pass
    with pytest.raises(TypeError, match="sae must be an SAE"):
        with splice(model, "not an sae"):
            pass
    with pytest.raises(ValueError, match="records no site"):
        with splice(model, TopKSAE(64, 128, k=4)):
            pass
    assert not model._registry and model.site_names() == interp.load_model(str(tiny_dir("llama"))).site_names()


@pytest.mark.filterwarnings("ignore:HookedTransformer is deprecated")
def test_transformerlens_model(tiny_dir):
    """A wrapped TransformerLens HookedTransformer: its sites attach to TL hook points, the latents site does not."""
    import transformers
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=2, d_model=32, n_ctx=64, d_head=8, n_heads=4, d_vocab=128, act_fn="gelu",
                                  normalization_type="LN", seed=0)
    model = interp.wrap(HookedTransformer(cfg, tokenizer=transformers.AutoTokenizer.from_pretrained(
        tiny_dir("llama"))).eval())
    toks = _tokens(6)
    for site in ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"]:
        sae = _sae(model, site, d_sae=24, k=3)
        with torch.no_grad():
            clean = model(toks)
            with splice(model, sae, error_term=True):
                assert torch.equal(model(toks), clean)
                _, cache = model.run_with_cache(toks, names_filter=latent_site_name(site))
            assert cache[latent_site_name(site)].shape == (3, 11, 24)
            with splice(model, sae):
                ours = model(toks)
            torch.testing.assert_close(ours, _reference(model, toks, [(site, sae)]), rtol=0, atol=1e-5)
            fast = interp.saes.evaluate(sae, model, tokens=toks, progress=False)
            slow = interp.saes.evaluate(sae, model, tokens=toks, reuse_prefix=False, progress=False)
        assert fast.ce_spliced == pytest.approx(slow.ce_spliced, rel=1e-6)
