"""Every public analysis accepts what ``interp.wrap`` accepts (issue 25): a raw Hugging Face model gives the same
result as its wrapper, and anything else is a TypeError naming the analysis."""

from __future__ import annotations

import pytest
import torch
import transformers

import interp
from interp import patching
from interp.tracing import causal_trace


@pytest.fixture(scope="module")
def pair(tiny_dir):
    path = tiny_dir("llama")
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return hf, interp.load_model(path)


def test_patching_and_tracing_take_a_raw_hf_model(pair):
    hf, model = pair
    clean, corrupt = torch.tensor([[1, 5, 6, 7, 8]]), torch.tensor([[1, 9, 6, 7, 8]])
    metric = patching.logit_diff(5, 6)
    torch.testing.assert_close(patching.patch_residual(hf, clean, corrupt, metric, progress=False),
                               patching.patch_residual(model, clean, corrupt, metric, progress=False))
    want = causal_trace(model, clean, (1, 2), target=7, samples=2, progress=False)
    got = causal_trace(hf, clean, (1, 2), target=7, samples=2, progress=False)
    torch.testing.assert_close(got.scores, want.scores)


def test_other_objects_name_the_analysis():
    with pytest.raises(TypeError, match="^patch_residual: model must be"):
        patching.patch_residual(object(), torch.tensor([[1, 2]]), torch.tensor([[1, 3]]), patching.logit_diff(1, 2))
    with pytest.raises(TypeError, match="causal_trace"):
        causal_trace("not a model", "a b", "a")
