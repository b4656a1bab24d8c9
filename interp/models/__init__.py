"""Hooked models: one interface (``HookedModel``) over HF transformers, TransformerLens models and Mamba."""

from interp.models.base import HookedModel
from interp.models.loading import ACCEPTED, load_model, wrap

__all__ = ["HookedModel", "load_model", "wrap", "ACCEPTED"]
