"""Per-head and per-neuron contributions: ``compute_head_results``, ``stack_head_results``, ``get_neuron_results``,
``stack_neuron_results``, as TransformerLens's tests check them (tests/acceptance/test_activation_cache.py:
test_stack_head_results_*, test_compute_test_head_results_does_not_compute_results_twice, test_get_neuron_results*,
test_stack_neuron_results_*), on its cache and on ours, the results compared.

A neuron's result is ``mlp.hook_post[..., n] * W_out[n]`` (TransformerLens's ``W_out`` is not changed by the fold); a
head's is ``hook_z[..., h, :] @ W_O[h]``; neither includes the output biases (``accumulated_bias`` holds them).
"""

import pytest
import torch
from transformer_lens.utils import Slice

POS_SLICES = [None, -1, (2, 6), [0, 3, 7], Slice(-1)]
POS_IDS = ["None", "int", "tuple", "list", "Slice"]


def _resid_before(side, layer):
    """The stream entering block ``layer`` (the final stream for the last ``layer = n_layers``)."""
    return side.cache["resid_post", layer - 1] if layer > 0 else side.cache["resid_pre", 0]


# ---------------------------------------------------------------------------------------------- heads
def test_compute_head_results(twins):
    # TransformerLens's cache lacks hook_result unless use_attn_result; ours records it: leave it out of ours here
    pair = twins.pair()
    pair.ours.cache = twins.our_cache(names_filter=lambda n: not n.endswith("hook_result"))

    def check(side):
        assert "blocks.0.attn.hook_result" not in side.cache.cache_dict
        side.cache.compute_head_results()
        results = [side.cache["result", layer] for layer in range(side.n_layers)]
        for layer, result in enumerate(results):  # heads plus the output bias make the attention output
            b_O = side.model.blocks[layer].attn.b_O
            torch.testing.assert_close(result.sum(-2) + b_O, side.cache["attn_out", layer], atol=1e-5, rtol=0)
        return results

    pair.both(check)


def test_compute_head_results_does_not_compute_them_twice(twins):
    pair = twins.pair()
    pair.ours.cache = twins.our_cache(names_filter=lambda n: not n.endswith("hook_result"))
    for side in (pair.tl, pair.ours):
        side.cache.compute_head_results()
        side.cache.cache_dict["blocks.0.attn.hook_result"][0, 0, 0, 0] = float("inf")
        side.cache.compute_head_results()
        assert side.cache.cache_dict["blocks.0.attn.hook_result"][0, 0, 0, 0] == float("inf"), side.name


def test_recorded_head_results_equal_computed_ones(pair):
    # ours records hook_result in the forward pass; TransformerLens computes it from z and W_O
    pair.tl.cache.compute_head_results()
    for layer in range(pair.ours.n_layers):
        pair.same(pair.tl.cache["result", layer], pair.ours.cache["result", layer], f"result {layer}")


@pytest.mark.parametrize("layer", [1, 2, -1, None])
def test_stack_head_results_labels_and_remainder(pair, layer):
    def check(side):
        stack, labels = side.cache.stack_head_results(layer, return_labels=True, incl_remainder=True)
        upto = side.n_layers if layer in (-1, None) else layer
        heads = side.model.cfg.n_heads
        assert labels == [f"L{i}H{h}" for i in range(upto) for h in range(heads)] + ["remainder"]
        assert stack.shape == (upto * heads + 1, *side.cache["resid_pre", 0].shape)
        torch.testing.assert_close(stack.sum(0), _resid_before(side, upto), atol=1e-5, rtol=0)
        return stack, labels

    pair.both(check)


def test_stack_head_results_remainder_of_layer_one(pair):
    # TransformerLens's test_stack_head_results_including_remainder (layer=1)
    def check(side):
        stack, labels = side.cache.stack_head_results(layer=1, pos_slice=-1, incl_remainder=True, return_labels=True)
        ref = side.cache["resid_post", 0][None, :, -1]
        torch.testing.assert_close(ref - stack[:-1].sum(dim=0), stack[-1:], atol=1e-5, rtol=0)
        assert labels[:-1] == [f"L0H{i}" for i in range(side.model.cfg.n_heads)] and labels[-1] == "remainder"
        return stack, labels

    pair.both(check)


