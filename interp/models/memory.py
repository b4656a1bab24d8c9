"""Memory guard for activation caches: estimate a cache's size before running, refuse it above a budget, chunk to fit.

Estimating without running the model on the real input: the first estimate for a model runs it five times on tiny
inputs (batch × pos = 1×2, 2×2, 1×3, 2×3, and 3×5 to check) with every site hooked, and records each site's shape
and dtype. Each axis is fitted as ``a + b·batch + c·pos + d·batch·pos`` from the first four (``[batch, pos, d]``
fits exactly, and so does an attention pattern ``[batch, head, pos, pos]``, one axis at a time); the fifth checks
the fit. A site whose shape the fit does not predict is estimated as growing linearly in batch and quadratically in
pos from the 3×5 probe. The table is kept per model and dtype, so later estimates cost a few dictionary lookups.
The probe runs hide the caller's active hooks (they neither fire nor are disturbed) and leave nothing attached.

The budget, in order of precedence: the ``memory_budget=`` argument, the ``INTERP_MEMORY_BUDGET`` environment
variable, else :data:`DEFAULT_FRACTION` of the memory available on the device the cache is stored on (Linux
``MemAvailable``, capped by the cgroup limit; ``torch.cuda.mem_get_info`` for a GPU). A budget is a number of
bytes, a string with a unit (``"512MiB"``, ``"2GB"``, ``"1.5G"``), a percentage of the available memory
(``"80%"``) or ``"off"`` / ``inf`` (no limit). The estimate counts the cached tensors only, not the forward pass's
own working memory.

Analyses that sweep over many inputs chunk to a budget with :func:`batch_slices` / :func:`max_batch_size`.
"""

from __future__ import annotations

import math
import os
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from interp.errors import MemoryBudgetError

__all__ = ["BudgetLike", "DEFAULT_FRACTION", "ENV_VAR", "Budget", "CacheEstimate", "MemoryBudgetError",
           "available_memory",
           "batch_slices", "cache_size", "check_cache_budget", "estimate_cache", "format_bytes", "max_batch_size",
           "parse_budget", "resolve_budget"]

BudgetLike = int | float | str | None
"""What every ``memory_budget=`` argument takes: bytes, ``"2GiB"``, ``"1.5G"`` (= 1.5 GiB), ``"80%"``, ``"off"``,
None."""

ENV_VAR = "INTERP_MEMORY_BUDGET"
DEFAULT_FRACTION = 0.5
"""Share of the available memory a cache may take when no budget is given (the rest is for the forward pass)."""

_FIT_PROBES = ((1, 2), (2, 2), (1, 3), (2, 3))
_CHECK_PROBE = (3, 5)
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20,
          "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40}


# ------------------------------------------------------------------------------------------------ budgets
@dataclass(frozen=True)
class Budget:
    """A resolved memory budget."""

    nbytes: float
    """Bytes allowed (``inf``: no limit)."""
    source: str
    """Where it came from, for messages (e.g. ``"INTERP_MEMORY_BUDGET='2GiB'"``)."""

    @property
    def unlimited(self) -> bool:
        return math.isinf(self.nbytes)


