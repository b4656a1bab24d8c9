"""TransformerLens's names: ``interp.utils.get_act_name`` builds the strings TransformerLens 3.x builds, and cache
keys take its forms (aliases, negative layers, ``(name, layer, layer_type)``)."""

import pytest
import torch

import interp
from interp.utils import get_act_name

CASES = [("resid_post", 3), ("resid_pre", 0), ("pattern", 2), ("attn", 2), ("attn_scores", 1), ("attn_logits", 1),
         ("q", 0), ("query", 0), ("key", 1), ("value", 1), ("z", 4), ("result", 4), ("rot_q", 0), ("rot_k", 0),
         ("post", 5), ("mlp_post", 5), ("pre", 5), ("mlp_pre", 5), ("mid", 5), ("attn_out", 2), ("mlp_out", 2),
         ("resid_mid", 2), ("normalized", 3, "ln1"), ("normalized", 3, "ln2"), ("scale", 3, "ln1"), ("embed",),
         ("pos_embed",), ("scale",), ("normalized",), ("k", 1, "a"), ("post", 1, "m"), ("resid_pre", 1, "b"),
         ("resid_pre", 1, "block"), ("blocks.0.hook_resid_pre",), ("k6",), ("resid_post", "3"), ("q12a",)]


@pytest.mark.parametrize("args", CASES, ids=lambda a: "-".join(map(str, a)))
def test_same_names_as_transformer_lens(args):
    tl_utils = pytest.importorskip("transformer_lens.utils")
    assert get_act_name(*args) == tl_utils.get_act_name(*args)


def test_the_final_norm_is_named_once():
    # TransformerLens 3.9 returns "ln_final.ln_final.hook_normalized" here, a site no model has
    assert get_act_name("normalized", None, "ln_final") == "ln_final.hook_normalized"


@pytest.mark.parametrize("layer", [-1, 1.5, True, "x"])
def test_bad_layers_name_the_argument(layer):
    with pytest.raises(ValueError, match="layer must be a block index"):
        get_act_name("resid_post", layer)
    with pytest.raises(TypeError, match="name must be"):
        get_act_name(None)


@pytest.mark.parametrize("with_model", [True, False])
def test_cache_keys_in_transformer_lens_forms(tiny_dir, with_model):
    model = interp.load_model(tiny_dir("llama"))
    _, cache = model.run_with_cache(torch.tensor([[5, 6, 7, 8]]))
    if not with_model:
        cache = interp.cache.ActivationCache(dict(cache.items()))
    last = model.n_layers - 1
    assert cache["resid_post", -1] is cache[f"blocks.{last}.hook_resid_post"]
    assert cache["attn", -2] is cache["blocks.0.attn.hook_pattern"]
    assert cache["normalized", 1, "ln1"] is cache["blocks.1.ln1.hook_normalized"]
    assert cache["mlp_post", 0] is cache["blocks.0.mlp.hook_post"]
    assert cache["hook_z", 1] is cache["blocks.1.attn.hook_z"]
    assert cache[get_act_name("z", 1)] is cache["blocks.1.attn.hook_z"]
    for bad in [("resid_post", -3), ("normalized", 1), ("normalized", 1, "ln9"), ("pattern", 1.0)]:
        with pytest.raises(KeyError):
            cache[bad]
    assert ("resid_post", -1) in cache and ("resid_post", -3) not in cache
