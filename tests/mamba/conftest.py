"""Fixtures for the Mamba tests: tiny random-init HF Mamba / Mamba-2 models and their HookedMamba conversions."""

import pytest
import torch

ARCHS = ("mamba", "mamba2")


@pytest.fixture(scope="session")
def hf_mamba(tmp_path_factory):
    """``hf_mamba(arch, **overrides) -> (hf_model, folder)``: a tiny HF model saved by ``interp.testing.make_tiny``
    and reloaded from its folder (float32, eval), built once per session and arguments."""
    from transformers import AutoModelForCausalLM

    from interp.testing import make_tiny

    built: dict = {}

    def get(arch: str, seed: int = 0, **overrides):
        key = (arch, seed, tuple(sorted(overrides.items())))
        if key not in built:
            folder = make_tiny(arch, tmp_path_factory.mktemp(f"mamba_{arch}"), seed=seed, **overrides)
            hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
            built[key] = (hf.eval(), folder)
        return built[key]

    return get


@pytest.fixture(scope="session")
def pair(hf_mamba):
    """``pair(arch, **overrides) -> (hf_model, hooked_mamba)`` with the same weights."""
    from interp.mamba import from_hf

    built: dict = {}

    def get(arch: str, **overrides):
        key = (arch, tuple(sorted(overrides.items())))
        if key not in built:
            hf, _ = hf_mamba(arch, **overrides)
            built[key] = (hf, from_hf(hf))
        return built[key]

    return get


@pytest.fixture(params=ARCHS)
def arch(request) -> str:
    return request.param
