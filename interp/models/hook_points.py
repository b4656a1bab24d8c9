"""The hook API of every hooked model: contexts, persistent hooks and TransformerLens-style hook points.

``with model.hooks(...)`` registers hooks for a block; ``model.add_hook(...)`` registers a persistent one, which
stays until ``model.reset_hooks()`` (``is_permanent=True``: until ``reset_hooks(including_permanent=True)``). Both
go into the model's one :class:`~interp.hooks.HookRegistry`, so one contract holds for all of them:

- every registered ``(site, fn)`` pair fires exactly once per forward pass: in ``run_with_cache``, every generation
  step, every analysis, inside or outside contexts, until removed;
- order at a site: registration order, older before newer (outer contexts before inner ones, and a persistent hook
  among the context hooks by when it was added); ``prepend=True`` puts a hook first at its site;
- a predicate (or a list of names) expands to the matching sites when the hook is added; an unknown site name raises
  the model's ``check_site`` KeyError, with the closest names;
- the model's internal runs (the memory guard's probes) fire none of them; attachments on the underlying modules
  exist only while some hook needs them: after ``reset_hooks()`` with no context open, no module hook remains.

``model.hook_dict`` maps each site (``site_names()``, forward order) to a :class:`HookPoint`, TransformerLens's
per-site handle: ``.add_hook``, ``.remove_hooks``, ``.fwd_hooks``, ``.layer()``, ``.ctx``.

Deliberate differences from TransformerLens (3.9):

- ``reset_hooks()`` never removes the hooks of an open ``with model.hooks(...)`` block (TransformerLens removes them
  too, so the block silently stops patching); they go when the block exits. A block removes exactly its own hooks
  (TransformerLens removes every non-permanent hook at its nesting level, those an earlier
  ``reset_hooks_end=False`` block left there included).
- ``level`` also narrows ``including_permanent=True`` removals (TransformerLens then removes every level).
- A persistent hook fires in passes of its own model (and of the wrapped module run directly), not in those of
  another wrapper of the same Hugging Face model, which shares the modules (context hooks do fire there).
- Hook points are views of the sites, not modules (sites are module hooks or inline calls, not ``HookPoint``
  modules), so there is no ``mod_dict``; ``HookPoint.fwd_hooks`` holds the functions, not ``LensHandle`` objects.
- ``run_with_hooks(bwd_hooks=...)`` needs ``reset_hooks_end=False`` (TransformerLens only warns that the hooks are
  gone before any backward pass).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

from torch import Tensor

from interp.checks import is_index
from interp.hooks import DIRECTIONS, HookFn, HookRegistry, layer_of

if TYPE_CHECKING:
    from interp.models.base import HookedModel

__all__ = ["HookPoint", "HookPointsMixin", "HookSpec"]

HookSpec = Sequence[tuple[str | Callable[[str], bool], HookFn]]


class HookPoint:
    """One site of a model, as TransformerLens's ``HookPoint``: ``model.hook_dict[name]``.

    A view (it holds no hooks itself): ``add_hook`` and ``remove_hooks`` act on the model's persistent hooks at this
    site, ``fwd_hooks`` / ``bwd_hooks`` list what is registered there now (persistent and context hooks, in firing
    order).
    """

    __slots__ = ("_model", "name")

    def __init__(self, model: HookedModel, name: str) -> None:
        self._model = model
        self.name = name
        """The site's canonical name, e.g. ``blocks.0.hook_resid_pre``."""

    def layer(self) -> int:
        """The block index of the site; a ValueError for sites outside the blocks (TransformerLens raises too)."""
        i = layer_of(self.name)
        if i is None:
            raise ValueError(f"hook point {self.name!r} is outside the blocks: it has no layer")
        return i

    def add_hook(self, hook: HookFn, dir: str = "fwd", is_permanent: bool = False, level: int | None = None,
                 prepend: bool = False) -> None:
        """``model.add_hook(self.name, ...)``."""
        self._model.add_hook(self.name, hook, dir=dir, is_permanent=is_permanent, level=level, prepend=prepend)

    def add_perma_hook(self, hook: HookFn, dir: str = "fwd") -> None:
        """``add_hook(hook, dir, is_permanent=True)``."""
        self.add_hook(hook, dir=dir, is_permanent=True)

    def remove_hooks(self, dir: str = "fwd", including_permanent: bool = False, level: int | None = None) -> None:
        """Remove the persistent hooks at this site (``dir``: ``"fwd"``, ``"bwd"`` or ``"both"``), as
        ``model.reset_hooks`` does for every site; an open context's hooks stay."""
        self._model._remove_persistent(dir, "dir", including_permanent, level, [self.name])

    @property
    def fwd_hooks(self) -> tuple[HookFn, ...]:
        """The forward hook functions registered at this site, in firing order."""
        return self._model._registry.fns(self.name, "fwd")

    @property
    def bwd_hooks(self) -> tuple[HookFn, ...]:
        """The backward hook functions registered at this site, in firing order."""
        return self._model._registry.fns(self.name, "bwd")

    @property
    def ctx(self) -> dict:
        """The site's scratch space, the ``hook.ctx`` its hook functions see."""
        return self._model._registry.site_ctx(self.name)

    def clear_context(self) -> None:
        """Empty :attr:`ctx`."""
        self._model._registry.site_ctx(self.name).clear()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HookPoint) and other._model is self._model and other.name == self.name

    def __hash__(self) -> int:
        return hash((id(self._model), self.name))

    def __repr__(self) -> str:
        n_fwd, n_bwd = len(self.fwd_hooks), len(self.bwd_hooks)
        counts = "".join(f", {n} {d}" for n, d in ((n_fwd, "fwd"), (n_bwd, "bwd")) if n)
        return f"HookPoint({self.name!r}{counts})"


