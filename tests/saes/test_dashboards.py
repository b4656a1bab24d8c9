"""inspect(): every statistic against a plain dense reference over the whole corpus, the page and its JSON, the
CLI, bad input."""

from __future__ import annotations

import json
import re

import pytest
import torch

import interp
from interp.cli import main as interp_main
from interp.saes import FeatureDashboards, ReLUSAE, SAEMetadata, TopKSAE, inspect
from interp.saes.store import site_activations

SITE = "blocks.1.hook_resid_post"
TEXTS = [f"Document {i}: the cat sat on mat number {i * 7 % 13}. Then it left for {i % 5} days." for i in range(70)]


@pytest.fixture(scope="module")
def llama(tiny_dir):
    return interp.load_model(str(tiny_dir("llama")))


@pytest.fixture(scope="module")
def toks(llama):
    return interp.saes.load_tokens(TEXTS, llama.tokenizer, 16)


def _sae(kind: str, d_in: int = 64, d_sae: int = 40, seed: int = 0):
    torch.manual_seed(seed)
    sae = TopKSAE(d_in, d_sae, k=4) if kind == "topk" else ReLUSAE(d_in, d_sae, l1_coefficient=1.0)
    with torch.no_grad():
        sae.b_enc.normal_(std=0.05)
        sae.b_enc[0] = 50.0  # latent 0 fires on every token: ultra-dense
        sae.b_enc[1] = -1e4  # latent 1 never fires: dead
        sae.W_enc[:, 1] = 0
    sae.metadata = SAEMetadata(hook_name=SITE, model_name="tiny")
    return sae


def _reference(sae, model, toks, n_examples, window, n_bins, special=(0, 1, 2)):
    """Dense latents of every token, then each statistic by its plain definition."""
    with torch.no_grad():
        z = sae.encode(site_activations(model, SITE, toks))  # [n_seq, T, d_sae]
    keep = ~torch.isin(toks, torch.tensor(special))
    z = z * keep[..., None]
    n_tok = int(keep.sum())
    fired = (z > 0).sum((0, 1))
    ref = {"density": fired.double() / n_tok, "fired": fired, "z": z, "n_tok": n_tok}
    ref["mean"] = torch.where(fired > 0, z.double().sum((0, 1)) / fired.clamp_min(1), 0.0)
    ref["examples"], ref["hist"] = {}, {}
    T = toks.shape[1]
    for j in range(z.shape[-1]):
        per_seq, pos = z[..., j].max(1)  # one example per sequence, at its maximal token
        order = sorted(((float(per_seq[s]), s, int(pos[s])) for s in range(z.shape[0]) if per_seq[s] > 0),
                       key=lambda t: (-t[0], t[1]))[:n_examples]
        ref["examples"][j] = order
        vals = z[..., j][z[..., j] > 0].double()
        if vals.numel():
            top = 2.0 ** torch.ceil(torch.log2(vals.max()))
            bins = (vals / top * n_bins).long().clamp(0, n_bins - 1)
            ref["hist"][j] = (float(top), torch.bincount(bins, minlength=n_bins).tolist())
    ref["T"] = T
    return ref


@pytest.mark.parametrize("kind", ["topk", "relu"])
def test_statistics_match_a_dense_reference(llama, toks, kind):
    sae = _sae(kind)
    dash = inspect(sae, llama, toks, n_examples=6, batch_size=3, window=(5, 2), n_bins=16, progress=False)
    ref = _reference(sae, llama, toks, 6, (5, 2), 16)
    assert dash.n_tokens == ref["n_tok"] and dash.n_sequences == toks.shape[0]
    torch.testing.assert_close(dash.density, ref["density"].float())
    assert dash.dead == (ref["fired"] == 0).nonzero()[:, 0].tolist() and 1 in dash.dead
    assert dash.dense[0] == 0 and set(dash.dense) == set((ref["density"] > 0.1).nonzero()[:, 0].tolist())
    checked = 0
    for j, card in dash.latents.items():
        assert card.n_fired == int(ref["fired"][j])
        assert card.mean_activation == pytest.approx(float(ref["mean"][j]), rel=1e-5)
        got = [(e["activation"], e["sequence"], e["position"]) for e in card.examples]
        want = ref["examples"][j]
        assert [(s, p) for _, s, p in got] == [(s, p) for _, s, p in want], j
        assert [a for a, _, _ in got] == pytest.approx([a for a, _, _ in want], rel=1e-5)
        for e in card.examples:
            lo = max(0, e["position"] - 5)
            torch.testing.assert_close(torch.tensor(e["acts"]), ref["z"][e["sequence"], lo: e["position"] + 3, j])
            assert e["token_ids"] == toks[e["sequence"], lo: e["position"] + 3].tolist()
            assert e["tokens"][e["center"]] == llama.tokenizer.decode([toks[e["sequence"], e["position"]]])
        if j in ref["hist"]:
            top, counts = ref["hist"][j]
            assert card.hist_edges[-1] == pytest.approx(top) and card.hist_counts == counts, j
            checked += 1
        else:
            assert sum(card.hist_counts) == 0 and card.examples == []
        assert card.max_activation == pytest.approx(max([a for a, _, _ in want], default=0.0), rel=1e-5)
    assert checked >= 10


