"""Wall time of the full ``interp.heads.detect`` (all six kinds plus causal validation) and its forward passes per
stage, with a plain forward pass timed in the same process as the unit.

Goal: all six kinds plus validation <= 60 s on 2 CPU cores for SmolLM2 (default config). The baseline is the median
of ``--repeats`` plain forward passes over the repeated-token probe batch (8 rows x 81 tokens by default), timed
before and after the run, so the report reads "detect = N plain forwards" as well as seconds. Run it alone (under
the CPU lock on a shared machine). Usage: ``python bench/heads.py [--model smollm2] [--kinds a,b] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

import interp
from interp import heads
from interp.heads.probes import repeated_tokens


def _plain_forward_seconds(model, tokens, repeats: int) -> list[float]:
    times = []
    with torch.inference_mode():
        model(tokens)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model(tokens)
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--kinds", default=None, help="comma-separated kinds (default: all)")
    parser.add_argument("--repeats", type=int, default=5, help="plain forward passes timed for the baseline")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", default=None, help="also write the report's JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    model = interp.load_model(args.model)
    load = time.perf_counter() - start
    cfg = heads.HeadsConfig.for_model(model, kinds=heads.config.check_kinds(args.kinds))
    probe = repeated_tokens(model, cfg.repeat_batch, cfg.repeat_half, seed=cfg.seed)
    base = _plain_forward_seconds(model, probe, args.repeats)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        start = time.perf_counter()
        report = heads.detect_config(model, cfg, name=args.model, progress=False)
        total = time.perf_counter() - start
    base += _plain_forward_seconds(model, probe, args.repeats)
    unit = statistics.median(base)

    print(f"model {args.model}  threads {torch.get_num_threads()}  load {load:.1f} s  kinds {','.join(cfg.kinds)}")
    print(f"plain forward, {probe.shape[0]} x {probe.shape[1]} tokens: {unit * 1e3:.0f} ms (median of "
          f"{len(base)}; min {min(base) * 1e3:.0f}, max {max(base) * 1e3:.0f})")
    print(f"{'stage':44s} {'passes':>7s} {'tokens':>9s} {'seconds':>8s} {'x plain fwd':>11s}")
    for stage, e in report.passes.items():
        print(f"{stage:44s} {int(e['passes']):7d} {int(e['tokens']):9d} {e['seconds']:8.1f} "
              f"{e['seconds'] / unit:11.1f}")
    passes = sum(int(e["passes"]) for e in report.passes.values())
    tokens = sum(int(e["tokens"]) for e in report.passes.values())
    print(f"{'detect (all stages)':44s} {passes:7d} {tokens:9d} {total:8.1f} {total / unit:11.1f}   (goal <= 60 s)")
    for kind in cfg.kinds:
        if kind in report.skipped:
            print(f"  {kind:16s} skipped: {report.skipped[kind]}")
        else:
            top = ", ".join(f"L{h.layer}.{h.head}={h.score:.2f}" for h in report.top(kind, 3))
            print(f"  {kind:16s} {top}  |  {report.validation[kind].verdict}")
    if args.json:
        report.save_json(args.json)


if __name__ == "__main__":
    main()
