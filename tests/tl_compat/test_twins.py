"""The twins themselves: TransformerLens's and our models compute what Hugging Face computes, record the same
activations at the sites both have, and the fold really changed TransformerLens's weights (else "compare with the
folded twin" and "with the unfolded twin" would be the same check)."""

import pytest
import torch

FLAVOURS = ("folded", "unfolded")

SHARED_SITES = ["hook_embed", "hook_pos_embed", "ln_final.hook_scale"] + [
    f"blocks.{{l}}.{s}" for s in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out",
                                  "hook_mlp_out", "attn.hook_z", "attn.hook_pattern", "mlp.hook_post",
                                  "ln1.hook_scale", "ln2.hook_scale")
]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_logits_equal_hugging_face(twins, flavour):
    with torch.no_grad():
        hf = twins.hf(twins.tokens).logits
        torch.testing.assert_close(twins.tl(flavour)(twins.tokens), hf, atol=1e-4, rtol=0)
        torch.testing.assert_close(twins.ours(twins.tokens), hf, atol=1e-4, rtol=0)


def test_norms_and_biases_are_not_identities(twins):
    # with HF's initial norms (weight 1, bias 0) and zero biases, folding would change nothing and every
    # folded/unfolded distinction in this suite would be vacuous
    tl = twins.unfolded
    for norm in [tl.ln_final] + [b.ln1 for b in tl.blocks] + [b.ln2 for b in tl.blocks]:
        assert (norm.w - 1).abs().min() > 0
        if twins.family == "gpt2":
            assert norm.b.abs().min() > 0
    if twins.family == "gpt2":
        for name in ("b_Q", "b_K", "b_V", "b_O", "b_in", "b_out"):
            assert getattr(tl, name).abs().min() > 0, name


def test_folded_twin_is_folded(twins):
    folded, unfolded = twins.folded, twins.unfolded
    expected = {"gpt2": ("LNPre", "LN"), "llama": ("RMSPre", "RMS")}[twins.family]
    assert (folded.cfg.normalization_type, unfolded.cfg.normalization_type) == expected
    assert not torch.allclose(folded.W_Q, unfolded.W_Q)
    assert not torch.allclose(folded.W_U, unfolded.W_U)
    # the fold touches only what reads the stream: outputs and their biases are unchanged
    for name in ("W_O", "W_out", "b_O", "b_out", "W_E"):
        torch.testing.assert_close(getattr(folded, name), getattr(unfolded, name), atol=0, rtol=0)


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("site", SHARED_SITES, ids=lambda s: s.replace("blocks.{l}.", "blocks.L."))
def test_shared_sites_equal(twins, flavour, site):
    theirs, ours = twins.tl_cache(flavour), twins.our_cache()
    names = [site.format(l=layer) for layer in range(twins.ours.n_layers)] if "{l}" in site else [site]
    for name in names:
        if name not in theirs.cache_dict:  # hook_pos_embed on llama (rotary): neither side has it
            assert name not in ours, f"{name}: ours has it, TransformerLens's {twins.family} does not"
            continue
        twins.same(theirs[name], ours[name], name)
