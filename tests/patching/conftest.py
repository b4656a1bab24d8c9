"""Fixtures for the patching tests: tiny models of every architecture and position-aligned prompt pairs."""

import pytest
import torch

import interp

ARCHS = ("llama", "gpt2", "mamba", "mamba2")


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    """``tiny(arch) -> HookedModel`` with large random weights (initializer_range 0.3, so patches have visible
    effects), built once per session."""
    built: dict = {}

    def get(arch: str):
        if arch not in built:
            built[arch] = interp.load_model(tiny_dir(arch, seed=1, initializer_range=0.3))
        return built[arch]

    return get


def _prompt_pair(n: int = 2, T: int = 8, seed: int = 0, changed=(2, 3)) -> tuple[torch.Tensor, torch.Tensor]:
    """Random clean prompts and corrupted copies differing at ``changed`` positions."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(4, 100, (n, T), generator=g)
    corrupt = clean.clone()
    for p in changed:
        corrupt[:, p] = (clean[:, p] + 1 + torch.randint(0, 50, (n,), generator=g)) % 96 + 4
    return clean, corrupt


def _plain_patching(model, clean, corrupt, metric, role: str, axes: tuple, layers, positions, heads) -> torch.Tensor:
    """The reference: one hooked forward of the full corrupted prompts per cell, indexing written out by hand."""
    names = [model.components(layer)[role] for layer in layers]
    _, cache = model.run_with_cache(clean, names_filter=names)
    sizes = {"layer": len(layers), "pos": len(positions), "head": len(heads), "dest": len(positions)}
    out = torch.empty([sizes[a] for a in axes])

    def run(name, idx) -> float:
        def hook(act, hook):
            act = act.clone()
            act[idx] = cache[name][idx]
            return act
        with torch.no_grad():
            return float(metric(model.run_with_hooks(corrupt, fwd_hooks=[(name, hook)])).mean())

    every = slice(None)
    pattern = role in ("pattern", "attn_scores")
    for li, name in enumerate(names):
        for pi, p in enumerate(positions):
            if axes == ("layer", "pos"):
                out[li, pi] = run(name, (every, p))
            for hi, h in enumerate(heads):
                if axes == ("layer", "pos", "head"):
                    out[li, pi, hi] = run(name, (every, p, h))
                elif axes == ("layer", "head", "dest"):
                    out[li, hi, pi] = run(name, (every, h, p))
        if axes == ("layer", "head"):
            for hi, h in enumerate(heads):
                out[li, hi] = run(name, (every, h) if pattern else (every, every, h))
    return out


@pytest.fixture(scope="session")
def prompt_pair():
    """``prompt_pair(n=2, T=8, seed=0, changed=(2, 3)) -> (clean, corrupt)``."""
    return _prompt_pair


@pytest.fixture(scope="session")
def plain_patching():
    """The per-cell reference loop (see ``_plain_patching``)."""
    return _plain_patching
