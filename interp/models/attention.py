"""The ``"interp"`` attention implementation registered with transformers' ``AttentionInterface``.

A wrapped Hugging Face model runs with ``attn_implementation="interp"``. ``hook_rot_q`` and ``hook_rot_k`` (queries and
keys after rotary, ``[batch, pos, head, d_head]``) fire on every path, and whatever they return is what attention
uses. For a layer with no ``hook_attn_scores`` or ``hook_pattern`` hook it then calls transformers' SDPA function
unchanged, so unhooked runs (and runs that only read or patch q and k) keep the fast path. Otherwise it computes
attention eagerly and fires those hooks:

    scores  = q kᵀ · scaling + mask            (hook_attn_scores, [batch, head, query, key], masked with -inf)
    pattern = softmax(scores) in float32       (hook_pattern,     [batch, head, query, key]; a query row with
                                                every key masked, e.g. a left-padding position, is all zeros,
                                                as SDPA makes it)
    z       = pattern v                        (hook_z fires later, at the output projection's input)

Key/value heads are repeated for grouped-query attention, so scores and patterns are per query head.

Query rows (``HookedModel.query_rows``): while a wrapper's registry holds ``query_rows [batch, R]``, its
``hook_attn_scores`` and ``hook_pattern`` fire with those query rows only (``[batch, head, R, key]``), computed by the
same formulas beside transformers' SDPA output, which is what the layer returns: the hooks may read these rows
but not replace them (a replacement raises). Reading a few rows of a long sequence so costs O(R · T) instead of
O(T²) per head and the forward pass stays on the fast path.

Several wrappers of one Hugging Face model each register their sites for its attention modules; each fires its own
hooks (in the order the wrappers were made).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from interp.hooks import HookRegistry

__all__ = ["ATTN_IMPLEMENTATION", "AttentionSite", "register_attention", "ensure_registered", "take_rows",
           "query_rows"]

ATTN_IMPLEMENTATION = "interp"
_EAGER_SUFFIXES = ("hook_attn_scores", "hook_pattern")


@dataclass(frozen=True)
class AttentionSite:
    """Where one attention module sits: its registry and the prefix of its site names."""

    registry: HookRegistry
    prefix: str  # e.g. "blocks.3.attn."

    def needs_eager(self) -> bool:
        reg = self.registry
        return bool(reg) and any(reg.hooked(self.prefix + s) for s in _EAGER_SUFFIXES)

    def hooked(self, suffix: str) -> bool:
        reg = self.registry
        return bool(reg) and reg.hooked(self.prefix + suffix)

    @property
    def rows(self) -> Tensor | None:
        """The query rows ``[batch, R]`` this wrapper's pattern hooks read, or None (all rows)."""
        return self.registry.query_rows

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


def take_rows(x: Tensor, rows: Tensor) -> Tensor:
    """``x [batch, head, query, ...last]`` at the query positions ``rows [batch, R]`` -> ``[batch, head, R, last]``."""
    return x.gather(2, rows[:, None, :, None].expand(-1, x.shape[1], -1, x.shape[-1]))


@contextmanager
def query_rows(model, rows: Tensor) -> Iterator[None]:
    """``HookedModel.query_rows``: check ``rows`` and hold them in the model's registry for the block."""
    from interp.errors import CapabilityError

    if not model.has_query_rows:
        raise CapabilityError(f"query_rows: this {model.arch} model cannot read single query rows of its "
                              "attention (see has_query_rows); read the full hook_pattern and index it")
    if not isinstance(rows, Tensor) or rows.ndim != 2 or rows.dtype not in (torch.int64, torch.int32):
        got = f"{rows.dtype} tensor of shape {tuple(rows.shape)}" if isinstance(rows, Tensor) else type(rows).__name__
        raise ValueError(f"rows must be an integer tensor [batch, R] of query positions; got {got}")
    reg = model._registry
    if reg.query_rows is not None:
        raise RuntimeError("query_rows contexts do not nest; leave the outer one first")
    reg.query_rows = rows.long().to(model.device)
    try:
        yield
    finally:
        reg.query_rows = None


def register_attention(module: nn.Module, site: AttentionSite) -> None:
    """Tell the ``"interp"`` attention function that ``module`` (an attention layer) fires ``site``'s hooks too."""
    _SITES.setdefault(module, _Sites()).add(site)


