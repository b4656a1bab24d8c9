"""interp: a mechanistic interpretability toolkit.

>>> import interp
>>> model = interp.load_model("smollm2")          # or a local HF folder, or a model object
>>> logits, cache = model.run_with_cache("The Eiffel Tower is in", names_filter=lambda n: n.endswith("hook_pattern"))

Importing ``interp`` is light (no torch): the names below and the subpackages (``interp.mamba``, ``interp.saes``,
``interp.probes``, ``interp.kernels``, ``interp.zoo``, ...) load on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# name -> module that defines it
_EXPORTS = {
    "ActivationCache": "interp.cache",
    "FactoredMatrix": "interp.factored_matrix",
    "HookInfo": "interp.hooks",
    "HookedModel": "interp.models.base",
    "load_model": "interp.models.loading",
    "wrap": "interp.models.loading",
    "CapabilityError": "interp.errors",
    "CheckpointError": "interp.errors",
    "MemoryBudgetError": "interp.errors",
}
_SUBPACKAGES = ("models", "mamba", "saes", "probes", "kernels", "zoo", "heads", "patching", "tracing", "reports")

__all__ = [*_EXPORTS, *_SUBPACKAGES]

if TYPE_CHECKING:
    from interp.cache import ActivationCache as ActivationCache
    from interp.errors import CapabilityError as CapabilityError
    from interp.errors import CheckpointError as CheckpointError
    from interp.errors import MemoryBudgetError as MemoryBudgetError
    from interp.factored_matrix import FactoredMatrix as FactoredMatrix
    from interp.hooks import HookInfo as HookInfo
    from interp.models.base import HookedModel as HookedModel
    from interp.models.loading import load_model as load_model
    from interp.models.loading import wrap as wrap


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBPACKAGES:
        try:
            value = importlib.import_module(f"interp.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"interp.{name}":
                raise
            raise AttributeError(f"module 'interp' has no attribute {name!r} (no interp.{name} here)") from None
    else:
        raise AttributeError(f"module 'interp' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
