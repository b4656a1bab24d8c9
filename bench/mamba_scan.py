"""Benchmark: HookedMamba's scans against Hugging Face's torch path, same weights, same inputs, same process.

Ratios per (arch, length), our model on its default scans (the native C scans of :mod:`interp.mamba.native`
when they build) and, side by side, on the torch scans (``INTERP_MAMBA_SCAN=torch``, the fallback):
- ``HF/fast``: HF forward time / our unhooked forward time (goal >= 3x);
- ``states/HF``: our ``run_with_cache`` of every layer's ``hook_ssm_state`` / HF forward (goal <= 1.0x);
- ``ceiling``: HF forward time / our forward with the scan replaced by ``y = D x`` (no scan at all): the best
  ``HF/fast`` any scan could reach, since everything else (projections, convolution, norms, LM head) is the
  same work in both models;
- ``floor``: HF forward time / the time of our model's matmuls alone (every ``nn.Linear``, LM head included, on
  inputs of the forward's shapes): work HF does too, so no implementation of the rest can beat this ratio;
- ``HF/torch`` and ``tstates/HF``: the first two with the torch scans.

A second table times the scans alone (same random inputs): HF's ``mamba_selective_scan`` (a Python loop over
positions) / ``mamba2_chunk_scan`` (chunked SSD, chunk 256) against our native scan, our torch scan
(``selective_scan_chunked`` / ``ssd_scan_chunked`` at the model's chunk) and our native scan writing every
state, which separates the scans from the projections both models share.

Default config: a scaled-down Mamba-130m / Mamba-2-130m -- their real layer shapes (d_model 768, expand 2;
Mamba-1: N 16, dt_rank 48; Mamba-2: N 128, head_dim 64 (24 heads), 1 group) with fewer layers (2) and a small
vocabulary (1024), so that the per-layer mixer work, not the LM head, is what is compared. The previous default
(d_model 256, 4 layers, Mamba-2 N 64) is ``--d-model 256 --layers 4 --mamba2-state 64``.

Run: ``python bench/mamba_scan.py [--lengths 64 256 1024] [--d-model 768] [--layers 2] [--batch 1] [--threads 1]``.
Timings are the median over ``--repeats`` rounds after one warm-up, in float32 on CPU; in each round every
variant runs once (round-robin, one process, same weights, same token ids, same thread count). State buffers
come from :func:`interp.mamba.buffers.empty_large`, which reuses freed ones: after the warm-up, the recording
runs write into memory already mapped (``INTERP_BUFFER_POOL_MIB=0`` measures fresh memory every call).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from functools import partial

import torch


def build(arch: str, d_model: int, layers: int, vocab: int, d_state: int = 128, seed: int = 0):
    import transformers as tf

    from interp.mamba import from_hf

    if arch == "mamba":
        cfg = tf.MambaConfig(hidden_size=d_model, state_size=16, num_hidden_layers=layers, vocab_size=vocab)
        cls = tf.MambaForCausalLM
    else:
        cfg = tf.Mamba2Config(hidden_size=d_model, state_size=d_state, num_hidden_layers=layers, vocab_size=vocab,
                              num_heads=2 * d_model // 64, head_dim=64, n_groups=1, chunk_size=256)
        cls = tf.Mamba2ForCausalLM
    torch.manual_seed(seed)
    hf = cls(cfg).eval()
    return hf, from_hf(hf)


def median_times(fns, repeats: int) -> list[float]:
    """Median wall time of each function over ``repeats`` rounds after one warm-up call each. The functions are
    timed round-robin (one call of each per round), so that a change in machine load hits all of them alike."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


class no_scan:
    """Context manager: our mixers skip the scan (``y = D x``), leaving every other op of the forward in place."""

    def __enter__(self):
        import interp.mamba.mamba1 as m1
        import interp.mamba.mamba2 as m2

        self.saved = (m1.mamba1_scan, m2.mamba2_scan)
        m1.mamba1_scan = lambda x, dt, A, B, C, D, *a, **kw: (D * x.float(), None, None)
        m2.mamba2_scan = lambda x, dt, A, B, C, D, *a, **kw: (D[:, None] * x.float(), None, None)
        return self

    def __exit__(self, *exc):
        import interp.mamba.mamba1 as m1
        import interp.mamba.mamba2 as m2

        m1.mamba1_scan, m2.mamba2_scan = self.saved


