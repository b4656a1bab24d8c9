"""The hook registry shared by every hooked model (transformers and Mamba).

A forward hook is ``fn(act, *, hook) -> Tensor | None`` (the TransformerLens convention): it sees the activation at
a named site and may return a replacement of the same shape, dtype kind and device. A backward hook is
``fn(grad, *, hook) -> Tensor | None``: it sees the gradient of the loss with respect to the site's activation (the
activation after every forward hook at that site) and may return a replacement gradient. ``hook`` is a
:class:`HookInfo` carrying the site's name and layer, so one function can serve many sites.

Models call :meth:`HookRegistry.fire` at each site they expose. Hooks only exist inside :meth:`HookRegistry.active`
(used by ``model.hooks(...)``), which removes exactly what it added on every exit path. Contexts nest: every
registered ``(site, fn)`` pair fires once per forward pass, in registration order (outer contexts before inner
ones); registering the same function twice makes it fire twice.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["HookInfo", "HookFn", "HookRegistry", "StopForward", "layer_of"]

_LAYER = re.compile(r"^blocks\.(\d+)\.")


def layer_of(name: str) -> int | None:
    """The layer index in a site name such as ``blocks.3.attn.hook_z`` (None for ``hook_embed``)."""
    m = _LAYER.match(name)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class HookInfo:
    """What a hook function is told about the site it is called at."""

    name: str
    """Canonical site name, e.g. ``blocks.3.attn.hook_pattern``."""
    ctx: dict = field(default_factory=dict, compare=False, hash=False)
    """Scratch space shared by all calls while any hook is active (cleared when the last context exits)."""

    @property
    def layer(self) -> int | None:
        """Layer index of the site, or None for sites outside the blocks."""
        return layer_of(self.name)


HookFn = Callable[..., "Tensor | None"]


class StopForward(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised at the stop site of a ``stop_at_layer`` run; carries the activation there."""

    def __init__(self, act: Tensor) -> None:
        super().__init__("stop_at_layer reached")
        self.act = act


@dataclass(frozen=True)
class _Entry:
    key: int
    fn: HookFn


