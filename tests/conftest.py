"""Shared fixtures: tiny random-init HF models saved as folders, and the real SmolLM2 (integration tier)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402

try:  # before anything imports nnsight: nnsight adds `object.save` (an unhashable instancemethod) on import, and
    import beartype  # noqa: E402, F401  # beartype's import then fails (it hashes every callable on `object`)
except ImportError:
    pass

# One intra-op thread per test process: test tensors are small, xdist workers already use every core, and on a
# busy machine oversubscribed small matmuls run orders of magnitude slower.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """``tiny_dir(arch, **overrides) -> Path`` of a saved tiny model (built once per session and arguments)."""
    from interp.testing import make_tiny

    built: dict = {}

    def get(arch: str, seed: int = 0, **overrides):
        key = (arch, seed, tuple(sorted(overrides.items())))
        if key not in built:
            built[key] = make_tiny(arch, tmp_path_factory.mktemp(f"tiny_{arch}"), seed=seed, **overrides)
        return built[key]

    return get


@pytest.fixture(scope="session")
def smollm2():
    """The embedded SmolLM2-135M-Instruct (float32), loaded once per session."""
    import interp

    return interp.load_model("smollm2")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def chromium():
    """Headless Chromium for the rendering tests: required in CI (``.ci/run`` installs it), skipped without it here."""
    from interp.reports.browser import find_chromium

    path = find_chromium()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not installed (.ci/run installs it)")
    return path
