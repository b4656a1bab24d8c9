"""Cost of the memory guard in ``run_with_cache``: the default (estimate + budget check) against
``memory_budget="off"`` (no check), timed in the same process with interleaved repeats; prints median ratios.

    flock /tmp/interp-cpu.lock .venv/bin/python bench/memory_guard.py [--smollm2]

Also prints the one-off cost of learning a model's site shapes (the first estimate's probe runs).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

import interp
from interp.models import memory


def _time(n: int, fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn(*args, **kwargs)
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smollm2", action="store_true", help="also time SmolLM2 (loads the real model)")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        from interp.testing import make_tiny

        for arch in ("llama", "mamba2"):
            model = interp.load_model(make_tiny(arch, f"{tmp}/{arch}"))
            cases.append((f"tiny {arch}, 2 x 32, 1 site", model, torch.randint(4, 100, (2, 32)),
                          ["blocks.1.hook_resid_post"], 20))
            cases.append((f"tiny {arch}, 2 x 32, every site", model, torch.randint(4, 100, (2, 32)), None, 20))
        if args.smollm2:
            model = interp.load_model("smollm2")
            cases.append(("SmolLM2, 1 x 64, 1 site", model, torch.randint(4, 1000, (1, 64)),
                          ["blocks.12.hook_resid_post"], 3))
        print(f"{'case':36s} {'probe (once)':>12s} {'off (ms)':>9s} {'guarded (ms)':>12s} {'ratio':>6s}")
        for name, model, tokens, names, n in cases:
            memory._TABLES.pop(model, None)
            start = time.perf_counter()
            model.cache_size(tokens, names)
            probe = time.perf_counter() - start
            off, on = [], []
            for i in range(args.repeats):  # interleaved, each first in turn, so load changes hit both alike
                for which in ((0, 1) if i % 2 else (1, 0)):
                    if which:
                        on.append(_time(n, model.run_with_cache, tokens, names))
                    else:
                        off.append(_time(n, model.run_with_cache, tokens, names, memory_budget="off"))
            m_off, m_on = statistics.median(off), statistics.median(on)
            print(f"{name:36s} {probe:11.3f}s {m_off * 1e3:9.2f} {m_on * 1e3:12.2f} {m_on / m_off:6.3f}")


if __name__ == "__main__":
    main()