def matmul_floor(model, batch: int, T: int):
    """A function running only the model's matmuls (every ``nn.Linear``: projections and LM head) on inputs of the
    forward's shapes: work both HF and we must do, so ``HF / floor`` bounds ``HF/fast`` from above."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    inputs = [torch.randn(batch, T, m.in_features) for m in linears]

    def run():
        for m, x in zip(linears, inputs):
            m(x)

    return run


def _no_scan_forward(model, ids):
    with no_scan():
        return model(ids)


def scan_inputs(arch: str, T: int, batch: int, d_model: int, d_state: int):
    g = torch.Generator().manual_seed(T)
    d = 2 * d_model
    if arch == "mamba":
        x, dt = torch.randn(batch, T, d, generator=g), torch.rand(batch, T, d, generator=g) * 0.1
        A = -torch.rand(d, 16, generator=g) * 16
        B, C = torch.randn(batch, T, 16, generator=g), torch.randn(batch, T, 16, generator=g)
        return x, dt, A, B, C, torch.randn(d, generator=g)
    H = d // 64
    x, dt = torch.randn(batch, T, H, 64, generator=g), torch.rand(batch, T, H, generator=g) * 0.1
    B, C = torch.randn(batch, T, 1, d_state, generator=g), torch.randn(batch, T, 1, d_state, generator=g)
    return x, dt, -torch.rand(H, generator=g) * 8, B, C, torch.randn(H, generator=g)


def scan_table(args) -> None:
    from transformers.models.mamba.modeling_mamba import mamba_selective_scan
    from transformers.models.mamba2.modeling_mamba2 import mamba2_chunk_scan

    from interp.mamba.mamba2 import SSD_CHUNK
    from interp.mamba.native import mamba1_scan_native, mamba2_scan_native
    from interp.mamba.scan import selective_scan_chunked, ssd_scan_chunked

    print(f"{'scan':7s} {'T':>5s} {'HF s':>8s} {'native s':>9s} {'torch s':>8s} {'states s':>9s} "
          f"{'HF/native':>10s} {'HF/torch':>9s} {'states/HF':>10s}")
    for arch in args.archs:
        for T in args.lengths:
            x, dt, A, B, C, D = scan_inputs(arch, T, args.batch, args.d_model, args.mamba2_state)
            if arch == "mamba":
                hf_args = (x.transpose(1, 2), dt.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), D)
                hf = partial(mamba_selective_scan, *hf_args)
                fast = partial(mamba1_scan_native, x, dt, A, B, C, D)
                torch_scan = partial(selective_scan_chunked, x, dt, A, B, C, D, return_states=False)
                states = partial(mamba1_scan_native, x, dt, A, B, C, D, return_states=True)
                err = (hf().transpose(1, 2) - fast()[0]).abs().max().item()
            else:
                hf = partial(mamba2_chunk_scan, x, dt, A, B, C, 256, D=D)
                fast = partial(mamba2_scan_native, x, dt, A, B, C, D)
                torch_scan = partial(ssd_scan_chunked, x, dt, A, B, C, D, chunk_size=min(SSD_CHUNK, T))
                states = partial(mamba2_scan_native, x, dt, A, B, C, D, return_states=True)
                err = (hf() - fast()[0]).abs().max().item()
            t_hf, t_fast, t_torch, t_states = median_times((hf, fast, torch_scan, states), args.repeats)
            print(f"{arch:7s} {T:5d} {t_hf:8.4f} {t_fast:9.4f} {t_torch:8.4f} {t_states:9.4f} "
                  f"{t_hf / t_fast:9.2f}x {t_hf / t_torch:8.2f}x {t_states / t_hf:9.2f}x   (max |y diff| {err:.1e})")


class scan_mode:
    """Context manager: run our model with ``INTERP_MAMBA_SCAN`` set to ``mode`` (``torch``: the torch scans)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __enter__(self):
        from interp.mamba.native import ENV_VAR

        self.var = ENV_VAR
        self.saved = os.environ.get(ENV_VAR)
        os.environ[ENV_VAR] = self.mode

    def __exit__(self, *exc):
        if self.saved is None:
            os.environ.pop(self.var, None)
        else:
            os.environ[self.var] = self.saved


def _with_torch_scans(fn, *args, **kwargs):
    with scan_mode("torch"):
        return fn(*args, **kwargs)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--archs", nargs="+", default=["mamba", "mamba2"])
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--mamba2-state", type=int, default=128, help="Mamba-2 state size N (Mamba-1 uses 16)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-scan-table", action="store_true", help="skip the scan-only table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging

    logging.set_verbosity_error()
    print(f"d_model {args.d_model}, {args.layers} layers, vocab {args.vocab}, batch {args.batch}, {args.threads} "
          f"thread(s), float32, median of {args.repeats}; Mamba-1 N=16, d_inner {2 * args.d_model}, dt_rank "
          f"{-(-args.d_model // 16)}; Mamba-2 N={args.mamba2_state}, head_dim 64 ({2 * args.d_model // 64} heads), "
          "1 group, HF chunk_size 256")
    from interp.mamba.native import native_available

    print(f"native scans: {'built' if native_available() else 'NOT available (torch scans in every column)'}")
    print(f"{'arch':7s} {'T':>5s} {'HF s':>7s} {'fast s':>7s} {'states s':>8s} {'noscan s':>8s} {'torch s':>7s} "
          f"{'tstates s':>9s} | {'HF/fast':>7s} {'states/HF':>9s} {'ceiling':>7s} {'floor':>6s} | {'HF/torch':>8s} "
          f"{'tstates/HF':>10s}")
    for arch in args.archs:
        hf, ours = build(arch, args.d_model, args.layers, args.vocab, args.mamba2_state)
        names = [f"blocks.{layer}.mixer.hook_ssm_state" for layer in range(ours.n_layers)]
        for T in args.lengths:
            ids = torch.randint(0, args.vocab, (args.batch, T))
            err = (hf(ids).logits - ours(ids)).abs().max().item()
            record = partial(ours.run_with_cache, ids, names_filter=names)
            t_hf, t_fast, t_states, t_none, t_floor, t_torch, t_tstates = median_times(
                (partial(hf, ids, use_cache=False), partial(ours, ids), record, partial(_no_scan_forward, ours, ids),
                 matmul_floor(ours, args.batch, T), partial(_with_torch_scans, ours, ids),
                 partial(_with_torch_scans, record)),
                args.repeats)
            print(f"{arch:7s} {T:5d} {t_hf:7.4f} {t_fast:7.4f} {t_states:8.4f} {t_none:8.4f} {t_torch:7.4f} "
                  f"{t_tstates:9.4f} | {t_hf / t_fast:6.2f}x {t_states / t_hf:8.2f}x {t_hf / t_none:6.2f}x "
                  f"{t_hf / t_floor:5.2f}x | {t_hf / t_torch:7.2f}x {t_tstates / t_hf:9.2f}x  "
                  f"(max |logit diff| {err:.1e})")
    if not args.no_scan_table:
        scan_table(args)


if __name__ == "__main__":
    main()
