"""Knockout (Geva et al. 2023 for attention; the Mamba shadow state) and the information-flow curves."""

import pytest
import torch

from interp import tracing
from interp.errors import CapabilityError
from interp.mamba.knockout import run_with_knockout

PROMPT = "The Eiffel Tower is in Paris"


def test_attention_knockout_zeroes_the_edges_and_nothing_else(traced):
    model = traced("llama")
    tokens = model.to_tokens(PROMPT)
    T = tokens.shape[1]
    sites = [model.components(layer)["pattern"] for layer in range(model.n_layers)]
    _, base = model.run_with_cache(tokens, names_filter=sites)
    with tracing.knockout(model, sources=[3, 4, 5], targets=[-1, 10], layers=[1]):
        logits, cache = model.run_with_cache(tokens, names_filter=sites)
    torch.testing.assert_close(cache[sites[0]], base[sites[0]])  # layer 0 untouched
    knocked, orig = cache[sites[1]], base[sites[1]]
    others = [i for i in range(T) if i not in (10, T - 1)]
    torch.testing.assert_close(knocked[:, :, others], orig[:, :, others])
    for row in (10, T - 1):
        assert bool((knocked[:, :, row, [3, 4, 5]] == 0).all())
        kept = orig[:, :, row, : row + 1].clone()
        kept[..., [3, 4, 5]] = 0
        torch.testing.assert_close(knocked[:, :, row, : row + 1], kept / kept.sum(-1, keepdim=True))
    assert not torch.allclose(logits, model(tokens))


def test_attention_knockout_refuses_to_block_every_key(traced):
    model = traced("gpt2")
    with pytest.raises(ValueError, match="every key of query 2"), tracing.knockout(model, [0, 1, 2], [2], [0]):
        model(model.to_tokens("abcdef"))


@pytest.mark.parametrize("arch", ["mamba", "mamba2"])
@pytest.mark.parametrize("mode", ["ssm", "mixer"])
def test_mamba_knockout_is_the_shadow_state(traced, arch, mode):
    model = traced(arch)
    tokens = model.to_tokens(PROMPT)
    with tracing.knockout(model, [5, 6], [-1], [1], mamba_mode=mode):
        ours = model(tokens)
    torch.testing.assert_close(ours, run_with_knockout(model, tokens, [5, 6], [-1], [1], mode=mode))
    assert not torch.allclose(ours[:, -1], model(tokens)[:, -1])


def test_knockout_needs_attention_or_state(traced):
    model = traced("llama")
    with pytest.raises(ValueError, match="sources is empty"), tracing.knockout(model, [], [-1]):
        model(model.to_tokens(PROMPT))
    with pytest.raises(IndexError, match="out of range"), tracing.knockout(model, [99], [-1]):
        model(model.to_tokens(PROMPT))


@pytest.mark.parametrize("arch", ["llama", "mamba2"])
def test_information_flow_rows_equal_one_knockout_at_a_time(traced, arch):
    model = traced(arch)
    flow = tracing.information_flow(model, PROMPT, "Eiffel Tower", window=1)
    tokens = model.to_tokens(PROMPT)
    T = tokens.shape[1]
    start, stop = flow.subject_span
    sets = {"subject": list(range(start, stop)),
            "non-subject": [i for i in range(T - 1) if not start <= i < stop], "last": [T - 1]}
    p = flow.p_clean
    for e, name in enumerate(tracing.EDGES):
        for layer in range(model.n_layers):
            with tracing.knockout(model, sets[name], [T - 1], [layer]):
                knocked = float(model(tokens)[0, -1].softmax(-1)[flow.target_id])
            assert float(flow.change[e, layer]) == pytest.approx((knocked - p) / p * 100, abs=1e-3)
    assert float(flow.change.abs().max()) > 0.1
    assert flow.plot().data[0].name == "subject -> last"


def test_information_flow_bad_input(traced):
    with pytest.raises(ValueError, match="must end before the last token"):
        tracing.information_flow(traced("llama"), PROMPT, "Paris")
    with pytest.raises(ValueError, match="window must be an int >= 1"):
        tracing.information_flow(traced("llama"), PROMPT, "Eiffel", window=0)


def test_capability_error_without_attention_or_state():
    class NoMixing:
        has_attention_heads = False
        has_ssm_state = False
        arch = "toy"

    with pytest.raises(CapabilityError, match="neither attention heads nor an SSM state"):
        tracing.knockout_hooks(NoMixing(), [0], [1])
