"""Knocking out information flow from source positions to target positions, one API for transformers and Mamba.

Transformers (Geva et al. 2023, "Dissecting Recall of Factual Associations in Auto-Regressive Language Models",
section 5, attention knockout): in the chosen layers the attention scores of query i on key j
(``hook_attn_scores[:, :, i, j]``) are set to -inf for every target i and source j <= i, so every head of those
layers gives j zero weight at i.

Mamba (Endy et al. 2025, following Sharma et al. 2024): the shadow-state knockout of
:func:`interp.mamba.knockout.knockout` -- target rows read a state in which the blocked sources' inputs were never
written (``mamba_mode="ssm"``, the conv path stays open), or a shadow pass of the whole mixer without the sources
(``mamba_mode="mixer"``).

Positions are ints (negatives count from the end), lists of them, or bool masks ``[pos]`` / ``[batch, pos]`` (one
set per row: different rows may knock out different edges in one batched forward).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

from interp.errors import CapabilityError
from interp.positions import Positions, flow_mask

__all__ = ["knockout", "knockout_hooks", "edge_mask"]

edge_mask = flow_mask
"""``[batch, T, T]`` bool, ``[b, i, j]`` True where the edge j -> i is knocked out
(:func:`interp.positions.flow_mask`)."""


def _attention_pairs(model, sources, targets, layers) -> list[tuple[str, object]]:
    def block(scores: Tensor, *, hook) -> Tensor:
        b, _, q, k = scores.shape
        if q != k:
            raise ValueError(f"knockout at {hook.name}: expected a full [query = key] score matrix; got {q} x {k}")
        mask = edge_mask(sources, targets, b, k).to(scores.device)
        open_keys = (~mask & torch.ones(k, k, dtype=torch.bool, device=scores.device).tril()).any(-1)
        if not bool(open_keys.all()):
            rows, query = (~open_keys).nonzero()[0].tolist()
            raise ValueError(f"knockout would block every key of query {query} (batch row {rows}); keep at least one "
                             "source position open for each target (e.g. the target itself)")
        return scores.masked_fill(mask[:, None], float("-inf"))

    return [(model.components(layer)["attn_scores"], block) for layer in model.check_layers(layers)]


def knockout_hooks(model, sources: Positions, targets: Positions, layers: int | Sequence[int] | None = None, *,
                   mamba_mode: str = "ssm") -> list[tuple[str, object]]:
    """The ``(site, fn)`` pairs of :func:`knockout`, to combine with other hooks in ``model.hooks(...)``."""
    if model.has_attention_heads:
        if "attn_scores" not in model.components(0):
            raise CapabilityError(f"knockout: this {model.arch} model exposes no hook_attn_scores")
        return _attention_pairs(model, sources, targets, layers)
    if model.has_ssm_state:
        from interp.mamba.knockout import knockout_hooks as mamba_hooks

        return mamba_hooks(model, sources, targets, layers, mode=mamba_mode)
    raise CapabilityError(f"knockout: this {model.arch} model has neither attention heads nor an SSM state")


@contextmanager
def knockout(model, sources: Positions, targets: Positions, layers: int | Sequence[int] | None = None, *,
             mamba_mode: str = "ssm") -> Iterator[object]:
    """``with knockout(model, sources=[2, 3, 4], targets=[-1], layers=range(10, 19)): logits = model(tokens)``:
    every forward pass in the block has the information flow sources -> targets removed in ``layers`` (all by
    default): attention edges for transformers (Geva et al. 2023), the shadow state for Mamba (see the module
    docstring; ``mamba_mode`` is ``"ssm"`` or ``"mixer"``)."""
    with model.hooks(knockout_hooks(model, sources, targets, layers, mamba_mode=mamba_mode)):
        yield model
