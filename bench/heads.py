"""Wall time of ``interp.heads.detect`` (all six kinds plus causal validation) per stage, in four runs in one process:

- ``defaults``: the default probes with the shortcuts (query rows beside SDPA, validation conditions from the shared
  clean prefix);
- ``defaults, plain``: the same probes inside ``interp.heads.passes.plain_passes()`` (full attention patterns indexed
  afterwards, every condition through all blocks from the tokens);
- ``thorough``: the ``thorough=True`` preset (the probe sizes that were the defaults before 2026-12-08) with the
  shortcuts;
- ``thorough, plain``: that preset without them: the implementation and defaults this replaced.

It prints each stage's seconds and work (token positions x fraction of blocks), the ratios, the largest score
difference between each run and its plain twin (goal <= 1e-4) with verdict agreement, and how many of each kind's
top-k heads the defaults share with the thorough run. A small warm-up detection runs first (the first passes of a
process are slower). Unit: the median of ``--repeats`` plain forward passes over the repeated-token probe batch. Run
it alone (``flock /tmp/interp-cpu.lock`` on a shared machine). Usage: ``python bench/heads.py [--model smollm2]
[--kinds a,b] [--repeats 3] [--quick]`` (``--quick``: the defaults run only).
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
    parser.add_argument("--quick", action="store_true", help="only the defaults run (no plain or thorough runs)")
    parser.add_argument("--json", default=None, help="also write the defaults' report JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    model = interp.load_model(args.model)
    load = time.perf_counter() - start
    kinds = heads.config.check_kinds(args.kinds)
    cfgs = {"defaults": heads.HeadsConfig.for_model(model, kinds=kinds),
            "thorough": heads.HeadsConfig.for_model(model, kinds=kinds, thorough=True)}
    probe = repeated_tokens(model, cfgs["defaults"].repeat_batch, cfgs["defaults"].repeat_half, seed=0)
    base = _plain_forward_seconds(model, probe, args.repeats)
    _detect(model, heads.HeadsConfig.for_model(model, kinds=kinds, repeat_half=10, ngram_length=32, draws=2,
                                               retrieval_lengths=(64,)), args.model)  # warm-up
    runs: dict[str, tuple] = {}
    for label in (["defaults"] if args.quick else ["defaults", "defaults, plain", "thorough", "thorough, plain"]):
        cfg = cfgs[label.split(",")[0]]
        if label.endswith("plain"):
            with plain_passes():
                runs[label] = _detect(model, cfg, args.model)
        else:
            runs[label] = _detect(model, cfg, args.model)
    base += _plain_forward_seconds(model, probe, args.repeats)
    unit = statistics.median(base)

    print(f"model {args.model}  threads {torch.get_num_threads()}  load {load:.1f} s  kinds {','.join(kinds)}")
    print(f"plain forward, {probe.shape[0]} x {probe.shape[1]} tokens: {unit * 1e3:.0f} ms (median of "
          f"{len(base)}; min {min(base) * 1e3:.0f}, max {max(base) * 1e3:.0f})")
    print(f"{'run':16s} {'stage':42s} {'passes':>6s} {'work':>7s} {'seconds':>8s} {'x fwd':>6s}")
    for label, (report, total) in runs.items():
        for stage, e in report.passes.items():
            print(f"{label:16s} {stage:42s} {int(e['passes']):6d} {int(e['tokens']):7d} {e['seconds']:8.1f} "
                  f"{e['seconds'] / unit:6.1f}")
        work = sum(e["tokens"] for e in report.passes.values())
        print(f"{label:16s} {'detect (all stages)':42s} {'':6s} {int(work):7d} {total:8.1f} {total / unit:6.1f}")
    fast, fast_s = runs["defaults"]
    for label, (_, total) in runs.items():
        if label != "defaults":
            print(f"{label} / defaults: {total / fast_s:.2f}x the time")
    for kind in kinds:
        if kind in fast.skipped:
            print(f"  {kind:16s} skipped: {fast.skipped[kind]}")
            continue
        top = ", ".join(f"L{h.layer}.{h.head}={h.score:.2f}" for h in fast.top(kind, 3))
        v = fast.validation[kind]
        line = f"  {kind:16s} {top}  |  {'causal' if v.causal else 'not causal'} ({v.effect:.3g} vs random " \
               f"{v.random_mean:.3g})"
        for mine, twin in (("defaults", "defaults, plain"), ("thorough", "thorough, plain")):
            if twin in runs:
                a, b = runs[mine][0], runs[twin][0]
                diff = float((a.scores[kind] - b.scores[kind]).abs().max())
                same = "same verdict" if a.validation[kind].causal == b.validation[kind].causal else "VERDICT DIFFERS"
                line += f"  |  {mine} vs plain: max |d score| {diff:.1e}, {same}"
        if "thorough" in runs:
            th = runs["thorough"][0]
            shared = len({h[:2] for h in fast.top(kind)} & {h[:2] for h in th.top(kind)})
            same = "same verdict" if v.causal == th.validation[kind].causal else "VERDICT DIFFERS"
            line += f"  |  vs thorough: top-{len(fast.top(kind))} shared {shared}, {same}"
        print(line)
    if args.json:
        fast.save_json(args.json)


if __name__ == "__main__":
    main()
