"""What can be patched: the setters (one small function per activation layout, as TransformerLens's patch setters)
and the site keywords shared by exact patching, attribution patching and the CLI.

A setter writes the source values of one patch into a block of rows of a site's activation:
``setter(act, src, index, offset)``, where ``act`` is the ``[rows, ...]`` slice of the running activation (it
covers positions ``offset..`` when the run continues a recorded prefix), ``src`` the source activation
``[rows or 1, ...]`` over all positions, and ``index`` the cell (positions, heads). Layouts: ``[batch, pos, ...]``
for every site but the attention pattern, ``[batch, head, query, key]`` for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor

__all__ = ["SiteKind", "SITES", "site_kind", "set_positions", "set_pos_head", "set_head", "set_pattern_head",
           "set_pattern_dest", "Setter"]

Setter = Callable[[Tensor, Tensor, tuple, int], None]


def set_positions(act: Tensor, src: Tensor, index: tuple[int, ...], offset: int) -> None:
    """``index`` = positions: ``act[:, p] = src[:, p]`` for each (layout ``[batch, pos, ...]``)."""
    act[:, [p - offset for p in index]] = src[:, list(index)]


def set_pos_head(act: Tensor, src: Tensor, index: tuple[int, int], offset: int) -> None:
    """``index`` = (pos, head): ``act[:, pos, head] = src[:, pos, head]`` (layout ``[batch, pos, head, ...]``)."""
    pos, head = index
    act[:, pos - offset, head] = src[:, pos, head]


def set_head(act: Tensor, src: Tensor, index: tuple[int], offset: int) -> None:
    """``index`` = (head,): every position of one head (layout ``[batch, pos, head, ...]``)."""
    (head,) = index
    act[:, :, head] = src[:, offset:offset + act.shape[1], head]


def set_pattern_head(act: Tensor, src: Tensor, index: tuple[int], offset: int) -> None:
    """``index`` = (head,): one head's whole attention pattern (layout ``[batch, head, query, key]``)."""
    (head,) = index
    q, k = act.shape[2:]
    act[:, head] = src[:, head, offset:offset + q, :k]


def set_pattern_dest(act: Tensor, src: Tensor, index: tuple[int, int], offset: int) -> None:
    """``index`` = (head, dest): one query row of one head's pattern (layout ``[batch, head, query, key]``)."""
    head, dest = index
    act[:, head, dest - offset] = src[:, head, dest, :act.shape[-1]]


@dataclass(frozen=True)
class SiteKind:
    """One patchable kind of site: a role of ``model.components(layer)`` and the axes of the result."""

    key: str
    """Name used by :func:`interp.patching.sweep`, :func:`~interp.patching.attribution_patch` and the CLI."""
    role: str
    """Role in ``model.components(layer)``."""
    axes: tuple[str, ...]
    """Result axes: ``("layer", "pos")``, ``("layer", "pos", "head")``, ``("layer", "head")`` or
    ``("layer", "head", "dest")`` (pattern rows)."""
    description: str

    @property
    def pattern(self) -> bool:
        return self.role in ("pattern", "attn_scores")

    @property
    def setter(self) -> Setter:
        if self.pattern:
            return set_pattern_dest if "dest" in self.axes else set_pattern_head
        if "head" in self.axes:
            return set_pos_head if "pos" in self.axes else set_head
        return set_positions


def _kinds() -> dict[str, SiteKind]:
    lp, lph, lh = ("layer", "pos"), ("layer", "pos", "head"), ("layer", "head")
    rows = [
        ("resid", "resid_pre", lp, "residual stream before each block"),
        ("resid_mid", "resid_mid", lp, "residual stream between attention and MLP"),
        ("resid_post", "resid_post", lp, "residual stream after each block"),
        ("attn_out", "attn_out", lp, "attention output"),
        ("mlp_out", "mlp_out", lp, "MLP output"),
        ("mixer_out", "mixer_out", lp, "Mamba mixer output"),
        ("heads", "z", lh, "each head's output (hook_z), all positions"),
        ("heads_by_pos", "z", lph, "each head's output (hook_z) at each position"),
        ("q", "q", lh, "each head's queries, all positions"),
        ("k", "k", lh, "each (kv) head's keys, all positions"),
        ("v", "v", lh, "each (kv) head's values, all positions"),
        ("q_by_pos", "q", lph, "each head's query at each position"),
        ("k_by_pos", "k", lph, "each (kv) head's key at each position"),
        ("v_by_pos", "v", lph, "each (kv) head's value at each position"),
        ("pattern", "pattern", lh, "each head's attention pattern, all query rows"),
        ("pattern_by_dest", "pattern", ("layer", "head", "dest"), "each head's attention row at each query"),
    ]
    mamba = [("x", "conv input (in_proj)"), ("gate", "gate branch z"), ("conv", "conv + SiLU output (scan input)"),
             ("dt", "step size Δ"), ("B", "input matrix B"), ("C", "output matrix C"),
             ("ssm_state", "SSM state h_t"), ("ssm", "scan output y"), ("out", "out_proj output")]
    kinds = {key: SiteKind(key, role, axes, desc) for key, role, axes, desc in rows}
    kinds.update({role: SiteKind(role, role, lp, "Mamba " + desc) for role, desc in mamba})
    return kinds


SITES: dict[str, SiteKind] = _kinds()
"""Site keyword -> :class:`SiteKind`."""


def site_kind(model, key: str, arg: str = "site") -> SiteKind:
    """The :class:`SiteKind` named ``key``, checked against what ``model`` has (a clear error otherwise)."""
    if not isinstance(key, str) or key not in SITES:
        raise KeyError(f"{arg}={key!r} is not a patchable site; expected one of {', '.join(SITES)}")
    kind = SITES[key]
    roles = model.components(0)
    if kind.role not in roles:
        have = [k for k, v in SITES.items() if v.role in roles]
        raise KeyError(f"{arg}={key!r}: this {model.arch} model has no {kind.role!r} site "
                       f"(model.components(layer) lists {sorted(roles)}); sites it can patch: {', '.join(have)}")
    return kind


def check_positions(positions: Sequence[int] | None, T: int, arg: str = "positions") -> list[int]:
    """Positions (negatives count from the end) as non-negative ints, all by default; empty or out of range raise."""
    if positions is None:
        return list(range(T))
    if isinstance(positions, int) and not isinstance(positions, bool):
        positions = [positions]
    if isinstance(positions, Tensor):
        positions = positions.tolist()
    if isinstance(positions, (str, bytes)) or not isinstance(positions, (Sequence, range)):
        raise TypeError(f"{arg} must be a list of positions; got {type(positions).__name__}")
    out = []
    for p in positions:
        if isinstance(p, bool) or not isinstance(p, int):
            raise TypeError(f"{arg}: {p!r} is not a position (an int)")
        if not -T <= p < T:
            raise IndexError(f"{arg}: position {p} is out of range for {T} tokens")
        out.append(p % T)
    if not out:
        raise ValueError(f"{arg} is empty; pass None for every position")
    if len(set(out)) != len(out):
        raise ValueError(f"{arg} repeats a position: {list(positions)}")
    return out
