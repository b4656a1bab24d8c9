"""Cost of the hook layer on SmolLM2 (or any model spec), as ratios measured side by side in one process.

1. time of ``run_with_cache`` filtered to attention patterns / time of a plain forward (goal: <= 1.10x);
2. time of a forward with an identity hook on every residual site / plain forward;
3. peak memory added by a full cache (every site) / the sum of the cached tensors' sizes (goal: close to 1).

Runs alternate (plain, hooked, plain, hooked, ...) and the median of the per-pair ratios is reported, so drift on a
shared machine cancels out. Usage: ``python bench/hook_overhead.py [--model smollm2] [--batch 4] [--seq 128]``.
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import time

import torch

import interp


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _paired_ratio(base, other, repeats: int) -> tuple[float, float, float]:
    base(), other()  # warm-up
    pairs = [(_timed(base), _timed(other)) for _ in range(repeats)]
    ratios = [o / b for b, o in pairs]
    return statistics.median(ratios), statistics.median(b for b, _ in pairs), statistics.median(o for _, o in pairs)


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = interp.load_model(args.model)
    tokens = torch.randint(0, model.d_vocab, (args.batch, args.seq))
    patterns = lambda name: name.endswith("hook_pattern")  # noqa: E731
    resid = lambda name: "hook_resid" in name  # noqa: E731

    with torch.inference_mode():
        plain = lambda: model(tokens)  # noqa: E731
        cached = lambda: model.run_with_cache(tokens, names_filter=patterns)  # noqa: E731
        hooked = lambda: model.run_with_hooks(tokens, fwd_hooks=[(resid, lambda a, hook: a)])  # noqa: E731
        r_cache, t_plain, t_cache = _paired_ratio(plain, cached, args.repeats)
        r_hook, _, t_hook = _paired_ratio(plain, hooked, args.repeats)

        gc.collect()
        before = _max_rss_bytes()
        _, cache = model.run_with_cache(tokens)
        added = _max_rss_bytes() - before
    print(f"model {args.model}  batch {args.batch}  seq {args.seq}  repeats {args.repeats}  "
          f"threads {torch.get_num_threads()}")
    print(f"plain forward                                  {t_plain * 1e3:8.1f} ms   1.00x")
    print(f"run_with_cache(hook_pattern, all layers)       {t_cache * 1e3:8.1f} ms   {r_cache:.2f}x   (goal <= 1.10x)")
    print(f"run_with_hooks(identity on every hook_resid_*) {t_hook * 1e3:8.1f} ms   {r_hook:.2f}x")
    print(f"full cache: {len(cache)} sites, {cache.nbytes() / 2**20:.0f} MiB of tensors; peak RSS grew "
          f"{added / 2**20:.0f} MiB -> {added / cache.nbytes():.2f}x the tensors "
          "(the forward's own peak was measured first)")


if __name__ == "__main__":
    main()
