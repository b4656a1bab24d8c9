"""``model.blocks[i]``: TransformerLens's per-block access (``model.blocks[3].attn.W_Q``, ``blocks[0].mlp.W_out``,
``blocks[2].ln1.w``, ``blocks[1].attn.hook_z``) on every :class:`~interp.models.base.HookedModel`.

Views, not modules: each attribute is read from the model's vocabulary when asked (``_attention_weights``,
``_mlp_weights``, ``_norm_weights``), so it is always the live weight. Where the wrapper's layout allows, the weights
are views of the parameters (an in-place edit under ``torch.no_grad()`` edits the model); grouped-query keys and
values are repeated per query head, as in TransformerLens, so those are copies. What a block does not have raises
:class:`~interp.errors.CapabilityError` naming what it has instead (a Mamba block's token mixer is
``blocks[i].mixer``, not ``.attn``). Any other attribute is the underlying block module's (``blocks[i].mixer`` of a
Mamba model, ``blocks[i].self_attn`` of a Llama), so existing code that reached for the modules keeps working.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from torch import Tensor

from interp.checks import is_index
from interp.errors import CapabilityError

if TYPE_CHECKING:
    from interp.models.base import HookedModel

__all__ = ["Blocks", "BlockView", "AttentionView", "MLPView", "NormView"]


class _SiteView:
    """Shared by the views: ``view.hook_x`` is the hook point of the site ``{prefix}hook_x``."""

    _model: HookedModel
    _prefix: str

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if name.startswith("hook_"):
            site = self._prefix + name
            model = self._model
            if site not in model.site_names():
                model.check_site(site)  # raises, naming the closest site
            points = getattr(model, "hook_dict", None)
            if points is None:
                raise AttributeError(f"{name}: this model has no hook points to return (the site is {site!r})")
            return points[site]
        raise AttributeError(f"{type(self).__name__} of {self._prefix.rstrip('.')!r} has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._prefix.rstrip('.')})"


class AttentionView(_SiteView):
    """``blocks[i].attn``: the attention weights of one layer (TransformerLens's shapes: ``W_Q/W_K/W_V``
    ``[head, d_model, d_head]``, ``W_O`` ``[head, d_head, d_model]``, ``b_Q/b_K/b_V`` ``[head, d_head]``, ``b_O``
    ``[d_model]``) and its factored circuits ``QK``, ``OV`` (``[head, d_model, d_model]``)."""

    def __init__(self, model: HookedModel, layer: int) -> None:
        self._model, self._layer, self._prefix = model, layer, f"blocks.{layer}.attn."

    def _get(self, key: str) -> Tensor:
        return self._model._attention_weights(self._layer)[key]

    W_Q = property(lambda self: self._get("W_Q"), doc="Queries ``[head, d_model, d_head]``.")
    W_K = property(lambda self: self._get("W_K"), doc="Keys ``[head, d_model, d_head]`` (kv heads repeated).")
    W_V = property(lambda self: self._get("W_V"), doc="Values ``[head, d_model, d_head]`` (kv heads repeated).")
    W_O = property(lambda self: self._get("W_O"), doc="Outputs ``[head, d_head, d_model]``.")
    b_Q = property(lambda self: self._get("b_Q"), doc="Query biases ``[head, d_head]`` (zeros if none).")
    b_K = property(lambda self: self._get("b_K"), doc="Key biases ``[head, d_head]``.")
    b_V = property(lambda self: self._get("b_V"), doc="Value biases ``[head, d_head]``.")
    b_O = property(lambda self: self._get("b_O"), doc="Output bias ``[d_model]``.")

    @property
    def QK(self):
        """``W_Q @ W_Kᵀ`` per head, factored: ``FactoredMatrix [head, d_model, d_model]`` (Elhage et al. 2021)."""
        from interp.factored_matrix import FactoredMatrix

        w = self._model._attention_weights(self._layer)
        return FactoredMatrix(w["W_Q"], w["W_K"].transpose(-2, -1))

    @property
    def OV(self):
        """``W_V @ W_O`` per head, factored: ``FactoredMatrix [head, d_model, d_model]`` (Elhage et al. 2021)."""
        from interp.factored_matrix import FactoredMatrix

        w = self._model._attention_weights(self._layer)
        return FactoredMatrix(w["W_V"], w["W_O"])


class MLPView(_SiteView):
    """``blocks[i].mlp``: ``W_in`` ``[d_model, d_mlp]``, ``W_gate`` (gated MLPs), ``W_out`` ``[d_mlp, d_model]``,
    ``b_in`` ``[d_mlp]``, ``b_out`` ``[d_model]``; a neuron's output direction is ``W_out[n]``."""

    def __init__(self, model: HookedModel, layer: int) -> None:
        self._model, self._layer, self._prefix = model, layer, f"blocks.{layer}.mlp."

    def _get(self, key: str) -> Tensor:
        weights = self._model._mlp_weights(self._layer)
        if key not in weights:
            raise AttributeError(f"blocks[{self._layer}].mlp has no {key}: this {self._model.arch} MLP is not gated "
                                 "(W_gate exists only where model.cfg.gated_mlp)")
        return weights[key]

    W_in = property(lambda self: self._get("W_in"), doc="Input weights ``[d_model, d_mlp]``.")
    W_gate = property(lambda self: self._get("W_gate"), doc="Gate weights ``[d_model, d_mlp]`` (gated MLPs).")
    W_out = property(lambda self: self._get("W_out"), doc="Output weights ``[d_mlp, d_model]``.")
    b_in = property(lambda self: self._get("b_in"), doc="Input bias ``[d_mlp]`` (zeros if none).")
    b_out = property(lambda self: self._get("b_out"), doc="Output bias ``[d_model]`` (zeros if none).")


