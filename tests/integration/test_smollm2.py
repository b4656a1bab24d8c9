"""The embedded SmolLM2-135M-Instruct: structure, HF parity, patterns, the cache, and a known behaviour."""

import pytest
import torch

pytestmark = pytest.mark.integration


def test_structure(smollm2):
    m = smollm2
    assert (m.arch, m.n_layers, m.n_heads, m.n_kv_heads, m.d_model, m.d_head, m.d_vocab) == (
        "llama", 30, 9, 3, 576, 64, 49152)
    assert "blocks.29.attn.hook_result" in m.site_names()


def test_parity_with_hf_and_cache(smollm2):
    from transformers import AutoModelForCausalLM

    from interp.models.smollm2 import cache_dir

    hf = AutoModelForCausalLM.from_pretrained(cache_dir() / "smollm2-135m-instruct-f32", local_files_only=True).eval()
    tokens, mask = smollm2.to_tokens(["The Eiffel Tower is located in the city of", "1 2 3 4"],
                                     return_attention_mask=True)
    real = mask.bool()
    with torch.no_grad():
        ref = hf(tokens, attention_mask=mask).logits
        assert (smollm2(tokens, attention_mask=mask) - ref)[real].abs().max() <= 1e-4
    wanted = ("hook_pattern", "hook_result", "hook_attn_out")
    logits, cache = smollm2.run_with_cache(tokens, names_filter=lambda n: n.endswith(wanted), attention_mask=mask)
    assert (logits - ref)[real].abs().max() <= 1e-4
    pats = cache.stack("attn.hook_pattern")
    assert pats.shape == (30, 2, 9, tokens.shape[1], tokens.shape[1])
    torch.testing.assert_close(pats.sum(-1), torch.ones(pats.shape[:-1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(cache["result", 12].sum(2), cache["attn_out", 12], atol=1e-4, rtol=1e-4)


def test_answers_paris(smollm2):
    tokens = smollm2.to_tokens("The capital of France is", prepend_bos=False)
    top = smollm2(tokens)[0, -1].argmax().item()
    assert smollm2.to_string([top]).strip() == "Paris"


def test_residual_patching_moves_paris_vs_rome(smollm2):
    """ENVIRONMENT.md: patching the residual stream Eiffel Tower -> Colosseum moves logit(Paris) - logit(Rome)."""
    clean = smollm2.to_tokens("The Eiffel Tower is located in the city of", prepend_bos=False)
    corrupt = smollm2.to_tokens("The Colosseum is located in the city of", prepend_bos=False)
    if clean.shape != corrupt.shape:
        pytest.skip("prompts tokenise to different lengths")
    paris = smollm2.to_tokens(" Paris", prepend_bos=False)[0, 0]
    rome = smollm2.to_tokens(" Rome", prepend_bos=False)[0, 0]
    diff = lambda logits: (logits[0, -1, paris] - logits[0, -1, rome]).item()  # noqa: E731
    _, cache = smollm2.run_with_cache(corrupt, names_filter=["blocks.10.hook_resid_post"])
    patched = smollm2.run_with_hooks(
        clean, fwd_hooks=[("blocks.10.hook_resid_post", lambda act, hook: cache["blocks.10.hook_resid_post"])])
    with torch.no_grad():
        assert diff(smollm2(clean)) > 0 > diff(patched)


def test_second_load_reads_the_cache(smollm2):
    """The converted checkpoint was written once, atomically (no temporary folder left), and is reused."""
    from interp.models import smollm2 as s

    target = s.cache_dir() / "smollm2-135m-instruct-f32"
    assert (target / "model.safetensors").is_file() and (target / "interp_source.json").is_file()
    # no temporary or replaced folder left; the lock file stays by design (interp.filelock.file_lock)
    assert not [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.") and p.suffix != ".lock"]
    stamp = (target / "model.safetensors").stat().st_mtime_ns
    s.load_smollm2()
    assert (target / "model.safetensors").stat().st_mtime_ns == stamp