def test_logit_lens_and_latent_selection(llama, toks):
    sae = _sae("topk")
    dash = inspect(sae, llama, toks, latents=[3, 7, 5], n_logits=4, progress=False)
    assert sorted(dash.latents) == [3, 5, 7] and dash.density.numel() == 40  # densities cover every latent
    with torch.no_grad():
        d = sae.W_dec[7:8]
        effect = ((llama.apply_ln_final(d) - llama.apply_ln_final(torch.zeros_like(d))) @ llama.W_U)[0]
    top, bottom = effect.topk(4), (-effect).topk(4)
    card = dash[7]
    assert [t for t, _ in card.promoted] == [llama.tokenizer.decode([i]) for i in top.indices.tolist()]
    assert [v for _, v in card.promoted] == pytest.approx(top.values.tolist(), rel=1e-5)
    assert [t for t, _ in card.suppressed] == [llama.tokenizer.decode([i]) for i in bottom.indices.tolist()]
    assert [v for _, v in card.suppressed] == pytest.approx((-bottom.values).tolist(), rel=1e-5)
    with pytest.raises(KeyError, match="latent 4 was not inspected"):
        dash[4]


def test_html_page_json_and_notebook_view(llama, toks, tmp_path):
    dash = inspect(_sae("topk"), llama, toks, n_examples=4, progress=False)
    path = dash.save_html(tmp_path / "features.html")
    page = path.read_text()
    body = page[page.index("</head>"):]  # plotly.js itself, inlined in the head, mentions its CDN
    assert "<script src" not in page and "cdn.plot.ly" not in body and "Plotly.newPlot" in body
    assert page.count('class="latent"') == len(dash.latents) - len(dash.dead)
    j = next(j for j in dash.latents if j not in dash.dead and j not in dash.dense)
    assert "Dead latents (" in page and "Ultra-dense latents (" in page and f'id="latent-{j}"' in page
    assert re.search(r'class="tok max" style="background: rgba\(255, 140, 0, 1.000\)"', page)
    assert "<svg" in page and "promoted" in page
    small = dash.save_html(tmp_path / "small.html", max_cards=3).read_text()
    assert small.count('class="latent"') == 3 and "the JSON holds all of them" in small
    data = json.loads(dash.to_json())
    assert data["site"] == SITE and data["d_sae"] == 40 and len(data["latents"]) == 40
    assert data["latents"][j]["examples"] == dash[j].examples and data["dead"] == dash.dead
    view = dash[j]._repr_html_()
    assert f"Latent {j}" in view and "Plotly.newPlot" in view and "<script src" not in view
    assert "<table>" in dash._repr_html_()


def test_bad_input(llama, toks):
    sae = _sae("topk")
    with pytest.raises(IndexError, match=r"latent index 40 is out of range: this SAE has 40 latents \(0..39\)"):
        inspect(sae, llama, toks, latents=[0, 40], progress=False)
    with pytest.raises(ValueError, match="dataset is empty"):
        inspect(sae, llama, [], progress=False)
    with pytest.raises(ValueError, match="dataset is empty"):
        inspect(sae, llama, toks[:0], progress=False)
    wide = TopKSAE(32, 40, k=4)
    wide.metadata = SAEMetadata(hook_name=SITE)
    with pytest.raises(ValueError, match=r"d_in mismatch: the SAE has d_in=32 but site 'blocks.1.hook_resid_post'"):
        inspect(wide, llama, toks, progress=False)
    with pytest.raises(KeyError, match="unknown hook site"):
        inspect(sae, llama, toks, site="blocks.1.hook_nothing", allow_site_mismatch=True, progress=False)
    with pytest.raises(ValueError, match="is not the site this SAE was trained on"):
        inspect(sae, llama, toks, site="blocks.0.hook_resid_post", progress=False)
    with pytest.raises(ValueError, match="n_examples must be an int >= 1"):
        inspect(sae, llama, toks, n_examples=0, progress=False)


def test_cli_inspect(llama, tiny_dir, tmp_path, capsys):
    sae = _sae("topk")
    sae.metadata = SAEMetadata(hook_name=SITE, model_name=str(tiny_dir("llama")))
    sae.save(tmp_path / "sae")
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(TEXTS))
    assert interp_main(["sae", "inspect", "--sae", str(tmp_path / "sae"), "--dataset", str(corpus),
                        "--context-length", "16", "--latents", "2-5,9", "--n-examples", "3", "--out",
                        str(tmp_path / "f.html"), "--json", str(tmp_path / "f.json")]) == 0
    data = json.loads((tmp_path / "f.json").read_text())
    assert [d["latent"] for d in data["latents"]] == [2, 3, 4, 5, 9]
    assert all(len(d["examples"]) <= 3 for d in data["latents"])
    assert 'id="latent-9"' in (tmp_path / "f.html").read_text()
    capsys.readouterr()
    assert interp_main(["sae", "inspect", "--sae", str(tmp_path / "sae"), "--dataset", str(corpus), "--latents",
                        "3-x", "--out", str(tmp_path / "g.html")]) == 2
    assert "--latents: '3-x' is not a latent index" in capsys.readouterr().err
    assert isinstance(inspect(sae, llama, TEXTS[:5], context_length=16, progress=False), FeatureDashboards)
