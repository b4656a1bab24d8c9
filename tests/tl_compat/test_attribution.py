"""Direct logit attribution: ``logit_attrs`` and ``get_full_resid_decomposition``, as TransformerLens's tests check
them (tests/acceptance/test_activation_cache.py: test_logit_attrs_*, test_get_full_resid_decomposition*), on its cache
(folded twin) and on ours, the results compared; and the IOI-style identity: the attributions of a decomposition sum
to the model's logit difference, less the terms no component writes (``b_U`` and, for LayerNorm, the final norm's
bias read by ``W_U``).
"""

import pytest
import torch
from transformer_lens.utils import Slice

ANSWERS = [("M", "J"), ("A", "B"), ("x", "y")]
"""(correct, incorrect) characters, one pair per row of the shared ``[3, 8]`` tokens."""
PROMPTS = ["When Mary and John went out, John gave it to", "When Anna and Bert went out, Bert gave it to"]
IOI_ANSWERS = [("M", "J"), ("A", "B")]
"""(indirect object, subject) of each prompt, as character tokens."""


def _answers(side, answers=ANSWERS) -> torch.Tensor:
    """``[batch, 2]`` token ids of (correct, incorrect) characters."""
    return torch.tensor([[side.model.to_single_token(c) for c in row] for row in answers])


def _reference(side, stack, answers, incorrect=True):
    """TransformerLens's notebook code: scaled stack . (direction of the answer - direction of the wrong one)."""
    dirs = side.model.tokens_to_residual_directions(answers)  # [batch, 2, d_model]
    direction = dirs[:, 0] - dirs[:, 1] if incorrect else dirs[:, 0]
    scaled = side.cache.apply_ln_to_stack(stack, layer=-1, pos_slice=-1)
    return torch.einsum("...bd,bd->...b", scaled, direction)


# ---------------------------------------------------------------------------------------------- logit_attrs
def test_logit_attrs_matches_reference_code(pair):
    def check(side):
        answers = _answers(side)
        stack = side.cache.accumulated_resid(layer=-1, incl_mid=True, pos_slice=-1)
        attrs = side.cache.logit_attrs(stack, pos_slice=-1, tokens=answers[:, 0], incorrect_tokens=answers[:, 1])
        torch.testing.assert_close(attrs, _reference(side, stack, answers), atol=1e-6, rtol=1e-4)
        return attrs

    pair.both(check)


def test_logit_attrs_without_incorrect_tokens(pair):
    def check(side):
        answers = _answers(side)
        stack = side.cache.accumulated_resid(layer=-1, incl_mid=True, pos_slice=-1)
        attrs = side.cache.logit_attrs(stack, pos_slice=-1, tokens=answers[:, 0], incorrect_tokens=None)
        torch.testing.assert_close(attrs, _reference(side, stack, answers, incorrect=False), atol=1e-6, rtol=1e-4)
        return attrs

    pair.both(check)


@pytest.mark.parametrize("form", ["tensor", "int", "str", "no-batch-dim", "list"])
def test_logit_attrs_input_shapes(pair, form):
    # TransformerLens's test_logit_attrs_works_for_all_input_shapes: one batch row (by batch_slice) with the answer
    # as a 0-d tensor, an int, a string, with a stack without batch dim; and several rows by a list
    def check(side):
        answers = _answers(side)
        stack = side.cache.accumulated_resid(layer=-1, incl_mid=True, pos_slice=-1)
        ref = _reference(side, stack, answers)
        b = -1
        if form == "tensor":
            out = side.cache.logit_attrs(stack, answers[b, 0], answers[b, 1], batch_slice=b, pos_slice=Slice(-1))
        elif form == "int":
            out = side.cache.logit_attrs(stack, int(answers[b, 0]), int(answers[b, 1]), batch_slice=Slice(b),
                                         pos_slice=-1)
        elif form == "str":
            out = side.cache.logit_attrs(stack, ANSWERS[b][0], ANSWERS[b][1], batch_slice=b, pos_slice=-1)
        elif form == "no-batch-dim":
            out = side.cache.logit_attrs(stack[:, b, :], answers[b, 0], answers[b, 1], has_batch_dim=False,
                                         batch_slice=b, pos_slice=-1)
        else:
            rows = [0, 2]
            out = side.cache.logit_attrs(stack, answers[rows, 0], answers[rows, 1], batch_slice=rows, pos_slice=-1)
            b = rows
        torch.testing.assert_close(out, ref[:, b], atol=1e-6, rtol=1e-4)
        return out

    pair.both(check)


