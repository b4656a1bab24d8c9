"""The batched causal trace (Meng et al. 2022) against ROME's per-cell loop on fresh random prompts: random token
ids, subject spans, targets, layer subsets, sample counts, seeds and chunk sizes, on every tiny architecture."""

import pytest
import torch

from interp import tracing

ARCHS = ["llama", "gpt2", "mamba", "mamba2"]
MODES = [dict(), dict(restore="span"), dict(sever="mlp"), dict(site="mlp", window=3)]
MAMBA_MODES = [dict(), dict(restore="span"), dict(sever="ssm"), dict(site="ssm", window=2)]


def _draw(model, gen: torch.Generator):
    T = int(torch.randint(5, 14, (), generator=gen))
    tokens = torch.randint(0, model.d_vocab, (1, T), generator=gen)
    start = int(torch.randint(0, T - 1, (), generator=gen))
    stop = int(torch.randint(start + 1, T, (), generator=gen))
    n_layers = int(torch.randint(1, model.n_layers + 1, (), generator=gen))
    layers = sorted(torch.randperm(model.n_layers, generator=gen)[:n_layers].tolist())
    def draw(high: int, low: int = 0) -> int:
        return int(torch.randint(low, high, (), generator=gen))

    return dict(prompt=tokens, subject=(start, stop), target=draw(model.d_vocab), samples=draw(5, 1),
                seed=draw(1000), layers=layers, batch_size=draw(8, 1))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("mode", range(4))
def test_random_prompts_equal_rome_loop(traced, rome_loop, arch, mode):
    model = traced(arch)
    assert model.has_prefix_reuse  # the fast path (prefix reuse, staggered batches) is what is checked
    kwargs = (MAMBA_MODES if arch.startswith("mamba") else MODES)[mode]
    gen = torch.Generator().manual_seed(1000 * mode + ARCHS.index(arch))
    for _ in range(2):
        draw = _draw(model, gen)
        layers, batch_size = draw.pop("layers"), draw.pop("batch_size")
        result = tracing.causal_trace(model, **draw, **kwargs, layers=layers, batch_size=batch_size, progress=False)
        ref = rome_loop(model, draw["prompt"], draw["subject"], draw["target"], samples=draw["samples"],
                        seed=draw["seed"], **kwargs)
        torch.testing.assert_close(result.scores, ref[layers], atol=1e-5, rtol=0)
        assert result.layers == layers and result.target_id == draw["target"]
