"""Activation stores under a memory budget: model reads and cache reads shrink to fit, the rows stay the same."""

from __future__ import annotations

import pytest
import torch

import interp
from interp.models.memory import MemoryBudgetError
from interp.saes.store import ActivationStore, CachedActivations, write_activation_cache

SITE = "blocks.1.hook_resid_post"


def _batches(store, n=6):
    return [store.next_batch().clone() for _ in range(n)]


def test_model_store_chunks_forward_passes_to_the_budget(tiny_dir):
    model = interp.load_model(tiny_dir("llama"))
    tokens = torch.randint(4, 100, (12, 16))
    kw = dict(context_length=16, model_batch_size=8, batch_size=16, buffer_batches=2, seed=3, skip_special=False)
    free = ActivationStore.from_model(model, SITE, tokens, memory_budget="off", **kw)
    # buffer: 2 * 32 rows * 64 * 4 B = 16 KiB; one sequence at the site: 16 * 64 * 4 B = 4 KiB, held twice
    tight = ActivationStore.from_model(model, SITE, tokens, memory_budget=16 * 2**10 + 3 * 8 * 2**10 + 100, **kw)
    assert free.source.model_batch_size == 8 and tight.source.model_batch_size == 3
    for a, b in zip(_batches(free), _batches(tight)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)  # the same rows (batching may round differently)
    with pytest.raises(MemoryBudgetError, match=r"one sequence of 16 tokens at site 'blocks\.1\.hook_resid_post' "
                                                r"needs 8\.0 KiB of activations"):
        ActivationStore.from_model(model, SITE, tokens, memory_budget=16 * 2**10 + 4 * 2**10, **kw)


def test_default_budget_leaves_small_stores_alone(tiny_dir):
    model = interp.load_model(tiny_dir("mamba"))
    store = ActivationStore.from_model(model, "blocks.0.mixer.hook_ssm_state", torch.randint(4, 100, (4, 8)),
                                       context_length=8, model_batch_size=2, batch_size=8, buffer_batches=2)
    assert store.source.model_batch_size == 2 and store.next_batch().shape == (8, 128 * 8)


def test_cached_activations_read_only_the_rows_they_need(tmp_path):
    x = torch.randn(650, 12)
    write_activation_cache(x, tmp_path / "c", 650, shard_rows=200, progress=False)
    whole = ActivationStore.from_cache(tmp_path / "c", batch_size=32, buffer_batches=4, seed=1, memory_budget="off")
    small = ActivationStore.from_cache(tmp_path / "c", batch_size=32, buffer_batches=4, seed=1,
                                       memory_budget=2 * 128 * 48 + 2 * 7 * 96)
    assert small.source.chunk_rows == 7
    for a, b in zip(_batches(whole, 30), _batches(small, 30)):
        assert torch.equal(a, b)
    src = CachedActivations(tmp_path / "c", chunk_rows=150)
    got = torch.cat([src.read() for _ in range(6)])  # reads stop at shard ends: 150, 50, 150, 50, 150, 50
    assert torch.equal(got, x[:600])


def test_write_activation_cache_shards_to_the_budget(tmp_path):
    x = torch.randn(100, 16)
    write_activation_cache(x, tmp_path / "c", 100, memory_budget=16 * 4 * 2 * 30, progress=False)
    src = CachedActivations(tmp_path / "c", chunk_rows=1000)
    assert max(src.sizes) <= 30 and sum(src.sizes) == 100
    assert torch.equal(torch.cat([src.read() for _ in src.sizes]), x)
