"""evaluate(): reconstruction metrics against plain formulas, CE recovered / KL at the two ends, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import interp
from interp.saes import ReLUSAE, TopKSAE
from interp.saes.metrics import SAEEval, evaluate

SITE = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def llama(tiny_dir):
    return interp.load_model(str(tiny_dir("llama")))


@pytest.fixture(scope="module")
def tokens():
    g = torch.Generator().manual_seed(0)
    toks = torch.randint(4, 100, (6, 20), generator=g)
    toks[:, 0] = 1  # BOS
    toks[2, 15:] = 0  # pad
    return toks


@torch.no_grad()
def _identity_sae(d: int) -> ReLUSAE:
    """z = ReLU([x, -x]), x_hat = z[:d] - z[d:] = x exactly."""
    sae = ReLUSAE(d, 2 * d, l1_coefficient=1.0)
    eye = torch.eye(d)
    sae.W_enc.copy_(torch.cat([eye, -eye], 1))
    sae.W_dec.copy_(torch.cat([eye, -eye], 0))
    sae.b_enc.zero_()
    sae.b_dec.zero_()
    return sae


def test_perfect_sae_recovers_all_and_zero_sae_none(llama, tokens):
    ident = evaluate(_identity_sae(llama.d_model), llama, SITE, tokens, batch_size=4, progress=False)
    assert ident.ce_loss_recovered == pytest.approx(1.0, abs=1e-9)
    assert ident.kl_div == pytest.approx(0.0, abs=1e-12)
    assert ident.ce_spliced == pytest.approx(ident.ce_clean, abs=1e-12)
    assert ident.fvu == pytest.approx(0.0, abs=1e-12) and ident.mse == pytest.approx(0.0, abs=1e-12)
    assert ident.ce_zero_ablation > ident.ce_clean + 1e-3
    zero = _identity_sae(llama.d_model)
    with torch.no_grad():
        zero.W_dec.zero_()
    z = evaluate(zero, llama, SITE, tokens, batch_size=4, progress=False)
    assert z.ce_loss_recovered == pytest.approx(0.0, abs=1e-9)
    assert z.ce_spliced == pytest.approx(z.ce_zero_ablation, abs=1e-12) and z.kl_div > 0
    assert z.fvu > 1.0  # predicting zeros is worse than predicting the mean


def test_metrics_match_plain_formulas(llama, tokens):
    sae = TopKSAE(llama.d_model, 96, k=5)
    with torch.no_grad():
        sae.b_enc.normal_()
        sae.b_dec.normal_(std=0.1)
    res = evaluate(sae, llama, SITE, tokens, batch_size=4, progress=False)
    logits, cache = llama.run_with_cache(tokens, names_filter=[SITE])
    act = cache[SITE]
    keep = ~torch.isin(tokens, torch.tensor([0, 1, 2]))
    x = act[keep].double()
    with torch.no_grad():
        out = sae(act[keep])
    x_hat = out.x_hat.double()
    assert res.n_tokens == int(keep.sum())
    assert res.l0 == pytest.approx(float((out.latents != 0).sum(-1).double().mean()), rel=1e-9)
    assert res.mse == pytest.approx(float((x - x_hat).pow(2).sum(-1).mean()), rel=1e-6)
    assert res.fvu == pytest.approx(float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()), rel=1e-6)
    fired = (out.latents != 0).sum(0)
    assert res.n_dead == int((fired == 0).sum()) and res.dead_fraction == res.n_dead / 96
    torch.testing.assert_close(res.density, (fired / keep.sum()).float())

    def splice(a, *, hook):
        new = a.clone()
        new[keep] = out.x_hat
        return new

    with torch.no_grad():
        spliced = llama.run_with_hooks(tokens, fwd_hooks=[(SITE, splice)])

    def ce(lg):
        return float(F.cross_entropy(lg[:, :-1].reshape(-1, lg.shape[-1]).double(), tokens[:, 1:].reshape(-1)))

    assert res.ce_clean == pytest.approx(ce(logits), rel=1e-9)
    assert res.ce_spliced == pytest.approx(ce(spliced), rel=1e-6)
    kl = F.kl_div(spliced.double().log_softmax(-1), logits.double().log_softmax(-1), log_target=True,
                  reduction="sum") / (tokens.numel())
    assert res.kl_div == pytest.approx(float(kl), rel=1e-6)
    expected = (res.ce_zero_ablation - res.ce_spliced) / (res.ce_zero_ablation - res.ce_clean)
    assert res.ce_loss_recovered == pytest.approx(expected)


def test_report_plots_and_serialises(llama, tokens):
    res = evaluate(TopKSAE(llama.d_model, 48, k=3), llama, SITE, tokens[:2], progress=False)
    assert isinstance(res, SAEEval)
    fig = res.plot()
    assert "log10" in fig.layout.xaxis.title.text and len(fig.data[0].x) == 48 - res.n_dead
    html = res._repr_html_()
    assert "<table>" in html and "ce_loss_recovered" in html
    assert "<script src" not in html and "Plotly.newPlot" in html  # offline: no CDN script tag
    json_text = res.to_json()
    assert '"site_out": null' in json_text and '"ce_loss_recovered"' in json_text
    d = res.to_dict()
    assert "density" not in d and d["site"] == SITE


def test_bad_input(llama, tokens):
    with pytest.raises(ValueError, match=r"d_in mismatch: the SAE has d_in=32 but site .*has width 64"):
        evaluate(TopKSAE(32, 64, k=4), llama, SITE, tokens, progress=False)
    with pytest.raises(KeyError, match="unknown hook site"):
        evaluate(TopKSAE(64, 128, k=4), llama, "blocks.0.hook_resid_postt", tokens, progress=False)
    with pytest.raises(ValueError, match="at least 2 positions"):
        evaluate(TopKSAE(64, 128, k=4), llama, SITE, tokens[:, :1], progress=False)
    with pytest.raises(ValueError, match="k must be < d_sae"):
        TopKSAE(64, 16, k=16)
    from interp.saes import build_sae

    with pytest.raises(ValueError, match="unknown SAE architecture 'gated'"):
        build_sae("gated", 64, 128)


def test_eval_cli_writes_json_and_html(llama, tiny_dir, tmp_path, capsys):
    import json

    from interp.saes.cli import main
    from interp.saes.store import load_tokens

    sae = TopKSAE(llama.d_model, 48, k=3)
    sae.save(tmp_path / "sae")
    text = tmp_path / "eval.txt"
    text.write_text("\n\n".join(f"Evaluation line {i} of the toy corpus." for i in range(30)))
    assert main(["sae", "eval", "--sae", str(tmp_path / "sae"), "--model", str(tiny_dir("llama")), "--site", SITE,
                 "--dataset", str(text), "--context-length", "16", "--skip-sequences", "2", "--max-sequences", "5",
                 "--json", str(tmp_path / "m.json"), "--html", str(tmp_path / "d.html")]) == 0
    written = json.loads((tmp_path / "m.json").read_text())
    toks = load_tokens(str(text), llama.tokenizer, 16)[2:7]
    expected = evaluate(sae, llama, SITE, toks, progress=False).to_dict()
    assert written.keys() == expected.keys()
    assert written.pop("site") == expected.pop("site") == SITE
    assert written.pop("site_out") is expected.pop("site_out") is None
    for key, value in expected.items():
        assert written[key] == pytest.approx(value, rel=1e-6), key
    assert "plotly" in (tmp_path / "d.html").read_text()[:5000].lower()


def test_max_norm_ratio_leaves_massive_activations_out(tiny_dir, tokens):
    """A token whose embedding is scaled up plays a massive activation: with ``max_norm_ratio`` its positions drop
    out of the reconstruction metrics (counted in ``n_outliers``) and are left untouched by the splice."""
    model = interp.load_model(str(tiny_dir("llama")))
    toks = tokens.clone()
    toks[toks == 50] = 51
    toks[[0, 3], 1] = 50
    with torch.no_grad():
        model.hf_model.get_input_embeddings().weight[50] *= 1000
    sae = TopKSAE(model.d_model, 96, k=5)
    plain = evaluate(sae, model, SITE, toks, batch_size=3, progress=False)
    cut = evaluate(sae, model, SITE, toks, batch_size=3, max_norm_ratio=20, progress=False)
    assert plain.n_outliers == 0 and cut.n_outliers == 2
    assert cut.n_tokens == plain.n_tokens - 2
    _, cache = model.run_with_cache(toks, names_filter=[SITE])
    keep = ~torch.isin(toks, torch.tensor([0, 1, 2, 50]))
    x = cache[SITE][keep]
    with torch.no_grad():
        x_hat = sae(x).x_hat
    x, x_hat = x.double(), x_hat.double()
    assert cut.fvu == pytest.approx(float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()), rel=1e-6)
    assert cut.mse == pytest.approx(float((x - x_hat).pow(2).sum(-1).mean()), rel=1e-6)
    assert plain.fvu < cut.fvu  # the two huge rows dominate the variance
    with pytest.raises(ValueError, match="max_norm_ratio must be a number > 1"):
        evaluate(sae, model, SITE, toks, max_norm_ratio=0.5, progress=False)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "mamba", "mamba2"])
def test_spliced_runs_start_from_the_cached_prefix(tiny_dir, arch, tokens):
    """reuse_prefix (the default) gives the numbers of recomputing every layer, and the earlier layers run once per
    batch (the clean run) instead of three times."""
    model = interp.load_model(str(tiny_dir(arch)))
    last = f"blocks.{model.n_layers - 1}.hook_resid_post"
    inner = model.components(1)["mlp_out" if model.has_mlp else "out"]
    for site in ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_resid_pre", inner, last]:
        sae = TopKSAE(model.d_model, 48, k=4)
        with torch.no_grad():
            sae.b_dec.normal_(std=0.1)
        calls: list[int] = []

        def count(act, *, hook, calls=calls):
            calls.append(1)

        with model.hooks([("hook_embed", count)]):
            fast = evaluate(sae, model, site, tokens, batch_size=4, progress=False)
            n_fast = len(calls)
            slow = evaluate(sae, model, site, tokens, batch_size=4, reuse_prefix=False, progress=False)
        # 2 batches of 3 runs, plus one 2-token run that reads the site's width
        assert (n_fast, len(calls) - n_fast) == (3, 7), site
        for key, value in slow.to_dict().items():
            assert fast.to_dict()[key] == (pytest.approx(value, rel=1e-6, abs=1e-9) if isinstance(value, float)
                                           else value), (site, key)
        torch.testing.assert_close(fast.density, slow.density)
