"""Bench: the TopK SAE training step on CUDA: Triton kernels vs the plain-torch and reference backends vs SAELens.

    python bench/sae_step_gpu.py [--quick] [--repeats N]

Same step and floor as bench/sae_step.py (read its docstring): one dense encoder matmul is the floor; "ours" runs
with INTERP_SAE_KERNEL set to triton, torch and reference in turn; SAELens's TopK trainer step for comparison.
Also checks, before timing, that the Triton step's loss and gradients equal the reference backend's.
Exits with a message (status 0) when no CUDA device is present.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from sae_step import ours_step_fn, report, run

from interp.kernels import ENV_VAR, triton_available
from interp.saes import TopKSAE


def _with_backend(backend: str, fn):
    def step(x):
        old = os.environ.get(ENV_VAR)
        os.environ[ENV_VAR] = backend
        try:
            return fn(x)
        finally:
            if old is None:
                os.environ.pop(ENV_VAR)
            else:
                os.environ[ENV_VAR] = old
    return step


def check_triton_matches_reference(d_in, d_sae, k, batch):
    torch.manual_seed(0)
    sae = TopKSAE(d_in=d_in, d_sae=d_sae, k=k, device="cuda")
    x = torch.randn(batch, d_in, device="cuda")
    dead = torch.rand(d_sae, device="cuda") < 0.5
    results = {}
    for backend in ("triton", "reference"):
        out = _with_backend(backend, lambda x: sae.training_forward(x, dead))(x)
        grads = torch.autograd.grad(out.loss, list(sae.parameters()))
        results[backend] = (out.loss, grads)
    (l1, g1), (l2, g2) = results["triton"], results["reference"]
    torch.testing.assert_close(l1, l2, rtol=1e-4, atol=1e-4)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    print("check: triton loss and all gradients match the reference backend")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--no-saelens", action="store_true")
    a = p.parse_args()
    if not torch.cuda.is_available():
        print("sae_step_gpu: no CUDA device here; nothing to bench (run bench/sae_step.py for the CPU path).")
        sys.exit(0)
    if not triton_available():
        print("sae_step_gpu: triton does not import; pip install triton (the 'kernels' extra).")
        sys.exit(0)
    d_in, d_sae, k, batch = (64, 1024, 8, 256) if a.quick else (512, 16384, 32, 4096)
    check_triton_matches_reference(d_in, d_sae, k, min(batch, 1024))
    extra = {}
    for backend in ("torch", "reference"):
        fn, _ = ours_step_fn(d_in, d_sae, k, "cuda")
        extra[f"ours, {backend} backend"] = _with_backend(backend, fn)
    os.environ[ENV_VAR] = "triton"
    medians = run(d_in, d_sae, k, batch, a.repeats, device="cuda", with_saelens=not a.no_saelens, extra=extra)
    report(medians, f"TopK step, {torch.cuda.get_device_name()}, d_in {d_in} -> d_sae {d_sae}, k {k}, "
                    f"batch {batch}, 'ours' = triton backend, median of {a.repeats}")


if __name__ == "__main__":
    main()
