"""interp: a mechanistic interpretability toolkit.

>>> import interp
>>> model = interp.load_model("smollm2")          # or a local HF folder, or a model object
>>> logits, cache = model.run_with_cache("The Eiffel Tower is in", names_filter=lambda n: n.endswith("hook_pattern"))
"""

from interp.cache import ActivationCache
from interp.hooks import HookInfo
from interp.models import HookedModel, load_model, wrap

__all__ = ["ActivationCache", "HookInfo", "HookedModel", "load_model", "wrap"]
__version__ = "0.1.0"
