"""Previous-token heads: heads whose query at position i attends to position i - 1.

Score (as in TransformerLens's ``head_detector`` and Olsson et al. 2022, "In-context Learning and Induction Heads",
where previous-token heads feed induction heads through K-composition): ``mean_i A_h[i, i - 1]`` over the
positions ``i >= 1`` of the probe, on repeated random tokens by default (a previous-token head's behaviour does not
depend on the text). Values lie in [0, 1]; a head attending uniformly over 100 positions scores about 0.01-0.05.
"""

from __future__ import annotations

import torch
from torch import Tensor

from interp.heads.passes import attention_pass, check_attention, mask_score
from interp.heads.probes import repeated_tokens

__all__ = ["expected_pattern", "score", "score_patterns"]


def expected_pattern(tokens: Tensor) -> Tensor:
    """The ideal previous-token pattern ``[batch, query, key]`` (bool): ``M[i, i - 1] = 1`` for ``i >= 1``
    (Olsson et al. 2022). Depends only on the shape of ``tokens [batch, pos]``."""
    b, T = tokens.shape
    return torch.ones(T, T, dtype=torch.bool, device=tokens.device).tril(-1).triu(-1).expand(b, T, T)


def score_patterns(pattern: Tensor, tokens: Tensor) -> Tensor:
    """Previous-token score per head from ``pattern [..., batch, head, query, key]`` -> ``[..., head]``."""
    return mask_score(pattern, expected_pattern(tokens))


def score(model, tokens: Tensor | None = None, *, batch: int = 8, half: int = 40, seed: int = 0) -> Tensor:
    """Previous-token score ``[n_layers, n_heads]`` (see the module docstring; Olsson et al. 2022).

    ``tokens``: the probe ``[batch, pos]``; by default ``batch`` rows of repeated random tokens
    (:func:`interp.heads.probes.repeated_tokens`, ``2 * half`` tokens after BOS) drawn with ``seed``.
    """
    check_attention(model, "previous_token.score")
    tokens = repeated_tokens(model, batch, half, seed=seed) if tokens is None else model.check_tokens(tokens)
    per_layer, _, _ = attention_pass(model, tokens, lambda layer, p: score_patterns(p, tokens))
    return torch.stack(per_layer).cpu()
