"""``accumulated_resid``, ``decompose_resid`` and ``apply_ln_to_stack``: TransformerLens's tests
(tests/acceptance/test_activation_cache.py: test_logit_accumulated_resid_*, test_accumulated_resid_with_apply_ln,
test_apply_ln_recompute_ln_differs_from_cached, test_decompose_resid_*) run on its cache and on ours, the results
(values and labels) compared.

``apply_ln_to_stack`` with the cached scale (centre for LayerNorm, divide by the cached ``hook_scale``, no weight) is
the same for both twins. At the final layer with ``recompute_ln`` (``accumulated_resid(apply_ln=True)`` up to the
unembedding), ours applies the full final norm, weight and bias included, as the unfolded twin does; the logit lens
of that (``@ W_U + b_U``) equals the folded twin's.
"""

import pytest
import torch
from transformer_lens.utils import Slice

POS_SLICES = [None, -1, 0, (2, 6), (None, None, 3), [0, 3, 7], torch.tensor([1, 5]), Slice(-1), Slice((1, 4))]
POS_IDS = ["None", "int", "zero", "tuple", "step", "list", "tensor", "Slice-int", "Slice-tuple"]
INPUTS = [(0, False), (0, True), (1, False), (1, True), (2, False), (-1, False), (None, False)]
"""(layer, mlp_input) of a block's attention or MLP input, or the unembedding's (2 = n_layers, -1, None: one norm)."""


def _entry(side, label):
    """The cached stream an accumulated_resid label names ("0_pre", "1_mid", "final_post")."""
    if label == "final_post":
        return side.cache["resid_post", side.n_layers - 1]
    layer, kind = label.split("_")
    return side.cache[f"resid_{kind}", int(layer)]


def _sliced(pos_slice, x, dim=-2):
    return (pos_slice if isinstance(pos_slice, Slice) else Slice(pos_slice)).apply(x, dim=dim)


# ---------------------------------------------------------------------------------------------- accumulated_resid
def test_accumulated_resid_final_layer_forms_agree(pair):
    def check(side):
        n = side.n_layers
        stacks = [side.cache.accumulated_resid(layer=layer, incl_mid=True, pos_slice=-1) for layer in (-1, None, n)]
        assert all(torch.equal(stacks[0], s) for s in stacks[1:])
        torch.testing.assert_close(stacks[0][-1], side.cache["resid_post", -1][:, -1], atol=0, rtol=0)
        return stacks[0]

    pair.both(check)


@pytest.mark.parametrize("layer", [0, 1, 2, -1, None])
@pytest.mark.parametrize("incl_mid", [False, True])
@pytest.mark.parametrize("mlp_input", [False, True])
def test_accumulated_resid_entries_and_labels(pair, layer, incl_mid, mlp_input):
    def check(side):
        stack, labels = side.cache.accumulated_resid(layer=layer, incl_mid=incl_mid, mlp_input=mlp_input,
                                                     return_labels=True)
        assert len(labels) == len(stack)
        if not incl_mid and not (mlp_input and layer not in (None, -1, side.n_layers)):
            assert all("mid" not in label for label in labels)
        for entry, label in zip(stack, labels, strict=True):
            assert torch.equal(entry, _entry(side, label)), label
        return stack, labels

    pair.both(check)


@pytest.mark.parametrize("pos_slice", POS_SLICES, ids=POS_IDS)
def test_accumulated_resid_pos_slice(pair, pos_slice):
    def check(side):
        full = side.cache.accumulated_resid(incl_mid=True)
        stack = side.cache.accumulated_resid(incl_mid=True, pos_slice=pos_slice)
        torch.testing.assert_close(stack, _sliced(pos_slice, full), atol=0, rtol=0)
        return stack

    pair.both(check)


@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize("mlp_input", [False, True])
@pytest.mark.parametrize("pos_slice", [None, -1, (1, 5)], ids=["None", "int", "tuple"])
def test_accumulated_resid_apply_ln_before_a_block(pair, layer, mlp_input, pos_slice):
    # inside the model the cached scale of the block's norm is used (the same on both twins)
    def check(side):
        stack = side.cache.accumulated_resid(layer, incl_mid=True, mlp_input=mlp_input, pos_slice=pos_slice)
        ref = side.cache.apply_ln_to_stack(stack, layer, mlp_input=mlp_input, pos_slice=pos_slice)
        scaled, labels = side.cache.accumulated_resid(layer, incl_mid=True, mlp_input=mlp_input, pos_slice=pos_slice,
                                                      apply_ln=True, return_labels=True)
        torch.testing.assert_close(scaled, ref, atol=1e-6, rtol=0)
        return scaled, labels

    pair.both(check)


