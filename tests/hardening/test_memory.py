"""The memory guard: cache sizes estimated without running the model on the input, refused above a budget, chunked
to fit; the probe runs that learn site shapes leave the caller's hooks exactly as they were, on every exit path."""

from __future__ import annotations

import math

import pytest
import torch

import interp
from interp.models import memory
from interp.models.memory import MemoryBudgetError, batch_slices, estimate_cache, max_batch_size, parse_budget

ARCHS = ("llama", "gpt2", "mamba", "mamba2")


def _fresh(tiny_dir, arch):
    return interp.load_model(tiny_dir(arch))


def _attached(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("arch", ARCHS)
def test_estimate_equals_the_cache_for_every_site(tiny_dir, arch):
    model = _fresh(tiny_dir, arch)
    for b, t in ((1, 1), (3, 17), (2, 40)):
        tokens = torch.randint(4, 100, (b, t))
        _, cache = model.run_with_cache(tokens)
        assert model.cache_size(tokens) == cache.nbytes()
        assert model.cache_size((b, t)) == cache.nbytes()
        for name, act in cache.items():
            assert model.cache_size(tokens, [name]) == act.numel() * act.element_size(), name
    est = estimate_cache(model, (3, 5), lambda n: n.endswith("hook_resid_post"))
    assert set(est.by_site) == {f"blocks.{i}.hook_resid_post" for i in range(model.n_layers)}


def test_estimate_follows_stop_and_start_and_text(tiny_dir):
    model = _fresh(tiny_dir, "llama")
    tokens = torch.randint(4, 100, (2, 9))
    _, cache = model.run_with_cache(tokens, stop_at_layer=1)
    assert model.cache_size(tokens, stop_at_layer=1) == cache.nbytes()
    resid = model(tokens, stop_at_layer=1)
    _, cache = model.run_with_cache(resid, start_at_layer=1)
    assert model.cache_size(resid, start_at_layer=1) == cache.nbytes()
    texts = ["hello there", "hi"]
    _, cache = model.run_with_cache(texts)
    assert model.cache_size(texts) == cache.nbytes()


def test_estimate_does_not_run_the_model_on_the_input(tiny_dir, monkeypatch):
    model = _fresh(tiny_dir, "llama")
    model.cache_size((1, 3))  # learns the shapes
    calls = []
    monkeypatch.setattr(model, "_logits", lambda *a: calls.append(a) or (_ for _ in ()).throw(AssertionError))
    assert model.cache_size((64, 4096)) > 2**30  # patterns grow with pos²: estimated, never run
    assert model.cache_size(torch.zeros(64, 4096, dtype=torch.long)) == model.cache_size((64, 4096))
    assert not calls


def test_refused_above_the_budget_with_the_estimate_and_remedies(tiny_dir, monkeypatch):
    model = _fresh(tiny_dir, "llama")
    tokens = torch.randint(4, 100, (2, 8))
    need = model.cache_size(tokens)
    out, cache = model.run_with_cache(tokens, memory_budget=need)  # exactly at the budget: allowed
    assert cache.nbytes() == need
    with pytest.raises(MemoryBudgetError, match=r"would cache about .* above the memory budget .*names_filter.*"
                                                r"batch_slices.*INTERP_MEMORY_BUDGET") as err:
        model.run_with_cache(tokens, memory_budget=need - 1)
    assert isinstance(err.value, MemoryError)
    model.run_with_cache(tokens, memory_budget="off")
    monkeypatch.setenv("INTERP_MEMORY_BUDGET", str(need - 1))
    with pytest.raises(MemoryBudgetError, match=r"INTERP_MEMORY_BUDGET="):
        model.run_with_cache(tokens)
    model.run_with_cache(tokens, memory_budget=need)  # the argument wins over the environment
    monkeypatch.setenv("INTERP_MEMORY_BUDGET", "off")
    model.run_with_cache(tokens)


def test_default_budget_is_a_fraction_of_available_memory(tiny_dir, monkeypatch):
    model = _fresh(tiny_dir, "llama")
    tokens = torch.randint(4, 100, (2, 8))
    need = model.cache_size(tokens)
    monkeypatch.setattr(memory, "available_memory", lambda device=None: math.ceil(need / memory.DEFAULT_FRACTION))
    model.run_with_cache(tokens)
    monkeypatch.setattr(memory, "available_memory", lambda device=None: need)
    with pytest.raises(MemoryBudgetError, match=r"50% of the .* available on cpu; memory_budget= or "
                                                r"INTERP_MEMORY_BUDGET overrides"):
        model.run_with_cache(tokens)
    monkeypatch.setattr(memory, "available_memory", lambda device=None: 100)
    with pytest.raises(MemoryBudgetError, match=r"blocks\.\*\.attn\.hook_pattern ×2"):
        model.attention_patterns(tokens)  # analyses built on run_with_cache are guarded too


def test_parse_budget():
    assert parse_budget(1000) == 1000
    assert parse_budget("2GiB") == 2 * 2**30
    assert parse_budget("1.5G") == 1.5 * 2**30
    assert parse_budget("500MB") == 500e6
    assert parse_budget("off") == math.inf and parse_budget(math.inf) == math.inf
    assert 0 < parse_budget("10%") <= memory.available_memory()
    assert memory.available_memory() > 0


def test_batch_slices_fit_the_budget_and_cover_the_batch(tiny_dir):
    model = _fresh(tiny_dir, "gpt2")
    tokens = torch.randint(4, 100, (11, 12))
    names = lambda n: n.endswith(("hook_pattern", "hook_resid_post"))
    per_row = model.cache_size((1, 12), names)
    budget = 3 * per_row + per_row // 2
    assert max_batch_size(model, 12, names, memory_budget=budget) == 3
    slices = batch_slices(model, tokens, names, memory_budget=budget)
    assert [s.stop - s.start for s in slices] == [3, 3, 3, 2]
    for rows in slices:
        model.run_with_cache(tokens[rows], names, memory_budget=budget)
    assert batch_slices(model, tokens, names, memory_budget="off") == [slice(0, 11)]
    assert max_batch_size(model, 12, names, memory_budget="off") is None


def test_probe_sets_the_callers_hooks_aside_and_restores_them(tiny_dir):
    """The first estimate runs inside an open hooks context: the caller's hooks neither fire on the probe inputs
    nor lose their attachment, and the context still works afterwards."""
    model = _fresh(tiny_dir, "llama")
    tokens = torch.randint(4, 100, (2, 7))
    clean = model(tokens)
    seen = []

    def double(act, hook):
        seen.append(tuple(act.shape))
        return act * 2

    site = "blocks.1.attn.hook_pattern"
    with model.hooks([(site, double)]):
        attached = _attached(model)
        patched = model(tokens)
        seen.clear()
        _, cache = model.run_with_cache(tokens, ["blocks.1.hook_resid_post"])  # probes happen here
        assert seen == [(2, 4, 7, 7)]  # fired once, for the real run only
        assert _attached(model) == attached
        torch.testing.assert_close(model(tokens), patched)
        torch.testing.assert_close(cache["blocks.1.hook_resid_post"],
                                   model(tokens, stop_at_layer=2))
    assert not model._registry and not model._attached and _attached(model) == 0
    torch.testing.assert_close(model(tokens), clean)


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_probe_failure_leaves_nothing_behind(tiny_dir, monkeypatch, error):
    model = _fresh(tiny_dir, "mamba")
    tokens = torch.randint(4, 100, (2, 5))
    site = "blocks.0.mixer.hook_dt"
    fired = []
    original = type(model)._logits

    def failing(self, tokens, mask):
        if tokens.shape == (2, 2):  # the second probe input
            raise error("probe failed")
        return original(self, tokens, mask)

    with model.hooks([(site, lambda a, hook: fired.append(1))]):
        attached = _attached(model)
        monkeypatch.setattr(type(model), "_logits", failing)
        with pytest.raises(error, match="probe failed"):
            model.run_with_cache(tokens, ["blocks.1.hook_resid_post"])
        monkeypatch.setattr(type(model), "_logits", original)
        assert not fired
        assert _attached(model) == attached and set(model._registry.hooked_names()) == {site}
        model(tokens)
        assert fired == [1]
        _, cache = model.run_with_cache(tokens, ["blocks.1.hook_resid_post"])  # the probe succeeds now
        assert len(cache) == 1
    assert not model._registry and not model._attached and _attached(model) == 0


def test_refusal_leaves_nothing_behind(tiny_dir):
    model = _fresh(tiny_dir, "mamba2")
    tokens = torch.randint(4, 100, (2, 5))
    for _ in range(3):
        with pytest.raises(MemoryBudgetError):
            model.run_with_cache(tokens, memory_budget=10)
    assert not model._registry and not model._attached and _attached(model) == 0


def test_transformer_lens_model(tiny_dir):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=2, d_model=32, n_ctx=64, d_head=8, n_heads=4, d_vocab=50, act_fn="gelu")
    model = interp.wrap(HookedTransformer(cfg))
    tokens = torch.randint(0, 50, (3, 11))
    _, cache = model.run_with_cache(tokens)
    assert model.cache_size(tokens) == cache.nbytes()


