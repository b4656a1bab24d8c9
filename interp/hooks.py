"""The hook registry shared by every hooked model (transformers and Mamba).

A forward hook is ``fn(act, *, hook) -> Tensor | None`` (the TransformerLens convention): it sees the activation at
a named site and may return a replacement of the same shape, dtype kind and device. A backward hook is
``fn(grad, *, hook) -> Tensor | None``: it sees the gradient of the loss with respect to the site's activation (the
activation after every forward hook at that site) and may return a replacement gradient (TransformerLens's
``(grad,)`` is accepted too). ``hook`` is a :class:`HookInfo` carrying the site's name and layer, so one function
can serve many sites.

Models call :meth:`HookRegistry.fire` at each site they expose. Hooks are registered two ways:

- in a context, :meth:`HookRegistry.active` (used by ``model.hooks(...)``), which removes exactly what it added on
  every exit path (or, asked to keep them, leaves them as persistent hooks);
- persistently, :meth:`HookRegistry.add` (``model.add_hook``), until :meth:`HookRegistry.remove`
  (``model.reset_hooks``), which never removes a context's hooks.

Every registered ``(site, fn)`` pair fires once per forward pass. The order at a site is registration order (older
before newer, so outer contexts before inner ones, whether a hook came from a context or ``add``), except that
``add(..., prepend=True)`` puts a hook first; registering the same function twice makes it fire twice. A persistent
hook fires only in passes of its own model (or passes no model started, e.g. of the wrapped module run directly):
two wrappers of one Hugging Face model share its modules, and a hook left on one must not change every run of the
other. Context hooks fire in any pass while their block is open.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["HookInfo", "HookFn", "HookRegistry", "LayerIndex", "StopForward", "layer_of"]

_LAYER = re.compile(r"^blocks\.(\d+)\.")


def layer_of(name: str) -> int | None:
    """The layer index in a site name such as ``blocks.3.attn.hook_z`` (None for ``hook_embed``)."""
    m = _LAYER.match(name)
    return int(m.group(1)) if m else None


class LayerIndex(int):
    """A block index that can also be called, so ``hook.layer`` (this toolkit's property) and ``hook.layer()``
    (TransformerLens's method) both give it."""

    __slots__ = ()

    def __call__(self) -> int:
        return int(self)


@dataclass(frozen=True)
class HookInfo:
    """What a hook function is told about the site it is called at."""

    name: str
    """Canonical site name, e.g. ``blocks.3.attn.hook_pattern``."""
    ctx: dict = field(default_factory=dict, compare=False, hash=False)
    """Scratch space of this site, kept across calls and passes (as TransformerLens's ``hook.ctx``) until the
    model's last hook is removed or ``reset_hooks(clear_contexts=True)`` clears it."""

    @property
    def layer(self) -> LayerIndex | None:
        """Layer index of the site (an int, also callable: ``hook.layer()`` as in TransformerLens), or None for
        sites outside the blocks (where ``hook.layer()`` raises TypeError; TransformerLens raises too)."""
        i = layer_of(self.name)
        return None if i is None else LayerIndex(i)


HookFn = Callable[..., "Tensor | None"]
DIRECTIONS = ("fwd", "bwd", "both")

_RUNNING: ContextVar[HookRegistry | None] = ContextVar("interp_running_registry", default=None)
"""The registry of the model whose forward pass is in progress (None: no model started the pass in progress)."""


class StopForward(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Ends a forward pass early, carrying the activation where it stopped: raised at the stop site of a
    ``stop_at_layer`` run, and by a hook that has read all it needs (``raise StopForward(act)``: the model call then
    returns ``act`` instead of logits; the toolkit's one early-stop signal)."""

    def __init__(self, act: Tensor) -> None:
        super().__init__("stop_at_layer reached")
        self.act = act


@dataclass(eq=False)
class _Entry:
    key: int
    fn: HookFn
    level: int | None = None  # a context's nesting depth, or add()'s level
    persistent: bool = False  # added by add(), or kept by a context: outlives any block
    permanent: bool = False  # removed only by remove(including_permanent=True)
    live: bool = True  # False once removed: a gradient hook already on a tensor then does nothing


class HookRegistry:
    """Hooks of one model, by site name: a context's while its block runs, and persistent ones until removed."""

    def __init__(self) -> None:
        self._fwd: dict[str, list[_Entry]] = {}
        self._bwd: dict[str, list[_Entry]] = {}
        self._keys = itertools.count()
        self._ctx: dict[str, dict] = {}
        self.context_level = 0
        """How many ``active`` blocks are open (TransformerLens's ``context_level``)."""
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

    def _own_pass(self) -> bool:
        running = _RUNNING.get()
        return running is None or running is self

    def hooked(self, name: str) -> bool:
        """Whether any forward or backward hook fires at ``name`` in the pass in progress."""
        fwd, bwd = self._fwd.get(name), self._bwd.get(name)
        if not (fwd or bwd) or self._is_muted(name):
            return False
        own, grad = self._own_pass(), torch.is_grad_enabled()
        return (any(own or not e.persistent for e in fwd or ())
                or any(not e.persistent or (own and grad) for e in bwd or ()))

    def hooked_names(self) -> frozenset[str]:
        """Every site with a hook registered (the sites a model attaches)."""
        return frozenset(self._fwd) | frozenset(self._bwd)

    def fns(self, name: str, direction: str) -> tuple[HookFn, ...]:
        """The functions registered at ``name`` for ``direction`` (``"fwd"``/``"bwd"``), in firing order."""
        table = self._fwd if direction == "fwd" else self._bwd
        return tuple(e.fn for e in table.get(name, ()))

    def site_ctx(self, name: str) -> dict:
        """The scratch space ``hook.ctx`` of the site ``name``."""
        return self._ctx.setdefault(name, {})

    def clear_ctx(self) -> None:
        self._ctx = {}

    def _is_muted(self, name: str) -> bool:
        return self._mute_all or (self.mute is not None and self.mute(name))

    def fire(self, name: str, act: Tensor) -> Tensor:
        """Run the forward hooks at ``name`` in order; return the (possibly replaced) activation."""
        fwd, bwd = self._fwd.get(name), self._bwd.get(name)
        if not (fwd or bwd) or self._is_muted(name):
            return act
        own = self._own_pass()
        fwd = [e for e in fwd if own or not e.persistent] if fwd else ()
        bwd = [e for e in bwd if own or not e.persistent] if bwd else ()
        if fwd or bwd:
            info = HookInfo(name, self.site_ctx(name))
            for entry in fwd:
                if entry.live:  # a hook earlier at this site may have removed it
                    out = entry.fn(act, hook=info)
                    if out is not None:
                        act = _checked_replacement(out, act, entry.fn, name)
            bwd = [e for e in bwd if e.live]
            if bwd:
                self._attach_backward(name, act, bwd, info)
        if name == self.stop_site:
            raise StopForward(act)
        return act

    def _attach_backward(self, name: str, act: Tensor, entries: list[_Entry], info: HookInfo) -> None:
        if not all(e.persistent for e in entries):
            if not torch.is_grad_enabled():
                raise RuntimeError(
                    f"backward hook at {name!r}: gradients are off (torch.no_grad() or inference_mode); run the "
                    "forward pass with gradients enabled to use bwd_hooks"
                )
            if not act.requires_grad:
                raise RuntimeError(
                    f"backward hook at {name!r}: the activation does not require grad (are all parameters frozen, "
                    "or is the site computed without autograd?); the hook would never fire"
                )
        elif not (torch.is_grad_enabled() and act.requires_grad):
            return  # persistent backward hooks fire in the passes run with gradients only
        for entry in entries:  # tensor hooks run in registration order, each seeing the previous one's output
            act.register_hook(_grad_hook(entry, info, name))

    def add(self, name: str, fn: HookFn, direction: str, *, permanent: bool = False, level: int | None = None,
            prepend: bool = False) -> None:
        """Register a persistent hook at ``name`` (``direction`` ``"fwd"`` or ``"bwd"``): last at the site, or
        first with ``prepend``. It stays until :meth:`remove` takes it."""
        table = self._fwd if direction == "fwd" else self._bwd
        entry = _Entry(next(self._keys), fn, level=level, persistent=True, permanent=permanent)
        entries = table.setdefault(name, [])
        if prepend:
            entries.insert(0, entry)
        else:
            entries.append(entry)

    def remove(self, direction: str = "both", *, including_permanent: bool = False, level: int | None = None,
               names: Sequence[str] | None = None) -> None:
        """Remove the persistent hooks of ``direction`` (``"fwd"``, ``"bwd"``, ``"both"``) at ``names`` (None:
        every site): those at ``level`` only unless it is None, permanent ones only with ``including_permanent``.
        A context's hooks are never removed here: they go when their block exits."""
        tables = {"fwd": (self._fwd,), "bwd": (self._bwd,), "both": (self._fwd, self._bwd)}[direction]
        for table in tables:
            for name in list(table) if names is None else [n for n in names if n in table]:
                kept = []
                for e in table[name]:
                    if e.persistent and (including_permanent or not e.permanent) and level in (None, e.level):
                        e.live = False
                    else:
                        kept.append(e)
                if kept:
                    table[name] = kept
                else:
                    del table[name]
        if not self:
            self._ctx = {}

    @contextmanager
    def active(self, fwd: Sequence[tuple[str, HookFn]] = (), bwd: Sequence[tuple[str, HookFn]] = (), *,
               keep: bool = False, clear_ctx: bool = False) -> Iterator[list[str]]:
        """Register forward and backward ``(name, fn)`` pairs for the duration of the block; yield the names that
        had no hook before (the model attaches what makes them fire). Exactly these entries are removed on exit
        (then the scratch spaces are cleared too with ``clear_ctx``), or with ``keep`` left registered as persistent
        hooks at this block's nesting level (TransformerLens's ``reset_hooks_end=False``)."""
        added: list[tuple[dict, str, _Entry]] = []
        before = self.hooked_names()
        self.context_level += 1
        level = self.context_level
        try:
            for table, pairs in ((self._fwd, fwd), (self._bwd, bwd)):
                for name, fn in pairs:
                    entry = _Entry(next(self._keys), fn, level=level)
                    table.setdefault(name, []).append(entry)
                    added.append((table, name, entry))
            yield sorted(self.hooked_names() - before)
        finally:
            self.context_level -= 1
            for table, name, entry in reversed(added):
                if keep:
                    entry.persistent = True
                    continue
                entry.live = False
                entries = table.get(name, [])
                entries[:] = [e for e in entries if e is not entry]
                if not entries:
                    table.pop(name, None)
            if (clear_ctx and not keep) or not self:
                self._ctx = {}

    @contextmanager
    def running(self) -> Iterator[None]:
        """Mark the block as a forward pass of this registry's model (its persistent hooks fire, another model's
        do not)."""
        token = _RUNNING.set(self)
        try:
            yield
        finally:
            _RUNNING.reset(token)

    @contextmanager
    def set_aside(self) -> Iterator[None]:
        """Hide every hook (persistent ones too), the stop site and any muting for the block, and restore them on
        exit (for a model's own internal runs, e.g. the memory guard's shape probes, which must not fire the
        caller's hooks)."""
        saved = (self._fwd, self._bwd, self._ctx, self.context_level, self.stop_site, self.mute, self._mute_all)
        self._fwd, self._bwd, self._ctx, self.context_level = {}, {}, {}, 0
        self.stop_site, self.mute, self._mute_all = None, None, False
        try:
            yield
        finally:
            (self._fwd, self._bwd, self._ctx, self.context_level, self.stop_site, self.mute,
             self._mute_all) = saved

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


def _grad_hook(entry: _Entry, info: HookInfo, name: str):
    def call(grad: Tensor):
        if not entry.live:  # removed (its context exited, or reset_hooks) after this pass registered it
            return None
        out = entry.fn(grad, hook=info)
        if isinstance(out, tuple) and len(out) == 1:  # TransformerLens backward hooks may return (grad,)
            out = out[0]
        return None if out is None else _checked_replacement(out, grad, entry.fn, name)

    return call


def _fn_name(fn: HookFn) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
