"""Implicit attention of Mamba's selective scan (Ali et al. 2024, "The Hidden Attention of Mamba Models";
Zimerman et al. 2024, "A Unified Implicit Attention Formulation for Gated-Linear Recurrent Sequence Models").

Unrolling the scan ``h_t = Ā_t h_{t-1} + B̄_t x_t``, ``y_t = C_t h_t + D x_t`` (Gu & Dao 2023) gives

    y_i = Σ_{j<=i} α_ij x_j + D x_i,    α_ij = C_i (Π_{k=j+1..i} Ā_k) B̄_j,    Ā_k = exp(Δ_k A),  B̄_j = Δ_j B_j,

where ``x`` is the scan input (``hook_conv_out``, after conv1d + SiLU). So

- Mamba-1: one α per channel d: ``α[d, i, j] = Σ_n C_i[n] exp(Σ_{k=j+1..i} Δ_k[d] A[d, n]) Δ_j[d] B_j[n]``;
- Mamba-2 (Dao & Gu 2024): one α per SSM head h, ``α = L ∘ (C Bᵀ) · Δ_j`` with ``L_ij = exp(Σ_{k=j+1..i} Δ_k A_h)``
  and B/C of the head's group ``h // (H // G)``.

Only the scan is unrolled: the conv1d (which mixes the ``d_conv`` previous tokens into x), the SiLU gate and
Mamba-2's gated RMSNorm are not folded in (Zimerman et al. fold them in).

Numerics: decays are computed in log space in float64 as differences of cumulative sums of ``Δ A <= 0``
(exponentiated only where j <= i, so nothing overflows; underflow to 0 is the exact limit), and α is returned
in float32 (float64 for a float64 model).

Memory: α is ``O(T²)`` per channel (Mamba-1) or head (Mamba-2): the result alone is ``batch * channels * T²``
numbers. Work is chunked over channels/heads so that each float64 intermediate holds at most
``chunk_elements`` numbers; sequences longer than ``max_len`` (default 2048) or results larger than
``max_elements`` raise a ``ValueError`` -- select fewer ``channels`` (or heads), fewer layers, or split the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from interp.checks import index_list

__all__ = [
    "mamba1_alpha", "mamba2_alpha", "implicit_attention", "attention_patterns", "ssm_params", "scan_sites",
]

MAX_LEN = 2048
MAX_ELEMENTS = 2**28
CHUNK_ELEMENTS = 2**24


def _segment_decay(cs: Tensor, rows: Tensor) -> Tensor:
    """``exp(cs[i] - cs[j])`` for rows i, all j <= i, zero for j > i. ``cs [b, T, *c]`` -> ``[b, *c, R, T]``."""
    T = cs.shape[1]
    ci = cs[:, rows].movedim(1, -1).unsqueeze(-1)  # [b, *c, R, 1]
    cj = cs.movedim(1, -1).unsqueeze(-2)  # [b, *c, 1, T]
    causal = torch.arange(T, device=cs.device)[None, :] <= rows[:, None]  # [R, T]
    return torch.exp((ci - cj).masked_fill(~causal, float("-inf")))


def _rows(rows: Sequence[int] | Tensor | None, T: int, device) -> Tensor:
    if rows is None:
        return torch.arange(T, device=device)
    if isinstance(rows, Tensor) and not (rows.is_floating_point() or rows.is_complex() or rows.dtype == torch.bool):
        r = rows.to(device=device, dtype=torch.long).flatten()
    else:  # floats and bools are not positions; no rows at all give an empty map (e.g. no flow to block)
        idx = [] if isinstance(rows, (list, tuple)) and not rows else index_list(rows, "rows", what="position")
        r = torch.tensor(idx, dtype=torch.long, device=device)
    if r.numel() and (int(r.min()) < 0 or int(r.max()) >= T):
        raise IndexError(f"rows must be query positions in 0..{T - 1}; got {r.tolist()}")
    return r


def mamba1_alpha(
    dt: Float[Tensor, "batch pos d_inner"],
    B: Float[Tensor, "batch pos d_state"],
    C: Float[Tensor, "batch pos d_state"],
    A: Float[Tensor, "d_inner d_state"],
    *,
    rows: Sequence[int] | Tensor | None = None,
) -> Float[Tensor, "batch d_inner rows pos"]:
    """Mamba-1 implicit attention ``α[b, d, i, j]`` for query rows ``i`` (all by default), in float64.

    ``dt`` is Δ after softplus (``hook_dt``), ``A = -exp(A_log)``. Pass a slice of channels in ``dt`` and ``A``
    to get those channels only. Equivalent to ``einsum('bin,bjn,bdij->bdij', C, B, exp(segsum(Δ A))) * Δ_j``.
    """
    f = torch.float64
    rows_t = _rows(rows, dt.shape[1], dt.device)
    dt, B, C, A = dt.to(f), B.to(f), C.to(f), A.to(f)
    cs = torch.cumsum(dt.unsqueeze(-1) * A, dim=1)  # [b, T, d, N]
    out = dt.new_zeros(dt.shape[0], dt.shape[2], len(rows_t), dt.shape[1])
    Ci = C[:, rows_t]  # [b, R, N]
    for n in range(A.shape[1]):  # one state dimension at a time keeps memory at b * d * R * T
        cb = Ci[:, :, n, None] * B[:, None, :, n]  # [b, R, T]
        out += _segment_decay(cs[..., n], rows_t) * cb[:, None]
    return out * dt.transpose(1, 2)[:, :, None, :]


def mamba2_alpha(
    dt: Float[Tensor, "batch pos n_heads"],
    B: Float[Tensor, "batch pos n_groups d_state"],
    C: Float[Tensor, "batch pos n_groups d_state"],
    A: Float[Tensor, " n_heads"],
    *,
    rows: Sequence[int] | Tensor | None = None,
    heads: Sequence[int] | Tensor | None = None,
) -> Float[Tensor, "batch heads rows pos"]:
    """Mamba-2 implicit attention ``α[b, h, i, j] = (C_i · B_j) exp(Σ_{k=j+1..i} Δ_k A_h) Δ_j`` in float64.

    ``dt``, ``A`` hold all ``H`` heads (head h reads group ``h // (H // G)``); ``heads`` selects some of them.
    Equivalent to the masked matrix ``M = L ∘ (C Bᵀ)`` of Dao & Gu 2024 (SSD), times Δ_j.
    """
    f = torch.float64
    H, G = dt.shape[2], B.shape[2]
    if H % G:
        raise ValueError(f"the number of heads ({H}) must be a multiple of the number of B/C groups ({G})")
    rows_t = _rows(rows, dt.shape[1], dt.device)
    heads_t = torch.arange(H, device=dt.device) if heads is None else torch.as_tensor(heads, device=dt.device)
    dt, A = dt.to(f)[:, :, heads_t], A.to(f)[heads_t]
    groups = heads_t // (H // G)
    cb = torch.einsum("bign,bjgn->bgij", C.to(f)[:, rows_t], B.to(f))[:, groups]  # [b, h, R, T]
    cs = torch.cumsum(dt * A, dim=1)  # [b, T, h]
    return cb * _segment_decay(cs, rows_t) * dt.transpose(1, 2)[:, :, None, :]


# ---------------------------------------------------------------------------------------------- model level
def ssm_params(model, layer: int) -> tuple[Tensor, Tensor]:
    """``(A, D)`` of a HookedMamba layer: ``A = -exp(A_log)`` (``[d_inner, N]`` or ``[H]``) and ``D``."""
    _check_mamba(model)
    layer = model.check_layers(layer)[0]
    mixer = model.blocks[layer].mixer
    A = mixer.A if hasattr(mixer, "A") else -torch.exp(mixer.A_log.float())  # the scan's own A (float32 math)
    return A.detach().to(torch.float64), mixer.D.detach()


def scan_sites(layer: int) -> dict[str, str]:
    """The site names of layer ``layer``'s scan: ``x`` (scan input), ``dt``, ``B``, ``C``, ``y``."""
    p = f"blocks.{layer}.mixer."
    return {"x": p + "hook_conv_out", "dt": p + "hook_dt", "B": p + "hook_B", "C": p + "hook_C", "y": p + "hook_y"}


def _spec(model):
    """The ``MambaSpec`` of a HookedMamba (shared by its mixers)."""
    return model.spec


def _check_mamba(model) -> None:
    if getattr(model, "arch", None) not in ("mamba", "mamba2"):
        raise TypeError(
            f"model must be a HookedMamba (arch 'mamba' or 'mamba2'); got arch {getattr(model, 'arch', None)!r}"
        )


def _check_budget(T: int, n_maps: int, batch: int, max_len: int, max_elements: int, what: str) -> None:
    if T > max_len:
        raise ValueError(
            f"tokens has {T} positions but max_len={max_len}: implicit attention needs O(T²) memory per {what}; "
            "split the sequence, select fewer channels/heads, or raise max_len"
        )
    if batch * n_maps * T * T > max_elements:
        raise ValueError(
            f"the result would hold batch {batch} * {n_maps} {what}s * {T}² = {batch * n_maps * T * T:,} numbers "
            f"> max_elements={max_elements:,}; pass fewer channels (channels=...), fewer layers, or a smaller batch"
        )


def _channel_list(channels, d_inner: int) -> list[int]:
    if channels is None:
        return list(range(d_inner))
    chans = index_list(channels, "channels")
    bad = [c for c in chans if not 0 <= c < d_inner]
    if bad:
        raise IndexError(f"channels must be a non-empty list of indices in 0..{d_inner - 1}; got bad {bad or chans}")
    return chans


def _alpha_from_cache(model, cache, layer: int, chans: list[int], chunk_elements: int) -> Tensor:
    s = scan_sites(layer)
    dt, B, C = cache[s["dt"]], cache[s["B"]], cache[s["C"]]
    A, _ = ssm_params(model, layer)
    out_dtype = torch.promote_types(B.dtype, torch.float32)  # the model's dtype (dt is float32 in any model)
    b, T = dt.shape[:2]
    step = max(1, chunk_elements // (b * T * T))
    parts = []
    for k in range(0, len(chans), step):
        idx = torch.tensor(chans[k:k + step], device=dt.device)
        if model.arch == "mamba":
            parts.append(mamba1_alpha(dt[..., idx], B, C, A[idx]).to(out_dtype))
        else:
            parts.append(mamba2_alpha(dt, B, C, A, heads=idx).to(out_dtype))
    return torch.cat(parts, dim=1)


def implicit_attention(
    model, tokens, layer: int, *, channels: int | Sequence[int] | None = None, max_len: int = MAX_LEN,
    max_elements: int = MAX_ELEMENTS, chunk_elements: int = CHUNK_ELEMENTS, attention_mask: Tensor | None = None,
) -> Float[Tensor, "batch channel query key"]:
    """α of layer ``layer`` for ``tokens``: ``[batch, channel, query, key]`` (Mamba-1, one map per channel of
    ``d_inner``, or of ``channels``) or ``[batch, head, query, key]`` (Mamba-2, per SSM head; ``channels``
    selects heads). Signed, lower triangular; ``hook_y[b, i] == Σ_j α[b, :, i, j] x_j + D x_i`` with
    ``x = hook_conv_out`` (per channel; per head and head channel p for Mamba-2).
    """
    _check_mamba(model)
    tokens = model.check_tokens(tokens)
    layer = model.check_layer(layer)
    spec = _spec(model)
    n = spec.d_inner if model.arch == "mamba" else spec.n_ssm_heads
    chans = _channel_list(channels, n)
    what = "channel" if model.arch == "mamba" else "head"
    _check_budget(tokens.shape[1], len(chans), tokens.shape[0], max_len, max_elements, what)
    s = scan_sites(layer)
    _, cache = model.run_with_cache(tokens, names_filter=[s["dt"], s["B"], s["C"]], attention_mask=attention_mask)
    return _alpha_from_cache(model, cache, layer, chans, chunk_elements)


def attention_patterns(
    model, tokens, layers: int | Sequence[int] | None = None, *, absolute: bool = True, normalize: bool = True,
    max_len: int = MAX_LEN, max_elements: int = MAX_ELEMENTS, chunk_elements: int = CHUNK_ELEMENTS,
    attention_mask: Tensor | None = None,
) -> Float[Tensor, "layer batch head query key"]:
    """Implicit-attention maps ``[layer, batch, head, query, key]`` with the same layout as
    ``HookedModel.attention_patterns``, so head detectors run on Mamba too.

    Head axis: Mamba-2: the SSM heads (``model.n_heads``). Mamba-1 has no heads: its ``d_inner`` channels are
    split into ``model.n_heads`` contiguous groups and each head's map is the mean over its channels.
    ``absolute=True`` (default) averages/returns ``|α|`` (signed α of different channels would cancel);
    ``absolute=False`` keeps signs. ``normalize=True`` (the default: the ``HookedModel.attention_patterns``
    contract) divides each query row by its sum (of ``|α|``), giving rows that sum to 1 like attention
    probabilities; ``normalize=False`` returns the raw mean ``|α|``.
    """
    _check_mamba(model)
    tokens = model.check_tokens(tokens)
    layers = model.check_layers(layers)
    b, T = tokens.shape
    _check_budget(T, len(layers) * model.n_heads, b, max_len, max_elements, "head")
    names = [s for layer in layers for k, s in scan_sites(layer).items() if k in ("dt", "B", "C")]
    _, cache = model.run_with_cache(tokens, names_filter=names, attention_mask=attention_mask)
    out = []
    for layer in layers:
        if model.arch == "mamba2":
            maps = _alpha_from_cache(model, cache, layer, list(range(model.n_heads)), chunk_elements)
            maps = maps.abs() if absolute else maps
        else:
            width = _spec(model).d_inner // model.n_heads
            heads = []
            for h in range(model.n_heads):
                a = _alpha_from_cache(model, cache, layer, list(range(h * width, (h + 1) * width)), chunk_elements)
                heads.append((a.abs() if absolute else a).mean(1))
            maps = torch.stack(heads, 1)
        if normalize:
            maps = maps / maps.abs().sum(-1, keepdim=True).clamp_min(torch.finfo(maps.dtype).tiny)
        out.append(maps)
    return torch.stack(out)
