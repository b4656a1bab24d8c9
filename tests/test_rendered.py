"""The reports as a person sees them: the head-discovery report, a causal-trace report, a patching report and an SAE
features page opened in headless Chromium with the network cut off (plotly inlined, no CDN), screenshot taken, plots
checked."""

import pytest

import interp
from interp.reports.browser import render


@pytest.fixture(scope="module")
def llama(tiny_dir):
    return interp.load_model(tiny_dir("llama"))


def _check(path, tmp_path, min_figures):
    shown = render(path, out_dir=tmp_path)
    assert shown.plotly_figures() >= min_figures, f"{path.name}: {shown.plotly_figures()} plotly figures rendered"
    assert "<script src=" not in path.read_text(), f"{path.name} loads a script from elsewhere"
    assert shown.ink_fraction() > 0.01, f"{path.name}: the screenshot is blank"
    return shown


def test_head_report_renders_offline(chromium, llama, tmp_path):
    from interp import heads

    report = heads.detect(llama, "previous_token,duplicate_token,induction,ngram", top_k=2, draws=2,
                          repeat_half=12, ngram_length=32, progress=False)
    path = report.save_html(tmp_path / "report.html")
    shown = _check(path, tmp_path, min_figures=len(report.scores))
    for kind in report.scores:
        assert kind in shown.dom


def test_trace_report_renders_offline(chromium, llama, tmp_path):
    from interp import tracing

    tokens = llama.to_tokens("abcdefgh")
    result = tracing.causal_trace(llama, tokens, (2, 4), samples=2, progress=False)
    path = result.save_html(tmp_path / "trace.html")
    _check(path, tmp_path, min_figures=1)


def test_patch_report_renders_offline(chromium, llama, tmp_path):
    from interp import patching

    clean, corrupt = llama.to_tokens("abcdefgh"), llama.to_tokens("abcxefgh")
    result = patching.sweep(llama, clean, corrupt, patching.target_prob(5), progress=False)
    path = result.save_html(tmp_path / "patch.html")
    _check(path, tmp_path, min_figures=1)


def test_feature_dashboards_render_offline(chromium, llama, tmp_path):
    """An SAE's feature page: plotly density plot drawn, latent cards with their contexts and histograms shown."""
    import torch

    from interp import saes

    torch.manual_seed(0)
    site = "blocks.1.hook_resid_post"
    sae = saes.TopKSAE(llama.d_model, 32, k=4)
    sae.metadata = saes.SAEMetadata(hook_name=site, model_name="tiny")
    texts = [f"The {w} cat sat on mat number {i}." for i, w in enumerate(["red", "big", "old", "shy"] * 4)]
    dash = saes.inspect(sae, llama, saes.load_tokens(texts, llama.tokenizer, 12), latents=range(6), n_examples=4,
                        progress=False)
    path = dash.save_html(tmp_path / "features.html")
    shown = _check(path, tmp_path, min_figures=1)
    assert shown.dom.count("<svg") >= 6  # each card's histogram is an inline SVG
