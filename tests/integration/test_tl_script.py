"""A script written for TransformerLens runs on SmolLM2 with only the load line changed (issue 28's acceptance).

The body of ``tl_script`` is TransformerLens code as its exploratory-analysis demo and users write it: ``cfg``,
``utils.get_act_name``, cache keys and helpers, ``blocks[i].attn.W_*``, FactoredMatrix products, persistent hooks.
Nothing in it knows it is not talking to a ``HookedTransformer``; only ``model = ...`` differs.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch

pytestmark = pytest.mark.integration

PROMPTS = [("When Mary and John went to the store, John gave a drink to", " Mary", " John"),
           ("When John and Mary went to the store, Mary gave a drink to", " John", " Mary"),
           ("When Tom and James went to the park, James gave a ball to", " Tom", " James"),
           ("When James and Tom went to the park, Tom gave a ball to", " James", " Tom")]


def tl_script(model, utils):
    """TransformerLens code, verbatim in spirit; returns what the test checks."""
    out = {}
    prompts = [p for p, _, _ in PROMPTS]
    answer_tokens = torch.tensor([(model.to_single_token(a), model.to_single_token(b)) for _, a, b in PROMPTS])
    tokens = model.to_tokens(prompts, prepend_bos=True)
    original_logits, cache = model.run_with_cache(tokens)

    def logits_to_ave_logit_diff(logits, answer_tokens, per_prompt=False):
        final_logits = logits[:, -1, :]
        answer_logits = final_logits.gather(dim=-1, index=answer_tokens)
        answer_logit_diff = answer_logits[:, 0] - answer_logits[:, 1]
        return answer_logit_diff if per_prompt else answer_logit_diff.mean()

    out["logit_diff"] = logits_to_ave_logit_diff(original_logits, answer_tokens).item()

    # direct logit attribution, with the final norm's scale frozen
    answer_residual_directions = model.tokens_to_residual_directions(answer_tokens)
    logit_diff_directions = answer_residual_directions[:, 0] - answer_residual_directions[:, 1]
    final_residual_stream = cache["resid_post", -1]
    final_token_residual_stream = final_residual_stream[:, -1, :]
    scaled = cache.apply_ln_to_stack(final_token_residual_stream, layer=-1, pos_slice=-1)
    out["dla_logit_diff"] = (torch.einsum("bd,bd->", scaled, logit_diff_directions) / len(prompts)).item()

    def residual_stack_to_logit_diff(residual_stack, cache):
        scaled_residual_stack = cache.apply_ln_to_stack(residual_stack, layer=-1, pos_slice=-1)
        return torch.einsum("...bd,bd->...", scaled_residual_stack, logit_diff_directions) / len(prompts)

    # logit lens
    accumulated_residual, labels = cache.accumulated_resid(layer=-1, incl_mid=True, pos_slice=-1, return_labels=True)
    out["lens"] = residual_stack_to_logit_diff(accumulated_residual, cache)
    out["lens_labels"] = labels
    # layer and head attribution
    per_layer_residual, labels = cache.decompose_resid(layer=-1, pos_slice=-1, return_labels=True)
    out["per_layer"] = residual_stack_to_logit_diff(per_layer_residual, cache)
    out["per_layer_labels"] = labels
    per_head_residual, labels = cache.stack_head_results(layer=-1, pos_slice=-1, return_labels=True)
    per_head = residual_stack_to_logit_diff(per_head_residual, cache)
    out["per_head"] = per_head.reshape(model.cfg.n_layers, model.cfg.n_heads)
    out["per_head_labels"] = labels
    attrs = cache.logit_attrs(per_layer_residual, answer_tokens[:, 0], answer_tokens[:, 1], pos_slice=-1)
    out["logit_attrs_sum"] = attrs.sum(0).mean().item()

    # weights by block and factored circuits
    layer, head = 23, 3
    W_Q, W_K = model.blocks[layer].attn.W_Q[head], model.blocks[layer].attn.W_K[head]
    out["qk_shape"] = tuple((W_Q @ W_K.T).shape)
    OV = model.OV[layer, head]
    out["ov_norm"] = (OV.norm().item(), (model.W_V[layer, head] @ model.W_O[layer, head]).norm().item())
    full_OV = model.W_E[:50] @ OV @ model.W_U[:, :50]
    out["full_ov"] = (full_OV.AB, model.W_E[:50] @ model.W_V[layer, head] @ model.W_O[layer, head] @ model.W_U[:, :50])
    out["ov_top_singular"] = OV.S[:3]

    # activation patching with get_act_name and run_with_hooks
    corrupted = model.to_tokens([PROMPTS[1][0]], prepend_bos=True)
    clean = tokens[:1]
    _, clean_cache = model.run_with_cache(clean)

    def patch_resid(resid, hook, position):
        resid[:, position, :] = clean_cache[hook.name][:, position, :]
        return resid

    name = utils.get_act_name("resid_pre", 26)
    patched = model.run_with_hooks(corrupted, fwd_hooks=[(name, partial(patch_resid, position=-1))])
    out["patched_diff"] = logits_to_ave_logit_diff(patched, answer_tokens[:1]).item()

    # persistent hooks: fire in every pass until reset_hooks
    counts = {"n": 0}

    def count_hook(pattern, hook):
        counts["n"] += 1
        assert hook.layer() == 3

    model.reset_hooks()
    model.add_hook(utils.get_act_name("pattern", 3), count_hook)
    model(clean)
    model(clean)
    model.reset_hooks()
    model(clean)
    out["persistent_count"] = counts["n"]
    out["n_hooks"] = len(model.hook_dict)
    return out


def test_transformer_lens_script_runs_on_smollm2(smollm2):
    from interp import utils

    model = smollm2  # the only line that differs: HookedTransformer.from_pretrained(...) in TransformerLens
    out = tl_script(model, utils)
    assert out["logit_diff"] > 1  # SmolLM2 does IOI on these prompts
    assert out["dla_logit_diff"] == pytest.approx(out["logit_diff"], abs=1e-3)
    assert out["logit_attrs_sum"] == pytest.approx(out["logit_diff"], abs=1e-3)
    assert out["per_layer"].sum().item() == pytest.approx(out["logit_diff"], abs=1e-3)
    assert out["lens"][-1].item() == pytest.approx(out["logit_diff"], abs=1e-3)  # final_post is the real stream
    assert out["lens_labels"][:3] == ["0_pre", "0_mid", "1_pre"] and out["lens_labels"][-1] == "final_post"
    assert out["per_layer_labels"][:3] == ["embed", "0_attn_out", "0_mlp_out"]
    assert out["per_head_labels"][:2] == ["L0H0", "L0H1"] and out["per_head"].shape == (30, 9)
    assert out["per_head"].flatten().abs().argmax().item() == 23 * 9 + 3  # L23H3, the name mover of these prompts
    assert out["qk_shape"] == (576, 576)
    assert out["ov_norm"][0] == pytest.approx(out["ov_norm"][1], rel=1e-4)
    torch.testing.assert_close(out["full_ov"][0], out["full_ov"][1], rtol=1e-4, atol=1e-4)
    assert out["ov_top_singular"].shape == (3,) and bool((out["ov_top_singular"].diff() <= 0).all())
    assert out["patched_diff"] > 0  # the clean last-position stream after the name movers restores the answer
    assert out["persistent_count"] == 2 and out["n_hooks"] == len(model.site_names())
    assert not model.hook_dict["blocks.3.attn.hook_pattern"].fwd_hooks
