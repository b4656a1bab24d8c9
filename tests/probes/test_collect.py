"""Collection: one forward pass per batch for every site, position rules on padded batches (never a pad token),
stop_at_layer, storage dtype and memory budget, clear errors."""

import pytest
import torch

import interp
from interp.probes import Position, collect_activations, resolve_sites

TEXTS = ["hello world", "ab", "the cat sat on the mat", "xyz xyz", "a cat", "q"]


@pytest.fixture(scope="module")
def llama(tiny_dir):
    return interp.load_model(str(tiny_dir("llama")))


def _alone(model, text, site):
    _, cache = model.run_with_cache(text, names_filter=[site])
    return cache[site][0]


@pytest.mark.parametrize("rule", ["last", "mean", "1", "-2", "mean:1:3", "regex:c(a)t", "token:a",
                                  "mean:regex:cat sat"])
def test_rules_on_padded_batches_equal_unpadded_runs(llama, rule):
    need = {"regex:c(a)t": "cat", "token:a": "a", "mean:regex:cat sat": "cat sat"}.get(rule, "")
    texts = [t for t in TEXTS if need in t]
    sites = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"]
    acts = collect_activations(llama, texts, sites, rule, batch_size=3, progress=False)
    bos = 1  # the char tokenizer prepends <bos>
    for i, text in enumerate(texts):
        toks = llama.to_str_tokens(text)
        n = len(toks)
        if rule == "last":
            pick = [n - 1]
        elif rule == "mean":
            pick = list(range(bos, n))
        elif rule in ("1", "-2"):
            pick = [int(rule) % n]
        elif rule == "mean:1:3":
            pick = list(range(n))[1:3]
        elif rule == "regex:c(a)t":
            pick = [bos + text.index("cat") + 1]
        elif rule == "token:a":
            pick = [max(j for j, t in enumerate(toks) if t == "a")]
        else:
            start = bos + text.index("cat sat")
            pick = list(range(start, start + len("cat sat")))
        for site in sites:
            ref = _alone(llama, text, site).flatten(1)[pick].mean(0)
            torch.testing.assert_close(acts[site][i], ref, rtol=1e-5, atol=1e-6)


def test_every_token_and_types(llama):
    acts = collect_activations(llama, TEXTS[:3], "blocks.1.hook_resid_post", "all", progress=False)
    lengths = [len(t) for t in TEXTS[:3]]  # one token per character, BOS left out
    assert acts.n_rows == sum(lengths)
    assert acts.row_text.tolist() == sum(([i] * n for i, n in enumerate(lengths)), [])
    ref = _alone(llama, TEXTS[1], "blocks.1.hook_resid_post")[1:]
    torch.testing.assert_close(acts["blocks.1.hook_resid_post"][lengths[0]: lengths[0] + lengths[1]], ref,
                               rtol=1e-5, atol=1e-6)
    ids = llama.to_tokens(TEXTS[0])[0, 1:].tolist()
    assert list(acts.types[: lengths[0]]) == ids


def test_one_pass_per_batch_and_early_stop(llama, monkeypatch):
    calls = []
    original = type(llama)._logits

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(llama), "_logits", counting)
    fired = []
    with llama.hooks([("blocks.1.hook_resid_post", lambda a, hook: fired.append(1))]):
        collect_activations(llama, TEXTS, ["blocks.0.hook_resid_post", "blocks.0.attn.hook_z", "blocks.0.hook_mlp_out"],
                            "last", batch_size=2, progress=False)
    assert len(calls) == 3            # 6 texts, batches of 2: one pass each, whatever the number of sites
    assert not fired                  # stop_at_layer: block 1 never runs when only block 0 is read


def test_mamba_state_and_residual_sites(tiny_dir):
    model = interp.load_model(str(tiny_dir("mamba2")))
    acts = collect_activations(model, TEXTS, ["blocks.*.mixer.hook_ssm_state", "blocks.*.hook_resid_post"], "last",
                               batch_size=4, progress=False)
    assert len(acts.groups) == 2      # two feature widths, each stacked [site, row, d]
    site = "blocks.1.mixer.hook_ssm_state"
    torch.testing.assert_close(acts[site][2], _alone(model, TEXTS[2], site).flatten(1)[-1], rtol=1e-5, atol=1e-6)


def test_storage_dtype_and_budget(llama):
    half = collect_activations(llama, TEXTS, "blocks.*.hook_resid_post", dtype=torch.float16, progress=False)
    full = collect_activations(llama, TEXTS, "blocks.*.hook_resid_post", progress=False)
    assert half.groups[0][1].dtype == torch.float16 and half.nbytes * 2 == full.nbytes
    torch.testing.assert_close(half["blocks.1.hook_resid_post"].float(), full["blocks.1.hook_resid_post"],
                               rtol=1e-2, atol=1e-3)
    with pytest.raises(MemoryError, match="over the budget"):
        collect_activations(llama, TEXTS, "blocks.*.hook_resid_post", memory_budget="1KB", progress=False)
    collect_activations(llama, TEXTS, "blocks.*.hook_resid_post", memory_budget="1MiB", progress=False)


def test_bad_input(llama):
    with pytest.raises(KeyError, match="matches no site.*blocks.0.hook_resid_post"):
        resolve_sites(llama, "blocks.*.hook_resid_postt")
    with pytest.raises(KeyError, match="unknown hook site"):
        resolve_sites(llama, ["blocks.0.hook_resid_pots"])
    with pytest.raises(ValueError, match=r"finds no token in 2 text\(s\): 1 \('ab'\), 3 \('xyz xyz'\)"):
        collect_activations(llama, ["hello", "ab", "oh", "xyz xyz"], "blocks.0.hook_resid_post", "regex:[ho]",
                            progress=False)
    with pytest.raises(ValueError, match="not a rule"):
        Position.parse("middle")
    with pytest.raises(ValueError, match="bad regular expression"):
        Position.parse("regex:(")
    with pytest.raises(ValueError, match="memory_budget='lots' is not a memory size"):
        collect_activations(llama, TEXTS, "blocks.0.hook_resid_post", memory_budget="lots", progress=False)
    with pytest.raises(TypeError, match="texts must be"):
        collect_activations(llama, "one text", "blocks.0.hook_resid_post", progress=False)
    with pytest.raises(ValueError, match="per-position site"):
        collect_activations(llama, TEXTS, "blocks.0.attn.hook_pattern", progress=False)


@pytest.mark.parametrize("side", ["left", "right"])
def test_token_ids_with_a_mask_never_read_padding(llama, side):
    texts = ["hello world", "ab", "xyz xyz"]
    tokens, mask = llama.to_tokens(texts, padding_side=side, return_attention_mask=True)
    site = "blocks.1.hook_resid_post"
    for rule in ("last", "mean", "0"):
        acts = collect_activations(llama, tokens, site, rule, attention_mask=mask, batch_size=2, progress=False)
        for i, text in enumerate(texts):
            alone = _alone(llama, text, site)
            ref = {"last": alone[-1], "mean": alone.mean(0), "0": alone[0]}[rule]  # ids: no position is a BOS
            torch.testing.assert_close(acts[site][i], ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="attention_mask must be"):
        collect_activations(llama, tokens, site, attention_mask=mask[:, :2], progress=False)
