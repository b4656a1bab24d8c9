"""``TLModel``: a TransformerLens ``HookedTransformer`` or ``TransformerBridge`` behind ``HookedModel``.

TransformerLens already names its hook points the way this toolkit does, so the sites are the model's own
``hook_dict`` (a bridge exposes the classic names after ``enable_compatibility_mode()``), restricted to those that
fire exactly once per forward pass: a two-token probe run at the first ``site_names()`` call counts them. Hook
points that never fire (``attn.hook_result`` without ``use_attn_result``, ``hook_*_input`` without split inputs) or
fire several times (``ln1.hook_normalized`` runs once each for q, k and v) are left out, with the reason in
``model.unlisted_sites``. Hooks attach as PyTorch forward hooks on the ``HookPoint`` modules only inside a
``hooks(...)`` context, and never touch hooks the user added through TransformerLens itself.

Layouts are the toolkit's, whatever the model's hook points hold: a bridge's flat ``hook_q|k|v|z``
(``[batch, pos, heads * d_head]``) and head-major ``hook_rot_q|rot_k`` (``[batch, head, pos, d_head]``) are shown
to hooks and caches as ``[batch, pos, head, d_head]``, and a replacement is put back in the model's layout.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from interp.errors import CapabilityError
from interp.models.base import HookedModel

__all__ = ["TLModel"]


_PER_HEAD = ("attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_z", "attn.hook_rot_q", "attn.hook_rot_k")


def _layout(name: str, shape: tuple[int, ...], T: int, d_head: int) -> str | None:
    """How a per-head hook point's probe output (``pos = T``) differs from ``[batch, pos, head, d_head]``."""
    if not name.endswith(_PER_HEAD):
        return None
    if len(shape) == 3 and shape[1] == T and shape[2] % d_head == 0:
        return "flat_heads"
    if len(shape) == 4 and shape[2] == T and shape[1] != T:
        return "head_major"
    return None


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
        self.n_ctx = getattr(cfg, "n_ctx", None)  # positional tables (learned or rotary) end there
        self._layouts: dict[str, str | None] = {}
        self.unlisted_sites: dict[str, str] = {}
        """Hook points of the TransformerLens model that are not sites here, with the reason."""
        sites = self.site_names()
        self.has_attention_heads = any(s.endswith("attn.hook_pattern") for s in sites)
        self.has_mlp = any(s.endswith("hook_mlp_out") for s in sites)

    # ------------------------------------------------------------------ sites
    def _site_names(self) -> list[str]:
        counts: dict[str, int] = {}
        order: list[str] = []
        T = max(self.n_heads, self.n_kv_heads) + 3  # a probe length no head count equals, to tell the axes apart

        def count(name):
            def hook(module, args, out):
                if name not in counts:
                    order.append(name)
                    self._layouts[name] = _layout(name, tuple(out.shape), T, self.d_head)
                counts[name] = counts.get(name, 0) + 1
            return hook

        points = {n: p for n, p in self.tl_model.hook_dict.items() if "hook_" in n}
        handles = [p.register_forward_hook(count(n)) for n, p in points.items()]
        try:
            with torch.no_grad():
                self.tl_model(torch.zeros(1, T, dtype=torch.long, device=self._tl_device()))
        finally:
            for h in handles:
                h.remove()
        for name in points:
            if name not in counts:
                self.unlisted_sites[name] = "never fires with this model's configuration"
            elif counts[name] > 1:
                self.unlisted_sites[name] = f"fires {counts[name]} times per forward pass (not one activation)"
        return [n for n in order if counts[n] == 1]

    def _tl_device(self) -> torch.device:
        for p in self.tl_model.parameters():
            return p.device
        return torch.device("cpu")

    def _components(self, layer: int) -> dict[str, str]:
        p = f"blocks.{layer}."
        roles = {"resid_pre": "hook_resid_pre", "ln1": "ln1.hook_normalized", "q": "attn.hook_q",
                 "k": "attn.hook_k", "v": "attn.hook_v", "rot_q": "attn.hook_rot_q", "rot_k": "attn.hook_rot_k",
                 "attn_scores": "attn.hook_attn_scores", "pattern": "attn.hook_pattern", "z": "attn.hook_z",
                 "result": "attn.hook_result", "attn_out": "hook_attn_out", "resid_mid": "hook_resid_mid",
                 "ln2": "ln2.hook_normalized", "mlp_post": "mlp.hook_post", "mlp_out": "hook_mlp_out",
                 "resid_post": "hook_resid_post"}
        sites = set(self.site_names())
        return {role: p + s for role, s in roles.items() if p + s in sites}

    # ------------------------------------------------------------------ running
    def _logits(self, tokens: Tensor, attention_mask: Tensor | None) -> Tensor:
        if self.n_ctx is not None and tokens.shape[1] > self.n_ctx:
            raise ValueError(f"tokens has {tokens.shape[1]} positions but this {self.arch} model has n_ctx="
                             f"{self.n_ctx} (its positional tables end there); pass at most that many")
        if attention_mask is None:
            return self.tl_model(tokens)
        return self.tl_model(tokens, attention_mask=attention_mask)

    def _logits_from(self, layer: int, resid: Tensor, attention_mask: Tensor | None) -> Tensor:
        """Run on placeholder tokens with ``resid`` injected at ``blocks.{layer}.hook_resid_pre`` (before any hook
        there): a TransformerBridge cannot start at a layer, and this one path serves both kinds. The earlier
        blocks' work is wasted but never seen (the base class mutes their sites)."""
        point = self.tl_model.hook_dict[f"blocks.{layer}.hook_resid_pre"]
        handle = point.register_forward_hook(lambda m, args, out: resid, prepend=True)
        try:
            dummy = torch.zeros(resid.shape[:2], dtype=torch.long, device=resid.device)
            return self._logits(dummy, attention_mask)
        finally:
            handle.remove()

    def _attach(self, name: str) -> Callable[[], None]:
        fire, layout, d_head = self._registry.fire, self._layouts.get(name), self.d_head
        if layout == "flat_heads":
            def hook(module, args, out):
                return fire(name, out.view(*out.shape[:-1], -1, d_head)).reshape(out.shape)
        elif layout == "head_major":
            def hook(module, args, out):
                return fire(name, out.transpose(1, 2)).transpose(1, 2)
        else:
            def hook(module, args, out):
                return fire(name, out)
        return self.tl_model.hook_dict[name].register_forward_hook(hook).remove

    # ------------------------------------------------------------------ vocabulary
    def _weight(self, name: str) -> Tensor:
        try:
            return getattr(self.tl_model, name)
        except AttributeError as err:
            raise CapabilityError(f"{name}: this TransformerLens model does not expose it ({err})") from None

    def _embed_weight(self) -> Tensor:
        return self._weight("W_E")

    def _unembed(self) -> tuple[Tensor, Tensor]:
        return self._weight("W_U"), self._weight("b_U")

    def _pos_embed_weight(self) -> Tensor:
        if getattr(self.tl_model.cfg, "positional_embedding_type", None) not in ("standard", "shortformer"):
            return super()._pos_embed_weight()
        return self._weight("W_pos")

    def _attention_weights(self, layer: int) -> dict[str, Tensor]:
        group = self.n_heads // self.n_kv_heads
        out = {}
        for key in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O"):
            try:
                stacked = self._weight(key)
            except TypeError:  # a bridge over a model without biases cannot stack its None biases
                if not key.startswith("b_"):
                    raise
                stacked = None
            if stacked is None:  # no bias: zeros
                like = self.W_E
                shape = (self.d_model,) if key == "b_O" else (self.n_heads, self.d_head)
                out[key] = like.new_zeros(shape)
                continue
            w = stacked[layer]
            if key in ("W_K", "W_V", "b_K", "b_V") and w.shape[0] != self.n_heads:
                w = w.repeat_interleave(group, dim=0)  # a bridge keeps kv heads; TransformerLens repeats them
            out[key] = w
        return out

    def _block_module(self, layer: int) -> nn.Module:
        return self.tl_model.blocks[layer]

    def _mlp_weights(self, layer: int) -> dict[str, Tensor]:
        mlp = self.tl_model.blocks[layer].mlp
        out = {}
        for key in ("W_in", "W_gate", "W_out", "b_in", "b_out"):
            value = getattr(mlp, key, None)
            if value is not None:
                out[key] = value
        if not {"W_in", "W_out"} <= set(out):
            raise CapabilityError(f"this TransformerLens model's MLP ({type(mlp).__name__}) does not expose W_in/W_out")
        out.setdefault("b_in", out["W_in"].new_zeros(out["W_in"].shape[-1]))
        out.setdefault("b_out", out["W_out"].new_zeros(out["W_out"].shape[-1]))
        return out

    def _norm_weights(self, which: str, layer: int | None) -> dict[str, Tensor]:
        """``w`` and ``b`` of a norm; ones and zeros where it has none (a folded ``LNPre``/``RMSPre`` norm: its weight
        and bias are in the next layer's weights, ``W_U`` for the final norm)."""
        norm = self.tl_model.ln_final if which == "ln_final" else getattr(self.tl_model.blocks[layer], which)
        like = self.W_E
        w, b = getattr(norm, "w", None), getattr(norm, "b", None)
        return {"w": w if w is not None else like.new_ones(self.d_model),
                "b": b if b is not None else like.new_zeros(self.d_model)}

    def _config_fields(self) -> dict:
        cfg = self.tl_model.cfg
        names = ("n_ctx", "d_mlp", "act_fn", "eps", "normalization_type", "positional_embedding_type", "rotary_dim",
                 "rotary_base", "gated_mlp", "attn_only", "parallel_attn_mlp", "tie_word_embeddings", "d_vocab_out",
                 "original_architecture", "model_name", "default_prepend_bos", "attention_dir")
        out = {n: getattr(cfg, n) for n in names if getattr(cfg, n, None) is not None}
        if out.get("positional_embedding_type") not in (None, "standard", "rotary", "shortformer", "alibi"):
            out["positional_embedding_type"] = "none"
        return out

    def _apply_part(self, which: str, layer: int | None, x: Tensor) -> Tensor:
        if which == "ln_final":
            return self.tl_model.ln_final(x)
        block = self.tl_model.blocks[layer]
        module = {"ln1": "ln1", "ln2": "ln2", "MLP": "mlp"}[which]
        out = getattr(block, module)(x)
        return out[0] if isinstance(out, tuple) else out