@pytest.mark.parametrize("pos_slice", [-1, Slice(-1), None, [0, 4]], ids=["int", "Slice", "None", "list"])
def test_accumulated_resid_apply_ln_at_the_unembedding(unfolded_pair, pos_slice):
    # TransformerLens's test_accumulated_resid_with_apply_ln; ours applies the full final norm, as the unfolded twin
    pair = unfolded_pair

    def check(side):
        stack = side.cache.accumulated_resid(layer=-1, incl_mid=True, pos_slice=pos_slice)
        ref = side.cache.apply_ln_to_stack(stack, layer=-1, pos_slice=pos_slice, recompute_ln=True)
        scaled, labels = side.cache.accumulated_resid(layer=None, incl_mid=True, pos_slice=pos_slice, apply_ln=True,
                                                      return_labels=True)
        torch.testing.assert_close(scaled, ref, atol=1e-6, rtol=0)
        n = side.n_layers
        assert labels == [f"{layer}_{k}" for layer in range(n) for k in ("pre", "mid")] + ["final_post"]
        return scaled, labels

    pair.both(check)


def test_logit_lens_equals_the_folded_twins(twins):
    # what the final entry of the logit lens must be: the model's logits; and every entry as the folded twin's
    folded, ours = twins.folded, twins.ours
    theirs = twins.tl_cache().accumulated_resid(apply_ln=True) @ folded.W_U + folded.b_U
    lens = twins.our_cache().accumulated_resid(apply_ln=True) @ ours.W_U + ours.b_U
    twins.same(theirs, lens, "logit lens")
    torch.testing.assert_close(lens[-1], ours(twins.tokens), atol=1e-4, rtol=0)


def test_recompute_ln_differs_from_the_cached_scale(unfolded_pair):
    def check(side):
        stack = side.cache.accumulated_resid(layer=-1, incl_mid=True, pos_slice=-1)
        recomputed = side.cache.apply_ln_to_stack(stack, layer=-1, pos_slice=-1, recompute_ln=True)
        cached = side.cache.apply_ln_to_stack(stack, layer=-1, pos_slice=-1, recompute_ln=False)
        assert recomputed.shape == cached.shape
        assert not torch.isclose(recomputed, cached, atol=1e-7).all()
        return recomputed, cached

    unfolded_pair.both(check)


# ---------------------------------------------------------------------------------------------- apply_ln_to_stack
def _raw_stack(side, pos_slice=None):
    """A stack built from cache entries only: [embed, 0_attn_out, 0_mlp_out, resid_mid 1]."""
    names = ["hook_embed", "blocks.0.hook_attn_out", "blocks.0.hook_mlp_out", "blocks.1.hook_resid_mid"]
    return torch.stack([_sliced(pos_slice, side.cache[n]) for n in names])


@pytest.mark.parametrize(("layer", "mlp_input"), INPUTS)
def test_apply_ln_to_stack_layers(pair, layer, mlp_input):
    def check(side):
        stack = _raw_stack(side)
        out = side.cache.apply_ln_to_stack(stack, layer, mlp_input=mlp_input)
        # linear in the stack: the sum's image is the image's sum (one cached scale per position)
        torch.testing.assert_close(out.sum(0), side.cache.apply_ln_to_stack(stack.sum(0)[None], layer,
                                                                          mlp_input=mlp_input)[0])
        return out

    pair.both(check)


@pytest.mark.parametrize("pos_slice", POS_SLICES, ids=POS_IDS)
def test_apply_ln_to_stack_pos_slice(pair, pos_slice):
    def check(side):
        out = side.cache.apply_ln_to_stack(_raw_stack(side, pos_slice), 1, pos_slice=pos_slice)
        torch.testing.assert_close(out, _sliced(pos_slice, side.cache.apply_ln_to_stack(_raw_stack(side), 1)))
        return out

    pair.both(check)


@pytest.mark.parametrize("batch_slice", [-1, Slice(0), [0, 2], (1, 3), None], ids=["int", "Slice", "list", "tuple",
                                                                                    "None"])
def test_apply_ln_to_stack_batch_slice(pair, batch_slice):
    def check(side):
        stack = _raw_stack(side, -1)  # [component, batch, d_model]
        out = side.cache.apply_ln_to_stack(stack, -1, pos_slice=-1, batch_slice=batch_slice)
        full = side.cache.apply_ln_to_stack(stack, -1, pos_slice=-1)
        torch.testing.assert_close(out, _sliced(batch_slice, full, dim=1))
        return out

    pair.both(check)


