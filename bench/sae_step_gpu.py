"""Bench: the TopK SAE training step on CUDA: Triton kernels vs the plain-torch and reference backends vs SAELens.

    python bench/sae_step_gpu.py [--quick] [--repeats N]     # on a CUDA machine, about 1-2 minutes
    python bench/sae_step_gpu.py --dry-run                   # no GPU: the same logic on CPU, Triton interpreted

Same contenders, rounds and within-round ratios as bench/sae_step.py (read its docstring): the floor is one dense
encoder ``addmm`` (new memory), "compute" the GEMM into a reused output; "ours" runs with ``INTERP_SAE_KERNEL``
set to triton, and again with torch and reference; SAELens's TopK trainer step for comparison. On CUDA the encoder
is not fused (the fused encoder is the CPU backend's): the step is dense ``addmm`` + ``topk`` + the Triton sparse
kernels. Before timing, it checks that the Triton step's loss and every gradient equal the reference backend's.
Exits with a message (status 0) when no CUDA device is present and --dry-run is not given. Without sae-lens
importable it says so and times the rest (on a bare GPU machine: ``pip install --no-deps --no-build-isolation -e .``
makes ``interp`` importable; the SAELens column needs sae-lens and its imports, see README "SAE training speed").

``--dry-run`` runs everything on CPU tensors at a tiny size with ``TRITON_INTERPRET=1`` (it re-executes itself with
that set, since Triton picks the interpreter at import): it checks the script's logic, not GPU speed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from sae_step import COMPUTE, FLOOR, SAELENS, ours_step_fn, report, run

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


def check_triton_matches_reference(d_in, d_sae, k, batch, device):
    """Loss and all gradients of one step (with dead latents, so AuxK runs) on the triton and reference backends."""
    torch.manual_seed(0)
    sae = TopKSAE(d_in=d_in, d_sae=d_sae, k=k, device=device)
    x = torch.randn(batch, d_in, device=device)
    dead = torch.rand(d_sae, device=device) < 0.5
    results = {}
    for backend in ("triton", "reference"):
        out = _with_backend(backend, lambda x: sae.training_forward(x, dead))(x)
        grads = torch.autograd.grad(out.loss, list(sae.parameters()))
        results[backend] = (out.loss, grads)
    (l1, g1), (l2, g2) = results["triton"], results["reference"]
    torch.testing.assert_close(l1, l2, rtol=1e-4, atol=1e-4)
    for name, a, b in zip(("W_enc", "b_enc", "W_dec", "b_dec"), g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=lambda m, n=name: f"grad {n}: {m}")
    print("check: triton loss and all gradients match the reference backend")


def _triton_version() -> str:
    import triton

    return triton.__version__


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--no-saelens", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="CPU tensors, tiny size, TRITON_INTERPRET=1 (no GPU)")
    a = p.parse_args()
    if a.dry_run and os.environ.get("TRITON_INTERPRET") != "1":
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "TRITON_INTERPRET": "1"})
    if not a.dry_run and not torch.cuda.is_available():
        print("sae_step_gpu: no CUDA device here; nothing to bench (run bench/sae_step.py for the CPU path, or "
              "--dry-run to check this script's logic on CPU).")
        sys.exit(0)
    if not triton_available():
        print("sae_step_gpu: triton does not import; pip install triton (the 'kernels' extra).")
        sys.exit(0)
    with_saelens = not a.no_saelens
    if with_saelens:
        try:
            import sae_lens  # noqa: F401
        except Exception as err:  # noqa: BLE001 - any import failure only drops that column
            print(f"sae_step_gpu: SAELens is not importable here ({type(err).__name__}: {err}); timing without it.")
            with_saelens = False
    device = "cpu" if a.dry_run else "cuda"
    if a.dry_run:
        d_in, d_sae, k, batch, repeats = 16, 64, 4, 32, 2
    else:
        d_in, d_sae, k, batch = (64, 1024, 8, 256) if a.quick else (512, 16384, 32, 4096)
        repeats = a.repeats
    start = time.perf_counter()
    check_triton_matches_reference(d_in, d_sae, k, min(batch, 1024), device)
    extra = {}
    for backend in ("torch", "reference"):
        fn, _ = ours_step_fn(d_in, d_sae, k, device)
        extra[f"ours, {backend} backend"] = _with_backend(backend, fn)
    os.environ[ENV_VAR] = "triton"
    # a GPU run does not contend with other processes for the CPUs the way the CPU bench does: no waiting
    times = run(d_in, d_sae, k, batch, repeats, device=device, with_saelens=with_saelens, extra=extra,
                max_foreign=1.0, max_wait=0.0)
    name = ("CPU (dry run, Triton interpreted)" if a.dry_run
            else f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {_triton_version()}")
    report(times, f"TopK step, {name}, d_in {d_in} -> d_sae {d_sae}, k {k}, batch {batch}, 'ours' = triton "
                  f"backend, median of {repeats} rounds")
    assert {FLOOR, COMPUTE} <= set(times) and (not with_saelens or SAELENS in times)
    print(f"  wall time of the bench: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
