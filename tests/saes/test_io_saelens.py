"""SAELens folder format, both ways: ours -> sae_lens gives identical outputs, and sae_lens -> ours too.

Written against sae-lens 6.54.12 (the version installed in the test environment)."""

import json
import warnings

import pytest
import torch

from interp.saes import BatchTopKSAE, JumpReLUSAE, ReLUSAE, TopKSAE, load

sae_lens = pytest.importorskip("sae_lens")
warnings.filterwarnings("ignore", category=DeprecationWarning)

D_IN, D_SAE = 7, 24


def _perturbed(sae):
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return sae


def _ours():
    torch.manual_seed(0)
    batch = _perturbed(BatchTopKSAE(d_in=D_IN, d_sae=D_SAE, k=3))
    batch.threshold.fill_(0.15)
    return {
        "topk": _perturbed(TopKSAE(d_in=D_IN, d_sae=D_SAE, k=4)),
        "relu": _perturbed(ReLUSAE(D_IN, D_SAE, l1_coefficient=0.5)),
        "jumprelu": _perturbed(JumpReLUSAE(D_IN, D_SAE, l0_coefficient=0.1, threshold_init=0.2, bandwidth=0.05)),
        "batchtopk": batch,
    }


@pytest.mark.parametrize("arch", ["topk", "relu", "jumprelu", "batchtopk"])
def test_ours_to_saelens_and_back(tmp_path, arch):
    sae = _ours()[arch].eval()
    folder = sae.save(tmp_path / "sae")
    assert sorted(p.name for p in folder.iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    x = torch.randn(5, 3, D_IN)
    with torch.no_grad():
        ours = sae(x)
        theirs = sae_lens.SAE.load_from_disk(str(folder))
        z = theirs.encode(x)
        torch.testing.assert_close(z, ours.latents, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(theirs.decode(z), ours.x_hat, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(theirs(x), ours.x_hat, rtol=1e-5, atol=1e-6)
        back = load(folder)
        assert type(back) is type(sae) and back.cfg == sae.cfg
        torch.testing.assert_close(back(x).x_hat, ours.x_hat, rtol=0, atol=0)
    assert (ours.latents > 0).any() and (ours.latents == 0).any()  # the comparison exercised sparsity


def test_save_overwrites_atomically_and_keeps_other_files(tmp_path):
    sae = _ours()["topk"]
    folder = sae.save(tmp_path / "run" / "sae")
    (folder / "notes.txt").write_text("keep me")
    with torch.no_grad():
        sae.b_dec.add_(1.0)
    sae.save(folder)
    assert (folder / "notes.txt").read_text() == "keep me"
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
    torch.testing.assert_close(load(folder).b_dec, sae.b_dec.detach())
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["k"] == 4 and cfg["rescale_acts_by_decoder_norm"] is False


def _saelens_sae(arch, **extra):
    from sae_lens.saes.jumprelu_sae import JumpReLUSAEConfig
    from sae_lens.saes.standard_sae import StandardSAEConfig
    from sae_lens.saes.topk_sae import TopKSAEConfig

    cfg_cls = {"topk": TopKSAEConfig, "standard": StandardSAEConfig, "jumprelu": JumpReLUSAEConfig}[arch]
    cfg = cfg_cls(d_in=D_IN, d_sae=D_SAE, **extra)
    sae = sae_lens.SAE.from_dict(cfg.to_dict())
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            p.copy_(torch.rand_like(p) * 0.3 if name == "threshold" else torch.randn_like(p) * 0.5)
    return sae


@pytest.mark.parametrize("arch,extra", [
    ("topk", {"k": 5}),
    ("topk", {"k": 5, "rescale_acts_by_decoder_norm": True}),
    ("standard", {}),
    ("standard", {"apply_b_dec_to_input": False}),
    ("jumprelu", {}),
])
def test_saelens_to_ours(tmp_path, arch, extra):
    theirs = _saelens_sae(arch, **extra).eval()
    theirs.save_model(str(tmp_path / "sl"))
    ours = load(tmp_path / "sl")
    assert ours.cfg.architecture == {"topk": "topk", "standard": "relu", "jumprelu": "jumprelu"}[arch]
    x = torch.randn(6, D_IN)
    with torch.no_grad():
        z = theirs.encode(x)
        out = ours(x)
        torch.testing.assert_close(out.latents, z, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out.x_hat, theirs(x), rtol=1e-5, atol=1e-5)
    assert (z > 0).any() and (z == 0).any()


def test_refuses_unsupported_folders(tmp_path):
    theirs = _saelens_sae("standard", normalize_activations="layer_norm")
    theirs.save_model(str(tmp_path / "ln"))
    with pytest.raises(ValueError, match="normalize_activations"):
        load(tmp_path / "ln")
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        load(tmp_path / "missing")
