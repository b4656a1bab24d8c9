"""Wall time of the full ``interp.heads.detect`` (all six kinds plus causal validation) per stage, against the plain
reference implementation run in the same process, with a plain forward pass as the unit.

The reference is ``interp.heads.passes.plain_passes()``: full attention patterns indexed afterwards (no query rows),
every validation condition run through all blocks from the tokens (no shared clean prefix): what ``detect`` did
before these shortcuts. The bench prints each stage's seconds and work (token positions x fraction of blocks) for
both, the speed-up, and the largest score difference and verdict agreement per kind (goal: <= 1e-4, same verdicts).
The baseline unit is the median of ``--repeats`` plain forward passes over the repeated-token probe batch, timed
before and after the runs. Run it alone (``flock /tmp/interp-cpu.lock`` on a shared machine). Usage: ``python
bench/heads.py [--model smollm2] [--kinds a,b] [--repeats 3] [--no-reference]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

import interp
from interp import heads
from interp.heads.passes import plain_passes
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


def _detect(model, cfg, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        start = time.perf_counter()
        report = heads.detect_config(model, cfg, name=name, progress=False)
        return report, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--kinds", default=None, help="comma-separated kinds (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="plain forward passes timed for the baseline")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--no-reference", action="store_true", help="skip the plain reference run")
    parser.add_argument("--thorough", action="store_true", help="measure the thorough preset instead of the defaults")
    parser.add_argument("--also-thorough", action="store_true",
                        help="also run the thorough preset and compare its top-k heads and verdicts")
    parser.add_argument("--json", default=None, help="also write the report's JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    model = interp.load_model(args.model)
    load = time.perf_counter() - start
    cfg = heads.HeadsConfig.for_model(model, thorough=args.thorough, kinds=heads.config.check_kinds(args.kinds))
    probe = repeated_tokens(model, cfg.repeat_batch, cfg.repeat_half, seed=cfg.seed)
    base = _plain_forward_seconds(model, probe, args.repeats)
    report, total = _detect(model, cfg, args.model)
    ref = ref_total = None
    if not args.no_reference:
        with plain_passes():
            ref, ref_total = _detect(model, cfg, args.model)
    thorough = None
    if args.also_thorough:
        thorough, thorough_total = _detect(model, heads.HeadsConfig.for_model(model, thorough=True, kinds=cfg.kinds),
                                           args.model)
    base += _plain_forward_seconds(model, probe, args.repeats)
    unit = statistics.median(base)

    print(f"model {args.model}  threads {torch.get_num_threads()}  load {load:.1f} s  kinds {','.join(cfg.kinds)}")
    print(f"plain forward, {probe.shape[0]} x {probe.shape[1]} tokens: {unit * 1e3:.0f} ms (median of "
          f"{len(base)}; min {min(base) * 1e3:.0f}, max {max(base) * 1e3:.0f})")
    print(f"{'stage':42s} {'passes':>6s} {'work':>7s} {'seconds':>8s} {'x fwd':>6s}"
          + ("" if ref is None else f" | {'ref work':>8s} {'ref s':>6s} {'speed-up':>8s}"))
    for stage, e in report.passes.items():
        line = (f"{stage:42s} {int(e['passes']):6d} {int(e['tokens']):7d} {e['seconds']:8.1f} "
                f"{e['seconds'] / unit:6.1f}")
        if ref is not None:
            r = ref.passes[stage]
            line += f" | {int(r['tokens']):8d} {r['seconds']:6.1f} {r['seconds'] / e['seconds']:7.2f}x"
        print(line)
    work = sum(e["tokens"] for e in report.passes.values())
    line = f"{'detect (all stages)':42s} {'':6s} {int(work):7d} {total:8.1f} {total / unit:6.1f}"
    if ref is not None:
        ref_work = sum(e["tokens"] for e in ref.passes.values())
        line += f" | {int(ref_work):8d} {ref_total:6.1f} {ref_total / total:7.2f}x"
    print(line)
    for kind in cfg.kinds:
        if kind in report.skipped:
            print(f"  {kind:16s} skipped: {report.skipped[kind]}")
            continue
        top = ", ".join(f"L{h.layer}.{h.head}={h.score:.2f}" for h in report.top(kind, 3))
        v = report.validation[kind]
        same = ""
        if ref is not None:
            diff = float((report.scores[kind] - ref.scores[kind]).abs().max())
            agree = "same verdict" if v.causal == ref.validation[kind].causal else "VERDICT DIFFERS"
            same = f"  |  max |score - ref| {diff:.1e}, {agree}"
        print(f"  {kind:16s} {top}  |  {'causal' if v.causal else 'not causal'} ({v.effect:.3g} vs random "
              f"{v.random_mean:.3g}){same}")
    if thorough is not None:
        print(f"thorough preset: {thorough_total:.1f} s ({thorough_total / total:.2f}x); against these defaults:")
        for kind in report.scores:
            if kind not in thorough.scores:
                continue
            mine = {h[:2] for h in report.top(kind)}
            theirs = {h[:2] for h in thorough.top(kind)}
            same = report.validation[kind].causal == thorough.validation[kind].causal
            print(f"  {kind:16s} top-{cfg.top_k} shared {len(mine & theirs)}/{cfg.top_k}, "
                  f"{'same verdict' if same else 'VERDICT DIFFERS'} ({thorough.validation[kind].verdict[:60]}...)")
    if args.json:
        report.save_json(args.json)


if __name__ == "__main__":
    main()
