"""Attention knockout for Mamba: block the information flow from source positions to target positions.

Endy et al. 2025, following Sharma et al. 2024 ("Locating and Editing Factual Associations in Mamba"): for
each target position i the scan reads a *shadow state* in which the contributions ``B̄_j x_j`` of the blocked
sources j were never added,

    h̃_i = Σ_{j<=i, j∉S} (Π_{k=j+1..i} Ā_k) B̄_j x_j,    ỹ_i = C_i h̃_i + D x_i,

which is the same as zeroing the implicit attention ``α_ij`` (Ali et al. 2024, see
:mod:`interp.mamba.implicit_attention`) for i ∈ targets, j ∈ sources. Non-target positions are unchanged.

Implementation: hooks on ``hook_conv_out``, ``hook_dt``, ``hook_B``, ``hook_C`` of each chosen layer record the
scan inputs of the current forward pass (they fire before ``hook_y``), and a hook on ``hook_y`` subtracts
``Σ_{j∈S, j<=i} α_ij x_j`` at the target rows. Cost per layer: ``O(batch · |targets| · T · d_inner · N)``.

The conv path (``mode="ssm"``, the default, leaves it open): the causal conv1d before the scan mixes the
``d_conv - 1`` previous tokens into ``x_i`` (and so into Δ_i, B_i, C_i), and into the neighbours whose states
the target then reads, so a source still reaches nearby targets through the conv in a knocked-out layer.
``mode="mixer"`` closes it: the target rows of ``hook_mixer_out`` are replaced by
a shadow pass of the whole mixer (conv1d + scan + gate) whose input is zero at the source positions (hooks at
``hook_resid_pre`` and ``hook_mixer_out``; the shadow pass does not run the user's mixer-internal hooks).
On the zoo fact models only ``mode="mixer"`` removes recall (tests/mamba/test_knockout.py): they read the
subject through the conv. In ``mode="ssm"`` a source equal to the target removes ``α_ii x_i`` (never ``D x_i``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

from interp.mamba.implicit_attention import (
    CHUNK_ELEMENTS,
    _check_mamba,
    mamba1_alpha,
    mamba2_alpha,
    scan_sites,
    ssm_params,
)
from interp.positions import Positions, flow_mask, position_mask

__all__ = ["block_mask", "knockout_hooks", "knockout", "run_with_knockout"]

block_mask = flow_mask
"""``[batch, T, T]`` bool: ``[b, i, j]`` True when the flow j -> i is blocked (:func:`interp.positions.flow_mask`)."""


def _blocked_flow(model, layer: int, scan: dict[str, Tensor], mask: Tensor) -> tuple[Tensor, Tensor]:
    """``(rows, Σ_j α_ij mask_ij x_j)`` for the target rows: ``[R]`` and ``[b, R, d_inner]`` / ``[b, R, H, P]``."""
    x, dt, B, C = scan["x"], scan["dt"], scan["B"], scan["C"]
    mask = mask.to(x.device)
    rows = mask.any(-1).any(0).nonzero().flatten()
    A, _ = ssm_params(model, layer)
    m = mask[:, rows].to(torch.float64)  # [b, R, T]
    b, T = x.shape[:2]
    if model.arch == "mamba":
        d = x.shape[-1]
        step = max(1, CHUNK_ELEMENTS // (b * max(1, len(rows)) * T))
        parts = []
        for c in range(0, d, step):
            alpha = mamba1_alpha(dt[..., c:c + step], B, C, A[c:c + step], rows=rows)  # [b, d, R, T]
            parts.append(torch.einsum("bdrj,brj,bjd->brd", alpha, m, x[..., c:c + step].to(torch.float64)))
        return rows, torch.cat(parts, -1)
    alpha = mamba2_alpha(dt, B, C, A, rows=rows)  # [b, H, R, T]
    return rows, torch.einsum("bhrj,brj,bjhp->brhp", alpha, m, x.to(torch.float64))


def knockout_hooks(
    model, sources: Positions, targets: Positions, layers: int | Sequence[int] | None = None, *, mode: str = "ssm"
) -> list[tuple[str, object]]:
    """The ``(site, fn)`` pairs that block sources -> targets in ``layers`` (all by default); pass them to
    ``model.hooks(...)`` / ``run_with_hooks`` together with your own hooks. ``mode``: see :func:`knockout`."""
    _check_mamba(model)
    if mode not in ("ssm", "mixer"):
        raise ValueError(f"mode must be 'ssm' (the scan only) or 'mixer' (conv and scan); got {mode!r}")
    layers = model.check_layers(layers)
    make = _ssm_pairs if mode == "ssm" else _mixer_pairs
    return [pair for layer in layers for pair in make(model, sources, targets, layer)]


def _ssm_pairs(model, sources: Positions, targets: Positions, layer: int) -> list[tuple[str, object]]:
    sites = scan_sites(layer)
    scan: dict[str, Tensor] = {}

    def record(act: Tensor, *, hook) -> None:
        scan[hook.name.rsplit("hook_", 1)[1]] = act

    def subtract(y: Tensor, *, hook) -> Tensor:
        got = {"x": scan.get("conv_out"), "dt": scan.get("dt"), "B": scan.get("B"), "C": scan.get("C")}
        if any(v is None for v in got.values()):
            raise RuntimeError(f"knockout at layer {layer}: the scan inputs were not recorded before hook_y")
        mask = block_mask(sources, targets, y.shape[0], y.shape[1])
        rows, flow = _blocked_flow(model, layer, got, mask)
        out = y.clone()
        out[:, rows] = (y[:, rows].to(torch.float64) - flow).to(y.dtype)
        scan.clear()
        return out

    return [(sites[k], record) for k in ("x", "dt", "B", "C")] + [(sites["y"], subtract)]


class _Unhooked:
    """Stands in for a mixer's hook sites: fires nothing (the shadow pass ignores the user's mixer hooks)."""

    def fire(self, short: str, act: Tensor) -> Tensor:
        return act

    def hooked(self, short: str) -> bool:
        return False


def _mixer_pairs(model, sources: Positions, targets: Positions, layer: int) -> list[tuple[str, object]]:
    block = model.blocks[layer]
    seen: dict[str, Tensor] = {}

    def record(resid: Tensor, *, hook) -> None:
        seen["resid"] = resid

    def replace(out: Tensor, *, hook) -> Tensor:
        resid = seen.pop("resid", None)
        if resid is None:
            raise RuntimeError(f"knockout at layer {layer}: hook_resid_pre was not recorded before hook_mixer_out")
        b, T = out.shape[:2]
        src = position_mask(sources, b, T, "sources").to(out.device)
        tgt = position_mask(targets, b, T, "targets").to(out.device)
        u = block.norm(resid.to(block.norm.weight.dtype))
        shadow = block.mixer(u * (~src).unsqueeze(-1).to(u.dtype), _Unhooked())
        return torch.where(tgt.unsqueeze(-1), shadow.to(out.dtype), out)

    p = f"blocks.{layer}."
    return [(p + "hook_resid_pre", record), (p + "hook_mixer_out", replace)]


@contextmanager
def knockout(
    model, sources: Positions, targets: Positions, layers: int | Sequence[int] | None = None, *, mode: str = "ssm"
) -> Iterator[object]:
    """``with knockout(model, sources=[2, 3], targets=[-1], layers=range(4)): logits = model(tokens)`` --
    every forward pass inside the block has the flows sources -> targets removed from the chosen layers' scans.

    ``sources`` / ``targets``: positions (ints; negatives count from the end) shared by the batch, or bool masks
    ``[pos]`` / ``[batch, pos]``.

    ``mode="ssm"`` (default): the shadow state of Endy et al. -- α_ij = 0 for j in sources, i in targets; the
    conv path stays open. ``mode="mixer"``: the target rows of the mixer output are recomputed from a shadow
    pass of the whole mixer (conv1d and scan) whose input is zero at the source positions, so no information of
    the sources reaches the targets inside the layer by any path (direct conv taps, the scan, or a conv tap
    into a neighbour that the scan then carries). Other rows are unchanged in both modes.
    """
    with model.hooks(knockout_hooks(model, sources, targets, layers, mode=mode)):
        yield model


def run_with_knockout(
    model, tokens, sources: Positions, targets: Positions, layers: int | Sequence[int] | None = None, *,
    mode: str = "ssm",
) -> Tensor:
    """Logits ``[batch, pos, d_vocab]`` of one forward pass with sources -> targets knocked out in ``layers``
    (``mode`` as in :func:`knockout`)."""
    tokens = model.check_tokens(tokens)
    return model.run_with_hooks(tokens, fwd_hooks=knockout_hooks(model, sources, targets, layers, mode=mode))
