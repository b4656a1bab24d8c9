"""TopK transcoders: loss and gradients against a dense reference, learning, the trainer and CLI with --site-in /
--site-out, SAELens's transcoder layout, evaluation at the output site."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass

import pytest
import torch

import interp
from interp.saes import ActivationStore, TopKTranscoder, TrainConfig, evaluate, load, train
from interp.saes.cli import main

SITE_IN, SITE_OUT = "blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out"


def _dense_loss(tc, x, y, dead):
    """Plain autograd reference: z = ReLU(TopK(x W_enc + b_enc)), y_hat = z W_dec + b_dec, squared error + AuxK."""
    cfg = tc.cfg
    pre = x @ tc.W_enc + tc.b_enc
    v, i = pre.topk(cfg.k)
    z = torch.zeros_like(pre).scatter(1, i, v.relu())
    y_hat = z @ tc.W_dec + tc.b_dec
    loss = ((y_hat - y) ** 2).sum(-1).mean()
    n_dead = int(dead.sum()) if dead is not None else 0
    if n_dead:
        k_aux = min(cfg.effective_aux_k, n_dead)
        av, ai = torch.where(dead, pre, -math.inf).topk(k_aux)
        e_hat = torch.zeros_like(pre).scatter(1, ai, av.relu()) @ tc.W_dec
        aux = ((e_hat - (y - y_hat).detach()) ** 2).sum(-1).mean()
        loss = loss + cfg.aux_coefficient * min(n_dead / cfg.effective_aux_k, 1.0) * aux
    return loss, y_hat


@pytest.mark.parametrize("d_in, d_out, d_sae, k, n_dead", [(7, 5, 33, 3, 0), (16, 24, 64, 8, 20), (9, 9, 17, 4, 17)])
def test_training_step_matches_dense_reference(d_in, d_out, d_sae, k, n_dead):
    torch.manual_seed(d_in * 100 + d_out)
    tc = TopKTranscoder(d_in, d_sae, k=k, d_out=d_out, dtype=torch.float64)
    with torch.no_grad():
        for p in tc.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x, y = torch.randn(13, d_in, dtype=torch.float64), torch.randn(13, d_out, dtype=torch.float64)
    dead = None
    if n_dead:
        dead = torch.zeros(d_sae, dtype=torch.bool)
        dead[torch.randperm(d_sae)[:n_dead]] = True
    out = tc.training_forward(torch.cat([x, y], 1), dead)
    out.loss.backward()
    ours = {n: p.grad.clone() for n, p in tc.named_parameters()}
    tc.zero_grad()
    ref_loss, ref_y = _dense_loss(tc, x, y, dead)
    ref_loss.backward()
    torch.testing.assert_close(out.loss, ref_loss)
    torch.testing.assert_close(out.x_hat, ref_y)
    for n, p in tc.named_parameters():
        torch.testing.assert_close(ours[n], p.grad, msg=n)
    torch.testing.assert_close(tc(x).x_hat, ref_y)  # the dense inference path agrees
    assert out.metrics["l0"] <= k and bool(out.fired.any())


def test_shapes_and_bad_input():
    tc = TopKTranscoder(6, 20, k=3, d_out=4)
    assert tc.W_enc.shape == (6, 20) and tc.W_dec.shape == (20, 4) and tc.b_dec.shape == (4,) and tc.d_out == 4
    assert tc(torch.randn(2, 5, 6)).x_hat.shape == (2, 5, 4)
    with pytest.raises(ValueError, match=r"\[batch, d_in \+ d_out = 6 \+ 4\]"):
        tc.training_forward(torch.randn(3, 6))
    with pytest.raises(ValueError, match="x must be a tensor of shape"):
        tc(torch.randn(3, 4))
    with pytest.raises(ValueError, match="d_out is required for transcoders and only for them"):
        interp.saes.SAEConfig("topk", 4, 8, k=2, aux_coefficient=0.1, d_out=3)
    rows = torch.randn(5, 10) + torch.arange(10.0)
    tc.init_b_dec(rows, method="mean")  # paired rows: b_dec from the target half, b_enc centres the input half
    torch.testing.assert_close(tc.b_dec.detach(), rows[:, 6:].mean(0))
    torch.testing.assert_close(tc.pre_acts(rows[:, :6]).mean(0), torch.zeros(20), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"x_sample must be float \[n>0, d_out=4\]"):
        tc.init_b_dec(torch.ones(5, 7))


@pytest.mark.parametrize("kw, match", [
    (dict(site="a", site_in="b", site_out="c"), "not both"),
    (dict(site=None, site_in="b"), "site_out must be a non-empty string"),
    (dict(site=None, site_in="b", site_out="c", architecture="relu"), "transcoders are TopK only"),
    (dict(site=None), "site must be a non-empty string"),
])
def test_config_sites(kw, match):
    base = dict(d_sae=64, k=4, steps=3, activations="a")
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{**base, "site": "s", **kw})


def _paired_data(n=4096, d_in=16, d_out=12, n_feat=24, seed=0):
    """x and y written by the same sparse codes through two unit-norm dictionaries (x with a little noise)."""
    g = torch.Generator().manual_seed(seed)
    d1, d2 = torch.randn(n_feat, d_in, generator=g), torch.randn(n_feat, d_out, generator=g)
    d1, d2 = d1 / d1.norm(dim=1, keepdim=True), d2 / d2.norm(dim=1, keepdim=True)
    codes = (torch.rand(n, n_feat, generator=g) < 0.08) * torch.rand(n, n_feat, generator=g) * 3
    return codes @ d1 + 0.02 * torch.randn(n, d_in, generator=g), codes @ d2


def test_trainer_learns_a_sparse_map():
    x, y = _paired_data()
    cfg = TrainConfig(site_in="in", site_out="out", d_sae=64, k=4, steps=80, batch_size=128, buffer_batches=4,
                      lr=1e-2, log_every=10, progress=False)
    store = ActivationStore.from_tensor(torch.cat([x, y], 1), widths=(16, 12), batch_size=128, buffer_batches=4)
    result = train(cfg, store=store)
    sae = result.sae
    assert isinstance(sae, TopKTranscoder) and sae.cfg.d_in == 16 and sae.cfg.d_out == 12
    assert result.history[-1]["fvu"] < 0.4 and result.history[-1]["fvu"] < 0.4 * result.history[0]["fvu"]
    assert sae.metadata.hook_name == "in" and sae.metadata.hook_name_out == "out"
    with pytest.raises(ValueError, match="a transcoder needs paired rows"):
        train(cfg, store=ActivationStore.from_tensor(torch.cat([x, y], 1), batch_size=128, buffer_batches=4))


def test_trains_on_a_model_through_the_cli_and_evaluates_at_the_output_site(tiny_dir, tmp_path, capsys):
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(f"Document {i}: the cat sat on mat number {i * 7 % 13}." for i in range(60)))
    model_dir = str(tiny_dir("llama"))
    assert main(["sae", "train", "--model", model_dir, "--dataset", str(text), "--site-in", SITE_IN, "--site-out",
                 SITE_OUT, "--d-sae", "64", "--k", "4", "--context-length", "16", "--batch-size", "32",
                 "--buffer-batches", "2", "--steps", "8", "--activations", str(tmp_path / "acts"),
                 "--checkpoint-dir", str(tmp_path / "ck"), "--no-progress"]) == 0
    meta = json.loads((tmp_path / "acts" / "activations.json").read_text())
    assert meta["sites"] == [SITE_IN, SITE_OUT] and meta["widths"] == [64, 64] and meta["d_in"] == 128
    cfg = json.loads((tmp_path / "ck" / "step_00000008" / "sae" / "cfg.json").read_text())
    assert cfg["architecture"] == "topk_transcoder" and cfg["d_out"] == 64 and cfg["apply_b_dec_to_input"] is False
    assert cfg["metadata"]["hook_name"] == SITE_IN and cfg["metadata"]["hook_name_out"] == SITE_OUT
    tc = load(tmp_path / "ck")
    assert isinstance(tc, TopKTranscoder)
    model = interp.load_model(model_dir)
    toks = torch.randint(4, 100, (3, 12))
    res = evaluate(tc, model, tokens=toks, progress=False)
    assert (res.site, res.site_out) == (SITE_IN, SITE_OUT)
    _, cache = model.run_with_cache(toks, names_filter=[SITE_IN, SITE_OUT])
    y = cache[SITE_OUT].reshape(-1, 64).double()  # random ids from 4: no special token to leave out
    with torch.no_grad():
        y_hat = tc(cache[SITE_IN].reshape(-1, 64)).x_hat.double()
    assert res.fvu == pytest.approx(float((y - y_hat).pow(2).sum() / (y - y.mean(0)).pow(2).sum()), rel=1e-6)
    # the same cache, asked for an SAE at one site, is refused
    capsys.readouterr()
    with pytest.raises(ValueError, match=r"caches site 'blocks.1.ln2.hook_normalized' -> 'blocks.1.hook_mlp_out' "
                                         r"but the config trains site 'blocks.1.hook_mlp_out'"):
        train(TrainConfig(site=SITE_OUT, d_sae=64, k=4, activations=str(tmp_path / "acts"), steps=2,
                          batch_size=32, buffer_batches=2, progress=False))


def test_saelens_transcoder_layout(tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    from sae_lens.registry import SAE_CLASS_REGISTRY, register_sae_class
    from sae_lens.saes.topk_sae import TopK
    from sae_lens.saes.transcoder import Transcoder, TranscoderConfig

    torch.manual_seed(0)
    tc = TopKTranscoder(7, 24, k=4, d_out=5)
    with torch.no_grad():
        for p in tc.parameters():
            p.add_(0.2 * torch.randn_like(p))
    tc.metadata = interp.saes.SAEMetadata(model_name="m", hook_name=SITE_IN, hook_name_out=SITE_OUT)
    folder = tc.save(tmp_path / "tc")
    if "topk_transcoder" not in SAE_CLASS_REGISTRY:  # sae-lens 6.54 has no TopK transcoder: it refuses the folder
        with pytest.raises(KeyError, match="topk_transcoder"):
            sae_lens.SAE.load_from_disk(str(folder))

        @dataclass
        class TopKTranscoderConfig(TranscoderConfig):
            k: int = 1

            @classmethod
            def architecture(cls) -> str:
                return "topk_transcoder"

        class SAELensTopKTranscoder(Transcoder):  # SAELens's transcoder with its own TopK activation
            def get_activation_fn(self):
                return TopK(self.cfg.k)

        register_sae_class("topk_transcoder", SAELensTopKTranscoder, TopKTranscoderConfig)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = sae_lens.SAE.load_from_disk(str(folder))
    assert theirs.cfg.d_out == 5 and theirs.cfg.metadata.hook_name_out == SITE_OUT
    x = torch.randn(6, 7)
    with torch.no_grad():
        ours = tc(x)
        torch.testing.assert_close(theirs.encode(x), ours.latents, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(theirs(x), ours.x_hat, rtol=1e-5, atol=1e-6)
    assert (ours.latents > 0).any() and (ours.latents == 0).any()
    back = load(folder)
    assert back.cfg == tc.cfg and back.metadata == tc.metadata
    torch.testing.assert_close(back(x).x_hat, ours.x_hat, rtol=0, atol=0)
    relu_tc = json.loads((folder / "cfg.json").read_text())
    relu_tc.update(architecture="transcoder")
    relu_tc["metadata"].pop("interp")
    (folder / "cfg.json").write_text(json.dumps(relu_tc))
    with pytest.raises(ValueError, match="only TopK ones"):
        load(folder)
