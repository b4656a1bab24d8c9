"""Benchmark the SAE-training pipeline on SmolLM2 (or any model spec), each against a baseline in this process.

1. Activations: ``site_activations`` (hook that stops the forward after the site's layer) vs
   ``run_with_cache(names_filter=[site])`` (full forward), same tokens. Prints tokens/s and the speed-up.
2. Training step: ``interp.saes.train`` on an in-memory store (the whole trainer: store, SAE step with the sparse
   kernels, Adam, dead-latent counters, metrics) vs a plain dense-PyTorch TopK step (dense encoder, ``topk``,
   dense decoder, autograd, Adam) at the same sizes. Prints tokens/s and the ratio.

    python bench/sae_train_smollm2.py                       # SmolLM2, blocks.12.hook_resid_post
    python bench/sae_train_smollm2.py --model PATH --site blocks.1.hook_resid_post --d-sae 1024
"""

from __future__ import annotations

import argparse
import time

import torch


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def bench_activations(model, site: str, n_seq: int, ctx: int, repeats: int) -> None:
    from interp.saes.store import site_activations

    toks = torch.randint(3, min(model.d_vocab, 30000), (n_seq, ctx))
    early = _time(lambda: site_activations(model, site, toks), repeats)
    full = _time(lambda: model.run_with_cache(toks, names_filter=[site]), repeats)
    n = n_seq * ctx
    print(f"activations at {site}: early stop {n / early:,.0f} tok/s, run_with_cache {n / full:,.0f} tok/s, "
          f"speed-up x{full / early:.2f}")


def bench_train_step(d_in: int, d_sae: int, k: int, batch: int, steps: int) -> None:
    from interp.saes.config import TrainConfig
    from interp.saes.store import ActivationStore
    from interp.saes.train import train

    x = torch.randn(batch * (steps + 8), d_in)
    cfg = TrainConfig(site="bench", d_sae=d_sae, k=k, batch_size=batch, buffer_batches=4,
                      steps=steps, progress=False, log_every=steps)
    store = ActivationStore.from_tensor(x, batch_size=batch, buffer_batches=4)
    start = time.perf_counter()
    train(cfg, store=store)
    ours = (time.perf_counter() - start) / steps

    w_enc = torch.randn(d_in, d_sae, requires_grad=True)
    w_dec = torch.randn(d_sae, d_in, requires_grad=True)
    b_enc = torch.zeros(d_sae, requires_grad=True)
    b_dec = torch.zeros(d_in, requires_grad=True)
    opt = torch.optim.Adam([w_enc, w_dec, b_enc, b_dec], lr=1e-4)
    xb = x[:batch]

    def dense_step():
        pre = (xb - b_dec) @ w_enc + b_enc
        vals, idx = pre.topk(k, dim=-1)
        z = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
        loss = (z @ w_dec + b_dec - xb).pow(2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    dense = _time(dense_step, max(2, steps // 2))
    print(f"train step d_in={d_in} d_sae={d_sae} k={k} batch={batch}: interp.saes.train {batch / ours:,.0f} tok/s, "
          f"dense PyTorch baseline {batch / dense:,.0f} tok/s, ratio x{dense / ours:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--site", default="blocks.12.hook_resid_post")
    p.add_argument("--n-seq", type=int, default=8)
    p.add_argument("--context-length", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--d-sae", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()

    import interp

    model = interp.load_model(args.model)
    bench_activations(model, args.site, args.n_seq, args.context_length, args.repeats)
    d_in = model.d_model if "resid" in args.site else None
    if d_in is None:
        from interp.saes.store import site_activations

        d_in = site_activations(model, args.site, torch.ones(1, 2, dtype=torch.long)).shape[-1]
    bench_train_step(d_in, args.d_sae, args.k, args.batch_size, args.steps)


if __name__ == "__main__":
    main()
