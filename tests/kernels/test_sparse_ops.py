"""The torch sparse ops and the autograd functions against the plain references, on fresh random inputs."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from interp.kernels import cpu_ops, reference, sparse_decode_autograd, sparse_encode
from interp.kernels.backend import ENV_VAR, backend_name, ops_for

SIZES = [(5, 7, 13, 3), (8, 16, 64, 4), (33, 24, 97, 5), (64, 32, 128, 8)]  # B, D, L, K: odd and powers of two


def _sparse(B, L, K, dtype, gen, dup=False):
    idx = torch.stack([torch.randperm(L, generator=gen)[:K] for _ in range(B)])
    if dup:  # repeated latents in a row (main + aux selection can overlap) must add up
        idx[:, -1] = idx[:, 0]
    return torch.randn(B, K, dtype=dtype, generator=gen), idx


@pytest.mark.parametrize("B,D,L,K", SIZES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("dup", [False, True])
def test_torch_ops_match_reference(B, D, L, K, dtype, dup):
    gen = torch.Generator().manual_seed(B * 1000 + L + dup)
    vals, idx = _sparse(B, L, K, dtype, gen, dup)
    W = torch.randn(L, D, dtype=dtype, generator=gen)
    dy = torch.randn(B, D, dtype=dtype, generator=gen)
    tol = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-4}
    torch.testing.assert_close(cpu_ops.sparse_decode(vals, idx, W), reference.sparse_decode(vals, idx, W), **tol)
    torch.testing.assert_close(cpu_ops.sparse_decode(vals, idx, W.t().contiguous().t()),
                               reference.sparse_decode(vals, idx, W), **tol)
    torch.testing.assert_close(cpu_ops.gather_dot(dy, idx, W), reference.gather_dot(dy, idx, W), **tol)
    torch.testing.assert_close(cpu_ops.chunked_gather_dot(dy, idx, W, chunk=4), reference.gather_dot(dy, idx, W), **tol)
    torch.testing.assert_close(cpu_ops.scatter_outer(vals, idx, dy, L), reference.scatter_outer(vals, idx, dy, L),
                               **tol)
    dense = torch.zeros(B, L, dtype=dtype).index_put_((torch.arange(B)[:, None].expand(B, K), idx), vals,
                                                      accumulate=True)
    torch.testing.assert_close(reference.sparse_decode(vals, idx, W), dense @ W, **tol)
    torch.testing.assert_close(reference.scatter_outer(vals, idx, dy, L), dense.t() @ dy, **tol)


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("B,D,L,K", SIZES)
def test_autograd_matches_dense(monkeypatch, backend, B, D, L, K):
    monkeypatch.setenv(ENV_VAR, backend)
    gen = torch.Generator().manual_seed(7 * B + K)
    dt = torch.float64
    x = torch.randn(B, D, dtype=dt, generator=gen, requires_grad=True)
    W_enc = torch.randn(D, L, dtype=dt, generator=gen, requires_grad=True)
    b_enc = torch.randn(L, dtype=dt, generator=gen, requires_grad=True)
    b_dec = torch.randn(D, dtype=dt, generator=gen, requires_grad=True)
    W_dec = torch.randn(L, D, dtype=dt, generator=gen, requires_grad=True)
    target = torch.randn(B, D, dtype=dt, generator=gen)

    def select(pre):
        v, i = pre.topk(K, sorted=False)
        return v.relu(), i

    vals, idx = sparse_encode(x, W_enc, b_enc, b_dec, select)
    out = sparse_decode_autograd(vals, idx, W_dec) + b_dec
    loss = ((out - target) ** 2).sum()
    grads = torch.autograd.grad(loss, [x, W_enc, b_enc, b_dec, W_dec])

    pre = (x - b_dec) @ W_enc + b_enc
    v, i = pre.topk(K)
    z = torch.zeros_like(pre).scatter(1, i, v.relu())
    ref_loss = (((z @ W_dec + b_dec) - target) ** 2).sum()
    ref_grads = torch.autograd.grad(ref_loss, [x, W_enc, b_enc, b_dec, W_dec])
    torch.testing.assert_close(loss, ref_loss)
    for name, g, r in zip(["x", "W_enc", "b_enc", "b_dec", "W_dec"], grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-9, msg=lambda m, n=name: f"grad {n}: {m}")


def test_backend_selection(monkeypatch):
    from interp.kernels import native

    t = torch.zeros(1)
    monkeypatch.delenv(ENV_VAR, raising=False)
    if native.available():  # float32 CPU: the fused C kernels where they build (tests/kernels/test_native.py)
        assert backend_name(t) == "native" and ops_for(t) is native
    assert backend_name(t.double()) == "torch" and ops_for(t.double()) is cpu_ops
    monkeypatch.setenv(ENV_VAR, "torch")
    assert ops_for(t) is cpu_ops
    monkeypatch.setenv(ENV_VAR, "reference")
    assert ops_for(t) is reference
    monkeypatch.setenv(ENV_VAR, "cuda-magic")
    with pytest.raises(ValueError, match=ENV_VAR):
        backend_name(t)


def test_bad_inputs():
    W = torch.randn(10, 4)
    with pytest.raises(ValueError, match="idx"):
        sparse_decode_autograd(torch.randn(3, 2), torch.zeros(3, 2, dtype=torch.int32), W)
    with pytest.raises(ValueError, match="x must be"):
        sparse_encode(torch.randn(3, 5), torch.randn(4, 10), torch.zeros(10), torch.zeros(4), lambda p: p.topk(2))


def test_backward_allocates_nothing_dense_over_batch_and_latents(monkeypatch):
    """Only the encoder forward is dense: no op in the backward makes a [B, L]-sized tensor (the dense autograd
    reference would, for the latent gradient)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from interp.saes import TopKSAE

    monkeypatch.setenv(ENV_VAR, "torch")
    B, D, L, K = 64, 8, 512, 4  # B * L far above any [L, D] or [B, D] or [B, K] tensor

    class Sizes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                    self.largest = max(self.largest, t.numel())
            return out

    sae = TopKSAE(d_in=D, d_sae=L, k=K)
    x = torch.randn(B, D, requires_grad=True)
    out = sae.training_forward(x, torch.rand(L) < 0.5)
    with Sizes() as sparse_sizes:
        out.loss.backward()
    assert sparse_sizes.largest < B * L // 4, sparse_sizes.largest
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc  # the dense reference does make one
    v, i = pre.topk(K)
    loss = ((torch.zeros_like(pre).scatter(1, i, v.relu()) @ sae.W_dec + sae.b_dec - x) ** 2).sum()
    with Sizes() as dense_sizes:
        loss.backward()
    assert dense_sizes.largest >= B * L