def test_apply_ln_to_stack_without_batch_dim(pair):
    # a stack of one batch row (the row picked by batch_slice on the cached scale)
    def check(side):
        stack = _raw_stack(side, -1)[:, 2]  # [component, d_model]
        out = side.cache.apply_ln_to_stack(stack, -1, pos_slice=-1, batch_slice=2, has_batch_dim=False)
        torch.testing.assert_close(out, side.cache.apply_ln_to_stack(_raw_stack(side, -1), -1, pos_slice=-1)[:, 2])
        return out

    pair.both(check)


# ---------------------------------------------------------------------------------------------- decompose_resid
def _stream_at(side, layer, mlp_input):
    if layer in (None, -1) or layer == side.n_layers:
        return side.cache["resid_post", side.n_layers - 1]
    return side.cache["resid_mid" if mlp_input else "resid_pre", layer]


@pytest.mark.parametrize(("layer", "mlp_input"), INPUTS)
def test_decompose_resid_sums_to_the_stream(pair, layer, mlp_input):
    def check(side):
        stack, labels = side.cache.decompose_resid(layer, mlp_input=mlp_input, return_labels=True)
        assert len(labels) == len(stack)
        torch.testing.assert_close(stack.sum(0), _stream_at(side, layer, mlp_input), atol=1e-5, rtol=0)
        return stack, labels

    pair.both(check)


def test_decompose_resid_labels(pair):
    stack, labels = pair.both(lambda side: side.cache.decompose_resid(return_labels=True))
    embeds = ["embed", "pos_embed"] if pair.family == "gpt2" else ["embed"]
    assert labels == embeds + ["0_attn_out", "0_mlp_out", "1_attn_out", "1_mlp_out"]


@pytest.mark.parametrize("mode", ["all", "attn", "mlp"])
@pytest.mark.parametrize("incl_embeds", [True, False])
def test_decompose_resid_modes(pair, mode, incl_embeds):
    def check(side):
        stack, labels = side.cache.decompose_resid(mode=mode, incl_embeds=incl_embeds, return_labels=True)
        for entry, label in zip(stack, labels, strict=True):
            name = {"embed": "hook_embed", "pos_embed": "hook_pos_embed"}.get(label)
            if name is None:
                layer, kind = label.split("_", 1)
                name = f"blocks.{layer}.hook_{kind}"
            assert torch.equal(entry, side.cache[name]), label
        assert ("embed" in labels) == incl_embeds
        assert not any(label.endswith({"attn": "mlp_out", "mlp": "attn_out"}.get(mode, "-")) for label in labels)
        return stack, labels

    pair.both(check)


def test_decompose_resid_attention_only_up_to_an_mlp(pair):
    # TransformerLens's test_decompose_resid_including_attention
    def check(side):
        stack = side.cache.decompose_resid(layer=1, pos_slice=Slice(-1), mlp_input=True, apply_ln=False,
                                           incl_embeds=False, mode="attn")
        ref = torch.stack([side.cache["attn_out", layer][:, -1] for layer in range(side.n_layers)])
        torch.testing.assert_close(stack, ref, atol=0, rtol=0)
        return stack

    pair.both(check)


@pytest.mark.parametrize("pos_slice", POS_SLICES, ids=POS_IDS)
def test_decompose_resid_pos_slice(pair, pos_slice):
    def check(side):
        stack = side.cache.decompose_resid(pos_slice=pos_slice)
        torch.testing.assert_close(stack, _sliced(pos_slice, side.cache.decompose_resid()), atol=0, rtol=0)
        return stack

    pair.both(check)


@pytest.mark.parametrize(("layer", "mlp_input"), [(1, False), (1, True), (-1, False)])
def test_decompose_resid_apply_ln(pair, layer, mlp_input):
    # TransformerLens's test_decompose_resid_with_apply_ln

    def check(side):
        stack = side.cache.decompose_resid(layer=layer, mlp_input=mlp_input, pos_slice=-1)
        ref = side.cache.apply_ln_to_stack(stack, layer, mlp_input=mlp_input, pos_slice=-1)
        scaled = side.cache.decompose_resid(layer=layer, mlp_input=mlp_input, pos_slice=Slice(-1), apply_ln=True)
        torch.testing.assert_close(scaled, ref, atol=1e-6, rtol=0)
        return scaled

    pair.both(check)