def test_logit_attrs_refuses_mismatched_token_shapes(pair):
    for side in (pair.tl, pair.ours):
        answers = _answers(side)
        stack = side.cache.accumulated_resid(layer=-1, incl_mid=True, pos_slice=-1)
        with pytest.raises(ValueError):
            side.cache.logit_attrs(stack[:, [0, 2], :], answers[[0, 2], 0], answers[0:1, 1], has_batch_dim=False,
                                   batch_slice=[0, 2], pos_slice=-1)


def test_logit_attrs_sum_to_the_logit_difference(twins):
    # the IOI check: attributions of every component sum to the logit difference at the last position, less what
    # no component writes: b_U, and the final LayerNorm's bias read by W_U (zero for RMSNorm)
    tokens = twins.ours.to_tokens(list(PROMPTS))
    pair = twins.pair(tokens)
    unfolded = twins.unfolded
    norm_bias = unfolded.ln_final.b if twins.family == "gpt2" else torch.zeros(unfolded.cfg.d_model)
    constant = unfolded.b_U + norm_bias @ unfolded.W_U  # the original b_U and W_U (= ours)

    def check(side):
        answers = _answers(side, IOI_ANSWERS)
        stack, labels = side.cache.decompose_resid(return_labels=True)
        attrs = side.cache.logit_attrs(stack[:, :, -1], answers[:, 0], answers[:, 1], pos_slice=-1)
        with torch.no_grad():
            logits = side.model(tokens)[:, -1]
        rows = torch.arange(len(tokens))
        diff = logits[rows, answers[:, 0]] - logits[rows, answers[:, 1]]
        torch.testing.assert_close(attrs.sum(0), diff - (constant[answers[:, 0]] - constant[answers[:, 1]]),
                                   atol=1e-4, rtol=0)
        return attrs, labels

    pair.both(check)


# ---------------------------------------------------------------------------------------------- full decomposition
def _stream_at(side, layer, mlp_input):
    if layer in (None, -1) or layer == side.n_layers:
        return side.cache["resid_post", side.n_layers - 1]
    return side.cache["resid_mid" if mlp_input else "resid_pre", layer]


@pytest.mark.parametrize(("layer", "mlp_input"), [(0, False), (0, True), (1, False), (1, True), (2, False),
                                                  (-1, False), (None, False)])
@pytest.mark.parametrize("expand_neurons", [True, False])
def test_full_resid_decomposition_sums_to_the_stream(pair, layer, mlp_input, expand_neurons):
    def check(side):
        stack, labels = side.cache.get_full_resid_decomposition(layer, mlp_input=mlp_input,
                                                                expand_neurons=expand_neurons, return_labels=True)
        assert len(labels) == len(stack) and labels[-1] == "bias"
        torch.testing.assert_close(stack.sum(0), _stream_at(side, layer, mlp_input), atol=1e-4, rtol=0)
        return stack, labels

    pair.both(check)


def test_full_resid_decomposition_labels(pair):
    _, labels = pair.both(lambda side: side.cache.get_full_resid_decomposition(return_labels=True))
    cfg = pair.ours.model.cfg
    heads = [f"L{layer}H{h}" for layer in range(cfg.n_layers) for h in range(cfg.n_heads)]
    neurons = [f"L{layer}N{n}" for layer in range(cfg.n_layers) for n in range(cfg.d_mlp)]
    embeds = ["embed", "pos_embed"] if pair.family == "gpt2" else ["embed"]
    assert labels == heads + neurons + embeds + ["bias"]


