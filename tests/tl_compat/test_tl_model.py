"""The model side of TransformerLens's interface: ``cfg``, the per-block and stacked weights, ``OV``/``QK``,
``tokens_to_residual_directions`` and ``accumulated_bias``, against the twin that holds the same quantity.

Our weights are the original, unfolded ones, so ``W_Q``/``W_K``/``W_V``/``W_in``/``W_gate`` and their biases (where
TransformerLens's fold absorbs the norms) and ``OV``/``QK`` are compared with the unfolded twin; what the fold does not
touch (``W_O``, ``W_out``, ``b_O``, ``b_out``) equals both twins. ``tokens_to_residual_directions`` is the final norm's
weight times ``W_U[:, t]``: the folded twin's ``W_U[:, t]``.
"""

import pytest
import torch

CFG_FIELDS = ["n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab", "n_ctx", "act_fn", "normalization_type",
              "positional_embedding_type", "n_key_value_heads", "gated_mlp", "eps"]
ATTN = ["W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O"]
MLP = ["W_in", "W_out", "b_in", "b_out"]
UNFOLDED_BY_FOLD = ["W_O", "W_out", "b_O", "b_out"]


@pytest.mark.parametrize("field", CFG_FIELDS)
def test_cfg_fields_equal_transformer_lens(twins, field):
    # against the unfolded twin: fold_ln turns TransformerLens's normalization_type into LNPre/RMSPre
    twins.same(getattr(twins.unfolded.cfg, field), getattr(twins.ours.cfg, field), f"cfg.{field}")


def test_cfg_values(twins):
    # what TransformerLens 3.9 itself sets: GPT-2 is not grouped-query, so n_key_value_heads is None there
    cfg = twins.ours.cfg
    expected = {"gpt2": ("LN", "standard", None, False, "gelu_new", 256),
                "llama": ("RMS", "rotary", 2, True, "silu", 256)}[twins.family]
    assert (cfg.normalization_type, cfg.positional_embedding_type, cfg.n_key_value_heads, cfg.gated_mlp,
            cfg.act_fn, cfg.n_ctx) == expected


def test_cfg_is_frozen(twins):
    cfg = twins.ours.cfg  # outside the raises block: a missing cfg must not pass as "frozen"
    with pytest.raises(AttributeError):
        cfg.n_layers = 7
    assert twins.ours.cfg.n_layers == twins.unfolded.cfg.n_layers


@pytest.mark.parametrize("name", ATTN)
def test_stacked_attention_weights(twins, name):
    twins.same(getattr(twins.unfolded, name), getattr(twins.ours, name), name)


@pytest.mark.parametrize("name", ATTN)
def test_block_attention_weights(twins, name):
    for layer in range(twins.ours.n_layers):
        twins.same(getattr(twins.unfolded.blocks[layer].attn, name), getattr(twins.ours.blocks[layer].attn, name),
                   f"blocks[{layer}].attn.{name}")


@pytest.mark.parametrize("name", MLP)
def test_block_mlp_weights(twins, name):
    for layer in range(twins.ours.n_layers):
        twins.same(getattr(twins.unfolded.blocks[layer].mlp, name), getattr(twins.ours.blocks[layer].mlp, name),
                   f"blocks[{layer}].mlp.{name}")


@pytest.mark.parametrize("name", MLP)
def test_stacked_mlp_weights(twins, name):
    twins.same(getattr(twins.unfolded, name), getattr(twins.ours, name), name)


def test_gate_weights(twins):
    # TransformerLens: model.W_gate is None without a gated MLP (HookedTransformer.py:2605)
    twins.same(twins.unfolded.W_gate, twins.ours.W_gate, "W_gate")
    if twins.family == "llama":
        for layer in range(twins.ours.n_layers):
            twins.same(twins.unfolded.blocks[layer].mlp.W_gate, twins.ours.blocks[layer].mlp.W_gate,
                       f"blocks[{layer}].mlp.W_gate")


@pytest.mark.parametrize("name", UNFOLDED_BY_FOLD)
def test_output_weights_equal_the_folded_twin_too(twins, name):
    twins.same(getattr(twins.folded, name), getattr(twins.ours, name), name)


