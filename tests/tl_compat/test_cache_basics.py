"""The cache as a container, as TransformerLens's tests check it (tests/acceptance/test_activation_cache.py:
test_get_keys/values/items, test_remove_batch_dim*, test_apply_slice_to_batch_dim, test_retrieve_activations,
test_stack_activation; ``to``): the same checks on TransformerLens's cache and ours, the results compared."""

import pytest
import torch
from transformer_lens.utils import Slice, get_act_name


def _shared(pair) -> list[str]:
    """Site names both caches hold with the same meaning (ours records ``hook_result``, TransformerLens ``hook_pre``;
    ``hook_normalized`` is TransformerLens's x / scale but our norm's output, weight included)."""
    return [k for k in pair.tl.cache.cache_dict if k in pair.ours.cache.cache_dict and "hook_normalized" not in k]


def test_keys_values_items_follow_cache_dict(pair):
    def check(side):
        c = side.cache
        assert list(c.keys()) == list(c.cache_dict.keys()) == list(c)
        assert all(a is b for a, b in zip(c.values(), c.cache_dict.values(), strict=True))
        assert all(k == k2 and v is v2 for (k, v), (k2, v2) in zip(c.items(), c.cache_dict.items(), strict=True))
        assert len(c) == len(c.cache_dict)
        return c.has_batch_dim

    assert pair.both(check) is True


def test_remove_batch_dim(single_pair):
    def check(side):
        before = {k: v.shape for k, v in side.cache.cache_dict.items()}
        out = side.cache.remove_batch_dim()
        assert not out.has_batch_dim
        assert all(out.cache_dict[k].shape == before[k][1:] for k in before)
        again = out.remove_batch_dim()  # a second call changes nothing (TransformerLens logs a warning)
        assert not again.has_batch_dim and all(again.cache_dict[k].shape == before[k][1:] for k in before)
        return {k: again[k] for k in _shared(single_pair)}

    single_pair.both(check)


def test_remove_batch_dim_changes_the_cache_in_place(single_pair):
    # TransformerLens's test calls cache.remove_batch_dim() and then reads cache itself (ActivationCache.py:
    # remove_batch_dim edits cache_dict and returns self); code written that way must keep working
    def check(side):
        side.cache.remove_batch_dim()
        assert not side.cache.has_batch_dim
        return {k: side.cache[k] for k in _shared(single_pair)}

    single_pair.both(check)


def test_remove_batch_dim_refuses_a_batch(pair):
    for side in (pair.tl, pair.ours):
        with pytest.raises((AssertionError, ValueError)):
            side.cache.remove_batch_dim()
        assert side.cache.has_batch_dim


@pytest.mark.parametrize("batch_slice", [Slice((1, 3)), (0, 2), 1, Slice(-1), [0, 2], torch.tensor([2, 0]), None],
                         ids=["Slice-tuple", "tuple", "int", "Slice-int", "list", "tensor", "None"])
def test_apply_slice_to_batch_dim(pair, batch_slice):
    sliced = Slice(batch_slice) if not isinstance(batch_slice, Slice) else batch_slice

    def check(side):
        new = side.cache.apply_slice_to_batch_dim(batch_slice)
        assert new.has_batch_dim == (sliced.mode != "int")
        for k in _shared(pair):
            torch.testing.assert_close(new[k], sliced.apply(side.cache[k], dim=0), atol=0, rtol=0)
        return {k: new[k] for k in _shared(pair)}

    pair.both(check)


def test_to_moves_every_tensor(pair):
    def check(side):
        keys = list(side.cache.keys())
        moved = side.cache.to("meta")  # a real move without an accelerator (and no way back: meta holds no data)
        assert list(moved.keys()) == keys
        assert all(v.device.type == "meta" for v in moved.values())
        return {k: (tuple(moved[k].shape), moved[k].device.type) for k in _shared(pair)}

    pair.both(check)


def test_to_changes_the_cache_in_place(pair):
    # TransformerLens's to() replaces cache_dict and returns self (ActivationCache.py: to)
    for side in (pair.tl, pair.ours):
        assert side.cache.to("meta") is side.cache
        assert all(v.device.type == "meta" for v in side.cache.values())


@pytest.mark.parametrize("key", [
    ("scale", 1, "ln1"), ("scale", -1, "ln1"), "scale1ln1", ("k", -1, None), ("k", 1), "k1", "q0a", ("resid_post", -1),
    "embed", ("embed", None), "hook_embed", ("normalized", 0, "ln2"), "normalized1ln1", ("z", 0, "attn"), ("attn", 1),
    "blocks.0.attn.hook_pattern", ("scale", None), ("mlp_post", 0), ("resid_pre", 1, "b"),
], ids=str)
def test_retrieve_activations(pair, key):
    # TransformerLens's test_retrieve_activations, plus the other key forms its __getitem__ takes (a string goes
    # through get_act_name: "embed", "scale1ln1"; a tuple's layer may be negative or None, its layer_type None).
    # hook_normalized differs by design: TransformerLens's is x / scale before the norm's weight (layer_norm.py:56,
    # rms_norm.py:50), ours the norm's output (what the next sublayer reads): only its shape is compared.
    pair.both(lambda side: side.cache[key].shape if "normalized" in str(key) else side.cache[key])


@pytest.mark.parametrize("args", [("scale", -1, "ln1"), ("scale", 1, "ln1"), ("resid_post",), ("pattern", 1),
                                  ("z", None, "attn"), ("mlp_out", 2, None)], ids=str)
def test_stack_activation(pair, args):
    def check(side):
        stack = side.cache.stack_activation(*args)
        layers = side.n_layers if len(args) < 2 or args[1] in (-1, None) else args[1]
        assert len(stack) == layers
        names = [get_act_name(args[0], layer, args[2] if len(args) > 2 else None) for layer in range(layers)]
        assert all(torch.equal(stack[layer], side.cache[name]) for layer, name in enumerate(names))
        return stack

    pair.both(check)
