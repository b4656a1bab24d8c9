"""TransformerLens-named weights and the model's parts as functions (``W_E``, ``W_U``, ``W_Q``.., ``apply_ln1``..), for
every :class:`~interp.models.base.HookedModel` (a mixin: the subclass supplies ``_embed_weight``, ``_unembed``,
``_attention_weights`` and ``_apply_part``)."""

from __future__ import annotations

import torch
from torch import Tensor

from interp.errors import CapabilityError

__all__ = ["WeightsMixin"]


class WeightsMixin:
    """Weights under TransformerLens's names and the norms / MLPs as plain functions (no hooks fire)."""

    @property
    def W_E(self) -> Tensor:
        """Token embedding ``[d_vocab, d_model]`` (``hook_embed == W_E[tokens]``)."""
        return self._embed_weight()

    @property
    def W_U(self) -> Tensor:
        """Unembedding ``[d_model, d_vocab]``: ``logits = ln_final.hook_normalized @ W_U + b_U``."""
        return self._unembed()[0]

    @property
    def b_U(self) -> Tensor:
        """Unembedding bias ``[d_vocab]`` (zeros when the model has none)."""
        return self._unembed()[1]

    def _stacked(self, key: str) -> Tensor:
        if not self.has_attention_heads:
            raise CapabilityError(f"{key}: this {self.arch} model has no attention heads (see has_attention_heads)")
        return torch.stack([self._attention_weights(layer)[key] for layer in range(self.n_layers)])

    W_Q = property(lambda self: self._stacked("W_Q"),
                   doc="Queries ``[layer, head, d_model, d_head]``: ``hook_q = apply_ln1(resid_pre) @ W_Q + b_Q``.")
    W_K = property(lambda self: self._stacked("W_K"),
                   doc="Keys ``[layer, head, d_model, d_head]``, kv heads repeated per query head (TransformerLens).")
    W_V = property(lambda self: self._stacked("W_V"),
                   doc="Values ``[layer, head, d_model, d_head]``, kv heads repeated per query head.")
    W_O = property(lambda self: self._stacked("W_O"),
                   doc="Outputs ``[layer, head, d_head, d_model]``: ``hook_attn_out = Σ_h z_h @ W_O[h] + b_O``.")
    b_Q = property(lambda self: self._stacked("b_Q"), doc="Query biases ``[layer, head, d_head]`` (zeros if none).")
    b_K = property(lambda self: self._stacked("b_K"), doc="Key biases ``[layer, head, d_head]``.")
    b_V = property(lambda self: self._stacked("b_V"), doc="Value biases ``[layer, head, d_head]``.")
    b_O = property(lambda self: self._stacked("b_O"), doc="Output biases ``[layer, d_model]``.")

    def apply_ln1(self, layer: int, x: Tensor) -> Tensor:
        """The norm before block ``layer``'s attention (Mamba: before its mixer) applied to residual vectors
        ``[..., d_model]``: its output is what ``W_Q``/``W_K``/``W_V`` read. Fires no hooks."""
        return self._apply_checked("ln1", layer, x)

    def apply_ln2(self, layer: int, x: Tensor) -> Tensor:
        """The norm before block ``layer``'s MLP applied to residual vectors: the input of :meth:`apply_mlp`."""
        return self._apply_checked("ln2", layer, x)

    def apply_mlp(self, layer: int, x: Tensor) -> Tensor:
        """Block ``layer``'s MLP on normalised inputs ``[..., d_model]`` (``hook_mlp_out`` for
        ``apply_ln2(resid_mid)``); e.g. ``apply_mlp(0, apply_ln2(0, W_E))`` is MLP0(W_E) (Gould et al. 2023)."""
        return self._apply_checked("MLP", layer, x)

    def apply_ln_final(self, x: Tensor) -> Tensor:
        """The final norm: ``apply_ln_final(resid) @ W_U + b_U`` are the logits."""
        return self._apply_checked("ln_final", None, x)

    def _apply_checked(self, which: str, layer: int | None, x: Tensor) -> Tensor:
        if which in ("ln2", "MLP") and not self.has_mlp:
            raise CapabilityError(f"apply_{which.lower()}: this {self.arch} model has no MLP (see has_mlp)")
        if layer is not None:
            layer = self.check_layer(layer)
        if not isinstance(x, Tensor) or x.shape[-1:] != (self.d_model,):
            raise ValueError(f"x must be a tensor [..., d_model={self.d_model}]; got "
                             f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
        with self._registry.silenced():
            return self._apply_part(which, layer, x)

