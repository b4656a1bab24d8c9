"""Forward passes the detectors share: one pass that reduces every layer's attention pattern on the fly (so no
``[layer, batch, head, query, key]`` tensor is kept), only the query rows a score reads where the model can
(``has_query_rows``), logits at chosen rows only, and a log of passes per stage.

:func:`plain_passes` turns every shortcut of the detectors off (full patterns, every ablation condition run from the
tokens): the reference the fast paths are tested and benchmarked against.

Attention comes from the ``HookedModel`` contract: transformers' softmax patterns (the ``pattern`` component,
hooked) or, for models with ``has_implicit_attention`` (Mamba), ``model.attention_patterns(..., normalize=True)``
(Ali et al. 2024: rows of mean |α| normalised to sum 1).
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from interp.errors import CapabilityError
from interp.models.attention import take_rows

__all__ = ["mask_score", "attention_pass", "logits_from_resid", "unembed", "PassLog", "check_attention", "plain_passes",
           "shortcuts"]

_PLAIN = contextvars.ContextVar("interp_heads_plain_passes", default=False)


@contextmanager
def plain_passes() -> Iterator[None]:
    """Within the block, head detection takes no shortcut: full attention patterns are computed and indexed (no
    ``query_rows``), and every validation condition runs all blocks from the tokens (no shared prefix). Results
    equal the default's (to float rounding); this is the reference ``bench/heads.py`` and the tests compare with."""
    token = _PLAIN.set(True)
    try:
        yield
    finally:
        _PLAIN.reset(token)


def shortcuts() -> bool:
    """False inside :func:`plain_passes`."""
    return not _PLAIN.get()

# Implicit attention holds layer * batch * head * T^2 numbers; layers are taken in groups under this budget.
_IMPLICIT_ELEMENTS = 2**26


def check_attention(model, what: str) -> None:
    """Raise a ``CapabilityError`` naming ``what`` when the model has neither attention heads nor implicit attention."""
    if not (model.has_attention_heads or model.has_implicit_attention):
        raise CapabilityError(f"{what} needs attention patterns; this {model.arch} model has neither attention heads "
                              "nor implicit attention (see has_attention_heads, has_implicit_attention)")


def mask_score(pattern: Tensor, mask: Tensor) -> Tensor:
    """Mean attention mass on a target mask: ``pattern [..., batch, head, query, key]``, ``mask [batch, query, key]``
    (bool) -> ``[..., head]``: for each head, the mean over the (batch, query) rows that have at least one target of
    ``Σ_k A[q, k] M[q, k] / Σ_k A[q, k]``. Rows without a target are left out; a mask without any target raises."""
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor; got {mask.dtype}")
    if pattern.shape[-3:] != (pattern.shape[-3], *mask.shape[-2:]) or pattern.shape[-4] != mask.shape[0]:
        raise ValueError(f"pattern {tuple(pattern.shape)} and mask {tuple(mask.shape)} disagree: expected "
                         "pattern [..., batch, head, query, key] and mask [batch, query, key]")
    rows = mask.any(-1)  # [b, q]
    n = int(rows.sum())
    if n == 0:
        raise ValueError("the target mask has no row with a target; the probe input cannot score this pattern")
    p = pattern.float()
    on = (p * mask[:, None].to(p.dtype)).sum(-1)
    total = p.sum(-1).clamp_min(torch.finfo(p.dtype).tiny)
    frac = (on / total) * rows[:, None].to(p.dtype)
    return frac.sum((-1, -3)) / n