def test_shape_annotations_are_checked():
    """The jaxtyping shapes of the ops hold on valid input and catch a mismatched idx (beartype, tests only)."""
    beartype = pytest.importorskip("beartype").beartype
    from jaxtyping import jaxtyped

    vals, idx = torch.randn(3, 2), torch.randint(0, 5, (3, 2))
    W, dy = torch.randn(5, 4), torch.randn(3, 4)
    for mod in (reference, cpu_ops):
        decode = jaxtyped(typechecker=beartype)(mod.sparse_decode)
        dot = jaxtyped(typechecker=beartype)(mod.gather_dot)
        outer = jaxtyped(typechecker=beartype)(mod.scatter_outer)
        assert decode(vals, idx, W).shape == (3, 4)
        assert dot(dy, idx, W).shape == (3, 2)
        assert outer(vals, idx, dy, 5).shape == (5, 4)
        with pytest.raises(Exception, match="idx|Type-check"):
            decode(vals, idx[:, :1], W)


def test_import_without_triton_falls_back_to_torch():
    code = textwrap.dedent("""
        import sys
        sys.modules['triton'] = None
        import torch
        import interp.kernels as k, interp.saes as s
        assert not k.triton_available()
        assert k.backend_name(torch.zeros(1)) in ('native', 'torch')  # never triton
        sae = s.TopKSAE(d_in=6, d_sae=20, k=3)
        sae.training_forward(torch.randn(4, 6)).loss.backward()
        import os
        os.environ['INTERP_SAE_KERNEL'] = 'triton'
        try:
            k.backend_name(torch.zeros(1))
        except RuntimeError as e:
            assert 'triton' in str(e)
        else:
            raise AssertionError('INTERP_SAE_KERNEL=triton without triton must raise')
        print("FALLBACK-OK")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False,
                         env={k: v for k, v in os.environ.items() if k != ENV_VAR})
    assert res.returncode == 0 and "FALLBACK-OK" in res.stdout, res.stderr[-3000:]
