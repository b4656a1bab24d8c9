"""Bad keys of an ActivationCache and bad memory budgets / cache-size queries (the memory guard)."""

import torch

import interp
from interp.models.memory import MemoryBudgetError, batch_slices, max_batch_size


def _cache(e, suffix="hook_pattern"):
    return e.llama.run_with_cache(e.tokens, names_filter=lambda n: n.endswith(suffix))[1]


ROWS = [
    ("key-unknown", lambda e: _cache(e)["blocks.0.hook_resid_pre"], KeyError,
     r"'blocks\.0\.hook_resid_pre' is not in this cache; it holds 2 sites"),
    ("key-short-layer", lambda e: _cache(e)["pattern", 9], KeyError, r"\('pattern', 9\) matches no site"),
    ("key-int", lambda e: _cache(e)[3], KeyError,
     r"cache keys are site names, \(short_name, layer\) or \(short_name, layer, layer_type\) tuples; got 3"),
    ("stack-unknown", lambda e: _cache(e).stack("hook_z"), KeyError, r"no cached site ends with 'hook_z'"),
    ("patterns-no-tokens-no-cache", lambda e: e.llama.attention_patterns(None), TypeError,
     r"attention_patterns: tokens is None; pass token ids \[batch, pos\], or cache="),
    ("patterns-cache-not-mapping", lambda e: e.gpt2.attention_patterns(None, cache=[1]), TypeError,
     r"attention_patterns: cache must be an ActivationCache \(from model\.run_with_cache\) or a mapping"),
    ("patterns-cache-missing", lambda e: e.llama.attention_patterns(None, cache=_cache(e, "hook_z")), KeyError,
     r"attention_patterns: cache lacks 2 of the 2 sites it needs: 'blocks\.0\.attn\.hook_pattern', "
     r"'blocks\.1\.attn\.hook_pattern'; record them with model\.run_with_cache\(tokens, "
     r"names_filter=lambda n: n\.endswith\('hook_pattern'\)\)"),
    ("patterns-cache-of-mamba", lambda e: e.llama.attention_patterns(None, [1], cache=dict(e.mamba.run_with_cache(
        e.tokens)[1])), KeyError, r"cache lacks 1 of the 1 sites it needs: 'blocks\.1\.attn\.hook_pattern'"),
    ("patterns-cache-other-model", lambda e: e.gpt2.attention_patterns(None, cache=_cache(e)), ValueError,
     r"attention_patterns: cache was recorded by another model object \(HFTransformer\(arch='llama'.*\), not "
     r"by this one \(HFTransformer\(arch='gpt2'.*\)\); its activations belong to that model's weights"),
    ("patterns-cache-same-weights", lambda e: interp.load_model(e.dir("llama")).attention_patterns(
        None, cache=_cache(e)), ValueError,
     r"cache was recorded by another model object .* \(or pass dict\(cache\) if the two models share their weights"),
    ("patterns-cache-heads", lambda e: e.llama.attention_patterns(None, cache={
        n: t[:, :3] for n, t in _cache(e).items()}), ValueError,
     r"cache\['blocks\.0\.attn\.hook_pattern'\] has shape \(2, 3, 6, 6\); this model expects \[batch, 4 heads, pos, "
     r"pos\].*is the cache from another model"),
    ("patterns-cache-two-runs", lambda e: e.llama.attention_patterns(None, cache={
        **_cache(e), "blocks.1.attn.hook_pattern": _cache(e)["blocks.1.attn.hook_pattern"][:1]}), ValueError,
     r"cache\['blocks\.1\.attn\.hook_pattern'\] has shape \(1, 4, 6, 6\); .* the same batch and pos at every layer "
     r"\('blocks\.0\.attn\.hook_pattern': \(2, 4, 6, 6\)\)"),
    ("patterns-cache-tokens", lambda e: e.llama.attention_patterns(e.tokens[:, :4], cache=_cache(e)), ValueError,
     r"attention_patterns: tokens has shape \(2, 4\) but the cache was recorded on \[batch, pos\] = \(2, 6\) "
     r"\(from 'blocks\.0\.attn\.hook_pattern'\)"),
    ("patterns-cache-mask", lambda e: e.llama.attention_patterns(None, cache=_cache(e), attention_mask=e.tokens > 0),
     ValueError, r"attention_mask cannot be combined with cache=: the cache already holds its run's activations"),
    ("budget-exceeded", lambda e: e.llama.run_with_cache(e.tokens, memory_budget=1000), MemoryBudgetError,
     r"run_with_cache would cache about .* for 41 sites at batch 2 × pos 6 .*above the memory budget of 1000 B "
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