class _HookDict(Mapping):
    """``model.hook_dict``: site name -> :class:`HookPoint`, in forward order; read-only."""

    __slots__ = ("_model",)

    def __init__(self, model: HookedModel) -> None:
        self._model = model

    def __getitem__(self, name: str) -> HookPoint:
        return HookPoint(self._model, self._model.check_site(name))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._model.site_names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._model.site_names())

    def __len__(self) -> int:
        return len(self._model.site_names())

    def __repr__(self) -> str:
        return f"hook_dict({len(self)} sites of {type(self._model).__name__})"


class HookPointsMixin:
    """Hook contexts, persistent hooks (TransformerLens's ``add_hook`` / ``reset_hooks``) and ``hook_dict`` of
    :class:`~interp.models.base.HookedModel` (needs ``_registry``, ``_attached``, ``_attach``, ``site_names``,
    ``check_site``, ``resolve_names``); see :mod:`interp.models.hook_points` for the contract."""

    _registry: HookRegistry
    _attached: dict[str, Callable[[], None]]

    @property
    def hook_dict(self) -> Mapping[str, HookPoint]:
        """Site name -> :class:`HookPoint`, exactly ``site_names()`` in forward order (read-only)."""
        return _HookDict(self)  # type: ignore[arg-type]

    def hook_points(self) -> list[HookPoint]:
        """The :class:`HookPoint` of every site, in forward order."""
        return list(self.hook_dict.values())

    # ------------------------------------------------------------------ persistent hooks
    def add_hook(self, name: str | Sequence[str] | Callable[[str], bool], hook: HookFn, dir: str = "fwd",
                 is_permanent: bool = False, level: int | None = None, prepend: bool = False) -> None:
        """Register ``hook`` at ``name`` (a site, a list of sites, or a predicate on site names, expanded now) until
        :meth:`reset_hooks` removes it. It fires in every later forward pass of this model, contexts, caches and
        generation included: last at its site (after every hook registered before it), or first with ``prepend``.
        ``dir="bwd"``: a backward hook, firing on ``backward()`` of the passes run with gradients.
        ``is_permanent``: kept by ``reset_hooks()`` unless ``including_permanent=True``. ``level``: a tag that
        ``reset_hooks(level=...)`` selects by."""
        if not callable(hook):
            raise TypeError(f"hook must be a function fn(act, *, hook); got {type(hook).__name__}")
        _check_direction(dir, "dir", both=False)
        _check_level(level)
        _check_flag(is_permanent, "is_permanent")
        _check_flag(prepend, "prepend")
        for site in self._targets(name):
            self._registry.add(site, hook, dir, permanent=is_permanent, level=level, prepend=prepend)
        self._sync_attached()

    def add_perma_hook(self, name: str | Sequence[str] | Callable[[str], bool], hook: HookFn,
                       dir: str = "fwd") -> None:
        """``add_hook(name, hook, dir, is_permanent=True)``."""
        self.add_hook(name, hook, dir=dir, is_permanent=True)

    def reset_hooks(self, clear_contexts: bool = True, direction: str = "both", including_permanent: bool = False,
                    level: int | None = None) -> None:
        """Remove the persistent hooks (:meth:`add_hook`, ``hooks(reset_hooks_end=False)``) of ``direction``
        (``"fwd"``, ``"bwd"``, ``"both"``): only those at ``level`` unless it is None, permanent ones only with
        ``including_permanent``. Hooks of an open ``with model.hooks(...)`` block are never removed here: they stay
        until the block exits. ``clear_contexts`` empties every site's ``hook.ctx``."""
        _check_flag(clear_contexts, "clear_contexts")
        self.remove_all_hook_fns(direction, including_permanent, level)
        if clear_contexts:
            self._registry.clear_ctx()

    def remove_all_hook_fns(self, direction: str = "both", including_permanent: bool = False,
                            level: int | None = None) -> None:
        """:meth:`reset_hooks` without clearing ``hook.ctx``."""
        self._remove_persistent(direction, "direction", including_permanent, level, None)

    def clear_contexts(self) -> None:
        """Empty every site's ``hook.ctx``."""
        self._registry.clear_ctx()

    def _remove_persistent(self, direction: str, arg: str, including_permanent: bool, level: int | None,
                           names: list[str] | None) -> None:
        _check_direction(direction, arg, both=True)
        _check_flag(including_permanent, "including_permanent")
        _check_level(level)
        self._registry.remove(direction, including_permanent=including_permanent, level=level, names=names)
        self._sync_attached()

    def _targets(self, name) -> list[str]:
        if isinstance(name, str):
            return [self.check_site(name)]  # type: ignore[attr-defined]
        if callable(name) or (isinstance(name, Sequence) and not isinstance(name, bytes)):
            return self.resolve_names(name)  # type: ignore[attr-defined]
        raise TypeError(f"name must be a site name, a list of site names or a predicate on them; got "
                        f"{type(name).__name__}")

    # ------------------------------------------------------------------ hook contexts
    def _expand(self, hooks: HookSpec, arg: str) -> list[tuple[str, HookFn]]:
        pairs: list[tuple[str, HookFn]] = []
        if isinstance(hooks, (str, bytes)) or not isinstance(hooks, (Sequence, Iterator)):
            raise TypeError(f"{arg} must be a list of (name_or_predicate, fn) pairs; got {type(hooks).__name__}")
        for i, item in enumerate(hooks):
            if not (isinstance(item, (tuple, list)) and len(item) == 2 and callable(item[1])):
                raise TypeError(f"{arg}[{i}] must be a (name_or_predicate, fn) pair; got {item!r}")
            target, fn = item
            names = [self.check_site(target)] if isinstance(target, str) else self.resolve_names(target)  # type: ignore[attr-defined]
            pairs.extend((n, fn) for n in names)
        return pairs

    @contextmanager
    def hooks(self, fwd_hooks: HookSpec = (), bwd_hooks: HookSpec = (), reset_hooks_end: bool = True,
              clear_contexts: bool = False) -> Iterator[Any]:
        """Activate hooks for the ``with`` block; exactly these are removed on every exit path.

        ``fwd_hooks`` / ``bwd_hooks`` hold ``(name_or_predicate, fn)`` pairs. A forward hook ``fn(act, *, hook)``
        may return a replacement of the same shape; a backward hook ``fn(grad, *, hook)`` sees the gradient of the
        loss with respect to the site's activation when ``backward()`` runs inside the block, and may return a
        replacement. Contexts nest: each pair fires once per forward pass, outer contexts before inner ones.
        ``reset_hooks_end=False`` (TransformerLens) leaves the hooks registered after the block, as persistent
        hooks at the block's nesting level (1 for the outermost) that :meth:`reset_hooks` removes; otherwise
        ``clear_contexts`` empties every site's ``hook.ctx`` on exit.
        """
        _check_flag(reset_hooks_end, "reset_hooks_end")
        _check_flag(clear_contexts, "clear_contexts")
        fwd, bwd = self._expand(fwd_hooks, "fwd_hooks"), self._expand(bwd_hooks, "bwd_hooks")
        with ExitStack() as stack:
            stack.callback(self._sync_attached)  # runs after the registry dropped this context's entries
            stack.enter_context(self._registry.active(fwd, bwd, keep=not reset_hooks_end, clear_ctx=clear_contexts))
            self._sync_attached()
            yield self

    def _sync_attached(self) -> None:
        """Attach every hooked site not yet attached (in forward order); detach those no hook needs any more."""
        wanted = self._registry.hooked_names()
        for name in [n for n in self._attached if n not in wanted]:
            self._attached.pop(name)()
        added = self.__dict__.get("_added_sites", ())
        for name in self.site_names():  # type: ignore[attr-defined]
            if name in wanted and name not in self._attached:
                # a site added by added_sites() is fired by its owner: nothing to attach
                self._attached[name] = _detach_nothing if name in added else self._attach(name)  # type: ignore

    @contextmanager
    def added_sites(self, names_after: Sequence[tuple[str, str]]) -> Iterator[None]:
        """Within the block, each ``name`` of ``names_after`` (``(name, after)`` pairs) is a hook site of this model,
        right after site ``after`` in forward order, so ``check_site``, ``hooks``, ``run_with_cache``, ``hook_dict``
        and ``start_at_layer`` treat it as a built-in site. Whoever added it fires it with :meth:`fire_site` inside
        the forward pass (e.g. an SAE spliced at ``after`` fires its latents; :mod:`interp.saes.splice`); nothing
        attaches to the model's modules for it. Blocks nest; a name that already is a site raises."""
        sites = self.site_names()  # type: ignore[attr-defined]
        names = [n for n, _ in names_after]
        for name, after in names_after:
            if not isinstance(name, str) or not name:
                raise TypeError(f"added_sites: a site name must be a non-empty string; got {name!r}")
            if name in sites:
                raise ValueError(f"added_sites: {name!r} already is a site of this model")
            sites.insert(sites.index(self.check_site(after)) + 1, name)  # type: ignore[attr-defined]
        old_sites, old_added = self._sites_cache, self.__dict__.get("_added_sites", frozenset())
        self._sites_cache = tuple(sites)
        self.__dict__["_added_sites"] = old_added | frozenset(names)
        try:
            yield
        finally:
            self._sites_cache = old_sites
            self.__dict__["_added_sites"] = old_added

    def fire_site(self, name: str, act: Tensor) -> Tensor:
        """Fire the hooks at site ``name`` on ``act`` and return the (possibly replaced) activation: how code that
        computes a site itself (an added site, see :meth:`added_sites`) exposes it to hooks and caches."""
        return self._registry.fire(name, act)

    def run_with_hooks(self, tokens, fwd_hooks: HookSpec = (), *, bwd_hooks: HookSpec = (),
                       reset_hooks_end: bool = True, clear_contexts: bool = False,
                       attention_mask: Tensor | None = None, **forward_kwargs):
        """One forward pass (see ``forward`` for the keyword arguments) with ``fwd_hooks`` active (``hooks(...)``
        for the other arguments). Backward hooks must outlive the pass: give ``bwd_hooks`` with
        ``reset_hooks_end=False`` (then ``reset_hooks()`` after the backward pass), or use ``with model.hooks(
        fwd_hooks, bwd_hooks):`` around both passes."""
        if bwd_hooks and reset_hooks_end:
            raise TypeError("run_with_hooks: backward hooks must outlive the forward pass; pass reset_hooks_end=False "
                            "(and reset_hooks() after backward) or use `with model.hooks(bwd_hooks=...):` around the "
                            "forward and backward passes")
        with self.hooks(fwd_hooks, bwd_hooks, reset_hooks_end, clear_contexts):
            return self(tokens, attention_mask=attention_mask, **forward_kwargs)  # type: ignore[operator]

    @contextmanager
    def _layer_window(self, start: int | None, stop: int | None, stop_site: str | None = None) -> Iterator[None]:
        """Within the block, a forward pass of this model (its persistent hooks fire) ends with ``StopForward`` at
        layer ``stop``'s input (None: runs to the end; or at ``stop_site``, after its hooks) and fires no hook of the
        sites before layer ``start`` (None: fires them all)."""
        reg = self._registry
        with ExitStack() as stack:
            stack.enter_context(reg.running())
            if stop is not None or stop_site is not None:
                site = self._stop_site(stop) if stop is not None else stop_site  # type: ignore[attr-defined]
                stack.enter_context(self.hooks([(site, _nothing_hook)]))
                old_stop, reg.stop_site = reg.stop_site, site
                stack.callback(setattr, reg, "stop_site", old_stop)
            if start is not None:
                before = frozenset(self._sites_before(start))  # type: ignore[attr-defined]
                old_mute, reg.mute = reg.mute, before.__contains__
                stack.callback(setattr, reg, "mute", old_mute)
            yield


def _check_direction(value, arg: str, both: bool) -> None:
    allowed = DIRECTIONS if both else DIRECTIONS[:2]
    if value not in allowed:
        raise ValueError(f"{arg} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def _check_level(level) -> None:
    if level is not None and not is_index(level):
        raise TypeError(f"level must be an int or None; got {level!r}")


def _check_flag(value, arg: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{arg} must be True or False; got {value!r}")


def _nothing_hook(act: Tensor, *, hook) -> None:
    return None


def _detach_nothing() -> None:
    return None
