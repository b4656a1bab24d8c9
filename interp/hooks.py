"""The hook registry shared by every hooked model (transformers and Mamba).

A hook is ``fn(act, *, hook) -> Tensor | None`` (the TransformerLens convention): it sees the activation at a
named site and may return a replacement of the same shape. ``hook`` is a :class:`HookInfo` carrying the site's
name and layer, so one function can serve many sites.

Models call :meth:`HookRegistry.fire` at each site they expose. Hooks only exist inside
:meth:`HookRegistry.active` (used by ``model.hooks(...)``), which removes them on every exit path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from torch import Tensor

__all__ = ["HookInfo", "HookFn", "HookRegistry", "layer_of"]

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
    """Scratch space shared by all calls of one ``hooks(...)`` context (cleared on exit)."""

    @property
    def layer(self) -> int | None:
        """Layer index of the site, or None for sites outside the blocks."""
        return layer_of(self.name)


HookFn = Callable[..., "Tensor | None"]


class HookRegistry:
    """Active hooks of one model, by site name. Empty (and free) outside a ``hooks(...)`` context."""

    def __init__(self) -> None:
        self._fns: dict[str, list[HookFn]] = {}
        self._ctx: dict = {}

    def __bool__(self) -> bool:
        return bool(self._fns)

    def hooked(self, name: str) -> bool:
        """Whether any hook is active at ``name``."""
        return name in self._fns

    def hooked_names(self) -> frozenset[str]:
        return frozenset(self._fns)

    def fire(self, name: str, act: Tensor) -> Tensor:
        """Run the hooks at ``name`` in registration order; return the (possibly replaced) activation."""
        fns = self._fns.get(name)
        if not fns:
            return act
        info = HookInfo(name, self._ctx)
        for fn in fns:
            out = fn(act, hook=info)
            if out is None:
                continue
            if not isinstance(out, Tensor):
                raise TypeError(
                    f"hook {_fn_name(fn)} at {name!r} returned {type(out).__name__}; "
                    "expected a Tensor or None"
                )
            if out.shape != act.shape:
                raise ValueError(
                    f"hook {_fn_name(fn)} at {name!r} returned shape {tuple(out.shape)}; "
                    f"expected {tuple(act.shape)} (the site's shape)"
                )
            act = out.to(act.dtype)
        return act

    @contextmanager
    def active(self, pairs: Sequence[tuple[str, HookFn]]) -> Iterator[None]:
        """Register ``(name, fn)`` pairs for the duration of the block; always removed on exit."""
        added: list[tuple[str, HookFn]] = []
        try:
            for name, fn in pairs:
                self._fns.setdefault(name, []).append(fn)
                added.append((name, fn))
            yield
        finally:
            for name, fn in reversed(added):
                fns = self._fns.get(name, [])
                if fn in fns:
                    fns.remove(fn)
                if not fns:
                    self._fns.pop(name, None)
            if not self._fns:
                self._ctx = {}


def _fn_name(fn: HookFn) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
