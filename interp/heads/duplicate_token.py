"""Duplicate-token heads: heads whose query attends to the earlier occurrences of its own token.

Score (TransformerLens ``head_detector``; named in Wang et al. 2022's IOI circuit and Olsson et al. 2022): the mean,
over the positions ``i`` whose token occurred earlier, of the attention mass ``Σ_{j < i, x_j = x_i} A_h[i, j]``. On
the default probe (repeated random tokens, each half of distinct tokens) the only earlier occurrence of a
second-half token is its copy one period back.
"""

from __future__ import annotations

import torch
from torch import Tensor

from interp.heads.passes import attention_pass, check_attention, mask_score
from interp.heads.probes import repeated_tokens

__all__ = ["expected_pattern", "score", "score_patterns"]


def expected_pattern(tokens: Tensor) -> Tensor:
    """``M[b, i, j] = (j < i) and x_j == x_i`` ``[batch, query, key]`` (bool): the earlier occurrences of each
    position's token."""
    T = tokens.shape[1]
    same = tokens[:, :, None] == tokens[:, None, :]
    earlier = torch.ones(T, T, dtype=torch.bool, device=tokens.device).tril(-1)
    return same & earlier


def score_patterns(pattern: Tensor, tokens: Tensor) -> Tensor:
    """Duplicate-token score per head from ``pattern [..., batch, head, query, key]`` -> ``[..., head]``."""
    return mask_score(pattern, expected_pattern(tokens))


def score(model, tokens: Tensor | None = None, *, batch: int = 8, half: int = 40, seed: int = 0) -> Tensor:
    """Duplicate-token score ``[n_layers, n_heads]`` (module docstring). ``tokens`` default: repeated random tokens
    (``batch`` rows, ``2 * half`` tokens) drawn with ``seed``; a probe must repeat at least one token."""
    check_attention(model, "duplicate_token.score")
    tokens = repeated_tokens(model, batch, half, seed=seed) if tokens is None else model.check_tokens(tokens)
    per_layer, _, _ = attention_pass(model, tokens, lambda layer, p: score_patterns(p, tokens))
    return torch.stack(per_layer).cpu()
