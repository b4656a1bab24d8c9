"""SAE architectures: config contract, training losses and gradients against dense references, decoder hooks."""

import math

import pytest
import torch

from interp.saes import (
    ARCHITECTURES,
    BatchTopKSAE,
    JumpReLUSAE,
    ReLUSAE,
    SAEConfig,
    TopKSAE,
    build_sae,
    sae_from_config,
)
from interp.saes.geometric_median import geometric_median

KW = {"topk": {"k": 3}, "batchtopk": {"k": 3}, "relu": {"l1_coefficient": 0.1},
      "jumprelu": {"l0_coefficient": 0.01, "threshold_init": 0.05, "bandwidth": 0.1}, "topk_transcoder": {"k": 3}}


def _params(sae):
    return [sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec]


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_build_and_config_roundtrip(arch):
    sae = build_sae(arch, 6, 20, dtype=torch.float64, **KW[arch])
    assert type(sae) is ARCHITECTURES[arch] and sae.cfg.architecture == arch
    assert sae.W_enc.shape == (6, 20) and sae.W_dec.shape == (20, 6) and sae.b_enc.shape == (20,)
    assert sae.W_enc.dtype == torch.float64
    assert SAEConfig.from_dict(sae.cfg.to_dict()) == sae.cfg
    assert sae_from_config(sae.cfg).cfg == sae.cfg
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    out = sae(x)
    assert out.x_hat.shape == x.shape and out.latents.shape == (2, 5, 20)
    torch.testing.assert_close(out.latents, sae.encode(x))
    torch.testing.assert_close(out.x_hat, sae.decode(sae.encode(x)))


def test_bad_arguments():
    with pytest.raises(ValueError, match="known"):
        build_sae("gated", 4, 8)
    with pytest.raises(ValueError, match="k must be"):
        TopKSAE(d_in=4, d_sae=8, k=8)
    with pytest.raises(ValueError, match="d_in"):
        TopKSAE(d_in=0, d_sae=8, k=2)
    with pytest.raises(ValueError, match="d_sae"):
        ReLUSAE(4, 2.5)
    with pytest.raises(ValueError, match="unknown keys"):
        SAEConfig.from_dict({"architecture": "topk", "d_in": 4, "d_sae": 8, "k": 2, "aux_coefficient": 1.0, "z": 1})
    with pytest.raises(ValueError, match="l1_coefficient"):
        SAEConfig("topk", 4, 8, k=2, aux_coefficient=1.0, l1_coefficient=1.0)
    sae = TopKSAE(d_in=4, d_sae=8, k=2)
    with pytest.raises(ValueError, match="x must"):
        sae(torch.randn(3, 5))
    with pytest.raises(ValueError, match="dead_mask"):
        sae.training_forward(torch.randn(3, 4), torch.ones(8))


def _dense_topk_loss(sae, x, dead_mask, batch=False):
    """Plain dense autograd reference of the TopK / BatchTopK training loss (Gao et al. 2024)."""
    cfg = sae.cfg
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    if batch:
        flat = pre.relu().flatten()
        v, i = flat.topk(cfg.k * x.shape[0])
        z = torch.zeros_like(flat).scatter(0, i, v).reshape(pre.shape)
    else:
        v, i = pre.topk(cfg.k)
        z = torch.zeros_like(pre).scatter(1, i, v.relu())
    x_hat = z @ sae.W_dec + sae.b_dec
    loss = ((x_hat - x) ** 2).sum(-1).mean()
    n_dead = int(dead_mask.sum()) if dead_mask is not None else 0
    if n_dead:
        k_aux = min(cfg.effective_aux_k, n_dead)
        av, ai = torch.where(dead_mask, pre, -math.inf).topk(k_aux)
        e_hat = torch.zeros_like(pre).scatter(1, ai, av.relu()) @ sae.W_dec
        aux = ((e_hat - (x - x_hat).detach()) ** 2).sum(-1).mean()
        loss = loss + cfg.aux_coefficient * min(n_dead / cfg.effective_aux_k, 1.0) * aux
    return loss, z


@pytest.mark.parametrize("cls", [TopKSAE, BatchTopKSAE])
@pytest.mark.parametrize("d_in,d_sae,k,batch,dtype", [
    *((7, 31, 3, 9, dt) for dt in (torch.float64, torch.float32)),
    *((16, 64, 4, 32, dt) for dt in (torch.float64, torch.float32)),
    # float32 sizes that cross the fused encoder's row tiles (512) and latent blocks (512), odd and power of two
    (13, 1031, 7, 600, torch.float32), (32, 1024, 8, 1024, torch.float32)])