def test_stack_head_results_at_layer_zero(pair):
    def check(side):
        empty, labels = side.cache.stack_head_results(layer=0, pos_slice=-1, return_labels=True)
        assert labels == [] and empty.shape[0] == 0
        return empty, labels

    pair.both(check)


def test_stack_head_results_layer_zero_remainder(pair):
    # A deliberate difference. TransformerLens pins its own behaviour in test_stack_head_results_including_remainder:
    # with no heads (layer=0) the remainder is resid_post of layer -1, i.e. the *last* block's (stack_head_results reads
    # self[("resid_post", layer - 1)] and __getitem__ counts -1 from the end). Ours is the stream entering block 0,
    # which is what "the rest of the residual stream before layer 0" is.
    tl, ours = pair.tl.cache, pair.ours.cache
    stack, labels = tl.stack_head_results(layer=0, pos_slice=-1, incl_remainder=True, return_labels=True)
    torch.testing.assert_close(stack, tl["resid_post", -1][None, :, -1], atol=0, rtol=0)
    stack, labels = ours.stack_head_results(layer=0, pos_slice=-1, incl_remainder=True, return_labels=True)
    torch.testing.assert_close(stack, ours["resid_pre", 0][None, :, -1], atol=0, rtol=0)
    assert labels == ["remainder"]


@pytest.mark.parametrize("pos_slice", POS_SLICES, ids=POS_IDS)
def test_stack_head_results_pos_slice(pair, pos_slice):
    def check(side):
        stack = side.cache.stack_head_results(pos_slice=pos_slice, incl_remainder=True)
        full = side.cache.stack_head_results(incl_remainder=True)
        sliced = pos_slice if isinstance(pos_slice, Slice) else Slice(pos_slice)
        torch.testing.assert_close(stack, sliced.apply(full, dim=-2), atol=1e-6, rtol=0)
        return stack

    pair.both(check)


@pytest.mark.parametrize("layer", [1, -1])
def test_stack_head_results_apply_ln(pair, layer):
    # TransformerLens's test_stack_head_results_with_apply_ln
    def check(side):
        stack = side.cache.stack_head_results(layer=layer, pos_slice=-1)
        ref = side.cache.apply_ln_to_stack(stack, layer=None if layer == -1 else layer, pos_slice=Slice(-1))
        scaled = side.cache.stack_head_results(layer=layer, pos_slice=-1, apply_ln=True)
        torch.testing.assert_close(scaled, ref, atol=1e-6, rtol=0)
        return scaled

    pair.both(check)


# ---------------------------------------------------------------------------------------------- neurons
def test_get_neuron_results_with_slices(pair):
    # TransformerLens's test_get_neuron_results
    def check(side):
        layer = 1
        ref = side.cache[f"blocks.{layer}.mlp.hook_post"][:, -1, :2, None] * side.model.blocks[layer].mlp.W_out[:2]
        out = side.cache.get_neuron_results(layer, neuron_slice=[0, 1], pos_slice=-1)
        torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
        return out

    pair.both(check)


@pytest.mark.parametrize("layer", [0, 1])
def test_get_neuron_results_sum_to_the_mlp_output(pair, layer):
    # TransformerLens's test_get_neuron_results_without_slice, and the neurons plus b_out are the MLP's output
    def check(side):
        out = side.cache.get_neuron_results(layer)
        ref = side.cache[f"blocks.{layer}.mlp.hook_post"][..., None] * side.model.blocks[layer].mlp.W_out
        torch.testing.assert_close(out, ref, atol=0, rtol=0)
        b_out = side.model.blocks[layer].mlp.b_out
        torch.testing.assert_close(out.sum(-2) + b_out, side.cache["mlp_out", layer], atol=1e-5, rtol=0)
        return out

    pair.both(check)


