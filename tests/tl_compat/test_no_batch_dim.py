"""After ``remove_batch_dim`` every helper works on ``[pos, ...]`` activations (TransformerLens: "all library functions
*should* be robust to that"): on a batch-1 cache, each helper without the batch dim gives the batched result's row 0,
on TransformerLens's cache and on ours, and the two agree."""

import pytest
import torch

HELPERS = {
    "accumulated_resid": lambda c: c.accumulated_resid(incl_mid=True, return_labels=True),
    "accumulated_resid-ln-block": lambda c: c.accumulated_resid(1, apply_ln=True, mlp_input=True),
    "accumulated_resid-pos": lambda c: c.accumulated_resid(pos_slice=(1, 5)),
    "decompose_resid": lambda c: c.decompose_resid(return_labels=True),
    "decompose_resid-ln": lambda c: c.decompose_resid(apply_ln=True, pos_slice=-1),
    "stack_head_results": lambda c: c.stack_head_results(incl_remainder=True, return_labels=True),
    "stack_head_results-ln": lambda c: c.stack_head_results(1, apply_ln=True, pos_slice=[0, 2]),
    "stack_neuron_results": lambda c: c.stack_neuron_results(2, neuron_slice=(0, 9), incl_remainder=True),
    "stack_neuron_results-ln": lambda c: c.stack_neuron_results(2, apply_ln=True, pos_slice=-1),
    "get_neuron_results": lambda c: c.get_neuron_results(1, neuron_slice=[3, 4], pos_slice=-1),
    "full_decomposition": lambda c: c.get_full_resid_decomposition(return_labels=True),
    "full_decomposition-ln": lambda c: c.get_full_resid_decomposition(1, apply_ln=True, expand_neurons=False),
    "stack_activation": lambda c: c.stack_activation("pattern"),
}
BATCH_DIM = {"get_neuron_results": 0}
"""Where the batch dim sits in a helper's batched output: dim 1 (after the component/layer dim) unless listed."""


def _split(value):
    """(tensor, labels or None) of a helper's result."""
    return value if isinstance(value, tuple) else (value, None)


@pytest.mark.parametrize("helper", list(HELPERS))
def test_helpers_without_batch_dim(single_pair, helper):
    fn, dim = HELPERS[helper], BATCH_DIM.get(helper, 1)

    def check(side):
        batched, labels = _split(fn(side.cache))
        side.cache = side.cache.remove_batch_dim()
        assert not side.cache.has_batch_dim
        out, out_labels = _split(fn(side.cache))
        torch.testing.assert_close(out, batched.select(dim, 0), atol=1e-6, rtol=0)
        assert out_labels == labels
        return out, out_labels

    single_pair.both(check)


def test_logit_attrs_without_batch_dim(single_pair):
    def check(side):
        tokens = side.model.to_single_token("M"), side.model.to_single_token("J")
        stack = side.cache.decompose_resid(pos_slice=-1)  # [component, 1, d_model]
        batched = side.cache.logit_attrs(stack, torch.tensor(tokens[:1]), torch.tensor(tokens[1:]), pos_slice=-1)
        cache = side.cache.remove_batch_dim()
        out = cache.logit_attrs(cache.decompose_resid(pos_slice=-1), tokens[0], tokens[1], pos_slice=-1,
                                has_batch_dim=False)
        torch.testing.assert_close(out, batched[:, 0], atol=1e-6, rtol=0)
        return out

    single_pair.both(check)
