"""``HFTransformer``: a Hugging Face causal transformer behind the ``HookedModel`` interface.

Sites are attached as PyTorch module hooks only while a ``hooks(...)`` context needs them (looked up in the
family's ``ArchTable``), each once however many contexts hook it; attention internals (``hook_rot_q/k``,
``hook_attn_scores``, ``hook_pattern``) fire from the ``"interp"`` attention implementation, which stays on
transformers' SDPA path for layers with no score or pattern hook (and inside ``query_rows``, which reads chosen
pattern rows beside it; see :mod:`interp.models.attention`). With no hooks the forward pass is exactly the underlying
model's. An attention mask is passed through with position ids counted over real tokens, so a left-padded row
equals its unpadded run.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from interp.hooks import layer_of
from interp.models.architectures import ArchTable, table_for
from interp.models.attention import ATTN_IMPLEMENTATION, AttentionSite, ensure_registered, register_attention
from interp.models.base import HookedModel
from interp.models.norms import module_eps, norm_scale, rescaled

__all__ = ["HFTransformer"]

Handle = torch.utils.hooks.RemovableHandle


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _with_first(out, new):
    return (new, *out[1:]) if isinstance(out, tuple) else new


def _positions(mask: Tensor | None) -> Tensor | None:
    """Position ids counting real tokens only (0 at and before each row's first real token)."""
    return None if mask is None else (mask.cumsum(-1) - 1).clamp_min(0)


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

    has_attention_heads = True
    has_mlp = True
    has_prefix_reuse = True
    has_query_rows = True

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
        self.n_ctx = getattr(cfg, "n_positions", None) if self.table.pos_embed else None
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
            ["hook_resid_pre", "ln1.hook_scale", "ln1.hook_normalized"] + [f"attn.{s}" for s in attn]
            + ["hook_attn_out", "hook_resid_mid", "ln2.hook_scale", "ln2.hook_normalized", "mlp.hook_post",
               "hook_mlp_out", "hook_resid_post"]
        )
        names = ["hook_embed"] + (["hook_pos_embed"] if t.pos_embed else [])
        for layer in range(self.n_layers):
            names += [f"blocks.{layer}.{s}" for s in per_layer]
        return names + ["ln_final.hook_scale", "ln_final.hook_normalized"]

    def _components(self, layer: int) -> dict[str, str]:
        p = f"blocks.{layer}."
        roles = {"resid_pre": "hook_resid_pre", "ln1": "ln1.hook_normalized", "q": "attn.hook_q",
                 "k": "attn.hook_k", "v": "attn.hook_v", "attn_scores": "attn.hook_attn_scores",
                 "pattern": "attn.hook_pattern", "z": "attn.hook_z", "result": "attn.hook_result",
                 "attn_out": "hook_attn_out", "resid_mid": "hook_resid_mid", "ln2": "ln2.hook_normalized",
                 "mlp_post": "mlp.hook_post", "mlp_out": "hook_mlp_out", "resid_post": "hook_resid_post"}
        if self.table.rotary:
            roles.update(rot_q="attn.hook_rot_q", rot_k="attn.hook_rot_k")
        return {role: p + site for role, site in roles.items()}

    # ------------------------------------------------------------------ running
    def _check_length(self, T: int) -> None:
        if self.n_ctx is not None and T > self.n_ctx:
            raise ValueError(f"tokens has {T} positions but this {self.arch} model has n_positions={self.n_ctx} "
                             "(learned position embeddings); pass at most that many")

    def _logits(self, tokens: Tensor, attention_mask: Tensor | None) -> Tensor:
        self._check_length(tokens.shape[1])
        positions = _positions(attention_mask)
        if positions is None and self.table.pos_embed:  # hook_pos_embed is [batch, pos, d_model], as in TL
            positions = torch.arange(tokens.shape[1], device=tokens.device).expand(tokens.shape)
        return self.hf_model(input_ids=tokens, attention_mask=attention_mask, position_ids=positions,
                             use_cache=False).logits

    def _logits_from(self, layer: int, resid: Tensor, attention_mask: Tensor | None) -> Tensor:
        """Blocks ``layer..`` only: the earlier blocks are taken out of the model for the call, and block ``layer``
        receives ``resid`` in place of its input (the embeddings computed from the dummy input are discarded)."""
        self._check_length(resid.shape[1])
        with self._starting_at(layer, resid):
            return self.hf_model(inputs_embeds=torch.zeros_like(resid), attention_mask=attention_mask,
                                 position_ids=_positions(attention_mask), use_cache=False).logits

    @contextmanager
    def _starting_at(self, layer: int, resid: Tensor):
        """Within the block, a forward pass runs blocks ``layer..`` only, block ``layer`` receiving ``resid`` in place
        of its input."""

        def inject(module, args, kwargs):
            if args:
                return (resid, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": resid}

        handle = self._blocks[layer].register_forward_pre_hook(inject, with_kwargs=True, prepend=True)
        try:
            with self._only_blocks_from(layer):
                yield
        finally:
            handle.remove()

    @contextmanager
    def _only_blocks_from(self, layer: int):
        parent_path, _, attr = self.table.layers.rpartition(".")
        parent = self.hf_model.get_submodule(parent_path)
        full = getattr(parent, attr)
        setattr(parent, attr, nn.ModuleList(list(full)[layer:]))
        try:
            yield
        finally:
            setattr(parent, attr, full)

    def _next_logits(self, tokens: Tensor, mask: Tensor | None, state):
        """One generation step with transformers' key/value cache: ``state = (cache, positions done)``."""
        from transformers import DynamicCache

        self._check_length(tokens.shape[1])
        cache, done = state if state is not None else (DynamicCache(config=self.hf_model.config), 0)
        pos = _positions(mask)
        if pos is None:
            pos = torch.arange(tokens.shape[1], device=tokens.device)[None].expand(tokens.shape[0], -1)
        out = self.hf_model(input_ids=tokens[:, done:], attention_mask=mask, position_ids=pos[:, done:],
                            cache=cache, use_cache=True)
        return out.logits[:, -1], (out.cache if hasattr(out, "cache") else out.past_key_values, tokens.shape[1])

    def _record_prefix(self, tokens: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Keys and values ``[batch, kv_head, pos, d_head]`` (after rotary) of every layer, from transformers'
        cache of one forward pass."""
        self._check_length(tokens.shape[1])
        out = self.hf_model(input_ids=tokens, use_cache=True)
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _run_suffix(self, layer: int, pos: int, resid: Tensor, prefix, rows: Tensor) -> Tensor:
        """Blocks ``layer..`` on ``resid`` at positions ``pos..``: transformers' key/value cache is filled with the
        recorded keys and values of positions ``< pos`` (only for the blocks this call runs; layer 0 gets a
        placeholder of the right length when it is not run, as the mask is sized from it), and position ids
        continue from ``pos``."""
        from transformers import DynamicCache

        S = resid.shape[1]
        self._check_length(pos + S)
        cache = None
        if pos > 0:
            stop = self._registry.stop_site
            end = layer_of(stop) if stop is not None and stop.endswith("hook_resid_pre") else self.n_layers
            entries: list[tuple[Tensor | None, Tensor | None]] = []
            for i, (k, v) in enumerate(prefix.data):
                if layer <= i < end:
                    entries.append((k[:, :, :pos][rows], v[:, :, :pos][rows]))
                elif i == 0:  # never read: only its length is
                    entries.append((k.new_zeros(()).expand(len(rows), k.shape[1], pos, k.shape[3]),) * 2)
                else:
                    entries.append((None, None))
            cache = DynamicCache(ddp_cache_data=entries)
        positions = torch.arange(pos, pos + S, device=resid.device)[None]  # one row: rotary tables broadcast
        with self._starting_at(layer, resid):
            return self.hf_model(inputs_embeds=torch.zeros_like(resid), position_ids=positions, cache=cache,
                                 use_cache=cache is not None).logits

    # ------------------------------------------------------------------ attaching module hooks
    def _attach(self, name: str) -> Callable[[], None]:
        handles = self._handles(name)
        layer = layer_of(name)

        def undo() -> None:
            for h in handles:
                h.remove()
            if name.endswith("hook_resid_mid"):
                self._resid_pre.pop(layer, None)

        return undo

    def _handles(self, name: str) -> list[Handle]:
        t, fire = self.table, self._registry.fire
        layer = layer_of(name)
        if layer is None:
            if name == "ln_final.hook_scale":
                return [self._scale_hook(self.hf_model.get_submodule(t.final_norm), name)]
            modules = {"hook_embed": t.embed, "hook_pos_embed": t.pos_embed, "ln_final.hook_normalized": t.final_norm}
            return [self._on_output(self.hf_model.get_submodule(modules[name]), name)]
        block = self._blocks[layer]
        attn = block.get_submodule(t.attn)
        site = name.split(".", 2)[2]
        if site in ("ln1.hook_scale", "ln2.hook_scale"):
            return [self._scale_hook(block.get_submodule(t.ln1 if site[2] == "1" else t.ln2), name)]
        simple_outputs = {"ln1.hook_normalized": t.ln1, "ln2.hook_normalized": t.ln2, "hook_mlp_out": t.mlp,
                          "hook_attn_out": t.attn}
        if site in simple_outputs:
            return [self._on_output(block.get_submodule(simple_outputs[site]), name)]
        if site == "hook_resid_post":
            return [self._on_output(block, name)]
        if site == "hook_resid_pre":  # prepended: runs before hook_resid_mid's recorder whenever it was attached
            return [block.register_forward_pre_hook(self._resid_pre_hook(name, fire), with_kwargs=True, prepend=True)]
        if site == "hook_resid_mid":
            store = block.register_forward_pre_hook(self._resid_pre_hook(None, fire, layer), with_kwargs=True)
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

    def _scale_hook(self, norm: nn.Module, name: str) -> Handle:
        """``hook_scale`` of ``norm`` (see :mod:`interp.models.norms`): prepended, so that a replaced scale is in the
        output the norm's ``hook_normalized`` sees."""
        fire, centre, eps = self._registry.fire, self.table.norm == "LN", module_eps(norm)

        def hook(module, args, out):
            scale = norm_scale(args[0], eps, centre)
            new = fire(name, scale)
            grad = torch.is_grad_enabled() and scale.requires_grad
            if new is scale and not grad:
                return None
            old = norm_scale(args[0], eps, centre) if grad else scale  # its own node: the site's gradient is its own
            return _with_first(out, rescaled(_first(out), old, new, getattr(module, "bias", None)))

        return norm.register_forward_hook(hook, prepend=True)

    def _on_output(self, module: nn.Module, name: str) -> Handle:
        fire = self._registry.fire
        return module.register_forward_hook(lambda m, args, out: _with_first(out, fire(name, _first(out))))

    def _resid_pre_hook(self, name: str | None, fire, record_layer: int | None = None):
        def hook(module, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            if name is not None:
                h = fire(name, h)
            if record_layer is not None:
                self._resid_pre[record_layer] = h
            if args:
                return (h, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": h}

        return hook

    def _resid_mid_hook(self, layer: int, name: str):
        fire = self._registry.fire

        def hook(module, args, out):
            pre = self._resid_pre[layer]
            mid = pre + _first(out)
            new = fire(name, mid)
            if new is mid and not (torch.is_grad_enabled() and mid.requires_grad):
                return out
            return _with_first(out, new - pre)  # in the graph whenever gradients flow, so they reach the site

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
            result = fire(name, torch.einsum("bphd,hdm->bphm", z, self._w_o(module)))
            summed = result.sum(dim=-2)
            return summed + module.bias if module.bias is not None else summed

        return hook

    # ------------------------------------------------------------------ vocabulary
    def _w_o(self, o_proj: nn.Module) -> Tensor:
        """``[head, d_head, d_model]`` from the output projection (GPT-2's Conv1D stores [in, out])."""
        w = o_proj.weight
        if self.table.conv1d:
            return w.view(self.n_heads, self.d_head, -1)
        return w.T.reshape(self.n_heads, self.d_head, -1)

    def _embed_weight(self) -> Tensor:
        return self.hf_model.get_input_embeddings().weight

    def _pos_embed_weight(self) -> Tensor:
        if self.table.pos_embed is None:
            return super()._pos_embed_weight()
        return self.hf_model.get_submodule(self.table.pos_embed).weight

    def _unembed(self) -> tuple[Tensor, Tensor]:
        head = self.hf_model.get_output_embeddings()
        bias = head.bias if getattr(head, "bias", None) is not None else head.weight.new_zeros(self.d_vocab)
        return head.weight.T, bias

    def _attention_weights(self, layer: int) -> dict[str, Tensor]:
        t, H, K, dh, d = self.table, self.n_heads, self.n_kv_heads, self.d_head, self.d_model
        attn = self._blocks[layer].get_submodule(t.attn)

        def split_in(weight: Tensor, bias: Tensor | None, heads: int) -> tuple[Tensor, Tensor]:
            # nn.Linear weight [heads * d_head, d_model] -> [heads, d_model, d_head]
            w = weight.view(heads, dh, d).transpose(1, 2)
            b = bias.view(heads, dh) if bias is not None else weight.new_zeros(heads, dh)
            return w, b

        if t.qkv_proj is not None:  # GPT-2 Conv1D: weight [d_model, 3 d_model], bias [3 d_model]
            proj = attn.get_submodule(t.qkv_proj)
            ws, bs = proj.weight.split(d, dim=1), proj.bias.split(d)
            (wq, bq), (wk, bk), (wv, bv) = ((w.view(d, H, dh).transpose(0, 1), b.view(H, dh)) for w, b in zip(ws, bs))
        else:
            wq, bq = split_in(attn.get_submodule(t.q_proj).weight, attn.get_submodule(t.q_proj).bias, H)
            wk, bk = split_in(attn.get_submodule(t.k_proj).weight, attn.get_submodule(t.k_proj).bias, K)
            wv, bv = split_in(attn.get_submodule(t.v_proj).weight, attn.get_submodule(t.v_proj).bias, K)
            group = H // K
            wk, bk, wv, bv = (x.repeat_interleave(group, dim=0) for x in (wk, bk, wv, bv))
        o_proj = attn.get_submodule(t.o_proj)
        b_o = o_proj.bias if o_proj.bias is not None else o_proj.weight.new_zeros(d)
        return {"W_Q": wq, "W_K": wk, "W_V": wv, "W_O": self._w_o(o_proj), "b_Q": bq, "b_K": bk, "b_V": bv,
                "b_O": b_o}

    def _block_module(self, layer: int) -> nn.Module:
        return self._blocks[layer]

    def _mlp_weights(self, layer: int) -> dict[str, Tensor]:
        """TransformerLens's MLP weights: ``W_in`` ``[d_model, d_mlp]`` (a gated MLP's linear branch), ``W_gate``
        (gated MLPs only), ``W_out`` ``[d_mlp, d_model]``, ``b_in`` ``[d_mlp]``, ``b_out`` ``[d_model]`` (zeros when
        the model has none); views of the parameters (``nn.Linear`` stores ``[out, in]``: transposed)."""
        t = self.table
        mlp = self._blocks[layer].get_submodule(t.mlp)

        def as_in_out(proj: nn.Module) -> tuple[Tensor, Tensor]:
            w = proj.weight if t.conv1d else proj.weight.T
            b = proj.bias if getattr(proj, "bias", None) is not None else w.new_zeros(w.shape[1])
            return w, b

        out = {}
        out["W_in"], out["b_in"] = as_in_out(mlp.get_submodule(t.mlp_in_proj))
        if t.mlp_gate_proj is not None:
            out["W_gate"] = as_in_out(mlp.get_submodule(t.mlp_gate_proj))[0]
        out["W_out"], out["b_out"] = as_in_out(mlp.get_submodule(t.mlp_out_proj))
        return out

    def _norm_weights(self, which: str, layer: int | None) -> dict[str, Tensor]:
        t = self.table
        if which == "ln_final":
            norm = self.hf_model.get_submodule(t.final_norm)
        else:
            norm = self._blocks[layer].get_submodule(t.ln1 if which == "ln1" else t.ln2)
        w = norm.weight
        return {"w": w, "b": norm.bias if getattr(norm, "bias", None) is not None else w.new_zeros(w.shape)}

    def _config_fields(self) -> dict:
        cfg, t = self.hf_model.config, self.table
        rope = getattr(cfg, "rope_parameters", None) or {}
        theta = rope.get("rope_theta", getattr(cfg, "rope_theta", None)) if isinstance(rope, dict) else None
        d_mlp = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * self.d_model
        archs = getattr(cfg, "architectures", None) or [type(self.hf_model).__name__]
        return dict(
            n_ctx=getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None),
            d_mlp=d_mlp, act_fn=getattr(cfg, "hidden_act", None) or getattr(cfg, "activation_function", None),
            eps=module_eps(self.hf_model.get_submodule(t.final_norm)), normalization_type=t.norm,
            positional_embedding_type="rotary" if t.rotary else "standard",
            rotary_dim=int(self.d_head * getattr(cfg, "partial_rotary_factor", 1.0)) if t.rotary else None,
            rotary_base=float(theta) if t.rotary and theta is not None else None,
            gated_mlp=t.mlp_gate_proj is not None, original_architecture=archs[0],
            model_name=str(getattr(cfg, "_name_or_path", "") or archs[0]).rstrip("/").rsplit("/", 1)[-1],
            tie_word_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)),
        )

    def _apply_part(self, which: str, layer: int | None, x: Tensor) -> Tensor:
        t = self.table
        if which == "ln_final":
            return self.hf_model.get_submodule(t.final_norm)(x)
        block = self._blocks[layer]
        path = {"ln1": t.ln1, "ln2": t.ln2, "MLP": t.mlp}[which]
        return _first(block.get_submodule(path)(x))