@pytest.mark.parametrize("dead", [None, 0.3, 0.97])
def test_sparse_training_step_matches_dense(cls, d_in, d_sae, k, batch, dead, dtype):
    torch.manual_seed(d_sae + batch + int(100 * (dead or 0)))
    sae = cls(d_in=d_in, d_sae=d_sae, k=k, aux_k=5, dtype=dtype)
    with torch.no_grad():  # off the symmetric init, so all gradients are generic
        for p in _params(sae):
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(batch, d_in, dtype=dtype, requires_grad=True)
    dead_mask = None if dead is None else torch.rand(d_sae) < dead
    out = sae.training_forward(x, dead_mask)
    got = torch.autograd.grad(out.loss, [x] + _params(sae))
    ref_loss, z = _dense_topk_loss(sae, x, dead_mask, batch=cls is BatchTopKSAE)
    want = torch.autograd.grad(ref_loss, [x] + _params(sae))
    tol = {"rtol": 1e-9, "atol": 1e-9} if dtype == torch.float64 else {"rtol": 2e-4, "atol": 2e-4}
    torch.testing.assert_close(out.loss, ref_loss, **tol)
    for name, g, w in zip(["x", "W_enc", "b_enc", "W_dec", "b_dec"], got, want, strict=True):
        torch.testing.assert_close(g, w, **tol, msg=lambda m, n=name: f"grad {n}: {m}")
    assert torch.equal(out.fired, (z > 0).any(0))
    torch.testing.assert_close(out.metrics["l0"], (z > 0).sum(-1).to(dtype).mean())
    assert set(out.metrics) >= {"mse", "fvu", "l0", "aux"}


def test_relu_loss_and_metrics():
    torch.manual_seed(0)
    sae = ReLUSAE(5, 12, l1_coefficient=0.3, dtype=torch.float64)
    x = torch.randn(10, 5, dtype=torch.float64)
    out = sae.training_forward(x)
    z = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)
    x_hat = z @ sae.W_dec + sae.b_dec
    want = ((x - x_hat) ** 2).sum(-1).mean() + 0.3 * (z * sae.W_dec.norm(dim=-1)).sum(-1).mean()
    torch.testing.assert_close(out.loss, want)
    fvu = ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    torch.testing.assert_close(out.metrics["fvu"], fvu)
    assert not sae.cfg.normalize_decoder


def test_jumprelu_straight_through_gradients():
    """Rajamanoharan et al. 2024 Eqs. 11-12, written out by hand on a small batch."""
    torch.manual_seed(1)
    eps, lam = 0.5, 0.2
    sae = JumpReLUSAE(4, 9, l0_coefficient=lam, threshold_init=0.3, bandwidth=eps, dtype=torch.float64)
    with torch.no_grad():
        sae.log_threshold.add_(0.3 * torch.randn(9, dtype=torch.float64))
    x = torch.randn(12, 4, dtype=torch.float64)
    out = sae.training_forward(x)
    (g_log,) = torch.autograd.grad(out.loss, [sae.log_threshold])
    with torch.no_grad():
        theta = sae.threshold
        pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
        z = pre * (pre > theta)
        x_hat = z @ sae.W_dec + sae.b_dec
        dz = 2 * (x_hat - x) @ sae.W_dec.t() / x.shape[0]  # d mse / d z
        kern = ((pre - theta).abs() < eps / 2).double() / eps
        d_theta = (-(theta * kern) * dz).sum(0) + lam * (-kern).sum(0) / x.shape[0]
    torch.testing.assert_close(g_log, d_theta * theta)
    torch.testing.assert_close(out.metrics["l0"], (pre > theta).sum(-1).double().mean())


def test_decoder_norm_hooks_and_b_dec_init():
    torch.manual_seed(2)
    sae = TopKSAE(d_in=6, d_sae=10, k=2, dtype=torch.float64)
    sae.training_forward(torch.randn(8, 6, dtype=torch.float64)).loss.backward()
    sae.before_step()
    assert (sae.W_dec.grad * sae.W_dec).sum(-1).abs().max() < 1e-12
    with torch.no_grad():
        sae.W_dec.mul_(3.0)
    sae.after_step()
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(10, dtype=torch.float64))
    pts = torch.randn(200, 6, dtype=torch.float64)
    pts[:20] += 50.0  # outliers pull the mean, barely the median
    sae.init_b_dec(pts, method="mean")
    torch.testing.assert_close(sae.b_dec, pts.mean(0))
    sae.init_b_dec(pts)
    med = geometric_median(pts)
    torch.testing.assert_close(sae.b_dec, med)
    objective = lambda y: (pts - y).norm(dim=-1).sum()
    for _ in range(20):
        assert objective(med) <= objective(med + 0.01 * torch.randn(6, dtype=torch.float64))
    with pytest.raises(ValueError, match="method"):
        sae.init_b_dec(pts, method="median")


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_topk_training_learns_planted_dictionary(arch):
    """A few hundred Adam steps on data made of 2-sparse combinations of 16 directions reach low FVU."""
    torch.manual_seed(3)
    d_in, n_feat = 16, 16
    dictionary = torch.nn.functional.normalize(torch.randn(n_feat, d_in), dim=-1)

    def batch(n=256):
        idx = torch.rand(n, n_feat).argsort(-1)[:, :2]
        coef = torch.zeros(n, n_feat).scatter(1, idx, torch.rand(n, 2) + 0.5)
        return coef @ dictionary

    sae = build_sae(arch, d_in, 32, k=2)
    sae.init_b_dec(batch(), method="mean")
    opt = torch.optim.Adam(sae.parameters(), lr=3e-3)
    first = None
    for _ in range(300):
        out = sae.training_forward(batch())
        opt.zero_grad()
        out.loss.backward()
        sae.before_step()
        opt.step()
        sae.after_step()
        first = first if first is not None else float(out.metrics["fvu"])
    sae.eval()
    x = batch(512)
    with torch.no_grad():
        fvu = float(((sae(x).x_hat - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
    assert fvu < 0.25 < first, (first, fvu)
