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

How it is computed (:mod:`interp.mamba.alpha`): as chunked matrix products over the state, SSD-style, with float64
running sums of Δ, every decay factor <= 1 or bounded by a chunk's span (nothing overflows), exponentials and
products in the model's dtype (float32 for float32 models). The forward pass runs only as far as the last layer
asked for (it stops once that layer's Δ, B, C have been recorded).

From a cache (``cache=``, like TransformerLens' ``compute_effective_attention(cache, layer)``): Δ, B, C are read
from the ``blocks.{l}.mixer.hook_dt`` / ``hook_B`` / ``hook_C`` entries of an ``ActivationCache`` of this model
(``model.run_with_cache``; full site names only) and no forward pass runs; the result equals the one computed
from the same tokens, bit for bit. An ``ActivationCache`` recorded by another model object is refused; the cached
tensors are checked against the model's shapes (which also catches a plain mapping from a model of other widths)
and read detached.

Head-level maps (:func:`attention_patterns`) reduce while computing: Mamba-1's per-channel maps are averaged over
each head's channel group block by block, so memory is ``O(heads T²)``, never ``O(d_inner T²)``.

Memory: α is ``O(T²)`` per channel (Mamba-1) or head (Mamba-2): :func:`implicit_attention`'s result alone is
``batch * channels * T²`` numbers, :func:`attention_patterns`'s ``layers * batch * heads * T²``. Sequences longer
than ``max_len`` (default 2048) or results larger than ``max_elements`` (default 2^28 numbers, 1 GiB in float32)
raise a ``ValueError``: select fewer ``channels`` (or heads), fewer layers, split the batch, or raise the limit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from interp.cache import check_cache_args, check_cached_tokens, read_sites
from interp.checks import index_list
from interp.hooks import StopForward
from interp.mamba.alpha import BLOCK_ELEMENTS, mamba1_alpha, mamba1_group_maps, mamba2_alpha

__all__ = [
    "mamba1_alpha", "mamba2_alpha", "implicit_attention", "attention_patterns", "ssm_params", "scan_sites",
]

MAX_LEN = 2048
MAX_ELEMENTS = 2**28
PROGRESS_MIN_LEN = 512
"""Mamba-1 head maps of sequences at least this long show a progress bar (a few seconds per layer from T ~ 1024)."""
CHUNK_ELEMENTS = 2**24
"""Numbers per float64 block for callers that loop over channels themselves (:mod:`interp.mamba.knockout`)."""


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


def _scan_inputs(model, tokens: Tensor, layers: list[int],
                 attention_mask: Tensor | None = None) -> dict[int, tuple[Tensor, Tensor, Tensor]]:
    """``{layer: (Δ, B, C)}`` recorded at ``hook_dt``/``hook_B``/``hook_C``, running the forward only until the
    last of them has fired (no later layer, no LM head). With ``attention_mask``, Δ is zero at padded steps."""
    names = [scan_sites(layer)[k] for layer in layers for k in ("dt", "B", "C")]
    store: dict[str, Tensor] = {}

    def record(act: Tensor, *, hook) -> None:
        store[hook.name] = act.detach()
        if len(store) == len(names):
            raise StopForward(act)  # the model's own early stop: no later layer, no LM head

    with torch.no_grad(), model.hooks([(n, record) for n in names]):
        model(tokens, attention_mask=attention_mask, return_type=None)
    missing = [n for n in names if n not in store]
    if missing:
        raise RuntimeError(f"the forward pass did not fire {missing}; implicit attention needs these sites")
    return {layer: tuple(store[scan_sites(layer)[k]] for k in ("dt", "B", "C")) for layer in layers}


def _cached_scan_inputs(model, cache, layers: list[int], tokens,
                        fn: str) -> tuple[dict[int, tuple[Tensor, Tensor, Tensor]], int, int]:
    """``({layer: (Δ, B, C)}, batch, pos)`` read from ``cache`` (checked against the model's shapes and against
    ``tokens``, if given), without a forward pass."""
    names = [scan_sites(layer)[k] for layer in layers for k in ("dt", "B", "C")]
    filt = "lambda n: n.endswith(('mixer.hook_dt', 'mixer.hook_B', 'mixer.hook_C'))"
    tensors = dict(zip(names, read_sites(cache, names, fn, filt), strict=True))
    spec, first = model.spec, tensors[names[0]]
    if first.ndim < 2:
        raise ValueError(f"{fn}: cache[{names[0]!r}] has shape {tuple(first.shape)}; expected [batch, pos, ...]")
    b, T = first.shape[:2]
    if model.arch == "mamba":
        dims = {"dt": ((spec.d_inner,), "d_inner"), "B": ((spec.d_state,), "d_state"),
                "C": ((spec.d_state,), "d_state")}
    else:
        state = ((spec.n_groups, spec.d_state), "n_groups, d_state")
        dims = {"dt": ((spec.n_ssm_heads,), "heads"), "B": state, "C": state}
    for name, t in tensors.items():
        trailing, axes = dims[name.rsplit("hook_", 1)[1]]
        want = (b, T, *trailing)
        if tuple(t.shape) != want:
            raise ValueError(f"{fn}: cache[{name!r}] has shape {tuple(t.shape)}; this model expects [batch, pos, "
                             f"{axes}] = {want} (batch and pos of {names[0]!r}): is the cache from another model, "
                             "or from several runs?")
    check_cached_tokens(model, tokens, (b, T), fn, names[0])
    return {layer: tuple(tensors[scan_sites(layer)[k]] for k in ("dt", "B", "C")) for layer in layers}, b, T


def _dtype(B: Tensor) -> torch.dtype:
    """The compute and result dtype for a model whose B has ``B.dtype``: float32, or float64 for float64 models."""
    return torch.promote_types(B.dtype, torch.float32)


def implicit_attention(
    model, tokens, layer: int, *, channels: int | Sequence[int] | None = None, max_len: int = MAX_LEN,
    max_elements: int = MAX_ELEMENTS, chunk_elements: int = BLOCK_ELEMENTS, attention_mask: Tensor | None = None,
    cache: Mapping[str, Tensor] | None = None,
) -> Float[Tensor, "batch channel query key"]:
    """α of layer ``layer`` for ``tokens`` (Ali et al. 2024, "The Hidden Attention of Mamba Models"):
    ``[batch, channel, query, key]`` (Mamba-1, one map per channel of ``d_inner``, or of ``channels``) or
    ``[batch, head, query, key]`` (Mamba-2, per SSM head; ``channels`` selects heads). Signed, lower triangular;
    ``hook_y[b, i] == Σ_j α[b, :, i, j] x_j + D x_i`` with ``x = hook_conv_out`` (per channel; per head and head
    channel p for Mamba-2). In the model's dtype (float32, or float64 for a float64 model); ``chunk_elements``
    sizes the scratch block (a speed knob only).

    ``cache``: an ``ActivationCache`` recorded by this model (``model.run_with_cache(tokens)``, or with a
    ``names_filter`` keeping ``blocks.{layer}.mixer.hook_dt``, ``hook_B``, ``hook_C``; or a plain mapping from those
    full site names to tensors): Δ, B, C are read from it and no forward pass runs; the result equals
    ``implicit_attention(model, tokens, layer)`` bit for bit. ``tokens`` may then be None (given, they must have
    the cached batch and length); ``attention_mask`` is refused (the cache already holds its run, masked or not).
    Not differentiable either way (the cached tensors are read detached).
    """
    _check_mamba(model)
    fn = "implicit_attention"
    check_cache_args(fn, model, tokens, cache, attention_mask)
    if cache is None:
        tokens = model.check_tokens(tokens)
    layer = model.check_layer(layer)
    n = model.spec.d_inner if model.arch == "mamba" else model.spec.n_ssm_heads
    chans = _channel_list(channels, n)
    what = "channel" if model.arch == "mamba" else "head"
    if cache is None:
        _check_budget(tokens.shape[1], len(chans), tokens.shape[0], max_len, max_elements, what)
        dt, B, C = _scan_inputs(model, tokens, [layer], attention_mask)[layer]
    else:
        scans, b, T = _cached_scan_inputs(model, cache, [layer], tokens, fn)
        _check_budget(T, len(chans), b, max_len, max_elements, what)
        dt, B, C = scans[layer]
    A, _ = ssm_params(model, layer)
    A = A.to(dt.device)
    if model.arch == "mamba2":
        return mamba2_alpha(dt, B, C, A, heads=None if channels is None else chans, dtype=_dtype(B))
    if channels is not None:
        idx = torch.tensor(chans, device=dt.device)
        dt, A = dt[..., idx], A[idx]
    return mamba1_alpha(dt, B, C, A, dtype=_dtype(B), block_elements=chunk_elements)


def attention_patterns(
    model, tokens, layers: int | Sequence[int] | None = None, *, normalize: bool = True, absolute: bool = True,
    max_len: int = MAX_LEN, max_elements: int = MAX_ELEMENTS, chunk_elements: int = BLOCK_ELEMENTS,
    attention_mask: Tensor | None = None, cache: Mapping[str, Tensor] | None = None,
) -> Float[Tensor, "layer batch head query key"]:
    """Implicit-attention maps ``[layer, batch, head, query, key]`` (Ali et al. 2024) with the same layout as
    ``HookedModel.attention_patterns``, so head detectors run on Mamba too.

    Head axis: Mamba-2: the SSM heads (``model.n_heads``), map ``|α|``. Mamba-1 has no heads: its ``d_inner``
    channels are split into ``model.n_heads`` contiguous groups and a head's map is the mean over its channels of
    ``|α|`` (signed α of different channels would cancel), reduced while computing (memory ``O(heads T²)``; per
    channel α of a channel subset: :func:`implicit_attention` with ``channels=``). ``absolute=False`` keeps the
    signs (Mamba-1: mean of the signed α). ``normalize=True`` (the default: the ``HookedModel.attention_patterns``
    contract) divides each query row by the sum of its absolute values, so rows sum to 1 like softmax attention
    probabilities and maps compare across heads and layers; ``normalize=False`` returns the raw (mean) ``|α|``.
    Lower triangular, in the model's dtype. ``attention_mask`` (1 = real token): padded steps have Δ = 0, so their
    keys get α = 0 and a left-padded row's maps over its real tokens equal its unpadded run's.

    ``cache``: as for :func:`implicit_attention` (Δ, B, C of every layer in ``layers`` read from an
    ``ActivationCache`` of this model, no forward pass, the same result bit for bit; ``tokens`` may be None;
    no ``attention_mask``).
    """
    _check_mamba(model)
    fn = "attention_patterns"
    check_cache_args(fn, model, tokens, cache, attention_mask)
    if cache is None:
        tokens = model.check_tokens(tokens)
    layers = model.check_layers(layers)
    if cache is None:
        b, T = tokens.shape
        _check_budget(T, len(layers) * model.n_heads, b, max_len, max_elements, "head")
        scans = _scan_inputs(model, tokens, layers, attention_mask)
    else:
        scans, b, T = _cached_scan_inputs(model, cache, layers, tokens, fn)
        _check_budget(T, len(layers) * model.n_heads, b, max_len, max_elements, "head")
    result = None
    bar = tqdm(total=len(layers) * model.spec.d_inner, desc="implicit attention", unit="channel", leave=False,
               disable=model.arch != "mamba" or T < PROGRESS_MIN_LEN)
    with bar:
        for k, layer in enumerate(layers):
            dt, B, C = scans[layer]  # (not pop: a layer may be asked for twice)
            A, _ = ssm_params(model, layer)
            A = A.to(dt.device)
            if model.arch == "mamba2":
                maps = mamba2_alpha(dt, B, C, A, dtype=_dtype(B))
                maps = maps.abs_() if absolute else maps
            else:
                maps = mamba1_group_maps(dt, B, C, A, model.n_heads, absolute=absolute, dtype=_dtype(B),
                                         block_elements=chunk_elements, progress=bar.update)
            if normalize:
                norm = maps.sum(-1, keepdim=True) if absolute else maps.abs().sum(-1, keepdim=True)
                maps.div_(norm.clamp_min_(torch.finfo(maps.dtype).tiny))
            if result is None:
                result = maps.new_empty(len(layers), *maps.shape)
            result[k] = maps
    return result
