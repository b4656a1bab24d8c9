"""Bad inputs to the sparse SAE kernels and their backend selection."""

import torch

from interp.kernels import backend_name, sparse_decode_autograd, sparse_encode

W = torch.randn(10, 4)


def _select(pre):
    return pre.topk(2, dim=-1)


ROWS = [
    ("decode-idx-float", lambda e: sparse_decode_autograd(torch.ones(2, 3), torch.ones(2, 3), W), ValueError,
     r"idx must be int64 \[B, K\] like vals \(2, 3\), got torch\.float32"),
    ("decode-idx-shape", lambda e: sparse_decode_autograd(torch.ones(2, 3), torch.ones(2, 2, dtype=torch.long), W),
     ValueError, r"idx must be int64 \[B, K\] like vals \(2, 3\), got torch\.int64 \(2, 2\)"),
    ("decode-w-1d", lambda e: sparse_decode_autograd(torch.ones(2, 3), torch.ones(2, 3, dtype=torch.long),
                                                     torch.ones(10)), ValueError,
     r"W must be \[n_latents, D\], got \(10,\)"),
    ("encode-width", lambda e: sparse_encode(torch.randn(3, 5), W, torch.zeros(4), torch.zeros(10), _select),
     ValueError, r"x must be \[B, 10\] for W_enc \(10, 4\), got \(3, 5\)"),
    ("backend-env", lambda e: e.setenv("INTERP_SAE_KERNEL", "cuda") and backend_name(W), ValueError,
     r"INTERP_SAE_KERNEL must be one of \('native', 'torch', 'triton', 'reference'\), got 'cuda'"),
]