def format_bytes(n: float) -> str:
    """``n`` bytes in binary units (``"1.5 GiB"``)."""
    if math.isinf(n):
        return "unlimited"
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def tensor_bytes(obj) -> int:
    """Bytes held by the tensors in ``obj`` (a tensor, or dicts / lists / tuples of them, nested)."""
    if isinstance(obj, Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def available_memory(device: str | torch.device | None = None) -> int:
    """Bytes that can still be allocated on ``device`` (CPU: ``MemAvailable``, capped by a cgroup limit; CUDA: free
    device memory)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0])
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:  # a container's limit (cgroup v2) may be far below the machine's memory
        limit = open("/sys/fs/cgroup/memory.max").read().strip()
        used = int(open("/sys/fs/cgroup/memory.current").read().strip())
        if limit != "max":
            avail = min(avail, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return int(avail)


def parse_budget(value: Any, arg: str = "memory_budget", device: str | torch.device | None = None) -> float:
    """Bytes from a budget value (see the module docstring); ``inf`` for no limit."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(f"{arg} must be a number of bytes, a string such as '2GiB' or '80%', or 'off'; got "
                        f"{value!r} ({type(value).__name__})")
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if text in ("off", "none", "inf", "unlimited"):
            return math.inf
        if text.endswith("%"):
            try:
                pct = float(text[:-1])
            except ValueError:
                pct = math.nan
            if not 0 < pct <= 100:
                raise ValueError(f"{arg}={value!r}: a percentage must be in (0, 100]")
            return available_memory(device) * pct / 100
        m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[0-9]+)?)([a-z]*)", text)
        if m is None or m.group(2) not in _UNITS:
            raise ValueError(f"{arg}={value!r} is not a memory size; expected e.g. '512MiB', '2GB', '1.5G', '80%', "
                             "'off' or a number of bytes")
        value = float(m.group(1)) * _UNITS[m.group(2)]
    if math.isnan(value) or value <= 0:
        raise ValueError(f"{arg} must be > 0 bytes (or 'off'); got {value!r}")
    return float(value)


def resolve_budget(memory_budget: Any = None, device: str | torch.device | None = None) -> Budget:
    """The budget in force: ``memory_budget`` if given, else ``$INTERP_MEMORY_BUDGET``, else
    :data:`DEFAULT_FRACTION` of the memory available on ``device``."""
    if memory_budget is not None:
        return Budget(parse_budget(memory_budget, "memory_budget", device), f"memory_budget={memory_budget!r}")
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Budget(parse_budget(env, ENV_VAR, device), f"{ENV_VAR}={env!r}")
    avail = available_memory(device)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return Budget(DEFAULT_FRACTION * avail,
                  f"{DEFAULT_FRACTION:.0%} of the {format_bytes(avail)} available on {dev}; memory_budget= or "
                  f"{ENV_VAR} overrides")


