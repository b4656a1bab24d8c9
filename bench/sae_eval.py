"""SAE evaluation and feature dashboards on SmolLM2 (or any model spec), timed side by side in one process.

1. ``evaluate()`` recomputing every layer for the spliced and zero-ablated runs (``reuse_prefix=False``, the code
   before this change) / ``evaluate()`` starting them from the clean run's cached residual stream (the default),
   at a few sites; runs alternate (before, after, before, after, ...) and the median of the per-pair ratios is
   reported. The two give the same numbers (checked here too).
2. ``inspect()`` throughput in tokens per second (``--inspect-seq`` sequences), next to the forward pass up to the
   site alone (the part of the work an SAE-free pass would do anyway).

The SAE is a random TopK SAE (d_sae 4096, k 32) with ``b_dec`` at the activations' mean: the timing does not depend
on its quality. Usage: ``python bench/sae_eval.py [--model smollm2] [--n-seq 16] [--seq 128] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import interp
from interp.saes import SAEMetadata, TopKSAE, builtin_corpus, evaluate, inspect, load_tokens
from interp.saes.store import site_activations


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--n-seq", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--inspect-seq", type=int, default=64, help="sequences for the inspect() timing")
    parser.add_argument("--skip-evaluate", action="store_true", help="time inspect() only")
    parser.add_argument("--d-sae", type=int, default=4096)
    parser.add_argument("--sites", nargs="+", default=None,
                        help="sites to time (default: layers 3, 12 and 24's resid_post and layer 20's mlp_out)")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = interp.load_model(args.model)
    all_toks = load_tokens(builtin_corpus(max_chars=600_000), model.tokenizer, args.seq)
    toks = all_toks[: args.n_seq]
    L = model.n_layers
    sites = args.sites or [f"blocks.{round(L * 0.1)}.hook_resid_post", f"blocks.{round(L * 0.4)}.hook_resid_post",
                           f"blocks.{round(L * 0.8)}.hook_resid_post",
                           model.components(round(L * 0.67))["mlp_out" if model.has_mlp else "out"]]
    print(f"model {args.model}: {L} layers; {toks.shape[0]} x {toks.shape[1]} tokens, batch {args.batch_size}; "
          f"torch threads {torch.get_num_threads()}")
    if not args.skip_evaluate:
        print(f"{'site':32s} {'before s':>9s} {'after s':>9s} {'before/after':>13s}   (median of {args.repeats} pairs)")
    with torch.inference_mode():
        for site in [] if args.skip_evaluate else sites:
            acts = site_activations(model, site, toks[:2])
            sae = TopKSAE(acts.shape[-1], args.d_sae, k=32)
            sae.b_dec.copy_(acts.reshape(-1, acts.shape[-1]).mean(0))
            sae.metadata = SAEMetadata(hook_name=site, model_name=args.model)
            run = {flag: (lambda flag=flag, sae=sae: evaluate(sae, model, tokens=toks, batch_size=args.batch_size,
                                                              reuse_prefix=flag, progress=False))
                   for flag in (False, True)}
            run[False](), run[True]()  # warm-up
            pairs = []
            for _ in range(args.repeats):
                (t_before, before), (t_after, after) = _timed(run[False]), _timed(run[True])
                pairs.append((t_before, t_after))
            same = all(abs(before.to_dict()[k] - after.to_dict()[k]) <= 1e-6 * max(1.0, abs(before.to_dict()[k]))
                       for k in ("ce_clean", "ce_spliced", "ce_zero_ablation", "kl_div", "fvu"))
            ratio = statistics.median(b / a for b, a in pairs)
            print(f"{site:32s} {statistics.median(b for b, _ in pairs):9.2f} "
                  f"{statistics.median(a for _, a in pairs):9.2f} {ratio:12.2f}x   same numbers: {same}")

        site = sites[1]
        acts = site_activations(model, site, toks[:2])
        sae = TopKSAE(acts.shape[-1], args.d_sae, k=32)
        sae.b_dec.copy_(acts.reshape(-1, acts.shape[-1]).mean(0))
        sae.metadata = SAEMetadata(hook_name=site, model_name=args.model)

        many = all_toks[: args.inspect_seq]
        n_tok = many.numel()

        def forward_only():
            for start in range(0, many.shape[0], args.batch_size):
                site_activations(model, site, many[start: start + args.batch_size])

        def dashboards(n_logits=10):
            return inspect(sae, model, many, batch_size=args.batch_size, n_logits=n_logits, progress=False)

        forward_only(), dashboards()  # warm-up
        runs = [(_timed(forward_only)[0], _timed(dashboards)[0], _timed(lambda: dashboards(0))[0])
                for _ in range(args.repeats)]
        t_fwd, t_ins, t_nolens = (statistics.median(r[i] for r in runs) for i in range(3))
        print(f"inspect() at {site}, d_sae {args.d_sae}, all latents, {n_tok} tokens: {n_tok / t_ins:,.0f} tokens/s "
              f"({t_ins:.2f} s; of which the logit lens of all {args.d_sae} decoder rows, a fixed cost: "
              f"{t_ins - t_nolens:.2f} s); without the logit lens {n_tok / t_nolens:,.0f} tokens/s; forward up to "
              f"the site alone: {n_tok / t_fwd:,.0f} tokens/s; inspect without lens / forward "
              f"{statistics.median(r[2] / r[0] for r in runs):.2f}x")


if __name__ == "__main__":
    main()
