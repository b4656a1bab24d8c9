"""``TLModel``: a TransformerLens ``HookedTransformer`` or ``TransformerBridge`` behind ``HookedModel``.

TransformerLens already names its hook points the way this toolkit does, so the sites are the model's own
``hook_dict`` (a bridge exposes the classic names after ``enable_compatibility_mode()``). Hooks attach as PyTorch
forward hooks on the ``HookPoint`` modules only inside a ``hooks(...)`` context, and never touch hooks the user added
through TransformerLens itself.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from interp.models.base import HookedModel

__all__ = ["TLModel"]


class TLModel(HookedModel):
    """Adapter over a TransformerLens model (``HookedTransformer`` in transformer-lens 3.x, or
    ``TransformerBridge``)."""

    def __init__(self, tl_model: nn.Module) -> None:
        if not hasattr(tl_model, "hook_dict") or not hasattr(tl_model, "cfg"):
            raise TypeError(
                f"wrap(obj): {type(tl_model).__name__} is not a TransformerLens model with hook points "
                "(expected HookedTransformer or TransformerBridge)"
            )
        super().__init__(getattr(tl_model, "tokenizer", None))
        cfg = tl_model.cfg
        self.tl_model = tl_model.eval()
        self.arch = f"transformer_lens:{getattr(cfg, 'original_architecture', None) or type(tl_model).__name__}"
        self.n_layers = cfg.n_layers
        self.n_heads = cfg.n_heads
        self.n_kv_heads = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
        self.d_model = cfg.d_model
        self.d_head = cfg.d_head
        self.d_vocab = cfg.d_vocab_out if getattr(cfg, "d_vocab_out", -1) > 0 else cfg.d_vocab

    def _site_names(self) -> list[str]:
        return [n for n in self.tl_model.hook_dict if "hook_" in n]

    def _logits(self, tokens: Tensor) -> Tensor:
        return self.tl_model(tokens)

    def _install(self, names: frozenset[str]) -> Callable[[], None]:
        fire = self._registry.fire
        handles = []
        for name in names:
            point = self.tl_model.hook_dict[name]
            handles.append(point.register_forward_hook(lambda m, args, out, name=name: fire(name, out)))

        def undo() -> None:
            for h in handles:
                h.remove()

        return undo
