"""The Mamba-2 mixer (SSD block) in plain torch, with hook sites.

Dao & Gu 2024, "Transformers are SSMs: Generalized Models and Efficient Algorithms Through Structured State Space
Duality", section 7 (the Mamba-2 block); numerics follow ``transformers``' ``Mamba2Mixer`` torch path
(``modeling_mamba2.py``): Δ = clamp(softplus(dt + dt_bias), time_step_limit), the gated RMSNorm with
``n_groups`` groups applied as ``norm(y * silu(z))`` (``norm_before_gate=False``). Parameter names match HF's.

Forward, with the sites it fires (under ``blocks.{l}.mixer.``; H heads of P channels, G groups, N state):

    z, xBC, dt = in_proj(u).split(d_inner, conv_dim, H)    hook_x [b,T,conv_dim] (xBC), hook_gate [b,T,d_inner]
    x, B, C = silu(causal_conv1d(xBC)).split(...)          hook_conv_out [b,T,H,P]
    Δ      = clamp(softplus(dt + dt_bias))                 hook_dt [b,T,H]; hook_B, hook_C [b,T,G,N]
    h_t    = exp(Δ_t A_h) h_{t-1} + Δ_t x_t B_tᵀ           hook_ssm_state [b,T,H,P,N]  (A = -exp(A_log))
    y_t    = h_t C_t + D_h x_t                             hook_y [b,T,H,P]
    out    = out_proj(gated_rmsnorm(y, z))                 hook_out [b,T,d_model]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interp.mamba.config import MambaSpec
from interp.mamba.mamba1 import MixerBase, causal_conv_after
from interp.mamba.native import mamba2_scan
from interp.mamba.scan import continue_from_patches, fire_states, mamba2_readout, states_with_grad

if TYPE_CHECKING:
    from interp.mamba.model import MixerSites

__all__ = ["Mamba2Mixer", "GatedRMSNorm", "MAMBA2_SITES"]

MAMBA2_SITES = ("hook_x", "hook_gate", "hook_conv_out", "hook_dt", "hook_B", "hook_C", "hook_ssm_state", "hook_y",
                "hook_out")
SSD_CHUNK = 64
"""Chunk length of the fast SSD scan (a speed knob only: every chunk length gives the same result). 64 measured
fastest here at T 1024 (d_model 256 / N 64 and d_model 768 / N 128; 32 was 5-25% slower, 128 slower again)."""


class GatedRMSNorm(nn.Module):
    """``weight * rmsnorm_per_group(y * silu(z))`` with ``n_groups`` contiguous groups of channels."""

    def __init__(self, d: int, n_groups: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.n_groups, self.eps = n_groups, eps

    def forward(self, y: Tensor, z: Tensor) -> Tensor:
        dtype = y.dtype
        h = y.float() * F.silu(z.float())
        g = h.unflatten(-1, (self.n_groups, -1))
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * g.flatten(-2).to(dtype)


class Mamba2Mixer(MixerBase):
    """One Mamba-2 mixer; ``forward(u, sites)`` maps ``[b, T, d_model]`` to ``[b, T, d_model]``."""

    def __init__(self, spec: MambaSpec) -> None:
        super().__init__()
        self.spec = spec
        d, H = spec.d_inner, spec.n_ssm_heads
        self.in_proj = nn.Linear(spec.d_model, d + spec.conv_dim + H, bias=spec.use_bias)
        self.conv1d = nn.Conv1d(spec.conv_dim, spec.conv_dim, spec.d_conv, groups=spec.conv_dim,
                                padding=spec.d_conv - 1, bias=spec.use_conv_bias)
        self.dt_bias = nn.Parameter(torch.zeros(H))
        self.A_log = nn.Parameter(torch.zeros(H))
        self.D = nn.Parameter(torch.ones(H))
        self.norm = GatedRMSNorm(d, spec.n_groups, spec.eps)
        self.out_proj = nn.Linear(d, spec.d_model, bias=spec.use_bias)

    @property
    def A(self) -> Tensor:
        """The per-head state decay rate ``A = -exp(A_log)`` ``[H]`` (float32)."""
        return -torch.exp(self.A_log.float())

    def _mix(self, u: Tensor, sites: MixerSites, mask: Tensor | None, conv_prefix: Tensor | None = None,
             h0: Tensor | None = None) -> Tensor:
        s = self.spec
        b, T, _ = u.shape
        H, P, G, N = s.n_ssm_heads, s.head_dim, s.n_groups, s.d_state
        z, xbc, dt = self.in_proj(u).split([s.d_inner, s.conv_dim, H], dim=-1)
        if mask is not None:  # a padded step feeds nothing to the conv (see HookedMamba: padding)
            xbc = xbc * mask[..., None].to(xbc.dtype)
        xbc = sites.fire("hook_x", xbc)
        z = sites.fire("hook_gate", z)
        x, B, C = causal_conv_after(self.conv1d, xbc, conv_prefix).split([s.d_inner, G * N, G * N], dim=-1)
        x = sites.fire("hook_conv_out", x.reshape(b, T, H, P))
        dt = F.softplus(dt.float() + self.dt_bias.float()).clamp(s.dt_min, s.dt_max)
        if mask is not None:  # Δ = 0: the state passes a padded step unchanged
            dt = dt * mask[..., None]
        dt = sites.fire("hook_dt", dt)
        B = sites.fire("hook_B", B.reshape(b, T, G, N))
        C = sites.fire("hook_C", C.reshape(b, T, G, N))
        if sites.hooked("hook_ssm_state"):
            y = self._scan_per_step(x, dt, B, C, sites, h0)
        else:
            y, _, _ = mamba2_scan(x, dt, self.A, B, C, self.D, h0, chunk_size=SSD_CHUNK)
        y = sites.fire("hook_y", y)
        out = self.out_proj(self.norm(y.reshape(b, T, s.d_inner), z).to(u.dtype))
        return sites.fire("hook_out", out)

    def _scan_per_step(self, x: Tensor, dt: Tensor, B: Tensor, C: Tensor, sites: MixerSites,
                       h0: Tensor | None = None) -> Tensor:
        """Materialise every state, fire ``hook_ssm_state`` and continue from any patched state (the scan starts
        from ``h0`` when given)."""
        A, D = self.A, self.D
        if torch.is_grad_enabled() and any(t.requires_grad for t in (x, dt, A, B, C, D)):
            if h0 is not None:
                raise NotImplementedError("gradients at hook_ssm_state of a suffix run (run_suffix) are not "
                                          "supported; run the full sequence")
            Bh = B.to(dt.dtype).repeat_interleave(x.shape[2] // B.shape[2], dim=2)  # [b, T, H, N]
            local = (dt[..., None] * x.to(dt.dtype))[..., None] * Bh[:, :, :, None, :]
            states = states_with_grad(lambda st: sites.fire("hook_ssm_state", st), local, dt[..., None, None],
                                      A[:, None, None],
                                      lambda p, q, h: mamba2_scan(x[:, p:q], dt[:, p:q], A, B[:, p:q], C[:, p:q], D,
                                                                  h, True)[1])
            return mamba2_readout(states, x, C, D)
        y, states, _ = mamba2_scan(x, dt, A, B, C, D, h0, return_states=True)
        after, changed = fire_states(lambda st: sites.fire("hook_ssm_state", st), states,
                                     lambda: mamba2_scan(x, dt, A, B, C, D, h0, return_states=True)[1])
        return continue_from_patches(
            y, after, changed,
            lambda p, q, h: mamba2_scan(x[:, p:q], dt[:, p:q], A, B[:, p:q], C[:, p:q], D, h, True)[1],
            lambda states: mamba2_readout(states, x, C, D),
        )
