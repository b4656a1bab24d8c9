"""Selective-scan algorithms for Mamba-1 and Mamba-2: sequential references and fast chunked versions.

The recurrence (Gu & Dao 2023, eq. 2a-2b with zero-order-hold Ā and Euler B̄, as in the reference code):

    h_t = Ā_t h_{t-1} + B̄_t x_t,    y_t = C_t h_t + D x_t,    Ā_t = exp(Δ_t A),    B̄_t = Δ_t B_t.

- Mamba-1: per channel d with a diagonal A[d, :] of size N, so the state is ``[batch, d_inner, N]``.
- Mamba-2 (Dao & Gu 2024, "Transformers are SSMs", SSD): A is a scalar per head, the state is
  ``[batch, H, P, N]``, and head h reads B/C of group ``h // (H // G)``.

Everything is computed in float32 (float64 if the inputs are float64). Decays are only ever exponentiated from
non-positive log-space sums (``Δ A <= 0``), so nothing overflows; underflow to 0 is the exact limit. The fast
scans exponentiate as ``exp2(log2(e) * s)`` (:data:`LOG2E`): the same value to a few ulps, but on this CPU build
``torch.exp2`` is ~3x faster than ``torch.exp`` and does not slow down ~10x on strongly negative or ``-inf``
arguments (measured: 262k float32 values, 75 us vs 225 us; at ``-inf`` 75 us vs 750 us).

On CPU without autograd the mixers run the fused C kernels of :mod:`interp.mamba.native` instead (same results,
tested against the same references); the torch scans here serve autograd, float64, CUDA and machines without a C
compiler.

Algorithms:

- ``*_scan_ref``: a Python loop over positions, the plain reference (tests only).
- :func:`diag_scan` (Mamba-1's fast path and per-step states): the recurrence by chunks of length L ~ sqrt(T),
  all chunks at once, in two passes with a pass over chunk boundaries between them: ~2 L + T/L Python steps
  instead of T, each on a block that stays in cache. Can return every state (written into one preallocated tensor).
- :func:`ssd_scan_chunked` (Mamba-2's fast path): chunked SSD (Dao & Gu 2024, section 6): the quadratic
  "attention" form inside each chunk with a stable segment sum, a recurrence over chunk states between chunks;
  never materialises per-step states. All contractions are batched matmuls.
- :func:`ssd_states_chunked` (Mamba-2's per-step states): one chunked SSD pass for y and the chunk start states,
  then one recurrence pass inside the chunks writing every state into one preallocated tensor.
- State patching: :func:`fire_states` finds the steps a ``hook_ssm_state`` hook changed, :func:`rescan_patched`
  takes each changed state as h_t and re-runs the recurrence after it, :func:`continue_from_patches` reads y out.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from interp.mamba.buffers import empty_large

__all__ = [
    "selective_scan_ref", "ssd_scan_ref", "diag_scan", "auto_chunk", "states_chunk", "group_to_heads",
    "selective_scan_chunked", "ssd_states_chunked", "ssd_scan_chunked", "mamba1_readout", "mamba2_readout",
    "changed_steps", "fire_states", "rescan_patched", "continue_from_patches", "states_with_grad",
]


LOG2E = 1.0 / math.log(2.0)
"""``log2(e)``: ``exp(s) == exp2(LOG2E * s)``; the fast scans scale log-decays by it once and use ``exp2``."""


def _dtype(*ts: Tensor) -> torch.dtype:
    out = torch.float32
    for t in ts:
        out = torch.promote_types(out, t.dtype)
    return out


def group_to_heads(t: Tensor, n_heads: int) -> Tensor:
    """``[b, T, G, N] -> [b, T, H, N]``: head h reads group ``h // (H // G)`` (Mamba-2's B and C)."""
    return t.repeat_interleave(n_heads // t.shape[2], dim=2)


# ---------------------------------------------------------------------------------------------- references
def selective_scan_ref(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
                       h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Mamba-1 scan, one position at a time. Shapes: x, dt ``[b, T, d]``; A ``[d, N]``; B, C ``[b, T, N]``;
    D ``[d]``; h0 ``[b, d, N]``. Returns ``(y [b, T, d], states [b, T, d, N])`` (``states[:, t]`` is h_t)."""
    f = _dtype(x, dt, A, B, C)
    x, dt, A, B, C, D = (t.to(f) for t in (x, dt, A, B, C, D))
    h = x.new_zeros(x.shape[0], x.shape[2], A.shape[1]) if h0 is None else h0.to(f)
    ys, hs = [], []
    for t in range(x.shape[1]):
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * x[:, t])[:, :, None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1) + D * x[:, t])
        hs.append(h)
    return torch.stack(ys, 1), torch.stack(hs, 1)


def ssd_scan_ref(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
                 h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Mamba-2 scan, one position at a time. Shapes: x ``[b, T, H, P]``; dt ``[b, T, H]``; A, D ``[H]``;
    B, C ``[b, T, G, N]``; h0 ``[b, H, P, N]``. Returns ``(y [b, T, H, P], states [b, T, H, P, N])``."""
    f = _dtype(x, dt, A, B, C)
    x, dt, A, B, C, D = (t.to(f) for t in (x, dt, A, B, C, D))
    n_heads = x.shape[2]
    B, C = group_to_heads(B, n_heads), group_to_heads(C, n_heads)
    h = x.new_zeros(*x.shape[:1], *x.shape[2:], B.shape[-1]) if h0 is None else h0.to(f)
    ys, hs = [], []
    for t in range(x.shape[1]):
        decay = torch.exp(dt[:, t] * A)[:, :, None, None]
        h = decay * h + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, :, None, :]
        ys.append((h * C[:, t, :, None, :]).sum(-1) + D[:, None] * x[:, t])
        hs.append(h)
    return torch.stack(ys, 1), torch.stack(hs, 1)


# ---------------------------------------------------------------------------------------------- chunked scan
def auto_chunk(length: int) -> int:
    """Chunk length for :func:`diag_scan`: about sqrt(T) (4..64), preferring a divisor of T (then no padding)."""
    target = min(64, max(4, round(math.sqrt(max(length, 1)))))
    near = [L for L in range(max(4, target // 2), min(64, 2 * target) + 1) if length % L == 0]
    return min(near, key=lambda L: abs(L - target)) if near else target


def states_chunk(length: int) -> int:
    """Chunk length for :func:`ssd_states_chunked`: the largest divisor of T in 32..64 (no padding, so the
    states are not a view), else ``min(64, T)``. Longer chunks mean fewer chunk-start states to materialise;
    measured fastest here at 64 (T 256 and 1024, N 128)."""
    return next((L for L in range(64, 31, -1) if length % L == 0), min(64, length))


def _chunks(t: Tensor, L: int, pad: int) -> Tensor:
    """``[b, T, ...] -> [b, (T + pad) / L, L, ...]``, padding with zeros at the end."""
    if pad:
        t = torch.nn.functional.pad(t, (0, 0) * (t.ndim - 2) + (0, pad))
    return t.reshape(t.shape[0], -1, L, *t.shape[2:])


def _chunk_starts(ends: Tensor, decay: Tensor, h0: Tensor) -> tuple[Tensor, Tensor]:
    """Chunk start states from chunk-local end states: ``start_0 = h0``, ``start_{c+1} = decay_c start_c + end_c``.

    ``ends [b, c, *S]``, ``decay [b, c, ...]`` broadcasting to ``ends``, ``h0 [b, *S]``. Returns ``(starts [b, c,
    *S], final state [b, *S])``; without autograd the starts go straight into one preallocated tensor.
    """
    nc = ends.shape[1]
    if torch.is_grad_enabled() and any(t.requires_grad for t in (ends, decay, h0)):
        starts, state = [], h0
        for c in range(nc):
            starts.append(state)
            state = torch.addcmul(ends[:, c], decay[:, c], state)
        return torch.stack(starts, 1), state
    starts = ends.new_empty(ends.shape)
    starts[:, 0] = h0
    for c in range(nc - 1):
        torch.addcmul(ends[:, c], decay[:, c], starts[:, c], out=starts[:, c + 1])
    return starts, torch.addcmul(ends[:, -1], decay[:, -1], starts[:, -1])


def diag_scan(a: Tensor, A: Tensor, u: Tensor, Bv: Tensor, C: Tensor | None, h0: Tensor | None = None,
              chunk_size: int | None = None,
              return_states: bool = False) -> tuple[Tensor | None, Tensor | None, Tensor]:
    """The diagonal recurrence ``h_t = exp(a_t A) ∘ h_{t-1} + u_t ∘ Bv_t``, ``y_t = sum_n h_t[..., n] C_t[..., n]``.

    ``a``, ``u``, ``Bv`` are ``[b, T, ...]`` and ``A`` is ``[...]``, all broadcasting to the state shape
    ``[b, T, *S, N]``; ``C`` is ``[b, T, *S[:-1], 1, N]``; ``h0`` is ``[b, *S, N]``; ``a A <= 0``.
    Returns ``(y [b, T, *S] (None if C is None), states [b, T, *S, N] or None, final state [b, *S, N])``.

    Equivalent to the loop over t. Computed by chunks of length L, all chunks at once: pass 1 runs every chunk
    from a zero state to get its end state; the chunk starts follow from ``start_{c+1} = exp(A sum_t a_t) start_c
    + end_c`` (the log-decay is linear in a); pass 2 reruns every chunk from its true start, reading y out (and
    the states, if asked). About 2 L + T / L Python steps, each on an in-cache ``[b, T / L, *S, N]`` block.
    """
    b, T = u.shape[:2]
    L = chunk_size or auto_chunk(T)
    pad = (-T) % L
    a, u, Bv = (_chunks(t, L, pad) for t in (a, u, Bv))
    C = None if C is None else _chunks(C, L, pad)
    C_t = None if C is None else C.unbind(2)
    nc = a.shape[1]
    shape = torch.broadcast_shapes(torch.broadcast_shapes(a.shape[3:], A.shape), u.shape[3:], Bv.shape[3:])
    # Without autograd: in-place updates, each step's decays exponentiated into one reused in-cache block
    # (measured faster here than one big exp over all steps). With autograd: out-of-place, all decays at once.
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (a, A, u, Bv, C, h0))
    A2 = A * LOG2E  # decays as exp2(a A2) == exp(a A): see LOG2E
    decays = torch.exp2(a * A2).unbind(2) if grad else None
    buf = None if grad else u.new_empty(torch.broadcast_shapes(a[:, :, 0].shape, A.shape))
    a_t, u_t, B_t = a.unbind(2), u.unbind(2), Bv.unbind(2)

    def step(h: Tensor, t: int) -> Tensor:
        if grad:
            return h * decays[t] + u_t[t] * B_t[t]
        return h.mul_(torch.mul(a_t[t], A2, out=buf).exp2_()).addcmul_(u_t[t], B_t[t])

    h = u.new_zeros(b, nc, *shape)
    for t in range(L):
        h = step(h, t)
    chunk_decay = torch.exp2(a.sum(2) * A2)
    start = u.new_zeros(b, *shape) if h0 is None else h0.to(u.dtype).expand(b, *shape)
    h, start = _chunk_starts(h, chunk_decay, start)
    ys: list[Tensor] = []
    kept: list[Tensor] = []
    # Without autograd, states go straight into one base tensor (not a view, when T is a multiple of L), so
    # that a cache can keep it without a copy.
    base = empty_large((b, nc * L, *shape), u.dtype, u.device) if return_states and not grad else None
    slots = base.view(b, nc, L, *shape).unbind(2) if base is not None else None
    for t in range(L):
        if slots is not None:  # h_t = Ā_t h_{t-1} + u_t B_t computed straight into its slot (no copy)
            h = torch.mul(h, torch.mul(a_t[t], A2, out=buf).exp2_(), out=slots[t]).addcmul_(u_t[t], B_t[t])
        else:
            h = step(h, t)
        if C is not None:
            ys.append(torch.einsum("...n,...n->...", h, C_t[t]))  # measured ~2x faster than matmul here
        if return_states and slots is None:
            kept.append(h)
    y = torch.stack(ys, 2).reshape(b, nc * L, *shape[:-1])[:, :T] if ys else None
    states = torch.stack(kept, 2).reshape(b, nc * L, *shape) if kept else base
    if states is not None and pad:
        states = states[:, :T]
    return y, states, start


def selective_scan_chunked(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
                           h0: Tensor | None = None, chunk_size: int | None = None,
                           return_states: bool = True) -> tuple[Tensor, Tensor | None, Tensor]:
    """Mamba-1 scan via :func:`diag_scan`. Shapes as :func:`selective_scan_ref`; returns
    ``(y [b, T, d], states [b, T, d, N] or None, final state [b, d, N])``."""
    f = _dtype(x, dt, A, B, C)
    x, dt, A, B, C = (t.to(f) for t in (x, dt, A, B, C))
    y, states, final = diag_scan(dt.unsqueeze(-1), A, (dt * x).unsqueeze(-1), B.unsqueeze(2), C.unsqueeze(2),
                                 h0, chunk_size, return_states)
    return torch.addcmul(y, D.to(f), x), states, final


def ssd_states_chunked(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
                       h0: Tensor | None = None, chunk_size: int | None = None,
                       return_states: bool = True) -> tuple[Tensor, Tensor | None, Tensor]:
    """Mamba-2 scan materialising every state. Shapes as :func:`ssd_scan_ref`; returns
    ``(y [b, T, H, P], states [b, T, H, P, N] or None, final state [b, H, P, N])``.

    One chunked SSD pass (:func:`_ssd`, chunk ``L = chunk_size or states_chunk(T)``) gives y and every chunk's
    start state; the states inside the chunks then follow by ``h_t = exp(Δ_t A) h_{t-1} + Δ_t x_t B_tᵀ`` from
    those starts, all chunks at once (L Python steps), each step written straight into its slot of one preallocated
    ``[b, T, H, P, N]`` tensor (not a view when L divides T, so a cache keeps it without a copy).
    """
    L = chunk_size or states_chunk(x.shape[1])
    y, final, parts = _ssd(x, dt, A, B, C, D, h0, L, keep=return_states)
    if not return_states:
        return y, None, final
    a2, u, Bc, starts = parts  # [b,c,g,r,l] (log2 units), [b,c,l,g,r,p], [b,c,l,g,n], [b,c,g,r,p,n]
    b, nc, G, R, P, N = starts.shape
    T = x.shape[1]
    decay = torch.exp2(a2).unbind(-1)  # each [b, c, g, r]
    u_t, B_t = u.unsqueeze(-1).unbind(2), Bc[:, :, :, :, None, None, :].unbind(2)
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (a2, u, Bc, starts))
    h, kept = starts, []
    base = None if grad else empty_large((b, nc * L, G * R, P, N), starts.dtype, starts.device)
    slots = None if grad else base.view(b, nc, L, G, R, P, N).unbind(2)
    for t in range(L):
        if grad:
            h = torch.addcmul(h * decay[t][..., None, None], u_t[t], B_t[t])
            kept.append(h)
        else:
            h = torch.mul(h, decay[t][..., None, None], out=slots[t]).addcmul_(u_t[t], B_t[t])
    states = torch.stack(kept, 2).reshape(b, nc * L, G * R, P, N) if grad else base
    return y, states[:, :T] if nc * L != T else states, final


def mamba1_readout(states: Tensor, x: Tensor, C: Tensor, D: Tensor) -> Tensor:
    """``y_t = C_t h_t + D x_t`` for Mamba-1: states ``[b, T, d, N]``, C ``[b, T, N]`` -> ``[b, T, d]``."""
    f = states.dtype
    return torch.einsum("btdn,btn->btd", states, C.to(f)) + D.to(f) * x.to(f)


def mamba2_readout(states: Tensor, x: Tensor, C: Tensor, D: Tensor) -> Tensor:
    """``y_t = C_t h_t + D x_t`` for Mamba-2: states ``[b, T, H, P, N]``, C ``[b, T, G, N]`` -> ``[b, T, H, P]``."""
    f = states.dtype
    Ch = group_to_heads(C.to(f), x.shape[2])
    return torch.einsum("bthpn,bthn->bthp", states, Ch) + D.to(f)[:, None] * x.to(f)


# ---------------------------------------------------------------------------------------------- SSD
def _segsum(a: Tensor) -> Tensor:
    """``out[..., i, j] = sum_{k=j+1..i} a[..., k]`` for j <= i, ``-inf`` above the diagonal.

    Summed directly (masked cumsum), not as a difference of cumsums, so it stays exact when the sums are large.
    """
    L = a.shape[-1]
    a = a.unsqueeze(-1).expand(*a.shape, L)  # [..., k, j]
    below = torch.tril(torch.ones(L, L, dtype=torch.bool, device=a.device), diagonal=-1)
    out = torch.cumsum(a.masked_fill(~below, 0.0), dim=-2)
    keep = torch.tril(torch.ones(L, L, dtype=torch.bool, device=a.device))
    return out.masked_fill(~keep, -math.inf)


def ssd_scan_chunked(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
                     h0: Tensor | None = None, chunk_size: int = 64) -> tuple[Tensor, Tensor]:
    """Mamba-2 chunked SSD. Shapes as :func:`ssd_scan_ref`; returns ``(y [b, T, H, P], final state [b, H, P, N])``.

    Inside a chunk: ``y_t = sum_{s<=t} (C_t . B_s) exp(sum_{k=s+1..t} Δ_k A) Δ_s x_s`` (the masked "attention"
    form ``M = L ∘ C Bᵀ``); between chunks the chunk-end states carry the rest.
    """
    y, final, _ = _ssd(x, dt, A, B, C, D, h0, chunk_size, keep=False)
    return y, final


def _ssd(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, h0: Tensor | None, L: int,
         keep: bool) -> tuple[Tensor, Tensor, tuple[Tensor, ...] | None]:
    """Chunked SSD (chunk length ``L``): ``(y, final state, parts)``; ``parts`` (only if ``keep``) is
    ``(log2-decays [b,c,g,r,l], Δx [b,c,l,g,r,p], B [b,c,l,g,n], chunk start states [b,c,g,r,p,n])``."""
    f = _dtype(x, dt, A, B, C)
    b, T, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    R = H // G
    pad = (-T) % L
    nc = (T + pad) // L
    x = x.to(f)
    u = dt.to(f).unsqueeze(-1) * x  # Δ x
    a = dt.to(f) * (A.to(f) * LOG2E)  # log2 Ā, [b, T, H]: every decay below is an exp2 (see LOG2E)
    B, C = B.to(f), C.to(f)
    if pad:
        u = torch.nn.functional.pad(u, (0, 0, 0, 0, 0, pad))
        a = torch.nn.functional.pad(a, (0, 0, 0, pad))
        B = torch.nn.functional.pad(B, (0, 0, 0, 0, 0, pad))
        C = torch.nn.functional.pad(C, (0, 0, 0, 0, 0, pad))
    u = u.reshape(b, nc, L, G, R, P)
    Bc, Cc = B.reshape(b, nc, L, G, N), C.reshape(b, nc, L, G, N)
    Bg, Cg = Bc.transpose(2, 3), Cc.transpose(2, 3)  # [b, c, g, l, n]
    ug = u.permute(0, 1, 3, 4, 2, 5)  # [b, c, g, r, l, p]
    a = a.reshape(b, nc, L, G, R).permute(0, 1, 3, 4, 2)  # [b, c, g, r, l]
    cum = torch.cumsum(a, dim=-1)
    # Diagonal blocks: y_t = sum_{s<=t} (C_t . B_s) 2^{sum_{k=s+1..t} a_k} u_s, as [b, c, g, r, t, p].
    scores = torch.exp2(_segsum(a)) * torch.matmul(Cg, Bg.transpose(-1, -2)).unsqueeze(3)  # [b, c, g, r, t, s]
    y_diag = torch.matmul(scores, ug)
    # Chunk-end states sum_s 2^{cum_end - cum_s} u_s B_sᵀ: decays folded into u first (the small operand).
    to_end = torch.exp2(cum[..., -1:] - cum)  # [b, c, g, r, s]
    us = (ug * to_end.unsqueeze(-1)).transpose(-1, -2).reshape(b, nc, G, R * P, L)
    chunk_states = torch.matmul(us, Bg).reshape(b, nc, G, R, P, N)
    chunk_decay = torch.exp2(cum[..., -1])  # [b, c, g, r]
    state = x.new_zeros(b, G, R, P, N, dtype=f) if h0 is None else h0.to(f).reshape(b, G, R, P, N)
    starts_t, state = _chunk_starts(chunk_states, chunk_decay[..., None, None], state)  # [b, c, g, r, p, n]
    # Off-diagonal: y_t += 2^{cum_t} C_t . start, one [l, n] x [n, r p] matmul per chunk and group.
    y_off = torch.matmul(Cg, starts_t.reshape(b, nc, G, R * P, N).transpose(-1, -2)).view(b, nc, G, L, R, P)
    decay_out = torch.exp2(cum).transpose(-1, -2).unsqueeze(-1)  # [b, c, g, l, r, 1]
    if torch.is_grad_enabled() and (y_off.requires_grad or y_diag.requires_grad):
        y_off = y_off * decay_out + y_diag.transpose(3, 4)
    else:  # in place: no autograd graph to keep
        y_off.mul_(decay_out).add_(y_diag.transpose(3, 4))
    y = y_off.transpose(2, 3).reshape(b, nc * L, H, P)[:, :T] + D.to(f)[:, None] * x
    return y, state.reshape(b, H, P, N), (a, u, Bc, starts_t) if keep else None


# ---------------------------------------------------------------------------------------------- patching
def changed_steps(before: Tensor, after: Tensor, block: int = 1 << 22) -> Tensor:
    """``[b, T]`` bool: whether ``after[r, t]`` differs anywhere from ``before[r, t]`` (exact; in blocks of steps
    so that no full-size temporary is allocated)."""
    b, T = before.shape[:2]
    step = max(1, block // max(before[:, :1].numel(), 1))
    return torch.cat([(after[:, i:i + step] != before[:, i:i + step]).reshape(b, -1, before[0, 0].numel()).any(-1)
                      for i in range(0, T, step)], dim=1)


def fire_states(fire: Callable[[Tensor], Tensor], states: Tensor,
                recompute: Callable[[], Tensor]) -> tuple[Tensor, Tensor]:
    """Fire a state hook on ``states``; return ``(states the hooks returned, changed [b, T])``.

    Finding the changed steps costs nothing when the hooks only read (the same tensor comes back and its
    version counter did not move), an exact comparison when they return a new tensor, and a recomputation of
    the original states (``recompute()``, bitwise the same) plus the comparison when they modified ``states``
    in place (or under ``torch.inference_mode``, where versions are not tracked). Writes that bypass autograd's
    version counter (``.data``, numpy views) are not seen.
    """
    tracked = not states.is_inference()
    version = states._version if tracked else None
    after = fire(states)
    same = tracked and states._version == version
    if after is states and same:
        return after, torch.zeros(states.shape[:2], dtype=torch.bool, device=states.device)
    before = states if same else recompute()
    return after, changed_steps(before, after)


def rescan_patched(after: Tensor, changed: Tensor, rerun: Callable[[int, int, Tensor], Tensor]) -> Tensor:
    """The states that follow when a hook returned the per-step states ``after``, changed at ``changed [b, T]``.

    Semantics: a patched state (``changed[r, t]``) is taken verbatim as h_t; every other step is recomputed by
    the recurrence from the (possibly patched) previous state. So patching step t changes h_t and every later
    state and leaves earlier states alone. ``rerun(start, end, h)`` must return the states of steps
    ``start..end-1`` of all rows starting from ``h`` (the state at ``start - 1``). ``after`` is not modified.
    """
    steps = changed.any(0).nonzero().flatten().tolist()
    if not steps:
        return after
    T = after.shape[1]
    out = after.clone()
    for k, p in enumerate(steps):
        q = steps[k + 1] if k + 1 < len(steps) else T  # next patched step
        if q == p + 1 and q < T and bool(changed[:, q].all()):
            continue  # every row patched the next step too: nothing to recompute
        end = min(q + 1, T)  # also recompute step q itself, for the rows that did not patch it
        if end <= p + 1:
            continue
        seg = rerun(p + 1, end, out[:, p].clone()).to(out.dtype)
        out[:, p + 1:q] = seg[:, :q - p - 1]
        if q < T:
            keep = ~changed[:, q]
            out[keep, q] = seg[keep, -1]
    untouched = changed.cumsum(1) == 0  # steps of a row before its own first patch keep their exact values
    out[untouched] = after[untouched]
    return out


def continue_from_patches(y: Tensor, after: Tensor, changed: Tensor, rerun: Callable[[int, int, Tensor], Tensor],
                          readout: Callable[[Tensor], Tensor]) -> Tensor:
    """The scan output once patched states are taken as h_t (:func:`rescan_patched`); ``y`` (the unpatched
    output) is kept exactly at the steps of each row before its first patch. ``readout(states) -> y``."""
    if not bool(changed.any()):
        return y
    new = readout(rescan_patched(after, changed, rerun)).to(y.dtype)
    untouched = changed.cumsum(1) == 0
    new[untouched] = y[untouched]
    return new


def states_with_grad(fire: Callable[[Tensor], Tensor], local: Tensor, a: Tensor, A: Tensor,
                     rerun: Callable[[int, int, Tensor], Tensor]) -> Tensor:
    """The per-step states for a state site under autograd: fire the hooks, return states whose gradients are
    right for every input and for the site itself.

    ``local [b, T, *S, N]`` is the write term B̄_t x_t (in the graph of x, Δ, B) and ``exp(a_t A)`` the decay
    (``a [b, T, ...]`` broadcasting to the state). The site's tensor is a fresh node holding the states' values;
    the returned states are ``G + sg(V - G)`` where ``V`` are the values :func:`rescan_patched` gives (patches
    carried forward) and ``G`` is the recurrence over ``local + (after - sg(after))`` (``after``: what the hooks
    returned, zero in value). So the gradient with respect to h_t is the total derivative under the patching
    semantics (a change to h_t is carried forward by Ā), and every input gets its gradient once, through ``local``
    and the decays, never twice through both the site and the scan.
    """
    ones = local.new_ones((*local.shape[:2], *([1] * (local.ndim - 2))))
    with torch.no_grad():
        _, values, _ = diag_scan(a, A, ones, local, None, return_states=True)
    node = values.requires_grad_().clone()  # not a leaf: hooks may write into it
    after, changed = fire_states(fire, node, lambda: values.detach())
    _, carried, _ = diag_scan(a, A, ones, local + (after - after.detach()), None, return_states=True)
    if not bool(changed.any()):
        return carried
    with torch.no_grad():
        patched = rescan_patched(after.detach(), changed, rerun)
    return carried + (patched - carried).detach()
