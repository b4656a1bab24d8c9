"""Attribution patching: a first-order estimate of every activation patch from one forward and one backward pass.

Nanda 2023, "Attribution Patching: Activation Patching At Industrial Scale" (also Syed et al. 2023): patching
activation ``a`` from its corrupted value ``a*`` to its clean value ``a'`` changes the metric by about
``∂metric/∂a (a*) · (a' - a*)``. The gradients are taken on the corrupted run, so one forward pass with the chosen
sites kept in the graph and one backward pass give the estimate for every cell of every site, in the layout of
the exact patching functions (:mod:`interp.patching.activation`): the dot product is summed over the dimensions a
cell covers (``d_model`` for a position, positions and ``d_head`` for a whole head, keys for a pattern row).

Memory: only the chosen sites are kept (plus what autograd needs); ``batch_size`` bounds the prompts per
forward/backward pass, and their contributions are summed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from interp.models.loading import as_hooked
from interp.patching.inputs import pair_tokens
from interp.patching.metrics import bind_metric, evaluate_metric
from interp.patching.sites import SiteKind, site_kind

__all__ = ["attribution_patch"]


def _reduce(kind: SiteKind, prod: Tensor) -> Tensor:
    """Sum ``grad * delta`` ``[batch, ...]`` over the batch and the dimensions one cell covers."""
    if kind.pattern:  # [b, head, q, k]
        return prod.sum(dim=(0, 2, 3)) if kind.axes == ("layer", "head") else prod.sum(dim=(0, 3))
    if kind.axes == ("layer", "pos"):
        return prod.flatten(2).sum(dim=(0, 2))
    if kind.axes == ("layer", "pos", "head"):
        return prod.flatten(3).sum(dim=(0, 3))
    return prod.flatten(3).sum(dim=(0, 1, 3))  # ("layer", "head"): positions and d_head


def attribution_patch(model, clean_tokens, corrupt_tokens, metric, sites: str | Sequence[str] = ("resid",), *,
                      layers: Sequence[int] | None = None, batch_size: int | None = None) -> dict[str, Tensor]:
    """Estimated metric change of every activation patch at ``sites`` (keywords of
    :data:`interp.patching.SITES`), each in the layout exact patching returns (e.g. ``"resid"``:
    ``[layer, pos]``, ``"heads"``: ``[layer, head]``), as ``{site: Tensor}``.

    The estimate of cell c is ``mean over prompts of grad_c · (clean_c - corrupt_c)``, the gradient of the metric
    on the corrupted run (Nanda 2023); compare it with ``patch_*(...) - metric(corrupted logits).mean()``.
    ``metric(logits) -> Tensor[n]`` as for exact patching; ``batch_size`` prompts per forward/backward pass.
    """
    model = as_hooked(model, "attribution_patch")
    keys = [sites] if isinstance(sites, str) else list(sites)
    if not keys:
        raise ValueError("sites is empty; pass at least one site keyword, e.g. 'resid'")
    kinds = [site_kind(model, key, "sites") for key in keys]
    clean, corrupt = pair_tokens(model, clean_tokens, corrupt_tokens)
    n = clean.shape[0]
    layers = model.check_layers(layers)
    metric = bind_metric(metric, model)
    names = {(k.key, layer): model.components(layer)[k.role] for k in kinds for layer in layers}
    unique = sorted(set(names.values()))
    step = n if batch_size is None else batch_size
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"batch_size must be a positive int (prompts per pass); got {batch_size!r}")
    totals: dict[tuple[str, int], Tensor] = {}
    leaf = [("hook_embed", lambda act, hook: act.detach().requires_grad_())] \
        if "hook_embed" in model.site_names() else []
    for start in range(0, n, step):
        rows = slice(start, min(n, start + step))
        with torch.no_grad():
            _, clean_cache = model.run_with_cache(clean[rows], names_filter=unique)
        with torch.enable_grad():
            logits, cache = model.run_with_cache(corrupt[rows], names_filter=unique, grad=True, fwd_hooks=leaf)
            value = evaluate_metric(metric, logits, logits.shape[0]).sum() / n
            acts = [cache[name] for name in unique]
            grads = torch.autograd.grad(value, acts, allow_unused=True)
        grad_of = {name: g for name, g in zip(unique, grads)}
        for (key, layer), name in names.items():
            kind = next(k for k in kinds if k.key == key)
            g = grad_of[name]
            if g is None:  # the metric does not depend on this site (e.g. a position after the one it reads)
                g = torch.zeros_like(cache[name])
            part = _reduce(kind, (g * (clean_cache[name] - cache[name].detach())).float())
            totals[(key, layer)] = part if (key, layer) not in totals else totals[(key, layer)] + part
    return {k.key: torch.stack([totals[(k.key, layer)] for layer in layers]).detach().cpu() for k in kinds}
