"""TransformerLens-named weights and the model's parts as functions (``W_E``, ``W_U``, ``W_Q``.., ``apply_ln1``..), for
every :class:`~interp.models.base.HookedModel` (a mixin: the subclass supplies ``_embed_weight``, ``_unembed``,
``_attention_weights`` and ``_apply_part``)."""

from __future__ import annotations

import operator

import torch
from torch import Tensor

from interp.checks import is_index
from interp.errors import CapabilityError

__all__ = ["WeightsMixin"]


class WeightsMixin:
    """Weights under TransformerLens's names and the norms / MLPs as plain functions (no hooks fire)."""

    # the subclass's vocabulary beyond _embed_weight / _unembed / _attention_weights / _apply_part
    def _mlp_weights(self, layer: int) -> dict[str, Tensor]:
        """``W_in``, ``W_out``, ``b_in``, ``b_out`` (and ``W_gate``) of block ``layer``'s MLP."""
        raise CapabilityError(f"this {self.arch} model has no MLP weights")

    def _norm_weights(self, which: str, layer: int | None) -> dict[str, Tensor]:
        """``w`` and ``b`` ``[d_model]`` of norm ``which`` (``ln1``, ``ln2``, ``ln_final``) of block ``layer``."""
        raise CapabilityError(f"this {self.arch} model does not expose its {which} weights")

    def _block_module(self, layer: int):
        """The underlying module of block ``layer`` (``model.blocks[i]`` falls back to its attributes)."""
        raise CapabilityError(f"this {self.arch} model does not expose its block modules")

    def _config_fields(self) -> dict:
        """:class:`~interp.models.config.ModelConfig` fields beyond the shape (``act_fn``, ``n_ctx``, ...)."""
        return {}

    @property
    def cfg(self):
        """The model's configuration under TransformerLens's field names (:class:`~interp.models.config.ModelConfig`,
        frozen; ``device`` and ``dtype`` are read now)."""
        from interp.models.config import build_config

        return build_config(self)

    @property
    def blocks(self):
        """``model.blocks[i].attn.W_Q``, ``.mlp.W_out``, ``.ln1.w``, ``.hook_resid_pre``...: per-block views
        (:mod:`interp.models.blocks`)."""
        from interp.models.blocks import Blocks

        return Blocks(self)

    @property
    def W_E(self) -> Tensor:
        """Token embedding ``[d_vocab, d_model]`` (``hook_embed == W_E[tokens]``)."""
        return self._embed_weight()

    @property
    def W_pos(self) -> Tensor:
        """Learned position embedding ``[n_ctx, d_model]`` (``hook_pos_embed == W_pos[positions]``); rotary and
        recurrent models have none (``cfg.positional_embedding_type``)."""
        return self._pos_embed_weight()

    def _pos_embed_weight(self) -> Tensor:
        raise CapabilityError(f"W_pos: this {self.arch} model has no learned position embedding (its "
                              f"positional_embedding_type is {self.cfg.positional_embedding_type!r})")

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

    def _stacked_mlp(self, key: str) -> Tensor:
        if not self.has_mlp:
            raise CapabilityError(f"{key}: this {self.arch} model has no MLP (see has_mlp)")
        weights = [self._mlp_weights(layer) for layer in range(self.n_layers)]
        if key not in weights[0]:
            raise AttributeError(f"{key}: this {self.arch} model's MLP is not gated (W_gate exists only where "
                                 "model.cfg.gated_mlp)")
        return torch.stack([w[key] for w in weights])

    W_in = property(lambda self: self._stacked_mlp("W_in"),
                    doc="MLP inputs ``[layer, d_model, d_mlp]`` (a gated MLP's linear branch).")
    @property
    def W_gate(self) -> Tensor | None:
        """Gates ``[layer, d_model, d_mlp]`` of a gated MLP: ``post = act(x W_gate) * (x W_in)``; None for an MLP
        without a gate (TransformerLens's ``model.W_gate``; ``blocks[i].mlp.W_gate`` raises there)."""
        if self.has_mlp and "W_gate" not in self._mlp_weights(0):
            return None
        return self._stacked_mlp("W_gate")
    W_out = property(lambda self: self._stacked_mlp("W_out"),
                     doc="MLP outputs ``[layer, d_mlp, d_model]``: ``hook_mlp_out = mlp.hook_post @ W_out + b_out``.")
    b_in = property(lambda self: self._stacked_mlp("b_in"), doc="MLP input biases ``[layer, d_mlp]``.")
    b_out = property(lambda self: self._stacked_mlp("b_out"), doc="MLP output biases ``[layer, d_model]``.")

    @property
    def QK(self):
        """``W_Q @ W_Kᵀ`` of every head: ``FactoredMatrix [layer, head, d_model, d_model]`` (Elhage et al. 2021,
        "A Mathematical Framework for Transformer Circuits"; TransformerLens's ``model.QK``)."""
        from interp.factored_matrix import FactoredMatrix

        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    @property
    def OV(self):
        """``W_V @ W_O`` of every head: ``FactoredMatrix [layer, head, d_model, d_model]`` (Elhage et al. 2021)."""
        from interp.factored_matrix import FactoredMatrix

        return FactoredMatrix(self.W_V, self.W_O)

    def tokens_to_residual_directions(self, tokens) -> Tensor:
        """The residual direction of each token's logit: ``[..., d_model]`` for ``tokens`` a string (one token), an
        int, or a tensor of ids (``[d_model]`` for one token).

        The direction is ``w_final ⊙ W_U[:, t]`` (the final norm's weight times the unembedding column): its dot
        product with a stack scaled by the final norm's cached scale (``cache.apply_ln_to_stack``) is that stack's
        contribution to token ``t``'s logit, which is what ``cache.logit_attrs`` sums. TransformerLens returns
        ``W_U[:, t]``, which is the same vector on its default ``fold_ln=True`` models (the weight is folded into
        ``W_U`` there); our models keep their weights unfolded, so the weight is applied here."""
        if isinstance(tokens, str):
            tokens = self.to_single_token(tokens)
        if is_index(tokens) and not isinstance(tokens, Tensor):
            tokens = torch.tensor(operator.index(tokens))
        elif isinstance(tokens, Tensor) and tokens.numel() == 1:
            tokens = tokens.reshape(())  # TransformerLens: any one-token tensor gives [d_model]
        if not isinstance(tokens, Tensor) or tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise TypeError(f"tokens must be a string, an int or an integer tensor of token ids; got "
                            f"{tokens.dtype if isinstance(tokens, Tensor) else type(tokens).__name__}")
        if bool((tokens < 0).any()) or bool((tokens >= self.d_vocab).any()):
            raise ValueError(f"tokens: ids must be in [0, {self.d_vocab}); got min {int(tokens.min())}, max "
                             f"{int(tokens.max())}")
        w_u = self.W_U
        directions = w_u[:, tokens.to(w_u.device)].movedim(0, -1) * self._final_norm_weight().to(w_u.dtype)
        if self.cfg.normalization_type in ("LN", "LNPre"):  # TL's fold_ln centres W_U after a LayerNorm
            directions = directions - directions.mean(-1, keepdim=True)
        return directions

    def _final_norm_weight(self) -> Tensor:
        """The final norm's elementwise weight ``[d_model]`` (ones where it has none, or where TransformerLens folded
        it into ``W_U``)."""
        return self._norm_weights("ln_final", None)["w"]

    def accumulated_bias(self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True) -> Tensor:
        """The sum of the output biases written to the residual stream before block ``layer`` (``n_layers``: all of
        them) ``[d_model]``: each attention layer's ``b_O`` and, with ``include_mlp_biases``, each MLP's ``b_out``; with
        ``mlp_input``, also block ``layer``'s ``b_O`` (the stream the MLP reads). Mamba mixers write their output
        projection's bias, if any. TransformerLens's ``accumulated_bias``."""
        if not is_index(layer) or not 0 <= operator.index(layer) <= self.n_layers:
            raise ValueError(f"layer must be in [0, {self.n_layers}] (n_layers: the unembedding's input); "
                             f"got {layer!r}")
        layer = operator.index(layer)
        if mlp_input and layer == self.n_layers:
            raise ValueError("mlp_input=True needs a block's MLP: layer must be < n_layers")
        total = self.W_E.new_zeros(self.d_model)
        for i in range(layer + (1 if mlp_input else 0)):
            for part, bias in self._output_biases(i).items():
                if part == "mlp" and (not include_mlp_biases or i == layer):
                    continue
                total = total + bias
        return total

    def _output_biases(self, layer: int) -> dict[str, Tensor]:
        """The biases block ``layer`` adds to the residual stream, by part (``attn``, ``mlp``, ``mixer``)."""
        out = {}
        if self.has_attention_heads:
            out["attn"] = self._attention_weights(layer)["b_O"]
        if self.has_mlp:
            out["mlp"] = self._mlp_weights(layer)["b_out"]
        return out

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