def attention_pass(
    model, tokens: Tensor, reduce: Callable[[int, Tensor], Any], *, cache: Sequence[str] = (),
    attention_mask: Tensor | None = None, rows: Tensor | None = None, log: PassLog | None = None, stage: str = "",
) -> tuple[list[Any], Tensor, Any]:
    """Run ``tokens`` once and call ``reduce(layer, pattern [batch, head, query, key])`` for every layer.

    ``rows [batch, R]``: only these query positions are read; ``reduce`` then gets ``[batch, head, R, key]``
    (computed beside the fast attention path on models with ``has_query_rows``, else indexed from the full pattern).
    Returns ``(per_layer, resid, cache)``: the reductions in layer order, the residual stream after the last block
    ``[batch, pos, d_model]`` (for :func:`logits_from_resid`), and an ``ActivationCache`` of the ``cache`` sites.
    Transformers: one pass, the patterns reduced inside their hooks. Implicit attention: the patterns of groups of
    layers from ``model.attention_patterns``, then one pass for the residual (and ``cache``).
    """
    check_attention(model, "attention_pass")
    per_layer: list[Any] = [None] * model.n_layers
    fast_rows = rows is not None and model.has_attention_heads and model.has_query_rows and shortcuts()
    if rows is not None and not fast_rows:
        full_reduce = reduce

        def reduce(layer: int, pattern: Tensor) -> Any:
            return full_reduce(layer, take_rows(pattern, rows.to(pattern.device)))

    if model.has_attention_heads:
        def hook(pattern: Tensor, *, hook) -> None:
            per_layer[hook.layer] = reduce(hook.layer, pattern.detach())

        hooks = [(model.components(layer)["pattern"], hook) for layer in range(model.n_layers)]
        with model.query_rows(rows) if fast_rows else contextlib.nullcontext():
            resid, store = model.run_with_cache(tokens, names_filter=list(cache), fwd_hooks=hooks,
                                                attention_mask=attention_mask, stop_at_layer=model.n_layers)
        if log is not None:
            log.forward(stage, tokens)
        return per_layer, resid, store
    b, T = tokens.shape
    group = max(1, _IMPLICIT_ELEMENTS // max(1, b * model.n_heads * T * T))
    for start in range(0, model.n_layers, group):
        layers = list(range(start, min(model.n_layers, start + group)))
        pats = model.attention_patterns(tokens, layers, normalize=True, attention_mask=attention_mask)
        if log is not None:
            log.forward(stage, tokens)
        for i, layer in enumerate(layers):
            per_layer[layer] = reduce(layer, pats[i])
        del pats
    resid, store = model.run_with_cache(tokens, names_filter=list(cache), attention_mask=attention_mask,
                                        stop_at_layer=model.n_layers)
    if log is not None:
        log.forward(stage, tokens)
    return per_layer, resid, store


def logits_from_resid(model, resid: Tensor, rows: Tensor) -> Tensor:
    """Logits ``[batch, R, d_vocab]`` at positions ``rows [batch, R]`` from the final residual stream (the contract:
    ``logits = apply_ln_final(resid) @ W_U + b_U``), without unembedding every position."""
    idx = rows.to(resid.device)[..., None].expand(-1, -1, resid.shape[-1])
    return unembed(model, resid.gather(1, idx))


def unembed(model, resid: Tensor) -> Tensor:
    """Float32 logits ``[..., d_vocab]`` of final residual-stream vectors ``[..., d_model]``:
    ``apply_ln_final(resid) @ W_U + b_U`` (the contract)."""
    return model.apply_ln_final(resid).float() @ model.W_U.float() + model.b_U.float()


@dataclass
class PassLog:
    """Forward passes, tokens and seconds per stage of a detection run (``detect`` fills one; ``bench/heads.py``
    prints it). A generation counts its prefill and each new token as one pass each. ``tokens`` counts token
    positions times the fraction of the blocks run (a pass that starts at block 20 of 30 counts a third of its
    positions)."""

    stages: dict[str, dict[str, float]] = field(default_factory=dict)

    def _entry(self, stage: str) -> dict[str, float]:
        return self.stages.setdefault(stage, {"passes": 0, "tokens": 0, "seconds": 0.0})

    def forward(self, stage: str, tokens: Tensor | int, n: int = 1, blocks: float = 1.0) -> None:
        """Count ``n`` forward passes over ``tokens`` (a tensor, or a number of token positions) through the
        fraction ``blocks`` of the model's blocks."""
        e = self._entry(stage)
        e["passes"] += n
        e["tokens"] += (int(tokens.numel()) if isinstance(tokens, Tensor) else int(tokens)) * blocks

    @contextmanager
    def timed(self, stage: str):
        """Add the wall time of the block to ``stage``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self._entry(stage)["seconds"] += time.perf_counter() - start

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {k: dict(v) for k, v in self.stages.items()}