class HookRegistry:
    """Active hooks of one model, by site name. Empty (and free) outside a ``hooks(...)`` context."""

    def __init__(self) -> None:
        self._fwd: dict[str, list[_Entry]] = {}
        self._bwd: dict[str, list[_Entry]] = {}
        self._keys = itertools.count()
        self._ctx: dict = {}
        self._grad_handles: list = []
        self.stop_site: str | None = None
        """A site whose firing ends the forward pass (raises :class:`StopForward` after its hooks ran)."""
        self.query_rows: Tensor | None = None
        """``[batch, R]`` query positions: while set, attention score and pattern sites fire with these rows only
        (``HookedModel.query_rows``)."""
        self.mute: Callable[[str], bool] | None = None
        """Sites for which this returns True fire nothing (a ``start_at_layer`` run mutes the sites before it)."""
        self._mute_all = False

    def __bool__(self) -> bool:
        return bool(self._fwd or self._bwd)

    def hooked(self, name: str) -> bool:
        """Whether any forward or backward hook is active at ``name``."""
        return (name in self._fwd or name in self._bwd) and not self._is_muted(name)

    def hooked_names(self) -> frozenset[str]:
        return frozenset(self._fwd) | frozenset(self._bwd)

    def _is_muted(self, name: str) -> bool:
        return self._mute_all or (self.mute is not None and self.mute(name))

    def fire(self, name: str, act: Tensor) -> Tensor:
        """Run the forward hooks at ``name`` in registration order; return the (possibly replaced) activation."""
        fwd, bwd = self._fwd.get(name), self._bwd.get(name)
        if not (fwd or bwd) or self._is_muted(name):
            return act
        info = HookInfo(name, self._ctx)
        for entry in fwd or ():
            out = entry.fn(act, hook=info)
            if out is not None:
                act = _checked_replacement(out, act, entry.fn, name)
        if bwd:
            self._attach_backward(name, act, bwd, info)
        if name == self.stop_site:
            raise StopForward(act)
        return act

    def _attach_backward(self, name: str, act: Tensor, entries: list[_Entry], info: HookInfo) -> None:
        if not torch.is_grad_enabled():
            raise RuntimeError(
                f"backward hook at {name!r}: gradients are off (torch.no_grad() or inference_mode); run the forward "
                "pass with gradients enabled to use bwd_hooks"
            )
        if not act.requires_grad:
            raise RuntimeError(
                f"backward hook at {name!r}: the activation does not require grad (are all parameters frozen, "
                "or is the site computed without autograd?); the hook would never fire"
            )
        for entry in entries:  # tensor hooks run in registration order, each seeing the previous one's output
            self._grad_handles.append(act.register_hook(_grad_hook(entry.fn, info, name)))

    @contextmanager
    def active(self, fwd: Sequence[tuple[str, HookFn]] = (),
               bwd: Sequence[tuple[str, HookFn]] = ()) -> Iterator[list[str]]:
        """Register forward and backward ``(name, fn)`` pairs for the duration of the block; yield the names that
        had no hook before (the model attaches what makes them fire). Exactly these entries are removed on exit."""
        added: list[tuple[dict, str, _Entry]] = []
        before = self.hooked_names()
        n_handles = len(self._grad_handles)
        try:
            for table, pairs in ((self._fwd, fwd), (self._bwd, bwd)):
                for name, fn in pairs:
                    entry = _Entry(next(self._keys), fn)
                    table.setdefault(name, []).append(entry)
                    added.append((table, name, entry))
            yield sorted(self.hooked_names() - before)
        finally:
            for table, name, entry in reversed(added):
                entries = table.get(name, [])
                entries[:] = [e for e in entries if e.key != entry.key]
                if not entries:
                    table.pop(name, None)
            for handle in self._grad_handles[n_handles:]:
                handle.remove()
            del self._grad_handles[n_handles:]
            if not self:
                self._ctx = {}

    @contextmanager
    def set_aside(self) -> Iterator[None]:
        """Hide every active hook, the stop site and any muting for the block, and restore them on exit (for a
        model's own internal runs, e.g. the memory guard's shape probes, which must not fire the caller's hooks)."""
        saved = (self._fwd, self._bwd, self._ctx, self.stop_site, self.mute, self._mute_all)
        self._fwd, self._bwd, self._ctx = {}, {}, {}
        self.stop_site, self.mute, self._mute_all = None, None, False
        try:
            yield
        finally:
            self._fwd, self._bwd, self._ctx, self.stop_site, self.mute, self._mute_all = saved

    @contextmanager
    def silenced(self) -> Iterator[None]:
        """Fire nothing inside the block (used when a model evaluates one of its own modules for the user)."""
        old = self._mute_all
        self._mute_all = True
        try:
            yield
        finally:
            self._mute_all = old


def _checked_replacement(out, act: Tensor, fn: HookFn, name: str) -> Tensor:
    if not isinstance(out, Tensor):
        raise TypeError(f"hook {_fn_name(fn)} at {name!r} returned {type(out).__name__}; expected a Tensor or None")
    if out.shape != act.shape:
        raise ValueError(
            f"hook {_fn_name(fn)} at {name!r} returned shape {tuple(out.shape)}; expected {tuple(act.shape)} "
            "(the site's shape)"
        )
    if out.dtype != act.dtype:
        if act.dtype.is_floating_point and not out.dtype.is_floating_point:
            raise TypeError(
                f"hook {_fn_name(fn)} at {name!r} returned dtype {out.dtype}; expected a floating-point tensor "
                f"(the site holds {act.dtype}); convert it yourself if that is really meant"
            )
        out = out.to(act.dtype)  # float64 -> float32 and the like: same values up to rounding
    if out.device != act.device:
        raise ValueError(f"hook {_fn_name(fn)} at {name!r} returned a tensor on {out.device}; the site is on "
                         f"{act.device}")
    return out


def _grad_hook(fn: HookFn, info: HookInfo, name: str):
    def call(grad: Tensor):
        out = fn(grad, hook=info)
        return None if out is None else _checked_replacement(out, grad, fn, name)

    return call


def _fn_name(fn: HookFn) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