@pytest.mark.integration
def test_smollm2_every_site_at_8x512(smollm2):
    """The issue's case: every site of SmolLM2 at 8 × 512 tokens is estimated (about 10 GiB), without running it,
    and refused under a smaller budget; at a small size the estimate equals the real cache."""
    tokens = torch.randint(4, 1000, (2, 16))
    _, cache = smollm2.run_with_cache(tokens)
    assert smollm2.cache_size(tokens) == cache.nbytes()
    big = smollm2.cache_size((8, 512))
    assert 8 * 2**30 < big < 14 * 2**30
    with pytest.raises(MemoryBudgetError, match=r"for 573 sites at batch 8 × pos 512 .*hook_pattern ×30"):
        smollm2.run_with_cache(torch.randint(4, 1000, (8, 512)), memory_budget="4GiB")


def test_a_shape_outside_the_fit_is_bounded_from_above():
    """A site whose size grows like pos² in one axis (a flattened pattern) is not bilinear per axis: the check probe
    catches it and the estimate falls back to linear-in-batch, quadratic-in-pos growth, never below the truth."""
    from interp.models.base import HookedModel

    class Toy(HookedModel):
        arch, n_layers, n_heads, n_kv_heads, d_model, d_head, d_vocab = "toy", 1, 1, 1, 4, 4, 10

        def _site_names(self):
            return ["hook_embed", "blocks.0.hook_flat_pattern"]

        def _logits(self, tokens, mask):
            b, t = tokens.shape
            self._registry.fire("hook_embed", torch.zeros(b, t, 4))
            self._registry.fire("blocks.0.hook_flat_pattern", torch.zeros(b, t * t))
            return torch.zeros(b, t, 10)

    model = Toy()
    for b, t in ((1, 1), (3, 5), (2, 9), (7, 40)):
        est = estimate_cache(model, (b, t))
        assert est.by_site["hook_embed"] == b * t * 4 * 4  # exact
        assert b * t * t * 4 <= est.by_site["blocks.0.hook_flat_pattern"] <= max(b, 3) * max(t, 5) ** 2 * 4