@pytest.mark.parametrize("outputs", [None, 3], ids=["1d", "2d"])
def test_get_neuron_results_project_output_onto(pair, outputs):
    d = pair.ours.model.d_model
    direction = torch.randn(d) if outputs is None else torch.randn(d, outputs)

    def check(side):
        projected = side.cache.get_neuron_results(1, project_output_onto=direction)
        expected = side.cache.get_neuron_results(1) @ direction
        assert projected.shape == expected.shape
        torch.testing.assert_close(projected, expected, atol=1e-5, rtol=0)
        return projected

    pair.both(check)


@pytest.mark.parametrize("neuron_slice", [None, Slice([0, 1, 2]), [5, 1], (10, 20), (0, 40, 7), torch.tensor([3])],
                         ids=["None", "Slice-list", "list", "tuple", "step", "tensor"])
def test_stack_neuron_results_labels_and_remainder(pair, neuron_slice):
    # TransformerLens's test_stack_neuron_results_using_neuron_slice and *_including_remainder
    def check(side):
        stack, labels = side.cache.stack_neuron_results(2, pos_slice=-1, neuron_slice=neuron_slice,
                                                        return_labels=True, incl_remainder=True)
        picked = (neuron_slice if isinstance(neuron_slice, Slice) else Slice(neuron_slice)).apply(
            torch.arange(side.model.cfg.d_mlp)).tolist()
        assert labels == [f"L{layer}N{n}" for layer in range(2) for n in picked] + ["remainder"]
        torch.testing.assert_close(stack.sum(0), side.cache["resid_post", 1][:, -1], atol=1e-5, rtol=0)
        return stack, labels

    pair.both(check)


def test_stack_neuron_results_at_layer_zero(pair):
    def check(side):
        empty, labels = side.cache.stack_neuron_results(0, pos_slice=-1, return_labels=True)
        assert labels == [] and empty.shape[0] == 0
        return empty, labels

    pair.both(check)


def test_stack_neuron_results_layer_zero_remainder(pair):
    # as for heads (TransformerLens's test_stack_neuron_results_including_remainder pins its last-block quirk)
    tl, ours = pair.tl.cache, pair.ours.cache
    stack, labels = tl.stack_neuron_results(0, pos_slice=-1, incl_remainder=True, return_labels=True)
    torch.testing.assert_close(stack, tl["resid_post", -1][None, :, -1], atol=0, rtol=0)
    stack, labels = ours.stack_neuron_results(0, pos_slice=-1, incl_remainder=True, return_labels=True)
    torch.testing.assert_close(stack, ours["resid_pre", 0][None, :, -1], atol=0, rtol=0)
    assert labels == ["remainder"]


@pytest.mark.parametrize("layer", [1, -1])
def test_stack_neuron_results_apply_ln(pair, layer):
    # TransformerLens's test_stack_neuron_results_with_apply_ln
    def check(side):
        stack = side.cache.stack_neuron_results(layer, pos_slice=-1)
        ref = side.cache.apply_ln_to_stack(stack, layer, pos_slice=-1)
        scaled = side.cache.stack_neuron_results(layer, pos_slice=Slice(-1), apply_ln=True)
        torch.testing.assert_close(scaled, ref, atol=1e-6, rtol=0)
        return scaled

    pair.both(check)


@pytest.mark.parametrize("apply_ln", [False, True])
@pytest.mark.parametrize("incl_remainder", [False, True])
@pytest.mark.parametrize("outputs", [None, 4], ids=["1d", "2d"])
def test_stack_neuron_results_project_output_onto(pair, apply_ln, incl_remainder, outputs):
    # TransformerLens's test_stack_neuron_results_project_* and *_apply_ln_and_project_*: projecting equals
    # projecting the unprojected stack
    d = pair.ours.model.d_model
    direction = torch.randn(d) if outputs is None else torch.randn(d, outputs)

    def check(side):
        kwargs = dict(pos_slice=-1, apply_ln=apply_ln, incl_remainder=incl_remainder)
        projected = side.cache.stack_neuron_results(-1, project_output_onto=direction, **kwargs)
        expected = side.cache.stack_neuron_results(-1, **kwargs) @ direction
        assert projected.shape == expected.shape
        torch.testing.assert_close(projected, expected, atol=1e-5, rtol=0)
        return projected

    pair.both(check)
