"""The residual stream of a cached run, decomposed: TransformerLens's ``ActivationCache`` helpers
(``accumulated_resid``, ``decompose_resid``, ``stack_head_results``, ``stack_neuron_results``, ``apply_ln_to_stack``,
``logit_attrs``, ``get_full_resid_decomposition``) with its signatures, labels and values, on every architecture.

The residual stream is a sum of what each component wrote (Elhage et al. 2021, "A Mathematical Framework for
Transformer Circuits"): the embeddings, each attention layer's output (the sum of its heads' results plus ``b_O``)
and each MLP's (the sum of its neurons' ``post[n] · W_out[n]`` plus ``b_out``); a Mamba block writes its mixer's
output (``{l}_mixer_out`` in place of ``{l}_attn_out`` / ``{l}_mlp_out``). Fixing the final norm's scale at its
cached value makes the logits linear in these parts, so each part's direct logit attribution
(``logit_attrs``) sums to the logit (difference) (nostalgebraist 2020's logit lens reads ``accumulated_resid``).

Weights stay as the model has them (not folded); the helpers give what TransformerLens gives on its default
``fold_ln=True`` model: ``apply_ln_to_stack`` centres (LayerNorm) and divides by the cached scale, and
``model.tokens_to_residual_directions`` carries the final norm's weight. The one exception is the final layer's
``apply_ln=True`` in ``accumulated_resid`` (a logit lens): it is the model's final norm itself, weight and bias
included, so ``accumulated_resid(apply_ln=True) @ model.W_U + model.b_U`` are the logits each layer would give.
"""

from __future__ import annotations

import warnings
from collections import Counter

import torch
from torch import Tensor

from interp.errors import CapabilityError
from interp.slicing import Slice

__all__ = ["ResidualMixin"]

_MODES = ("all", "attn", "mlp", "mixer")


