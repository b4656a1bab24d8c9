"""SAEs on the real SmolLM2: a small SAE trained in the test, its feature dashboards written as one HTML page (set
INTERP_ARTIFACTS_DIR to keep the page), the recorded site refused elsewhere, the splice exact with its error term."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from interp.saes import (
    SiteMismatchError,
    TrainConfig,
    builtin_corpus,
    evaluate,
    inspect,
    load,
    load_tokens,
    splice,
    train,
)

pytestmark = pytest.mark.integration

SITE = "blocks.6.hook_resid_post"
SMALL = os.environ.get("CI") == "true"


@pytest.fixture(scope="module")
def trained(smollm2, tmp_path_factory):
    root = tmp_path_factory.mktemp("smollm2_sae")
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(builtin_corpus(max_chars=150_000 if SMALL else 400_000)))
    cfg = TrainConfig(site=SITE, d_sae=512, k=16, model="smollm2", dataset=str(corpus), context_length=64,
                      max_sequences=160 if SMALL else 400, model_batch_size=16, batch_size=512, buffer_batches=4,
                      steps=120 if SMALL else 240, lr=2e-3, warmup_steps=10, dead_window=20_000,
                      activations=str(root / "acts"), checkpoint_dir=str(root / "ck"), progress=False)
    result = train(cfg, model=smollm2)
    return result, root, corpus, cfg


def test_features_page_for_a_small_smollm2_sae(smollm2, trained, tmp_path):
    result, root, corpus, cfg = trained
    sae = load(root / "ck")  # the run folder: its latest checkpoint
    assert sae.metadata.model_name == "smollm2" and sae.metadata.hook_name == SITE
    n = 48 if SMALL else 96
    toks = load_tokens(str(corpus), smollm2.tokenizer, 64)[cfg.max_sequences: cfg.max_sequences + n]  # held out
    dash = inspect(sae, smollm2, toks, n_examples=12, batch_size=16, progress=False)
    alive = [j for j in dash.latents if j not in dash.dead]
    assert len(alive) > 0.5 * sae.cfg.d_sae and dash.n_tokens > 2000
    card = dash[max(alive, key=lambda j: dash[j].n_fired if j not in dash.dense else -1)]
    assert len(card.examples) == 12 and all(card.promoted[i][0] for i in range(3))
    assert card.examples[0]["activation"] == card.max_activation > 0
    page = dash.save_html(tmp_path / "features.html").read_text()
    assert page.count('class="latent"') == len(alive) and "logit lens" in page
    dash.save_json(tmp_path / "features.json")
    assert len(json.loads((tmp_path / "features.json").read_text())["latents"]) == sae.cfg.d_sae
    keep = os.environ.get("INTERP_ARTIFACTS_DIR")
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copy(tmp_path / "features.html", os.path.join(keep, "features_smollm2.html"))
        shutil.copy(tmp_path / "features.json", os.path.join(keep, "features_smollm2.json"))

    from interp.reports.browser import find_chromium, render

    if find_chromium() is not None:  # as a person sees it: plots drawn offline, cards shown (tests/test_rendered.py)
        shown = render(tmp_path / "features.html", out_dir=tmp_path)
        assert shown.plotly_figures() >= 1 and shown.ink_fraction() > 0.01
        assert shown.dom.count('class="latent"') == len(alive)
    report = evaluate(sae, smollm2, tokens=toks[:16], batch_size=8, progress=False)
    assert report.site == SITE and report.fvu < 0.6 and report.ce_loss_recovered > 0.5


def test_recorded_site_and_exact_splice_on_smollm2(smollm2, trained):
    result, *_ = trained
    toks = smollm2.to_tokens("The capital of France is Paris. Induction heads copy tokens.")
    with pytest.raises(SiteMismatchError, match=r"'blocks.3.hook_mlp_out' is not the site this SAE was trained on, "
                                                r"'blocks.6.hook_resid_post'"):
        evaluate(result.sae, smollm2, "blocks.3.hook_mlp_out", toks, progress=False)
    with torch.no_grad():
        clean = smollm2(toks)
        with splice(smollm2, result.sae, error_term=True):
            assert torch.equal(smollm2(toks), clean)
        with splice(smollm2, result.sae):
            assert (smollm2(toks) - clean).abs().max() > 1e-2
