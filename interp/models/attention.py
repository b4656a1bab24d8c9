"""The ``"interp"`` attention implementation registered with transformers' ``AttentionInterface``.

A wrapped Hugging Face model runs with ``attn_implementation="interp"``. For a layer with no attention-internal
hook (``hook_rot_q``, ``hook_rot_k``, ``hook_attn_scores``, ``hook_pattern``) it calls transformers' SDPA function
unchanged, so unhooked runs keep the fast path. Otherwise it computes attention eagerly and fires those hooks:

    scores  = q kᵀ · scaling + mask            (hook_attn_scores, [batch, head, query, key], masked with -inf)
    pattern = softmax(scores) in float32       (hook_pattern,     [batch, head, query, key]; a query row with
                                                every key masked, e.g. a left-padding position, is all zeros,
                                                as SDPA makes it)
    z       = pattern v                        (hook_z fires later, at the output projection's input)

Key/value heads are repeated for grouped-query attention, so scores and patterns are per query head.

Several wrappers of one Hugging Face model each register their sites for its attention modules; each fires its own
hooks (in the order the wrappers were made).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from interp.hooks import HookRegistry

__all__ = ["ATTN_IMPLEMENTATION", "AttentionSite", "register_attention", "ensure_registered"]

ATTN_IMPLEMENTATION = "interp"
_EAGER_SUFFIXES = ("hook_rot_q", "hook_rot_k", "hook_attn_scores", "hook_pattern")


@dataclass(frozen=True)
class AttentionSite:
    """Where one attention module sits: its registry and the prefix of its site names."""

    registry: HookRegistry
    prefix: str  # e.g. "blocks.3.attn."

    def needs_eager(self) -> bool:
        reg = self.registry
        return bool(reg) and any(reg.hooked(self.prefix + s) for s in _EAGER_SUFFIXES)

    def fire(self, suffix: str, act: Tensor) -> Tensor:
        return self.registry.fire(self.prefix + suffix, act)


class _Sites:
    """The sites of every wrapper of one attention module (weakly held: a dropped wrapper's registry goes away)."""

    def __init__(self) -> None:
        self._refs: list[tuple[weakref.ref, str]] = []

    def add(self, site: AttentionSite) -> None:
        self._refs.append((weakref.ref(site.registry), site.prefix))

    def live(self) -> list[AttentionSite]:
        out = []
        for ref, prefix in self._refs:
            reg = ref()
            if reg is not None:
                out.append(AttentionSite(reg, prefix))
        return out


_SITES: weakref.WeakKeyDictionary[nn.Module, _Sites] = weakref.WeakKeyDictionary()


def register_attention(module: nn.Module, site: AttentionSite) -> None:
    """Tell the ``"interp"`` attention function that ``module`` (an attention layer) fires ``site``'s hooks too."""
    _SITES.setdefault(module, _Sites()).add(site)


def _interp_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    sites = _SITES.get(module)
    hooked = [s for s in sites.live() if s.needs_eager()] if sites is not None else []
    if not hooked:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    return _eager_hooked(module, hooked, query, key, value, attention_mask, **kwargs)


def _fire_all(sites: list[AttentionSite], suffix: str, act: Tensor) -> Tensor:
    for site in sites:
        act = site.fire(suffix, act)
    return act


def _eager_hooked(module, sites: list[AttentionSite], query, key, value, attention_mask, *, scaling=None,
                  dropout=0.0, **kw):
    # [batch, head, pos, d_head] -> site layout [batch, pos, head, d_head] and back
    query = _fire_all(sites, "hook_rot_q", query.transpose(1, 2)).transpose(1, 2)
    key = _fire_all(sites, "hook_rot_k", key.transpose(1, 2)).transpose(1, 2)
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    scores = _apply_mask(scores, attention_mask)
    scores = _fire_all(sites, "hook_attn_scores", scores)
    # A row with no key to attend to (left padding) is all zeros, as SDPA makes it; only a mask can cause one.
    dead = None if attention_mask is None else (scores == float("-inf")).all(-1, keepdim=True)
    if dead is not None and bool(dead.any()):
        pattern = torch.softmax(scores.masked_fill(dead, 0.0), dim=-1, dtype=torch.float32).masked_fill(dead, 0.0)
    else:
        pattern = torch.softmax(scores, dim=-1, dtype=torch.float32)
    pattern = _fire_all(sites, "hook_pattern", pattern.to(query.dtype))
    if dropout and module.training:
        pattern = nn.functional.dropout(pattern, p=dropout)
    out = torch.matmul(pattern, value).transpose(1, 2).contiguous()
    return out, pattern


def _apply_mask(scores: Tensor, mask) -> Tensor:
    """Apply an SDPA-style mask (None = causal, bool = keep, float = additive) with -inf where masked."""
    q, k = scores.shape[-2:]
    if mask is None:
        keep = torch.ones(q, k, dtype=torch.bool, device=scores.device).tril(diagonal=k - q)
        return scores.masked_fill(~keep, float("-inf"))
    if mask.dtype == torch.bool:
        return scores.masked_fill(~mask[..., :k], float("-inf"))
    mask = mask[..., :k]
    return (scores + mask).masked_fill(mask <= torch.finfo(mask.dtype).min / 2, float("-inf"))


_registered = False


def ensure_registered() -> None:
    """Register ``"interp"`` with transformers' attention and mask interfaces (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(ATTN_IMPLEMENTATION, _interp_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTN_IMPLEMENTATION, sdpa_mask)
    _registered = True