class ResidualMixin:
    """TransformerLens's cache helpers, for :class:`~interp.cache.ActivationCache` (which supplies ``_data``,
    ``model`` and ``has_batch_dim``)."""

    _data: dict[str, Tensor]
    has_batch_dim: bool

    # ------------------------------------------------------------------ plumbing
    def _model(self, fn: str):
        if self.model is None:
            raise ValueError(f"{fn}: this cache has no model (cache.model is None); it needs the model's weights and "
                             "configuration: use a cache from model.run_with_cache")
        return self.model

    def _final(self, layer, fn: str) -> int:
        """TransformerLens's layer argument: None or -1 = ``n_layers`` (the unembedding's input), else 0..n_layers."""
        n = self._model(fn).n_layers
        if layer is None or layer == -1:
            return n
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= n:
            raise ValueError(f"{fn}: layer must be in [0, {n}] (the input of that block; {n}, -1 or None: the "
                             f"unembedding's input); got {layer!r}")
        return layer

    def _site(self, layer: int, role: str, fn: str) -> Tensor:
        model = self._model(fn)
        roles = model.components(layer)
        if role not in roles:
            raise CapabilityError(f"{fn}: block {layer} of this {model.arch} model has no {role!r} site (it has "
                                  f"{sorted(roles)})")
        name = roles[role]
        if name not in self._data:
            raise KeyError(f"{fn}: the cache lacks {name!r}; record it (model.run_with_cache(tokens) records every "
                           "site, or pass a names_filter that keeps it)")
        return self._data[name]

    def _parts(self, layer: int) -> list[str]:
        """What block ``layer`` writes to the residual stream, in order: ``attn_out``, ``mlp_out``, ``mixer_out``."""
        roles = self._model("decompose_resid").components(layer)
        return [r for r in ("attn_out", "mlp_out", "mixer_out") if r in roles]

    def _scale(self, layer: int, mlp_input: bool, pos: Slice, batch: Slice | None, fn: str) -> Tensor:
        n = self.model.n_layers
        if layer == n:
            if mlp_input:
                raise ValueError(f"{fn}: mlp_input=True needs a block's MLP; layer must be < {n}")
            name = "ln_final.hook_scale"
        else:
            name = f"blocks.{layer}.ln{2 if mlp_input else 1}.hook_scale"
        if name not in self._data:
            if name not in self.model.site_names():
                raise CapabilityError(f"{fn}: this {self.model.arch} model has no {name!r} site (the norm scale it "
                                      "needs)")
            raise KeyError(f"{fn}: the cache lacks {name!r} (the norm's scale); record it with run_with_cache")
        scale = pos.apply(self._data[name], dim=-2)
        return batch.apply(scale, dim=0) if batch is not None and self.has_batch_dim else scale

    def _batch_size(self) -> int:
        counts = Counter(v.shape[0] for v in self._data.values() if v.ndim > 0)
        return counts.most_common(1)[0][0] if counts else 1

    # ------------------------------------------------------------------ state
    @property
    def cache_dict(self):
        """The site -> tensor mapping, read-only (TransformerLens's attribute)."""
        from types import MappingProxyType

        return MappingProxyType(self._data)

    @property
    def has_embed(self) -> bool:
        return "hook_embed" in self._data

    @property
    def has_pos_embed(self) -> bool:
        return "hook_pos_embed" in self._data

    def to(self, device: str | torch.device):
        """Move every cached tensor to ``device``, in place; returns the cache (TransformerLens's ``to``)."""
        self._data = {k: v.to(device) for k, v in self._data.items()}
        return self

    def remove_batch_dim(self):
        """Drop the batch axis of a one-row cache, in place; returns the cache. A cache of several rows raises; a
        second call warns and changes nothing."""
        if not self.has_batch_dim:  # a re-run notebook cell: TransformerLens warns and changes nothing, as here
            warnings.warn("remove_batch_dim: this cache has no batch axis any more (it was removed already); "
                          "nothing changed", stacklevel=2)
            return self
        b = self._batch_size()
        if b != 1:
            raise ValueError(f"remove_batch_dim: the cache holds {b} rows; only a one-row cache can drop its batch "
                             "axis (use cache.apply_slice_to_batch_dim(i) to take row i)")
        self._data = {k: v[0] if v.ndim > 0 and v.shape[0] == 1 else v for k, v in self._data.items()}
        self.has_batch_dim = False
        return self

    def apply_slice_to_batch_dim(self, batch_slice):
        """A new cache with ``batch_slice`` taken along every tensor's batch axis (an int drops the axis)."""
        if not self.has_batch_dim:
            raise ValueError("apply_slice_to_batch_dim: this cache has no batch axis (remove_batch_dim was called)")
        s = Slice(batch_slice, "batch_slice")
        b = self._batch_size()
        data = {k: s.apply(v, 0) if v.ndim > 0 and v.shape[0] == b else v for k, v in self._data.items()}
        out = type(self)(data, self.model)
        out.has_batch_dim = s.mode != "int"
        return out

    # ------------------------------------------------------------------ stacks
    def accumulated_resid(self, layer: int | None = None, incl_mid: bool = False, apply_ln: bool = False,
                          pos_slice=None, mlp_input: bool = False, return_labels: bool = False):
        """``[component, *batch_pos, d_model]``: the residual stream before each block up to ``layer`` (labels
        ``"{l}_pre"``; with ``incl_mid``, also ``"{l}_mid"`` between attention and MLP; ``mlp_input``: ``layer``'s own
        mid), and ``"final_post"`` (the last ``resid_post``) when ``layer`` is the end. ``apply_ln``: before block
        ``layer < n_layers`` its cached norm scale; at the end, the model's final norm on each entry (the logit lens:
        ``@ model.W_U + model.b_U``)."""
        fn = "accumulated_resid"
        model, layer, pos = self._model(fn), self._final(layer, fn), Slice(pos_slice, "pos_slice")
        n = model.n_layers
        if (incl_mid or mlp_input) and not model.has_mlp:
            raise CapabilityError(f"{fn}: incl_mid / mlp_input need a stream between attention and MLP (resid_mid); "
                                  f"this {model.arch} model's blocks are resid + mixer(norm(resid))")
        parts, labels = [], []
        for i in range(layer + 1):
            if i == n:
                parts.append(self._site(n - 1, "resid_post", fn))
                labels.append("final_post")
                continue
            parts.append(self._site(i, "resid_pre", fn))
            labels.append(f"{i}_pre")
            if (incl_mid and i < layer) or (mlp_input and i == layer):
                parts.append(self._site(i, "resid_mid", fn))
                labels.append(f"{i}_mid")
        stack = torch.stack([pos.apply(p, dim=-2) for p in parts])
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, mlp_input=mlp_input, pos_slice=pos,
                                           has_batch_dim=self.has_batch_dim, recompute_ln=layer == n)
        return (stack, labels) if return_labels else stack

    def decompose_resid(self, layer: int | None = None, mlp_input: bool = False, mode: str = "all",
                        apply_ln: bool = False, pos_slice=None, incl_embeds: bool = True, return_labels: bool = False):
        """``[component, *batch_pos, d_model]``: what each part wrote to the residual stream before block ``layer``
        (``embed``, ``pos_embed``, ``{l}_attn_out``, ``{l}_mlp_out``; Mamba blocks: ``{l}_mixer_out``); they sum to
        that stream. ``mode``: ``"all"``, ``"attn"``, ``"mlp"`` (TransformerLens) or ``"mixer"`` (recurrent
        blocks). ``mlp_input``: also block ``layer``'s attention output (the MLP's input stream)."""
        fn = "decompose_resid"
        model, layer, pos = self._model(fn), self._final(layer, fn), Slice(pos_slice, "pos_slice")
        if mode not in _MODES:
            raise ValueError(f"{fn}: mode must be one of {_MODES}; got {mode!r}")
        wanted = {"all": {"attn_out", "mlp_out", "mixer_out"}, "attn": {"attn_out"}, "mlp": {"mlp_out"},
                  "mixer": {"mixer_out"}}[mode]
        has = {p for i in range(model.n_layers) for p in self._parts(i)}
        if not wanted & has:
            raise CapabilityError(f"{fn}: mode={mode!r} selects nothing in this {model.arch} model, whose blocks write "
                                  f"{sorted(has)}; use mode='all'" + (" or 'mixer'" if "mixer_out" in has else ""))
        parts, labels = [], []
        if incl_embeds:
            for name, label in (("hook_embed", "embed"), ("hook_pos_embed", "pos_embed")):
                if name in self._data:
                    parts.append(self._data[name])
                    labels.append(label)
        for i in range(layer):
            for role in self._parts(i):
                if role in wanted:
                    parts.append(self._site(i, role, fn))
                    labels.append(f"{i}_{role}")
        if mlp_input:
            if layer == model.n_layers or "mlp_out" not in self._parts(layer):
                raise ValueError(f"{fn}: mlp_input=True needs block {layer} to have an MLP")
            if "attn_out" in wanted:
                parts.append(self._site(layer, "attn_out", fn))
                labels.append(f"{layer}_attn_out")
        if not parts:
            raise ValueError(f"{fn}: nothing to stack (layer={layer}, incl_embeds={incl_embeds}, mode={mode!r})")
        stack = torch.stack([pos.apply(p, dim=-2) for p in parts])
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, mlp_input=mlp_input, pos_slice=pos)
        return (stack, labels) if return_labels else stack

    def compute_head_results(self) -> None:
        """Add each layer's per-head results ``blocks.{l}.attn.hook_result`` ``[*batch_pos, head, d_model]``
        (``z @ W_O`` per head) to the cache where missing (TransformerLens's ``compute_head_results``)."""
        model = self._model("compute_head_results")
        if not model.has_attention_heads:
            raise CapabilityError(f"compute_head_results: this {model.arch} model has no attention heads; its blocks' "
                                  "outputs are cache.decompose_resid()'s components")
        for layer in range(model.n_layers):
            name = f"blocks.{layer}.attn.hook_result"
            if name not in self._data:
                z = self._site(layer, "z", "compute_head_results")
                w_o = model._attention_weights(layer)["W_O"].to(z.device, z.dtype)
                self._data[name] = torch.einsum("...hd,hdm->...hm", z, w_o)

    def stack_head_results(self, layer: int = -1, return_labels: bool = False, incl_remainder: bool = False,
                           pos_slice=None, apply_ln: bool = False):
        """``[layer * head (+1), *batch_pos, d_model]``: every head's result before block ``layer`` (labels
        ``"L{l}H{h}"``), computed from ``hook_z`` where ``hook_result`` was not cached; ``incl_remainder`` adds the
        rest of that stream (``"remainder"``). Needs attention heads (Mamba: :meth:`decompose_resid`)."""
        fn = "stack_head_results"
        model, layer, pos = self._model(fn), self._final(layer, fn), Slice(pos_slice, "pos_slice")
        self.compute_head_results()
        labels = [f"L{i}H{h}" for i in range(layer) for h in range(model.n_heads)]
        heads = [pos.apply(self._data[f"blocks.{i}.attn.hook_result"], dim=-3) for i in range(layer)]
        stack = torch.cat(heads, dim=-2).movedim(-2, 0) if heads else None
        stack = self._with_remainder(stack, layer, pos, incl_remainder, labels, fn)
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, pos_slice=pos)
        return (stack, labels) if return_labels else stack

    def _with_remainder(self, stack: Tensor | None, layer: int, pos: Slice, incl: bool, labels: list[str], fn: str,
                        project: Tensor | None = None) -> Tensor:
        """``stack`` with the rest of the stream before block ``layer`` appended (``incl``), or an empty stack."""
        if incl:
            total = self._total(layer, pos, fn)
            if project is not None:
                total = total @ project
            rest = total if stack is None else total - stack.sum(0)
            labels.append("remainder")
            return rest[None] if stack is None else torch.cat([stack, rest[None]])
        if stack is None:
            like = pos.apply(self._data["hook_embed"], dim=-2)
            if project is not None:
                like = like @ project
            return like.new_zeros((0, *like.shape))
        return stack

    def _total(self, layer: int, pos: Slice, fn: str) -> Tensor:
        """The residual stream before block ``layer`` (``n_layers``: after the last)."""
        if layer == 0:
            return pos.apply(self._site(0, "resid_pre", fn), dim=-2)
        return pos.apply(self._site(layer - 1, "resid_post", fn), dim=-2)

    def stack_activation(self, activation_name: str, layer: int = -1, sublayer_type: str | None = None) -> Tensor:
        """``[layer, ...]``: one site (``get_act_name`` short name) of every block before ``layer``."""
        layer = self._final(layer, "stack_activation")
        if layer == 0:
            raise ValueError("stack_activation: layer=0 stacks nothing")
        return torch.stack([self[(activation_name, i, sublayer_type)] for i in range(layer)])
