"""Bad input to patching gets one clear error naming what is wrong."""

import pytest
import torch

from interp import patching


def test_lengths_differ_shows_both(tiny):
    model = tiny("llama")
    with pytest.raises(ValueError, match=r"clean has 4 tokens .*'a'.*corrupt has 5") as err:
        patching.patch_residual(model, "abc", "abcd", patching.logit_diff(5, 6), progress=False)
    assert "'d'" in str(err.value)
    with pytest.raises(ValueError, match="different lengths"):
        patching.patch_residual(model, ["abc", "abcd"], ["abc", "abcd"], patching.logit_diff(5, 6), progress=False)
    with pytest.raises(ValueError, match="2 prompts and corrupt_tokens 1"):
        patching.patch_residual(model, ["abc", "abd"], "abe", patching.logit_diff(5, 6), progress=False)


def test_metric_of_the_wrong_shape(tiny, prompt_pair):
    model = tiny("llama")
    clean, corrupt = prompt_pair()
    with pytest.raises(ValueError, match=r"metric returned shape \(\); expected \[2\]"):
        patching.patch_residual(model, clean, corrupt, lambda logits: logits[:, -1, 5].mean(), progress=False)
    with pytest.raises(TypeError, match="metric returned float"):
        patching.patch_residual(model, clean, corrupt, lambda logits: 1.0, progress=False)
    with pytest.raises(ValueError, match="3 ids but the logits have 2 rows"):
        patching.patch_residual(model, clean, corrupt, patching.logit_diff([1, 2, 3], 4), progress=False)
    with pytest.raises(TypeError, match="metric must be a callable"):
        patching.patch_residual(model, clean, corrupt, "logit_diff", progress=False)


def test_empty_or_bad_positions_and_layers(tiny, prompt_pair):
    model = tiny("llama")
    clean, corrupt = prompt_pair()
    metric = patching.logit_diff(5, 6)
    with pytest.raises(ValueError, match="positions is empty"):
        patching.patch_residual(model, clean, corrupt, metric, positions=[], progress=False)
    with pytest.raises(IndexError, match="position 8 is out of range for 8 tokens"):
        patching.patch_residual(model, clean, corrupt, metric, positions=[8], progress=False)
    with pytest.raises(ValueError, match="repeats"):
        patching.patch_residual(model, clean, corrupt, metric, positions=[1, -7], progress=False)
    with pytest.raises(ValueError, match="layers is empty"):
        patching.patch_residual(model, clean, corrupt, metric, layers=[], progress=False)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        patching.patch_residual(model, clean, corrupt, metric, batch_size=0, progress=False)


def test_memory_budget_too_small_names_the_minimum(tiny, prompt_pair):
    model = tiny("llama")
    clean, corrupt = prompt_pair()
    metric = patching.logit_diff(5, 6)
    with pytest.raises(ValueError, match=r"too small for one patched forward: the minimum is (\d+) bytes") as err:
        patching.patch_residual(model, clean, corrupt, metric, memory_budget=1000, progress=False)
    minimum = int(str(err.value).split("the minimum is ")[1].split(" ")[0])
    out = patching.patch_residual(model, clean, corrupt, metric, memory_budget=minimum, progress=False)
    torch.testing.assert_close(out, patching.patch_residual(model, clean, corrupt, metric, progress=False))
    with pytest.raises(ValueError, match="memory_budget must be > 0 bytes"):
        patching.patch_residual(model, clean, corrupt, metric, memory_budget=-5, progress=False)
    # one budget type everywhere: the same strings as run_with_cache's
    for budget in ("off", "80%", f"{minimum}B", 2.0**40):
        torch.testing.assert_close(patching.patch_residual(model, clean, corrupt, metric, memory_budget=budget,
                                                           progress=False), out)


def test_site_the_model_does_not_have(tiny, prompt_pair):
    clean, corrupt = prompt_pair()
    metric = patching.logit_diff(5, 6)
    with pytest.raises(KeyError, match="no 'mlp_out' site.*sites it can patch: resid"):
        patching.patch_mlp_out(tiny("mamba"), clean, corrupt, metric, progress=False)
    with pytest.raises(KeyError, match="no 'ssm_state' site"):
        patching.patch_ssm_state(tiny("llama"), clean, corrupt, metric, progress=False)
    with pytest.raises(KeyError, match="not a patchable site"):
        patching.patch_activations(tiny("llama"), clean, corrupt, metric, "residual", progress=False)
    with pytest.raises(KeyError, match="component='mlp'"):
        patching.patch_mixer(tiny("mamba"), clean, corrupt, metric, "mlp", progress=False)
