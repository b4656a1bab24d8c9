"""Triton kernels against the references under TRITON_INTERPRET=1 (CPU), in a subprocess: the interpreter is
chosen when ``@triton.jit`` runs, i.e. at import, so it needs a fresh interpreter."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

triton = pytest.importorskip("triton")

_SCRIPT = textwrap.dedent("""
    import torch
    from interp.kernels import reference, triton_ops, sparse_encode, sparse_decode_autograd
    for (B, D, L, K) in [(3, 5, 11, 3), (4, 16, 32, 4), (5, 33, 19, 2)]:
        for dtype, tol in [(torch.float64, 1e-10), (torch.float32, 1e-4)]:
            gen = torch.Generator().manual_seed(B + D + L)
            idx = torch.stack([torch.randperm(L, generator=gen)[:K] for _ in range(B)])
            idx[0, -1] = idx[0, 0]
            vals = torch.randn(B, K, dtype=dtype, generator=gen)
            W = torch.randn(L, D, dtype=dtype, generator=gen)
            dy = torch.randn(B, D, dtype=dtype, generator=gen)
            pairs = [
                (triton_ops.sparse_decode(vals, idx, W), reference.sparse_decode(vals, idx, W)),
                (triton_ops.sparse_decode(vals, idx, W.t().contiguous().t()), reference.sparse_decode(vals, idx, W)),
                (triton_ops.gather_dot(dy, idx, W), reference.gather_dot(dy, idx, W)),
                (triton_ops.scatter_outer(vals, idx, dy, L), reference.scatter_outer(vals, idx, dy, L)),
            ]
            for i, (got, want) in enumerate(pairs):
                torch.testing.assert_close(got, want, rtol=tol, atol=tol, msg=lambda m: f"op {i} {B,D,L,K}: {m}")
    # the whole sparse step through the triton backend, gradients against dense autograd
    B, D, L, K = 5, 9, 17, 3
    gen = torch.Generator().manual_seed(0)
    leaves = [torch.randn(*s, dtype=torch.float64, generator=gen, requires_grad=True)
              for s in [(B, D), (D, L), (L,), (D,), (L, D)]]
    x, W_enc, b_enc, b_dec, W_dec = leaves
    sel = lambda pre: (lambda v: (v[0].relu(), v[1]))(pre.topk(K, sorted=False))
    vals, idx = sparse_encode(x, W_enc, b_enc, b_dec, sel)
    loss = ((sparse_decode_autograd(vals, idx, W_dec) + b_dec - 1.0) ** 2).sum()
    grads = torch.autograd.grad(loss, leaves)
    pre = (x - b_dec) @ W_enc + b_enc
    v, i = pre.topk(K)
    ref = (((torch.zeros_like(pre).scatter(1, i, v.relu()) @ W_dec + b_dec) - 1.0) ** 2).sum()
    for g, r in zip(grads, torch.autograd.grad(ref, leaves)):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-9)
    print("TRITON-OK")
""")


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, **env})


def test_triton_kernels_match_reference_interpreted():
    res = _run(_SCRIPT, TRITON_INTERPRET="1", INTERP_SAE_KERNEL="triton")
    assert res.returncode == 0 and "TRITON-OK" in res.stdout, res.stderr[-3000:]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_triton_on_cuda_matches_reference():
    from interp.kernels import reference, triton_ops

    dev = torch.device("cuda")
    for (B, D, L, K) in [(7, 33, 129, 5), (256, 512, 4096, 32)]:
        idx = torch.stack([torch.randperm(L, device=dev)[:K] for _ in range(B)])
        vals = torch.randn(B, K, device=dev)
        W = torch.randn(L, D, device=dev)
        dy = torch.randn(B, D, device=dev)
        torch.testing.assert_close(triton_ops.sparse_decode(vals, idx, W), reference.sparse_decode(vals, idx, W),
                                   rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(triton_ops.gather_dot(dy, idx, W), reference.gather_dot(dy, idx, W),
                                   rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(triton_ops.scatter_outer(vals, idx, dy, L),
                                   reference.scatter_outer(vals, idx, dy, L), rtol=1e-4, atol=1e-4)