# ------------------------------------------------------------------------------------------------ site shapes
@dataclass(frozen=True)
class _SiteShape:
    axes: tuple[tuple[int, int, int, int], ...]  # per axis: value at (1, 2) and its changes with batch, pos, both
    itemsize: int
    exact: bool  # the fit predicted the check probe
    check_numel: int  # numel at the check probe

    def numel(self, batch: int, pos: int) -> int:
        if not self.exact:  # at most linear in batch, quadratic in pos (attention-like) from the check probe
            b0, t0 = _CHECK_PROBE
            return -(-self.check_numel * max(b0, batch) * max(t0, pos) ** 2 // (b0 * t0 * t0))  # ceil, in ints
        u, w = batch - 1, pos - 2
        return math.prod(max(0, a + db * u + dt * w + dbt * u * w) for a, db, dt, dbt in self.axes)


_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _table_key(model) -> tuple:
    p = next(iter(model.parameters()), None)
    return (p.dtype if p is not None else None, len(model.site_names()))


def _site_table(model) -> dict[str, _SiteShape]:
    per_model = _TABLES.setdefault(model, {})
    key = _table_key(model)
    if key not in per_model:
        per_model[key] = _probe(model)
    return per_model[key]


def _probe(model) -> dict[str, _SiteShape]:
    """Run the tiny probe inputs with every site hooked (the caller's hooks set aside); fit each site's shape."""
    sites = model.site_names()
    shapes: dict[tuple[int, int], dict[str, tuple[tuple[int, ...], int]]] = {}
    current: dict[str, tuple[tuple[int, ...], int]] = {}

    def record(act: Tensor, *, hook) -> None:
        current.setdefault(hook.name, (tuple(act.shape), act.element_size()))

    try:
        with model._registry.set_aside(), torch.no_grad(), model.hooks([(n, record) for n in sites]):
            for b, t in (*_FIT_PROBES, _CHECK_PROBE):
                current = {}
                model(torch.zeros(b, t, dtype=torch.long, device=model.device))
                shapes[(b, t)] = current
    finally:
        model._sync_attached()  # re-attach what the caller's (set-aside) hooks need
    table = {}
    for name in sites:
        seen = [shapes[p].get(name) for p in (*_FIT_PROBES, _CHECK_PROBE)]
        if any(s is None for s in seen) or len({len(s[0]) for s in seen}) != 1:
            continue  # did not fire on every probe: not estimable (run_with_cache raises for such a site anyway)
        v11, v21, v12, v22, check = (s[0] for s in seen)
        axes = tuple((a, b - a, c - a, d - b - c + a) for a, b, c, d in zip(v11, v21, v12, v22))
        u, w = _CHECK_PROBE[0] - 1, _CHECK_PROBE[1] - 2
        exact = tuple(a + db * u + dt * w + dbt * u * w for a, db, dt, dbt in axes) == check
        table[name] = _SiteShape(axes, seen[0][1], exact, math.prod(check))
    return table


# ------------------------------------------------------------------------------------------------ estimates
@dataclass(frozen=True)
class CacheEstimate:
    """Estimated size of an activation cache."""

    batch: int
    """Sequences in the run."""
    pos: int
    """Positions per sequence."""
    nbytes: int
    """Estimated bytes of all cached tensors."""
    by_site: dict[str, int] = field(repr=False)
    """Estimated bytes per site."""

    def largest(self, n: int = 3) -> list[tuple[str, int, int]]:
        """The ``n`` biggest site kinds (layer index replaced by ``*``): ``(kind, number of sites, bytes)``."""
        groups: dict[str, list[int]] = {}
        for name, size in self.by_site.items():
            groups.setdefault(re.sub(r"^blocks\.\d+\.", "blocks.*.", name), []).append(size)
        ranked = sorted(groups.items(), key=lambda kv: -sum(kv[1]))
        return [(kind, len(sizes), sum(sizes)) for kind, sizes in ranked[:n]]

    def __str__(self) -> str:
        parts = ", ".join(f"{kind} ×{count}: {format_bytes(size)}" for kind, count, size in self.largest())
        return (f"about {format_bytes(self.nbytes)} for {len(self.by_site)} sites at batch {self.batch} × pos "
                f"{self.pos} (largest: {parts or 'none'})")


def _batch_pos(model, input, forward_kwargs: dict) -> tuple[int, int]:
    if isinstance(input, (tuple, torch.Size)) and len(input) == 2 and all(
            isinstance(x, int) and not isinstance(x, bool) for x in input):
        b, t = int(input[0]), int(input[1])
        if b < 1 or t < 1:
            raise ValueError(f"tokens: a (batch, pos) shape must be two ints >= 1; got {tuple(input)}")
        return b, t
    if forward_kwargs.get("start_at_layer") is not None:
        return tuple(model._check_resid(input).shape[:2])
    tokens, _ = model._prepare(input, forward_kwargs.get("attention_mask"))
    return tuple(tokens.shape)


def _reachable(model, names: list[str], forward_kwargs: dict) -> list[str]:
    stop, start = forward_kwargs.get("stop_at_layer"), forward_kwargs.get("start_at_layer")
    keep = set(model.site_names())
    if stop is not None:
        keep &= set(model._sites_through(model._layer_bound(stop, "stop_at_layer", True)))
    if start is not None:
        keep -= set(model._sites_before(model._layer_bound(start, "start_at_layer", False)))
    return [n for n in names if n in keep]


def estimate_cache(model, tokens, names_filter=None, **forward_kwargs) -> CacheEstimate:
    """Estimate the cache ``model.run_with_cache(tokens, names_filter, **forward_kwargs)`` would hold, without
    running the model on ``tokens`` (token ids, text, a residual stream with ``start_at_layer``, or a
    ``(batch, pos)`` shape)."""
    b, t = _batch_pos(model, tokens, forward_kwargs)
    names = _reachable(model, model.resolve_names(names_filter), forward_kwargs)
    return _estimate_names(model, names, b, t)


def _estimate_names(model, names: Sequence[str], batch: int, pos: int) -> CacheEstimate:
    table = _site_table(model)
    by_site = {n: table[n].numel(batch, pos) * table[n].itemsize for n in names if n in table}
    return CacheEstimate(batch, pos, sum(by_site.values()), by_site)


def cache_size(model, tokens, names_filter=None, **forward_kwargs) -> int:
    """Estimated bytes of ``model.run_with_cache(tokens, names_filter, **forward_kwargs)``'s cache (see
    :func:`estimate_cache`)."""
    return estimate_cache(model, tokens, names_filter, **forward_kwargs).nbytes


def check_cache_budget(model, tokens, names: Sequence[str], *, memory_budget: Any = None,
                       device: str | torch.device | None = None, what: str = "run_with_cache",
                       **forward_kwargs) -> CacheEstimate | None:
    """Raise :class:`MemoryBudgetError` if caching ``names`` for ``tokens`` would exceed the budget; return the
    estimate (None when the budget is unlimited: nothing is probed then)."""
    cache_device = device if device is not None else model.device
    budget = resolve_budget(memory_budget, cache_device)
    if budget.unlimited or not names:
        return None
    b, t = _batch_pos(model, tokens, forward_kwargs)
    est = _estimate_names(model, list(names), b, t)
    if est.nbytes > budget.nbytes:
        raise MemoryBudgetError(
            f"{what} would cache {est}, above the memory budget of {format_bytes(budget.nbytes)} ({budget.source}). "
            "Cache fewer sites (names_filter), run fewer sequences at a time "
            "(interp.models.memory.batch_slices(model, tokens, names_filter) splits a batch to fit) or shorter ones, "
            f"or raise the budget (memory_budget= or {ENV_VAR}, e.g. '16GiB', '80%', 'off')"
        )
    return est


def max_batch_size(model, pos: int, names_filter=None, *, memory_budget: Any = None,
                   device: str | torch.device | None = None, **forward_kwargs) -> int | None:
    """The most sequences of ``pos`` tokens whose cache of ``names_filter`` fits the budget (None: no limit);
    :class:`MemoryBudgetError` if not even one does."""
    from interp.checks import check_int

    pos = check_int(pos, "pos", lo=1)
    budget = resolve_budget(memory_budget, device if device is not None else model.device)
    if budget.unlimited:
        return None
    names = _reachable(model, model.resolve_names(names_filter), forward_kwargs)
    one, two = (_estimate_names(model, names, b, pos) for b in (1, 2))
    per_row = max(1, two.nbytes - one.nbytes)
    fixed = one.nbytes - per_row
    n = int((budget.nbytes - fixed) // per_row)
    if n < 1:
        raise MemoryBudgetError(
            f"one sequence of {pos} tokens needs {one}, above the memory budget of {format_bytes(budget.nbytes)} "
            f"({budget.source}). Cache fewer sites, use shorter sequences, or raise the budget (memory_budget= or "
            f"{ENV_VAR})"
        )
    return n


def batch_slices(model, tokens, names_filter=None, *, memory_budget: Any = None,
                 device: str | torch.device | None = None, **forward_kwargs) -> list[slice]:
    """Slices of the batch axis of ``tokens`` such that caching ``names_filter`` for each chunk fits the budget::

        for rows in batch_slices(model, tokens, names):
            _, cache = model.run_with_cache(tokens[rows], names, attention_mask=mask[rows])
    """
    b, t = _batch_pos(model, tokens, forward_kwargs)
    n = max_batch_size(model, t, names_filter, memory_budget=memory_budget, device=device, **forward_kwargs)
    n = b if n is None else min(n, b)
    return [slice(i, min(i + n, b)) for i in range(0, b, n)]