class NormView(_SiteView):
    """``blocks[i].ln1`` / ``.ln2`` / ``model.ln_final``: the norm's weight ``w`` and bias ``b`` ``[d_model]`` (zeros
    for RMSNorm), its hook points, and calling it applies the norm (``model.apply_ln1`` and friends)."""

    def __init__(self, model: HookedModel, which: str, layer: int | None) -> None:
        self._model, self._which, self._layer = model, which, layer
        self._prefix = "ln_final." if layer is None else f"blocks.{layer}.{which}."

    w = property(lambda self: self._model._norm_weights(self._which, self._layer)["w"], doc="Weight ``[d_model]``.")
    b = property(lambda self: self._model._norm_weights(self._which, self._layer)["b"],
                 doc="Bias ``[d_model]`` (zeros where the norm has none).")

    def __call__(self, x: Tensor) -> Tensor:
        if self._layer is None:
            return self._model.apply_ln_final(x)
        return getattr(self._model, f"apply_{self._which}")(self._layer, x)


class BlockView(_SiteView):
    """``model.blocks[i]``: ``attn``, ``mlp``, ``ln1``, ``ln2`` views where the block has them, its hook points
    (``blocks[i].hook_resid_pre``), and the underlying block module's attributes (``blocks[i].mixer``)."""

    def __init__(self, model: HookedModel, layer: int) -> None:
        self._model, self._layer, self._prefix = model, layer, f"blocks.{layer}."

    @property
    def attn(self) -> AttentionView:
        m = self._model
        if not m.has_attention_heads:
            raise CapabilityError(f"blocks[{self._layer}].attn: this {m.arch} model's blocks have no attention heads; "
                                  f"its token mixer is blocks[{self._layer}].mixer (sites "
                                  f"blocks.{self._layer}.mixer.*)")
        return AttentionView(m, self._layer)

    @property
    def mlp(self) -> MLPView:
        m = self._model
        if not m.has_mlp:
            raise CapabilityError(f"blocks[{self._layer}].mlp: this {m.arch} model's blocks have no MLP (each block "
                                  f"is resid + mixer(norm(resid)); see blocks[{self._layer}].mixer)")
        return MLPView(m, self._layer)

    @property
    def ln1(self) -> NormView:
        return NormView(self._model, "ln1", self._layer)

    @property
    def ln2(self) -> NormView:
        if not self._model.has_mlp:
            raise CapabilityError(f"blocks[{self._layer}].ln2: this {self._model.arch} model's blocks have one norm, "
                                  f"ln1 (before the mixer)")
        return NormView(self._model, "ln2", self._layer)

    def __getattr__(self, name: str):
        if name.startswith(("hook_", "_")):
            return super().__getattr__(name)
        module = self._model._block_module(self._layer)
        try:
            return getattr(module, name)
        except AttributeError:
            raise AttributeError(f"blocks[{self._layer}] has no attribute {name!r} (views: attn, mlp, ln1, ln2; hook "
                                 f"points: hook_*; nor has the {type(module).__name__} module)") from None


class Blocks(Sequence):
    """``model.blocks``: one :class:`BlockView` per layer (negative indices count from the end)."""

    def __init__(self, model: HookedModel) -> None:
        self._model = model

    def __len__(self) -> int:
        return self._model.n_layers

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        if not is_index(index):
            raise TypeError(f"model.blocks[...] takes a layer index or a slice; got {type(index).__name__}")
        return BlockView(self._model, self._model.check_layer(operator.index(index), "blocks index"))

    def __iter__(self) -> Iterator[BlockView]:
        return (BlockView(self._model, i) for i in range(len(self)))

    def __repr__(self) -> str:
        return f"Blocks({len(self)} x {self._model.arch})"
