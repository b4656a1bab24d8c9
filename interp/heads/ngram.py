"""n-gram heads (Akyürek et al. 2024, "In-Context Language Learning: Architectures and Algorithms"): higher-order
induction heads, which attend to the positions whose preceding ``k`` tokens match the last ``k`` tokens.

Order-k match mask: ``M_k[i, j] = 1`` iff ``j <= i`` and ``x_{j-1-m} = x_{i-m}`` for ``m = 0..k-1`` (``k = 1`` is
the induction mask). Order-k score ``S_k(h) = Σ A_h ⊙ M_k / Σ A_h`` averaged over the query rows with at least one
order-k match. An ideal order-k head attends uniformly over its matches, so ``S_j = 1`` for ``j <= k`` (the masks
nest: ``M_3 ⊆ M_2 ⊆ M_1``) and ``S_{k+1}`` is at chance.

Probe: sequences from random order-2 Markov chains over a few symbols (:func:`interp.heads.probes.markov_tokens`),
where order-1 matches are frequent but mostly not order-2 matches, so the orders disagree.

Reported per head: ``S_1``, ``S_2``, ``S_3``; the lift of each order,
``lift_k = (S_k - c_k) / (1 - c_k)`` with ``c_k`` the ``S_k`` of an ideal order-(k-1) head on the same probe
(uniform over its order-(k-1) matches; order 0 = uniform over earlier positions): 0 when the head does no better
than order k - 1, 1 for a perfect order-k head; the **best k**, the highest order whose lift is within 90% of the
head's largest lift (meaningful for heads that score well at all); and the kind's one score ``S_2`` (mass on order-2
matches: high for order-2 and order-3 heads, at the chance level ``c_2`` for a plain induction head).
"""

from __future__ import annotations

import torch
from torch import Tensor

from interp.heads.passes import attention_pass, check_attention, mask_score
from interp.heads.probes import markov_tokens

__all__ = ["ORDERS", "expected_pattern", "score", "score_patterns", "scores_by_order", "chance_levels", "best_order"]

ORDERS = (1, 2, 3)


def expected_pattern(tokens: Tensor, k: int = 2) -> Tensor:
    """The order-``k`` match mask ``M_k [batch, query, key]`` (bool; module docstring)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1; got {k!r}")
    b, T = tokens.shape
    eq = tokens[:, :, None] == tokens[:, None, :]  # eq[b, a, c] = x_a == x_c
    mask = torch.ones(b, T, T, dtype=torch.bool, device=tokens.device).tril()
    for m in range(k):
        shifted = torch.zeros_like(mask)
        if T - 1 - m > 0:
            shifted[:, m:, 1 + m:] = eq[:, : T - m, : T - 1 - m]  # shifted[i, j] = x_{i-m} == x_{j-1-m}
        mask &= shifted
    return mask


def _ideal(tokens: Tensor, k: int) -> Tensor:
    """The ideal order-``k`` pattern ``[batch, 1, query, key]``: uniform over order-k matches (k = 0: over earlier
    positions); rows without a match are zero."""
    m = expected_pattern(tokens, k) if k else torch.ones(tokens.shape[1], tokens.shape[1], dtype=torch.bool,
                                                          device=tokens.device).tril().expand(tokens.shape[0], -1, -1)
    return (m / m.sum(-1, keepdim=True).clamp_min(1)).float()[:, None]


def chance_levels(tokens: Tensor) -> dict[str, float]:
    """``c_k`` of the module docstring: ``{"c1", "c2", "c3"}``, the ``S_k`` of an ideal order-(k-1) head on
    ``tokens`` (k = 1: a head attending uniformly over earlier positions). Orders without any match are left out."""
    out = {}
    for k in ORDERS:
        mk = expected_pattern(tokens, k)
        if bool(mk.any()):
            out[f"c{k}"] = float(mask_score(_ideal(tokens, k - 1), mk)[0])
    return out


def score_patterns(pattern: Tensor, tokens: Tensor, chance: dict[str, float] | None = None) -> dict[str, Tensor]:
    """Per head from ``pattern [..., batch, head, query, key]``: ``S1..S3`` and ``lift1..lift3`` (module docstring),
    each ``[..., head]``; orders without any match on ``tokens`` are NaN. ``chance``: :func:`chance_levels` of
    ``tokens`` (computed when None)."""
    chance = chance_levels(tokens) if chance is None else chance
    nan = pattern.new_full(pattern.shape[:-4] + pattern.shape[-3:-2], float("nan")).float()
    out = {}
    for k in ORDERS:
        mk = expected_pattern(tokens, k)
        out[f"S{k}"] = mask_score(pattern, mk) if bool(mk.any()) else nan
        c = chance.get(f"c{k}", float("nan"))
        out[f"lift{k}"] = (out[f"S{k}"] - c) / max(1.0 - c, 1e-6)
    return out


def best_order(by_order: dict[str, Tensor], tolerance: float = 0.9) -> Tensor:
    """The best k per head: the highest order whose lift is at least ``tolerance`` times the head's largest lift
    (module docstring), ``LongTensor[..., head]``."""
    lifts = torch.stack([by_order[f"lift{k}"] for k in ORDERS]).nan_to_num(float("-inf"))
    top = lifts.max(0).values
    ok = lifts >= torch.where(top > 0, tolerance * top, top)
    ranks = torch.arange(1, len(ORDERS) + 1).view(-1, *([1] * (lifts.ndim - 1)))
    return (ok * ranks).max(0).values


def scores_by_order(model, tokens: Tensor | None = None, *, batch: int = 8, length: int = 128, symbols: int = 6,
                    stickiness: float = 0.6, seed: int = 0) -> dict[str, Tensor]:
    """``{"S1", "S2", "S3", "lift1", "lift2", "lift3"}`` ``[n_layers, n_heads]`` and ``"best_k"`` (module docstring;
    Akyürek et al. 2024), on ``tokens`` or on ``batch`` Markov-chain rows of ``length`` tokens over ``symbols``
    symbols drawn with ``seed``."""
    check_attention(model, "ngram.score")
    if tokens is None:
        tokens = markov_tokens(model, batch, length, symbols=symbols, stickiness=stickiness, seed=seed)
    else:
        tokens = model.check_tokens(tokens)
    chance = chance_levels(tokens)
    per_layer, _, _ = attention_pass(model, tokens, lambda layer, p: score_patterns(p, tokens, chance))
    out = {key: torch.stack([d[key] for d in per_layer]).cpu() for key in per_layer[0]}
    out["best_k"] = best_order(out)
    return out


def score(model, tokens: Tensor | None = None, *, batch: int = 8, length: int = 128, symbols: int = 6,
          stickiness: float = 0.6, seed: int = 0) -> Tensor:
    """The n-gram kind's score ``S_2`` ``[n_layers, n_heads]``: attention mass on order-2 matches (module docstring;
    Akyürek et al. 2024). :func:`scores_by_order` gives every order and the best k."""
    return scores_by_order(model, tokens, batch=batch, length=length, symbols=symbols, stickiness=stickiness,
                           seed=seed)["S2"]
