"""``causal_conv`` (shifted multiply-adds in [b, T, c]) against ``F.conv1d`` on the transposed input."""

import pytest
import torch
import torch.nn.functional as F

from interp.mamba.mamba1 import causal_conv


def _reference(conv: torch.nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    T = x.shape[1]
    out = F.conv1d(x.transpose(1, 2), conv.weight, conv.bias, padding=conv.kernel_size[0] - 1, groups=conv.groups)
    return F.silu(out[..., :T]).transpose(1, 2)


@pytest.mark.parametrize("T", [1, 2, 3, 4, 5, 33])
@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_conv1d_values_and_grads(T, k, bias):
    c = 10
    conv = torch.nn.Conv1d(c, c, k, groups=c, padding=k - 1, bias=bias).double()
    x = torch.randn(3, T, c, dtype=torch.float64, requires_grad=True)
    out = causal_conv(conv, x)
    assert out.shape == (3, T, c) and out.is_contiguous()
    ref = _reference(conv, x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, *conv.parameters()], g)
    ref_grads = torch.autograd.grad(ref, [x, *conv.parameters()], g)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_no_grad_and_dtype():
    conv = torch.nn.Conv1d(6, 6, 4, groups=6, padding=3)
    x = torch.randn(2, 9, 6).to(torch.bfloat16)
    with torch.no_grad():
        out = causal_conv(conv, x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), _reference(conv, x.float()).detach(), rtol=0, atol=2e-2)