def test_full_resid_decomposition_pieces(pair):
    # TransformerLens's test_get_full_resid_decomposition: heads, MLP outputs, embeddings and the bias, each with the
    # final norm's cached scale
    def check(side):
        n = side.n_layers
        heads, head_labels = side.cache.stack_head_results(layer=n, pos_slice=Slice(-1), apply_ln=True,
                                                           return_labels=True)
        mlps, mlp_labels = side.cache.decompose_resid(layer=n, pos_slice=Slice(-1), incl_embeds=False, mode="mlp",
                                                      apply_ln=True, return_labels=True)
        embeds = [side.cache.apply_ln_to_stack(side.cache[name][None, :, -1], pos_slice=Slice(-1))
                  for name in ("hook_embed", "hook_pos_embed") if name in side.cache.cache_dict]
        bias = side.model.accumulated_bias(n, mlp_input=False, include_mlp_biases=False)
        bias = side.cache.apply_ln_to_stack(bias.expand((1, *heads.shape[1:])), pos_slice=Slice(-1))
        stack, labels = side.cache.get_full_resid_decomposition(layer=-1, pos_slice=-1, apply_ln=True,
                                                                expand_neurons=False, return_labels=True)
        torch.testing.assert_close(stack, torch.cat([heads, mlps, *embeds, bias]), atol=1e-6, rtol=0)
        embed_labels = ["embed", "pos_embed"][:len(embeds)]
        assert labels == head_labels + mlp_labels + embed_labels + ["bias"]
        return stack, labels

    pair.both(check)


@pytest.mark.parametrize("apply_ln", [True, False])
def test_full_resid_decomposition_with_neurons_expanded(pair, apply_ln):
    # TransformerLens's test_get_full_resid_decomposition_with_neurons_expanded and *_without_applying_ln
    def check(side):
        heads = side.cache.stack_head_results(layer=1, pos_slice=Slice(-1), apply_ln=apply_ln)
        neurons, neuron_labels = side.cache.stack_neuron_results(1, pos_slice=Slice(-1), return_labels=True)
        if apply_ln:
            neurons = side.cache.apply_ln_to_stack(neurons, layer=1, pos_slice=Slice(-1))
        stack, labels = side.cache.get_full_resid_decomposition(layer=1, pos_slice=Slice(-1), apply_ln=apply_ln,
                                                                expand_neurons=True, return_labels=True)
        h, m = len(heads), len(neurons)
        torch.testing.assert_close(stack[:h], heads, atol=1e-6, rtol=0)
        torch.testing.assert_close(stack[h:h + m], neurons, atol=1e-6, rtol=0)
        assert labels[h:h + m] == neuron_labels
        return stack, labels

    pair.both(check)


@pytest.mark.parametrize("apply_ln", [False, True])
@pytest.mark.parametrize("expand_neurons", [True, False])
@pytest.mark.parametrize("outputs", [None, 2], ids=["1d", "2d"])
def test_full_resid_decomposition_project_output_onto(pair, apply_ln, expand_neurons, outputs):
    # TransformerLens's test_get_full_resid_decomposition_project_output_onto_* and *_apply_ln_and_project_*
    d = pair.ours.model.d_model
    direction = torch.randn(d) if outputs is None else torch.randn(d, outputs)

    def check(side):
        kwargs = dict(layer=-1, pos_slice=-1, apply_ln=apply_ln, expand_neurons=expand_neurons)
        projected = side.cache.get_full_resid_decomposition(project_output_onto=direction, **kwargs)
        expected = side.cache.get_full_resid_decomposition(**kwargs) @ direction
        assert projected.shape == expected.shape
        torch.testing.assert_close(projected, expected, atol=1e-4, rtol=0)
        return projected

    pair.both(check)