@pytest.mark.parametrize("name", ["W_E", "W_U", "b_U"])
def test_embedding_weights(twins, name):
    twins.same(getattr(twins.unfolded, name), getattr(twins.ours, name), name)


@pytest.mark.parametrize("circuit", ["OV", "QK"])
def test_factored_circuits(twins, circuit):
    theirs, ours = getattr(twins.unfolded, circuit), getattr(twins.ours, circuit)
    n, h, d = twins.ours.n_layers, twins.ours.n_heads, twins.ours.d_model
    assert tuple(ours.shape) == tuple(theirs.shape) == (n, h, d, d)
    twins.same(theirs.A, ours.A, f"{circuit}.A")
    twins.same(theirs.B, ours.B, f"{circuit}.B")
    twins.same(theirs.AB, ours.AB, f"{circuit}.AB")
    twins.same(theirs[1, 2].AB, ours[1, 2].AB, f"{circuit}[1, 2].AB")
    twins.same(theirs.S, ours.S, f"{circuit}.S")
    twins.same(theirs.norm(), ours.norm(), f"{circuit}.norm()")


def test_factored_circuits_are_the_products(twins):
    ours = twins.ours
    torch.testing.assert_close(ours.QK.AB, ours.W_Q @ ours.W_K.transpose(-2, -1))
    torch.testing.assert_close(ours.OV.AB, ours.W_V @ ours.W_O)


@pytest.mark.parametrize("tokens", [5, "a", torch.tensor(5), torch.tensor([5]), torch.tensor([5, 9, 7]),
                                    torch.tensor([[5, 6, 7], [8, 9, 10]])],
                         ids=["int", "str", "scalar", "one", "1d", "2d"])
def test_tokens_to_residual_directions(twins, tokens):
    # ours: the final norm's weight times W_U[:, t], centred over d_model after a LayerNorm: exactly the folded twin's
    # W_U[:, t] (TransformerLens's fold_ln also centres W_U after a LayerNorm, weight_processing.py:1678, whatever
    # center_unembed says). TransformerLens gives [d_model] for a one-element 1-D tensor too
    # (HookedTransformer.py:1101).
    ours = twins.ours.tokens_to_residual_directions(tokens)
    twins.same(twins.folded.tokens_to_residual_directions(tokens), ours)
    ids = torch.as_tensor(twins.ours.to_single_token(tokens) if isinstance(tokens, str) else tokens).reshape(-1)
    weighted = (twins.unfolded.ln_final.w[:, None] * twins.unfolded.W_U)[:, ids].T  # original weights
    if twins.family == "gpt2":
        weighted = weighted - weighted.mean(-1, keepdim=True)
    twins.same(weighted, ours.reshape(-1, twins.ours.d_model), "w * W_U[:, t], centred after a LayerNorm")


def test_residual_directions_give_the_logits(twins):
    # direction . normalised stream (centred and scaled, no weight) + the bias terms = the logit
    ours, tokens = twins.ours, twins.tokens
    x = twins.tl_cache()["ln_final.hook_normalized"]  # the folded twin's LNPre/RMSPre output
    t = torch.tensor([5, 9, 30])
    bias = twins.unfolded.ln_final.b if twins.family == "gpt2" else torch.zeros(ours.d_model)  # RMSNorm: no bias
    expected = ours(tokens)[..., t] - ours.b_U[t] - bias @ ours.W_U[:, t]
    torch.testing.assert_close(x @ ours.tokens_to_residual_directions(t).T, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("mlp_input", [False, True])
@pytest.mark.parametrize("include_mlp_biases", [True, False])
def test_accumulated_bias(twins, mlp_input, include_mlp_biases):
    for layer in range(twins.ours.n_layers + (0 if mlp_input else 1)):
        twins.same(twins.folded.accumulated_bias(layer, mlp_input, include_mlp_biases),
                   twins.ours.accumulated_bias(layer, mlp_input=mlp_input, include_mlp_biases=include_mlp_biases),
                   f"accumulated_bias({layer}, {mlp_input}, {include_mlp_biases})")
