"""Direct logit attribution on a cached run: the norm scale applied to a stack, each component's contribution to
chosen logits, neuron-level stacks and the full decomposition (TransformerLens's ``apply_ln_to_stack``,
``logit_attrs``, ``get_neuron_results``, ``stack_neuron_results``, ``get_full_resid_decomposition``).

With the final norm's scale frozen at its cached value, ``logits[t] = Σ_c (c - mean c) / scale · (w ⊙ W_U[:, t])
+ const`` (Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits"; Wang et al. 2022 use the logit
difference of the IOI task): ``logit_attrs`` of any decomposition of the final stream sums to the logit (difference),
up to the bias terms (``b_U``, and a LayerNorm's bias through ``W_U``). See :mod:`interp.residual` for the stacks and
for how these values relate to TransformerLens's on folded and unfolded models.
"""

from __future__ import annotations

import torch
from torch import Tensor

from interp.errors import CapabilityError
from interp.slicing import Slice

__all__ = ["AttributionMixin"]


class AttributionMixin:
    """Norm scaling, logit attribution and neuron stacks for :class:`~interp.cache.ActivationCache`."""

    def apply_ln_to_stack(self, residual_stack: Tensor, layer: int | None = None, mlp_input: bool = False,
                          pos_slice=None, batch_slice=None, has_batch_dim: bool = True,
                          recompute_ln: bool = False) -> Tensor:
        """``residual_stack`` ``[component, *batch_pos, d_model]`` as the norm before block ``layer`` (``n_layers`` /
        -1 / None: the final norm; ``mlp_input``: ``ln2``) scales the whole stream: centred (LayerNorm) and divided by
        that norm's cached scale (``hook_scale``), so the parts still add up to the normalised stream, weight not
        applied. ``pos_slice`` / ``batch_slice``: the selection the stack already has (applied to the scale; the
        stack's batch axis, dim 1, is sliced with ``batch_slice`` when ``has_batch_dim``). ``recompute_ln`` at the
        final layer: the model's final norm applied to each component on its own (weight and bias included)."""
        fn = "apply_ln_to_stack"
        model = self._model(fn)
        if not isinstance(residual_stack, Tensor) or residual_stack.ndim < 2 \
                or residual_stack.shape[-1] != model.d_model:
            got = tuple(residual_stack.shape) if isinstance(residual_stack, Tensor) else type(residual_stack).__name__
            raise ValueError(f"{fn}: residual_stack must be [component, ..., d_model={model.d_model}]; got {got}")
        norm = model.cfg.normalization_type
        if norm is None:
            return residual_stack
        layer, pos = self._final(layer, fn), Slice(pos_slice, "pos_slice")
        batch = Slice(batch_slice, "batch_slice")
        if has_batch_dim:
            residual_stack = batch.apply(residual_stack, dim=1)
        if recompute_ln and layer == model.n_layers:
            return model.apply_ln_final(residual_stack)
        if norm in ("LN", "LNPre"):
            residual_stack = residual_stack - residual_stack.mean(-1, keepdim=True)
        scale = self._scale(layer, mlp_input, pos, batch, fn)
        try:
            torch.broadcast_shapes(residual_stack.shape[1:], scale.shape)
        except RuntimeError:
            raise ValueError(f"{fn}: the stack's axes {tuple(residual_stack.shape[1:-1])} (after the component axis) "
                             f"do not match the cached scale's {tuple(scale.shape[:-1])}: pass the pos_slice / "
                             "batch_slice the stack was taken with (e.g. pos_slice=-1 for stack[:, :, -1])") from None
        return residual_stack / scale

    def logit_attrs(self, residual_stack: Tensor, tokens, incorrect_tokens=None, pos_slice=None, batch_slice=None,
                    has_batch_dim: bool = True) -> Tensor:
        """``[component, *batch_pos]``: each component's direct contribution to the logit of ``tokens`` (a string, an
        int, or ids ``[batch]`` / ``[batch, pos]`` matching the stack), or to ``logit(tokens) -
        logit(incorrect_tokens)``: the stack scaled by the final norm's cached scale (:meth:`apply_ln_to_stack`), dot
        ``model.tokens_to_residual_directions``. ``pos_slice`` / ``batch_slice``: the selection the stack has."""
        model = self._model("logit_attrs")
        directions = model.tokens_to_residual_directions(tokens)
        if incorrect_tokens is not None:
            wrong = model.tokens_to_residual_directions(incorrect_tokens)
            if wrong.shape != directions.shape:
                raise ValueError(f"logit_attrs: tokens and incorrect_tokens must have the same shape; got "
                                 f"{tuple(directions.shape[:-1])} and {tuple(wrong.shape[:-1])}")
            directions = directions - wrong
        scaled = self.apply_ln_to_stack(residual_stack, -1, pos_slice=pos_slice, batch_slice=batch_slice,
                                        has_batch_dim=has_batch_dim)
        return (scaled * directions.to(scaled.device, scaled.dtype)).sum(-1)

    # ------------------------------------------------------------------ neurons
    def _projection(self, project) -> tuple[Tensor | None, bool]:
        if project is None:
            return None, False
        d = self.model.d_model
        if not isinstance(project, Tensor) or project.ndim not in (1, 2) or project.shape[0] != d:
            got = tuple(project.shape) if isinstance(project, Tensor) else type(project).__name__
            raise ValueError(f"project_output_onto must be [d_model={d}] or [d_model, outputs]; got {got}")
        return (project[:, None], True) if project.ndim == 1 else (project, False)

    def get_neuron_results(self, layer: int, neuron_slice=None, pos_slice=None, project_output_onto=None) -> Tensor:
        """``[*batch_pos, neuron, d_model]``: each neuron's write to the stream, ``mlp.hook_post[..., n] * W_out[n]``
        (``project_output_onto`` ``[d_model(, k)]``: projected, without the ``d_model``-wide intermediate)."""
        fn = "get_neuron_results"
        model = self._model(fn)
        if not model.has_mlp:
            raise CapabilityError(f"{fn}: this {model.arch} model has no MLP neurons")
        layer = model.check_layer(layer)
        acts = Slice(pos_slice, "pos_slice").apply(self._site(layer, "mlp_post", fn), dim=-2)
        ns = Slice(neuron_slice, "neuron_slice")
        acts = ns.apply(acts, dim=-1)
        w_out = ns.apply(model._mlp_weights(layer)["W_out"], dim=0).to(acts.device, acts.dtype)
        if project_output_onto is None:
            return acts[..., None] * w_out
        projected = w_out @ project_output_onto.to(w_out)
        return acts * projected if projected.ndim == 1 else acts[..., None] * projected

    def stack_neuron_results(self, layer: int, pos_slice=None, neuron_slice=None, return_labels: bool = False,
                             incl_remainder: bool = False, apply_ln: bool = False, project_output_onto=None,
                             mlp_input: bool = False):
        """``[layer * neuron (+1), *batch_pos, d_model]``: every neuron's write before block ``layer`` (labels
        ``"L{l}N{n}"``), with ``incl_remainder`` the rest of the stream; ``apply_ln``: scaled as the norm before
        block ``layer`` scales the stream (``mlp_input``: its MLP's norm; with a projection, folded into it).
        ``mlp_input`` is ours: TransformerLens 3.9 always uses ``ln1``'s scale on the projected path, which in
        ``get_full_resid_decomposition(mlp_input=True, apply_ln=True, project_output_onto=...)`` scales the neuron
        rows by another norm than the rest; here every row is scaled by the norm that reads the stream."""
        fn = "stack_neuron_results"
        model = self._model(fn)
        if not model.has_mlp:
            raise CapabilityError(f"{fn}: this {model.arch} model has no MLP neurons; its blocks' outputs are "
                                  "cache.decompose_resid()'s components")
        layer, pos, ns = self._final(layer, fn), Slice(pos_slice, "pos_slice"), Slice(neuron_slice, "neuron_slice")
        if ns.mode == "int":  # one neuron per layer: keep the neuron axis
            ns = Slice([ns.value])
        project, squeeze = self._projection(project_output_onto)
        labels = [f"L{i}N{n}" for i in range(layer) for n in ns.indices(model.cfg.d_mlp).tolist()]
        if apply_ln and project is not None:
            stack = self._neurons_ln_projected(layer, pos, ns, project, fn, mlp_input)
            if incl_remainder:
                total = self.apply_ln_to_stack(self._total(layer, pos, fn)[None], layer, mlp_input, pos)[0] @ project
                rest = total if stack.shape[0] == 0 else total - stack.sum(0)
                stack = torch.cat([stack, rest[None]])
                labels.append("remainder")
        else:
            per = [self.get_neuron_results(i, ns.value if ns.mode != "identity" else None, pos, project)
                   for i in range(layer)]
            stack = torch.cat(per, dim=-2).movedim(-2, 0) if per else None
            stack = self._with_remainder(stack, layer, pos, incl_remainder, labels, fn, project)
            if apply_ln:
                stack = self.apply_ln_to_stack(stack, layer, mlp_input=mlp_input, pos_slice=pos)
        if squeeze:
            stack = stack.squeeze(-1)
        return (stack, labels) if return_labels else stack

    def _neurons_ln_projected(self, layer: int, pos: Slice, ns: Slice, project: Tensor, fn: str,
                              mlp_input: bool = False) -> Tensor:
        """``apply_ln_to_stack(neurons) @ project`` as ``(a_n / s) · (W_out[n] @ p - mean(W_out[n]) Σp)`` (the mean
        term for LayerNorm only): no ``[..., neuron, d_model]`` intermediate."""
        model = self._model(fn)
        scale = self._scale(layer, mlp_input, pos, None, fn)
        centre = model.cfg.normalization_type in ("LN", "LNPre")
        parts = []
        for i in range(layer):
            w_out = ns.apply(model._mlp_weights(i)["W_out"], dim=0)
            form = w_out @ project.to(w_out)
            if centre:
                form = form - w_out.mean(-1)[:, None] * project.to(w_out).sum(0)[None]
            acts = ns.apply(pos.apply(self._site(i, "mlp_post", fn), dim=-2), dim=-1)
            parts.append((acts / scale)[..., None] * form.to(acts))
        if not parts:
            like = pos.apply(self._data["hook_embed"], dim=-2)
            return like.new_zeros((0, *like.shape[:-1], project.shape[-1]))
        return torch.cat(parts, dim=-2).movedim(-2, 0)

    def get_full_resid_decomposition(self, layer: int | None = None, mlp_input: bool = False,
                                     expand_neurons: bool = True, apply_ln: bool = False, pos_slice=None,
                                     return_labels: bool = False, project_output_onto=None):
        """Every part of the stream before block ``layer``, stacked: each head (``L{l}H{h}``), each neuron
        (``L{l}N{n}``; ``expand_neurons=False``: each MLP, ``{l}_mlp_out``), ``embed``, ``pos_embed`` and ``bias``
        (the summed ``b_O`` / ``b_out``); they sum to the stream. Needs attention heads."""
        fn = "get_full_resid_decomposition"
        model = self._model(fn)
        layer, pos = self._final(layer, fn), Slice(pos_slice, "pos_slice")
        project, squeeze = self._projection(project_output_onto)
        folded = apply_ln and project is not None

        def finish(stack: Tensor) -> Tensor:
            if folded:
                stack = self.apply_ln_to_stack(stack, layer, mlp_input=mlp_input, pos_slice=pos)
            return stack @ project if project is not None else stack

        heads, labels = self.stack_head_results(layer + (1 if mlp_input else 0), pos_slice=pos, return_labels=True)
        parts = [finish(heads)]
        if model.has_mlp and layer > 0:
            if expand_neurons:
                neurons, more = self.stack_neuron_results(layer, pos_slice=pos, return_labels=True, apply_ln=folded,
                                                          project_output_onto=project, mlp_input=mlp_input)
                parts.append(neurons)
            else:
                mlps, more = self.decompose_resid(layer, mlp_input=mlp_input, pos_slice=pos, incl_embeds=False,
                                                  mode="mlp", return_labels=True)
                parts.append(finish(mlps))
            labels = labels + more
        for name, label in (("hook_embed", "embed"), ("hook_pos_embed", "pos_embed")):
            if name in self._data:
                parts.append(finish(pos.apply(self._data[name], dim=-2)[None]))
                labels.append(label)
        bias = model.accumulated_bias(layer, mlp_input, include_mlp_biases=expand_neurons)
        like = pos.apply(self._data["hook_embed"], dim=-2)
        parts.append(finish(bias.to(like).expand(1, *like.shape)))
        labels.append("bias")
        stack = torch.cat(parts)
        if apply_ln and not folded:
            stack = self.apply_ln_to_stack(stack, layer, mlp_input=mlp_input, pos_slice=pos)
        if squeeze:
            stack = stack.squeeze(-1)
        return (stack, labels) if return_labels else stack
