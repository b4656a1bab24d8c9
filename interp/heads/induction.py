"""Induction heads (Olsson et al. 2022, "In-context Learning and Induction Heads"): on ``[A][B] ... [A] -> [B]``
a head at the second ``[A]`` attends to the token after the first ``[A]`` (prefix matching) and raises the logit of
that token (copying). The two are measured and reported separately.

Probe: repeated random tokens ``[r_1..r_L, r_1..r_L]`` (BOS first when the tokenizer has one), each half of distinct
tokens, so the only earlier occurrence of a second-half token is its copy ``L`` back.

- **Prefix-matching score**: ``mean_i A_h[i, i - L + 1]`` over the second half: the mass on the token after the
  earlier occurrence of the current token. :func:`expected_pattern` is the general induction mask
  (``x_{j-1} = x_i``), which on this probe is exactly that offset.
- **Copying score** (direct logit effect): at each second-half position i, the head's output
  ``r_h(i) = z_h(i) W_O[h]`` changes the final normalised residual by
  ``e_h(i) = ln_final(F_i) - ln_final(F_i - r_h(i))`` (``F_i`` the final residual stream; exact through the final
  norm), and the score is the mean over i of ``e_h(i) · W_U[:, x_{i+1}]`` minus the mean of ``e_h(i) · W_U[:, v]``
  over the row's probe tokens v: logits, > 0 when the head raises the attended token (``x_{i-L+1} = x_{i+1}``) above
  the other tokens in context. It needs a per-head output matrix ``W_O``: models without attention heads (Mamba)
  raise a ``CapabilityError``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from interp.errors import CapabilityError
from interp.heads.passes import attention_pass, check_attention, mask_score
from interp.heads.probes import repeated_tokens

__all__ = ["expected_pattern", "score", "score_patterns", "copying_score", "copying_from_cache", "second_half_rows"]


def expected_pattern(tokens: Tensor) -> Tensor:
    """The induction mask ``M[b, i, j] = (1 <= j <= i) and x_{j-1} == x_i`` ``[batch, query, key]`` (bool): the
    positions right after earlier occurrences of the current token (Olsson et al. 2022; the order-1 case of
    :func:`interp.heads.ngram.expected_pattern`)."""
    T = tokens.shape[1]
    prev_match = torch.zeros(tokens.shape[0], T, T, dtype=torch.bool, device=tokens.device)
    prev_match[:, :, 1:] = tokens[:, :, None] == tokens[:, None, :-1]
    causal = torch.ones(T, T, dtype=torch.bool, device=tokens.device).tril()
    return prev_match & causal


def score_patterns(pattern: Tensor, tokens: Tensor) -> Tensor:
    """Prefix-matching score per head from ``pattern [..., batch, head, query, key]`` -> ``[..., head]``."""
    return mask_score(pattern, expected_pattern(tokens))


def second_half_rows(tokens: Tensor, half: int) -> tuple[Tensor, Tensor]:
    """``(rows, targets)``, each ``[batch, half - 1]``: the second-half positions whose next token is predictable by
    induction (all but the last), and those next tokens."""
    b, T = tokens.shape
    off = T - 2 * half
    if off < 0:
        raise ValueError(f"tokens has {T} positions; a repeated probe with half={half} needs at least {2 * half}")
    rows = torch.arange(off + half, off + 2 * half - 1, device=tokens.device).expand(b, -1)
    return rows, tokens.gather(1, rows + 1)


def copying_from_cache(model, tokens: Tensor, half: int, z: list[Tensor], resid: Tensor) -> Tensor:
    """Copying score ``[n_layers, n_heads]`` (module docstring) from each layer's ``z [batch, pos, head, d_head]`` and
    the final residual ``resid [batch, pos, d_model]`` of one pass over the repeated probe."""
    if not model.has_attention_heads:
        raise CapabilityError(f"the copying score needs per-head output matrices (W_O); this {model.arch} model has "
                              "no attention heads")
    rows, targets = second_half_rows(tokens, half)
    off = tokens.shape[1] - 2 * half
    W_U = model.W_U.float()
    idx = rows[..., None].expand(-1, -1, resid.shape[-1])
    F = resid.gather(1, idx).float()  # [b, R, d]
    base = model.apply_ln_final(F)
    u_target = W_U[:, targets]  # [d, b, R]
    u_context = W_U[:, tokens[:, off:off + half]].mean(-1)  # [d, b]: mean unembedding of the row's probe tokens
    W_O = model.W_O.float()
    out = []
    for layer in range(model.n_layers):
        zl = z[layer].float().gather(1, rows[..., None, None].expand(-1, -1, *z[layer].shape[2:]))  # [b, R, H, dh]
        r = torch.einsum("brhk,hkd->brhd", zl, W_O[layer])
        e = base[:, :, None] - model.apply_ln_final(F[:, :, None] - r)  # [b, R, H, d]
        gain = torch.einsum("brhd,dbr->brh", e, u_target) - torch.einsum("brhd,db->brh", e, u_context)
        out.append(gain.mean((0, 1)))
    return torch.stack(out).cpu()


def score(model, tokens: Tensor | None = None, *, batch: int = 8, half: int = 40, seed: int = 0) -> Tensor:
    """Prefix-matching score ``[n_layers, n_heads]`` on repeated random tokens (Olsson et al. 2022; module
    docstring). ``tokens`` default: ``batch`` rows of ``2 * half`` repeated tokens drawn with ``seed``."""
    check_attention(model, "induction.score")
    tokens = repeated_tokens(model, batch, half, seed=seed) if tokens is None else model.check_tokens(tokens)
    per_layer, _, _ = attention_pass(model, tokens, lambda layer, p: score_patterns(p, tokens))
    return torch.stack(per_layer).cpu()


def copying_score(model, *, batch: int = 8, half: int = 40, seed: int = 0) -> Tensor:
    """Copying score ``[n_layers, n_heads]`` (direct logit effect on the attended token; module docstring) on
    ``batch`` rows of repeated random tokens drawn with ``seed``. Needs attention heads (``W_O``)."""
    if not model.has_attention_heads:
        raise CapabilityError(f"the copying score needs per-head output matrices (W_O); this {model.arch} model has "
                              "no attention heads")
    tokens = repeated_tokens(model, batch, half, seed=seed)
    z_sites = [model.components(layer)["z"] for layer in range(model.n_layers)]
    with torch.no_grad():
        resid, cache = model.run_with_cache(tokens, names_filter=z_sites, stop_at_layer=model.n_layers)
        return copying_from_cache(model, tokens, half, [cache[s] for s in z_sites], resid)
