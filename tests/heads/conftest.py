"""Fixtures for the head-discovery tests: planted TransformerLens models (weights set by hand, see
``planted_heads.py``) and tiny random-init models."""

import pytest

import interp


@pytest.fixture(scope="session")
def planted():
    """The planted model with an induction head and no n-gram head (wrapped)."""
    from planted_heads import build

    return interp.wrap(build(ngram=False))


@pytest.fixture(scope="session")
def planted_ngram():
    """The planted model with both an induction head (L1H2) and an order-2 n-gram head (L1H1)."""
    from planted_heads import build

    return interp.wrap(build(ngram=True))


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    """``tiny(arch) -> HookedModel`` of ``interp.testing.make_tiny`` (loaded once per arch)."""
    built = {}

    def get(arch: str):
        if arch not in built:
            built[arch] = interp.load_model(tiny_dir(arch))
        return built[arch]

    return get