def _interp_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    sites = _SITES.get(module)
    live = sites.live() if sites is not None else []
    # [batch, head, pos, d_head] -> site layout [batch, pos, head, d_head] and back
    if any(s.hooked("hook_rot_q") for s in live):
        query = _fire_all(live, "hook_rot_q", query.transpose(1, 2)).transpose(1, 2)
    if any(s.hooked("hook_rot_k") for s in live):
        key = _fire_all(live, "hook_rot_k", key.transpose(1, 2)).transpose(1, 2)
    hooked = [s for s in live if s.needs_eager()]
    if not hooked:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    rowed = [s for s in hooked if s.rows is not None]
    if not rowed:
        return _eager_hooked(module, hooked, query, key, value, attention_mask, **kwargs)
    if len(rowed) != len(hooked):
        raise RuntimeError(f"{rowed[0].prefix}: one wrapper reads query rows of the attention pattern "
                           "(query_rows) while another wrapper of the same model hooks the full pattern in the same "
                           "forward pass; run them in separate passes")
    out = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    for site in rowed:
        _fire_rows(module, site, query, key, attention_mask, scaling=kwargs.get("scaling"))
    return out


def _fire_all(sites: list[AttentionSite], suffix: str, act: Tensor) -> Tensor:
    for site in sites:
        act = site.fire(suffix, act)
    return act


def _repeat_kv(query: Tensor, key: Tensor, value: Tensor | None = None):
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = None if value is None else value.repeat_interleave(groups, dim=1)
    return key, value


def _softmax(scores: Tensor, masked: bool) -> Tensor:
    """Float32 softmax over keys; a row with every key masked (only a mask can cause one) is all zeros, as SDPA
    makes it."""
    dead = (scores == float("-inf")).all(-1, keepdim=True) if masked else None
    if dead is not None and bool(dead.any()):
        return torch.softmax(scores.masked_fill(dead, 0.0), dim=-1, dtype=torch.float32).masked_fill(dead, 0.0)
    return torch.softmax(scores, dim=-1, dtype=torch.float32)


def _eager_hooked(module, sites: list[AttentionSite], query, key, value, attention_mask, *, scaling=None,
                  dropout=0.0, **kw):
    key, value = _repeat_kv(query, key, value)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    scores = _apply_mask(scores, attention_mask)
    scores = _fire_all(sites, "hook_attn_scores", scores)
    pattern = _softmax(scores, attention_mask is not None)
    pattern = _fire_all(sites, "hook_pattern", pattern.to(query.dtype))
    if dropout and module.training:
        pattern = nn.functional.dropout(pattern, p=dropout)
    out = torch.matmul(pattern, value).transpose(1, 2).contiguous()
    return out, pattern


def _fire_rows(module, site: AttentionSite, query: Tensor, key: Tensor, attention_mask, *, scaling=None) -> None:
    """Fire ``site``'s score and pattern hooks with its query rows only (read-only; see the module docstring)."""
    rows = site.rows
    b, h, q_len, d = query.shape
    if rows.shape[0] != b or (rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= q_len)):
        raise ValueError(f"{site.prefix}query_rows: rows of shape {tuple(rows.shape)} (max "
                         f"{int(rows.max()) if rows.numel() else None}) do not index this pass's {b} rows of "
                         f"{q_len} query positions")
    rows = rows.to(query.device)
    q = take_rows(query, rows)
    key, _ = _repeat_kv(query, key)
    if scaling is None:
        scaling = d ** -0.5
    scores = _apply_mask(torch.matmul(q, key.transpose(2, 3)) * scaling, attention_mask, rows=rows, q_len=q_len)
    for suffix in ("hook_attn_scores", "hook_pattern"):
        if not site.hooked(suffix):
            continue
        act = scores if suffix == "hook_attn_scores" else _softmax(scores, attention_mask is not None).to(query.dtype)
        if site.fire(suffix, act) is not act:
            raise RuntimeError(f"a hook at {site.prefix}{suffix} returned a replacement inside query_rows: there the "
                               "pattern is read beside the fast attention path and cannot be changed; patch it "
                               "outside query_rows")


def _apply_mask(scores: Tensor, mask, *, rows: Tensor | None = None, q_len: int | None = None) -> Tensor:
    """Apply an SDPA-style mask (None = causal, bool = keep, float = additive) with -inf where masked. ``rows
    [batch, R]``: the scores hold only these query rows (of ``q_len`` queries) and the mask's rows are picked to
    match."""
    k = scores.shape[-1]
    q = scores.shape[-2] if rows is None else q_len
    if mask is None:
        query = torch.arange(q, device=scores.device)[:, None] if rows is None else rows[:, None, :, None]
        keep = torch.arange(k, device=scores.device) <= query + (k - q)
        return scores.masked_fill(~keep, float("-inf"))
    mask = mask[..., :k]
    if rows is not None:
        mask = take_rows(mask.expand(rows.shape[0], mask.shape[1], q, k), rows)
    if mask.dtype == torch.bool:
        return scores.masked_fill(~mask, float("-inf"))
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
