"""Mean head outputs and the batched CIE against a plain per-head loop of Todd et al.'s protocol."""

import pytest
import torch

import interp
from interp.errors import CapabilityError
from interp.function_vectors import causal_indirect_effects, function_vectors, icl_prompts, make_task, mean_head_outputs


def loop_means(model, tokens):
    """Reference: each head's last-token output, one prompt at a time, from the full hook_result cache."""
    names = [model.components(layer)["result"] for layer in range(model.n_layers)]
    rows = []
    for row in tokens:
        _, cache = model.run_with_cache(row[None], names_filter=names)
        rows.append(torch.stack([cache[n][0, -1] for n in names]))
    return torch.stack(rows).mean(0)


def loop_cie(model, tokens, answers, means):
    """Reference: one hooked forward per head over the corrupted prompts (Todd et al. eq. 2)."""
    with torch.no_grad():
        base = model(tokens)[:, -1].softmax(-1).gather(1, answers[:, None])[:, 0]
        out = torch.zeros(model.n_layers, model.n_heads)
        for layer in range(model.n_layers):
            for head in range(model.n_heads):
                def patch(act, *, hook, h=head, v=means[layer, head]):
                    act = act.clone()
                    act[:, -1, h] = v
                    return act
                with model.hooks([(model.components(layer)["result"], patch)]):
                    p = model(tokens)[:, -1].softmax(-1).gather(1, answers[:, None])[:, 0]
                out[layer, head] = (p - base).mean()
    return out


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_cie_equals_per_head_loop_on_random_inputs(tiny_dir, arch):
    model = interp.load_model(tiny_dir(arch))
    g = torch.Generator().manual_seed(7)
    tokens = torch.randint(3, model.d_vocab, (5, 11), generator=g)
    answers = torch.randint(3, model.d_vocab, (5,), generator=g)
    means = torch.randn(model.n_layers, model.n_heads, model.d_model, generator=g) * 2
    cie, p_corrupt = causal_indirect_effects(model, tokens, answers, means, layers_per_pass=1)
    ref = loop_cie(model, tokens, answers, means)
    assert cie.shape == (model.n_layers, model.n_heads)
    assert ref.abs().max() > 1e-4  # the patches move the answer's probability
    torch.testing.assert_close(cie, ref, atol=2e-6, rtol=1e-4)
    with torch.no_grad():
        base = model(tokens)[:, -1].softmax(-1).gather(1, answers[:, None])[:, 0]
    torch.testing.assert_close(p_corrupt, base, atol=1e-6, rtol=1e-5)
    # grouping layers differently changes nothing
    torch.testing.assert_close(causal_indirect_effects(model, tokens, answers, means)[0], cie, atol=1e-6, rtol=1e-5)


def test_means_and_cie_on_icl_prompts(tiny_dir):
    model = interp.load_model(tiny_dir("llama"))
    task = make_task(model, "next_letter")
    clean = icl_prompts(task, model, 6, 4, seed=3)
    means = mean_head_outputs(model, clean.tokens, batch_size=4)
    torch.testing.assert_close(means, loop_means(model, clean.tokens), atol=1e-5, rtol=1e-5)
    corrupt = icl_prompts(task, model, 4, 4, seed=4, shuffle_labels=True)
    cie, _ = causal_indirect_effects(model, corrupt.tokens, corrupt.answers, means)
    torch.testing.assert_close(cie, loop_cie(model, corrupt.tokens, corrupt.answers, means), atol=2e-6, rtol=1e-4)


def test_bad_arguments_name_themselves(tiny_dir):
    model = interp.load_model(tiny_dir("llama"))
    tokens = torch.randint(3, model.d_vocab, (2, 5))
    means = torch.zeros(model.n_layers, model.n_heads, model.d_model)
    with pytest.raises(ValueError, match="answers"):
        causal_indirect_effects(model, tokens, torch.tensor([1]), means)
    with pytest.raises(ValueError, match="means"):
        causal_indirect_effects(model, tokens, torch.tensor([1, 2]), means[:1])
    with pytest.raises(ValueError, match="corrupt_tokens"):
        causal_indirect_effects(model, tokens.float(), torch.tensor([1, 2]), means)
    with pytest.raises(ValueError, match="layers_per_pass"):
        causal_indirect_effects(model, tokens, torch.tensor([1, 2]), means, layers_per_pass=0)


@pytest.mark.parametrize("arch", ["mamba", "mamba2"])
def test_mamba_raises_capability_error_naming_what_it_has(tiny_dir, arch):
    model = interp.load_model(tiny_dir(arch))
    tokens = torch.randint(3, model.d_vocab, (2, 5))
    with pytest.raises(CapabilityError, match="no attention heads") as err:
        mean_head_outputs(model, tokens)
    assert "mixer_out" in str(err.value)
    if model.has_ssm_heads:
        assert "SSM heads" in str(err.value)
    with pytest.raises(CapabilityError):
        function_vectors(model, "next_letter")
