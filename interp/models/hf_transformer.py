"""``HFTransformer``: a Hugging Face causal transformer behind the ``HookedModel`` interface.

Sites are attached as PyTorch module hooks only while a ``hooks(...)`` context needs them (looked up in the
family's ``ArchTable``); attention internals (``hook_rot_q/k``, ``hook_attn_scores``, ``hook_pattern``) fire from
the ``"interp"`` attention implementation, which stays on transformers' SDPA path for layers with no such hook.
With no hooks the forward pass is exactly the underlying model's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from interp.hooks import layer_of
from interp.models.architectures import ArchTable, table_for
from interp.models.attention import ATTN_IMPLEMENTATION, AttentionSite, ensure_registered, register_attention
from interp.models.base import HookedModel

__all__ = ["HFTransformer"]

Handle = torch.utils.hooks.RemovableHandle


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _with_first(out, new):
    return (new, *out[1:]) if isinstance(out, tuple) else new


class HFTransformer(HookedModel):
    """Wrap an HF ``PreTrainedModel`` (Llama/Mistral/Qwen2 family or GPT-2) with TransformerLens-style sites.

    Per-layer sites, in forward order: ``hook_resid_pre``, ``ln1.hook_normalized``, ``attn.hook_q|k|v``
    (``[batch, pos, head, d_head]``, before rotary; k/v per kv head), ``attn.hook_rot_q|rot_k`` (after rotary),
    ``attn.hook_attn_scores`` and ``attn.hook_pattern`` (``[batch, head, query, key]``), ``attn.hook_z``,
    ``attn.hook_result`` (``[batch, pos, head, d_model]``: each head's contribution to the residual stream; their sum
    plus the output bias is ``hook_attn_out``), ``hook_attn_out``, ``hook_resid_mid``, ``ln2.hook_normalized``,
    ``mlp.hook_post`` (MLP hidden activation), ``hook_mlp_out``, ``hook_resid_post``; plus ``hook_embed``
    (and ``hook_pos_embed`` for GPT-2) and ``ln_final.hook_normalized``. The ``*.hook_normalized`` sites are the
    norms' outputs, weight (and bias) included: exactly what the next sublayer or the unembedding reads.
    """

    def __init__(self, hf_model: nn.Module, tokenizer=None) -> None:
        super().__init__(tokenizer)
        ensure_registered()
        cfg = hf_model.config
        self.table: ArchTable = table_for(getattr(cfg, "model_type", None))
        self.arch = self.table.arch
        self.hf_model = hf_model.eval()
        hf_model.set_attn_implementation(ATTN_IMPLEMENTATION)
        self.n_layers = cfg.num_hidden_layers
        self.n_heads = cfg.num_attention_heads
        self.n_kv_heads = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.d_model = cfg.hidden_size
        self.d_head = getattr(cfg, "head_dim", None) or self.d_model // self.n_heads
        self.d_vocab = hf_model.get_output_embeddings().weight.shape[0]
        self._blocks = hf_model.get_submodule(self.table.layers)
        self._resid_pre: dict[int, Tensor] = {}
        for layer, block in enumerate(self._blocks):
            site = AttentionSite(self._registry, f"blocks.{layer}.attn.")
            register_attention(block.get_submodule(self.table.attn), site)

    # ------------------------------------------------------------------ sites
    def _site_names(self) -> list[str]:
        t = self.table
        attn = ["hook_q", "hook_k", "hook_v"] + (["hook_rot_q", "hook_rot_k"] if t.rotary else [])
        attn += ["hook_attn_scores", "hook_pattern", "hook_z", "hook_result"]
        per_layer = (
            ["hook_resid_pre", "ln1.hook_normalized"] + [f"attn.{s}" for s in attn]
            + ["hook_attn_out", "hook_resid_mid", "ln2.hook_normalized", "mlp.hook_post", "hook_mlp_out",
               "hook_resid_post"]
        )
        names = ["hook_embed"] + (["hook_pos_embed"] if t.pos_embed else [])
        for layer in range(self.n_layers):
            names += [f"blocks.{layer}.{s}" for s in per_layer]
        return names + ["ln_final.hook_normalized"]

    def _logits(self, tokens: Tensor) -> Tensor:
        return self.hf_model(input_ids=tokens, use_cache=False).logits

    # ------------------------------------------------------------------ installing module hooks
    def _install(self, names: frozenset[str]) -> Callable[[], None]:
        handles: list[Handle] = []
        try:
            for name in self.site_names():
                if name in names:
                    handles.extend(self._attach(name))
        except BaseException:
            for h in handles:
                h.remove()
            raise

        def undo() -> None:
            for h in handles:
                h.remove()
            self._resid_pre.clear()

        return undo

    def _attach(self, name: str) -> list[Handle]:
        t, fire = self.table, self._registry.fire
        layer = layer_of(name)
        if layer is None:
            modules = {"hook_embed": t.embed, "hook_pos_embed": t.pos_embed, "ln_final.hook_normalized": t.final_norm}
            module = modules[name]
            return [self._on_output(self.hf_model.get_submodule(module), name)]
        block = self._blocks[layer]
        attn = block.get_submodule(t.attn)
        site = name.split(".", 2)[2]
        simple_outputs = {"ln1.hook_normalized": t.ln1, "ln2.hook_normalized": t.ln2, "hook_mlp_out": t.mlp,
                          "hook_attn_out": t.attn}
        if site in simple_outputs:
            return [self._on_output(block.get_submodule(simple_outputs[site]), name)]
        if site == "hook_resid_post":
            return [self._on_output(block, name)]
        if site == "hook_resid_pre":
            return [block.register_forward_pre_hook(self._resid_pre_hook(layer, name, fire), with_kwargs=True)]
        if site == "hook_resid_mid":
            store = block.register_forward_pre_hook(self._resid_pre_hook(layer, None, fire), with_kwargs=True)
            return [store, attn.register_forward_hook(self._resid_mid_hook(layer, name))]
        if site == "mlp.hook_post":
            proj = block.get_submodule(t.mlp).get_submodule(t.mlp_out_proj)
            return [proj.register_forward_pre_hook(lambda m, args: (fire(name, args[0]), *args[1:]))]
        if site in ("attn.hook_q", "attn.hook_k", "attn.hook_v"):
            return [self._qkv_hook(attn, site[-1], name)]
        if site == "attn.hook_z":
            return [attn.get_submodule(t.o_proj).register_forward_pre_hook(self._z_hook(name))]
        if site == "attn.hook_result":
            return [attn.get_submodule(t.o_proj).register_forward_hook(self._result_hook(name))]
        return []  # attention internals fire from the "interp" attention function

    def _on_output(self, module: nn.Module, name: str) -> Handle:
        fire = self._registry.fire
        return module.register_forward_hook(lambda m, args, out: _with_first(out, fire(name, _first(out))))

    def _resid_pre_hook(self, layer: int, name: str | None, fire):
        def hook(module, args, kwargs):
            if args:
                h = fire(name, args[0]) if name else args[0]
                self._resid_pre[layer] = h
                return (h, *args[1:]), kwargs
            h = fire(name, kwargs["hidden_states"]) if name else kwargs["hidden_states"]
            self._resid_pre[layer] = h
            return args, {**kwargs, "hidden_states": h}

        return hook

    def _resid_mid_hook(self, layer: int, name: str):
        fire = self._registry.fire

        def hook(module, args, out):
            pre = self._resid_pre[layer]
            mid = pre + _first(out)
            new = fire(name, mid)
            return out if new is mid else _with_first(out, new - pre)

        return hook

    def _split_heads(self, x: Tensor) -> Tensor:
        return x.view(*x.shape[:-1], -1, self.d_head)

    def _qkv_hook(self, attn: nn.Module, which: str, name: str) -> Handle:
        t, fire = self.table, self._registry.fire
        if t.qkv_proj is None:
            proj = attn.get_submodule({"q": t.q_proj, "k": t.k_proj, "v": t.v_proj}[which])
            return proj.register_forward_hook(
                lambda m, args, out: fire(name, self._split_heads(out)).reshape(out.shape)
            )
        index = "qkv".index(which)

        def fused(module, args, out):
            parts = list(out.split(self.d_model, dim=-1))
            parts[index] = fire(name, self._split_heads(parts[index])).reshape(parts[index].shape)
            return torch.cat(parts, dim=-1)

        return attn.get_submodule(t.qkv_proj).register_forward_hook(fused)

    def _z_hook(self, name: str):
        fire = self._registry.fire
        return lambda m, args: (fire(name, self._split_heads(args[0])).reshape(args[0].shape), *args[1:])

    def _result_hook(self, name: str):
        fire = self._registry.fire

        def hook(module, args, out):
            z = self._split_heads(args[0])  # [batch, pos, head, d_head]
            w = module.weight
            if self.table.conv1d:  # Conv1D weight: [head * d_head, d_model]
                w_o = w.view(self.n_heads, self.d_head, -1)
                result = torch.einsum("bphd,hdm->bphm", z, w_o)
            else:  # Linear weight: [d_model, head * d_head]
                w_o = w.view(-1, self.n_heads, self.d_head)
                result = torch.einsum("bphd,mhd->bphm", z, w_o)
            result = fire(name, result)
            summed = result.sum(dim=-2)
            return summed + module.bias if module.bias is not None else summed

        return hook

    # ------------------------------------------------------------------ weights
    def W_U(self) -> Tensor:
        """Unembedding ``[d_model, d_vocab]``."""
        return self.hf_model.get_output_embeddings().weight.T

    def W_E(self) -> Tensor:
        """Token embedding ``[d_vocab, d_model]``."""
        return self.hf_model.get_input_embeddings().weight

    def W_O(self, layer: int) -> Tensor:
        """Output projection of ``layer`` per head: ``[head, d_head, d_model]``."""
        layer = self.check_layers(layer, "layer")[0]
        w = self._blocks[layer].get_submodule(self.table.attn).get_submodule(self.table.o_proj).weight
        if self.table.conv1d:  # GPT-2's Conv1D stores [in, out]
            return w.view(self.n_heads, self.d_head, -1)
        return w.T.reshape(self.n_heads, self.d_head, -1)
