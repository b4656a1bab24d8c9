"""Bad input raises a clear error naming the argument, and leaves no hook behind."""

import json

import pytest
import torch

import interp


@pytest.fixture(scope="module")
def model(tiny_dir):
    return interp.load_model(tiny_dir("llama"))


def _no_hooks(model):
    return not model._registry and all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_unknown_spec_lists_what_is_accepted():
    with pytest.raises(ValueError, match="unknown model spec 'gpt-17'.*Accepted: 'smollm2'"):
        interp.load_model("gpt-17")
    with pytest.raises(ValueError, match="hubs are not reachable"):
        interp.load_model("HuggingFaceTB/SmolLM2-135M")
    with pytest.raises(TypeError, match="cannot wrap a int. Accepted"):
        interp.wrap(42)
    with pytest.raises(TypeError, match="cannot wrap a Linear"):
        interp.wrap(torch.nn.Linear(2, 2))


def test_folder_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        interp.load_model(tmp_path)


def test_folder_without_safetensors(tmp_path, tiny_dir):
    (tmp_path / "config.json").write_text((tiny_dir("llama") / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
        interp.load_model(tmp_path)


def test_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="unsupported architecture: model_type 'bert'.*gpt2.*llama"):
        interp.load_model(tmp_path)


@pytest.mark.parametrize(
    "tokens, error, match",
    [
        (torch.tensor([[1, 2, 500]]), ValueError, r"tokens holds ids in \[1, 500\] but the vocabulary has ids 0..127"),
        (torch.tensor([[-1, 2]]), ValueError, "tokens holds ids"),
        (torch.rand(1, 4), TypeError, "integer token ids"),
        (torch.zeros(1, 2, 3, dtype=torch.long), ValueError, r"shape \[batch, pos\]"),
        (torch.zeros(0, 4, dtype=torch.long), ValueError, "tokens is empty"),
        (torch.zeros(2, 0, dtype=torch.long), ValueError, "tokens is empty"),
        ([1, 2, 3], TypeError, "LongTensor"),
    ],
)
def test_bad_tokens(model, tokens, error, match):
    with pytest.raises(error, match=match):
        model(tokens)
    with pytest.raises(error, match=match):
        model.run_with_cache(tokens)
    assert _no_hooks(model)


def test_unknown_site_suggests_closest(model):
    with pytest.raises(KeyError, match="Did you mean 'blocks.0.attn.hook_pattern'"):
        model.run_with_cache(torch.tensor([[1, 2]]), names_filter=["blocks.0.attn.hook_patern"])
    with pytest.raises(KeyError, match="Did you mean 'blocks.1.hook_resid_post'"):
        with model.hooks([("blocks.1.hook_resid_pots", lambda a, hook: a)]):
            pass
    assert _no_hooks(model)


def test_layer_out_of_range(model):
    with pytest.raises(KeyError, match="layer 7 is out of range.*layers 0..1"):
        model.run_with_hooks(torch.tensor([[1, 2]]), fwd_hooks=[("blocks.7.hook_resid_pre", lambda a, hook: a)])
    with pytest.raises(IndexError, match="layers: layer 5 is out of range"):
        model.attention_patterns(torch.tensor([[1, 2]]), layers=[0, 5])
    assert _no_hooks(model)


def test_hook_returning_wrong_shape(model):
    with pytest.raises(ValueError, match=r"at 'blocks.0.hook_mlp_out' returned shape \(1, 2\); expected \(1, 2, 64\)"):
        model.run_with_hooks(torch.tensor([[1, 2]]), fwd_hooks=[("blocks.0.hook_mlp_out", lambda a, hook: a[..., 0])])
    with pytest.raises(TypeError, match="returned str"):
        model.run_with_hooks(torch.tensor([[1, 2]]), fwd_hooks=[("blocks.0.attn.hook_pattern", lambda a, hook: "x")])
    assert _no_hooks(model)


def test_bad_fwd_hooks_and_filters(model):
    with pytest.raises(TypeError, match=r"fwd_hooks\[0\] must be a \(name_or_predicate, fn\) pair"):
        model.run_with_hooks(torch.tensor([[1]]), fwd_hooks=["blocks.0.hook_resid_pre"])
    with pytest.raises(TypeError, match="names_filter must be"):
        model.run_with_cache(torch.tensor([[1]]), names_filter=3)
    assert _no_hooks(model)
