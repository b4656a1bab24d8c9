"""Bad keys of an ActivationCache and bad memory budgets / cache-size queries (the memory guard)."""

import torch

from interp.models.memory import MemoryBudgetError, batch_slices, max_batch_size


def _cache(e):
    return e.llama.run_with_cache(e.tokens, names_filter=lambda n: n.endswith("hook_pattern"))[1]


ROWS = [
    ("key-unknown", lambda e: _cache(e)["blocks.0.hook_resid_pre"], KeyError,
     r"'blocks\.0\.hook_resid_pre' is not in this cache; it holds 2 sites"),
    ("key-short-layer", lambda e: _cache(e)["pattern", 9], KeyError, r"\('pattern', 9\) matches no site"),
    ("key-int", lambda e: _cache(e)[3], KeyError, r"cache keys are site names or \(short_name, layer\) pairs"),
    ("stack-unknown", lambda e: _cache(e).stack("hook_z"), KeyError, r"no cached site ends with 'hook_z'"),
    ("budget-exceeded", lambda e: e.llama.run_with_cache(e.tokens, memory_budget=1000), MemoryBudgetError,
     r"run_with_cache would cache about .* for 36 sites at batch 2 × pos 6 .*above the memory budget of 1000 B "
     r"\(memory_budget=1000\)\. Cache fewer sites"),
    ("budget-exceeded-env", lambda e: e.setenv("INTERP_MEMORY_BUDGET", "1KiB").llama.run_with_cache(e.tokens),
     MemoryBudgetError, r"above the memory budget of 1\.0 KiB \(INTERP_MEMORY_BUDGET='1KiB'\)"),
    ("budget-exceeded-patterns", lambda e: e.setenv("INTERP_MEMORY_BUDGET", "100KiB").llama.attention_patterns(
        torch.ones(4, 200, dtype=torch.long)), MemoryBudgetError,
     r"blocks\.\*\.attn\.hook_pattern ×2"),
    ("budget-exceeded-mamba", lambda e: e.mamba.run_with_cache(e.tokens, memory_budget="10KiB"), MemoryBudgetError,
     r"largest: blocks\.\*\.mixer\.hook_ssm_state ×2"),
    ("budget-not-a-size", lambda e: e.llama.run_with_cache(e.tokens, memory_budget="lots"), ValueError,
     r"memory_budget='lots' is not a memory size; expected e\.g\. '512MiB'"),
    ("budget-negative", lambda e: e.llama.run_with_cache(e.tokens, memory_budget=-5), ValueError,
     r"memory_budget must be > 0 bytes"),
    ("budget-zero", lambda e: e.llama.run_with_cache(e.tokens, memory_budget=0), ValueError,
     r"memory_budget must be > 0 bytes"),
    ("budget-bool", lambda e: e.llama.run_with_cache(e.tokens, memory_budget=True), TypeError,
     r"memory_budget must be a number of bytes, a string such as '2GiB' or '80%', or 'off'; got True"),
    ("budget-percent", lambda e: e.llama.run_with_cache(e.tokens, memory_budget="150%"), ValueError,
     r"memory_budget='150%': a percentage must be in \(0, 100\]"),
    ("budget-unit", lambda e: e.llama.run_with_cache(e.tokens, memory_budget="2 parsecs"), ValueError,
     r"is not a memory size"),
    ("budget-env-invalid", lambda e: e.setenv("INTERP_MEMORY_BUDGET", "plenty").llama.run_with_cache(e.tokens),
     ValueError, r"INTERP_MEMORY_BUDGET='plenty' is not a memory size"),
    ("cache-size-shape", lambda e: e.llama.cache_size((0, 5)), ValueError,
     r"tokens: a \(batch, pos\) shape must be two ints >= 1; got \(0, 5\)"),
    ("cache-size-float-tokens", lambda e: e.llama.cache_size(torch.rand(2, 3)), TypeError,
     r"tokens must hold integer token ids"),
    ("cache-size-filter", lambda e: e.llama.cache_size(e.tokens, names_filter=["nope"]), KeyError,
     r"unknown hook site 'nope'"),
    ("max-batch-pos", lambda e: max_batch_size(e.llama, 0), ValueError, r"pos must be an int >= 1; got 0"),
    ("max-batch-pos-float", lambda e: max_batch_size(e.llama, 2.5), TypeError, r"pos must be an int; got 2\.5"),
    ("batch-slices-too-small", lambda e: batch_slices(e.llama, e.tokens, memory_budget=100), MemoryBudgetError,
     r"one sequence of 6 tokens needs about .* above the memory budget of 100 B"),
]
