"""The one patching loop: run many patched variants of a corrupted run and score each with a metric.

A *variant* is a set of :class:`Patch` es (a site of one layer, a cell of it, values from the clean or the
corrupted run); every patching function, causal tracing and its severed variant build variants and hand them to
:func:`run_variants`. What makes it fast, and what each trick saves:

1. **Start at the patched layer.** A patch at layer ``l`` leaves layers ``< l`` as in the corrupted run, so its
   rows start from the cached corrupted residual ``blocks.{l}.hook_resid_pre`` (saves ``l`` of ``n_layers`` blocks:
   about half of them over a full layer sweep).
2. **Reuse the positions before the patch.** A patch at position ``p`` leaves every position ``< p`` as in the
   corrupted run (causality), so only positions ``p..`` are computed; attention reads the corrupted run's keys and
   values for the earlier ones, Mamba starts from its recurrent state after ``p - 1`` (``model.run_suffix`` on a
   ``model.record_prefix`` of the corrupted run). Saves the fraction ``p / pos`` of every block's work (about half
   over a full position sweep). Models without ``has_prefix_reuse`` run all positions.
3. **Many variants in one batched forward.** Variants with the same first position run together, block by block:
   the rows of a variant join the batch at its first patched layer (the batch grows as the layers go up), so one
   forward per block serves every layer of the sweep and the matrix products are large.
4. **Patches that change nothing are not run.** A variant whose clean values equal the corrupted ones (e.g. the
   positions before the first differing token) has exactly the corrupted run's output; its metric is taken from it.
5. **Only the logits the metric reads.** A :class:`~interp.patching.metrics.Metric` names its positions; the
   unembedding (for SmolLM2 as costly as eight blocks per position) is computed there only.

Chunking: at most ``batch_size`` variants per batched forward, and as many as ``memory_budget`` allows after the
caches (bytes or a size string, read by :func:`interp.models.memory.parse_budget` as everywhere: ``"2GiB"``, ``"80%"``,
``"off"``; a budget too small for one variant raises, naming the minimum); a tqdm bar counts variants.
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from interp.models.memory import BudgetLike, parse_budget, tensor_bytes
from interp.patching.metrics import Metric, evaluate_metric
from interp.patching.sites import Setter

__all__ = ["Patch", "Variant", "run_variants", "DEFAULT_MEMORY_BUDGET"]

DEFAULT_MEMORY_BUDGET = 2 << 30
"""Bytes the batched forwards may use when no ``memory_budget`` is given (2 GiB)."""


@dataclass(frozen=True)
class Patch:
    """Write ``source``'s values of one cell of ``site`` (a site of block ``layer``) into the patched run."""

    layer: int
    site: str
    setter: Setter
    index: tuple
    """The cell, as the setter reads it (positions; (pos, head); (head,); (head, dest))."""
    source: str = "clean"
    """``"clean"`` (the values the caller passes) or ``"corrupt"`` (the corrupted run's own, for freezing)."""


@dataclass(frozen=True)
class Variant:
    """One patched run: its patches and the first position any of them can change."""

    patches: tuple[Patch, ...]
    start_pos: int

    @property
    def start_layer(self) -> int:
        return min(p.layer for p in self.patches)


def run_variants(model, corrupt_tokens: Tensor, variants: Sequence[Variant], metric, clean: dict[str, Tensor], *,
                 corrupt_hooks: Sequence = (), batch_size: int | None = None, memory_budget: BudgetLike = None,
                 progress: bool = True, desc: str = "patching") -> tuple[Tensor, Tensor]:
    """Metric of every variant, averaged over the prompts: ``(values [len(variants)], corrupt_metric [n])``.

    ``corrupt_tokens`` ``[n, pos]``: the corrupted prompts, run under ``corrupt_hooks`` (e.g. embedding noise);
    every variant has ``n`` rows, one per prompt. ``clean[site]``: the values clean patches read, ``[n or 1, ...]``
    over all positions. ``metric``: bound (see :func:`~interp.patching.metrics.bind_metric`).
    """
    if not variants:
        raise ValueError("no cells to patch (empty positions, layers or heads?)")
    n, T = corrupt_tokens.shape
    sites = sorted({p.site for v in variants for p in v.patches})
    resid_sites = [model.components(layer)["resid_pre"] for layer in range(model.n_layers)]
    resid_sites.append(model.components(model.n_layers - 1)["resid_post"])
    with torch.no_grad(), model.hooks(list(corrupt_hooks)):
        logits, cache = model.run_with_cache(corrupt_tokens, names_filter=sorted(set(resid_sites) | set(sites)))
        prefix = model.record_prefix(corrupt_tokens) if model.has_prefix_reuse else None
    corrupt = {s: cache[s] for s in sites}
    resid = [cache[s] for s in resid_sites]
    corrupt_metric = evaluate_metric(metric, logits, n)
    plan = _Plan(model, n, T, metric, logits, resid, prefix, {"clean": clean, "corrupt": corrupt})
    values = torch.full((len(variants),), float("nan"))
    todo = []
    for i, v in enumerate(variants):
        if plan.changes_nothing(v):
            values[i] = corrupt_metric.mean()
        else:
            todo.append(i)
    chunk = plan.chunk_size(batch_size, memory_budget)
    key = (lambda i: (variants[i].start_pos, variants[i].start_layer)) if prefix is not None else \
        (lambda i: (variants[i].start_layer, variants[i].start_pos))
    todo.sort(key=key)
    groups: list[list[int]] = []
    for i in todo:
        same = groups and key(groups[-1][0])[0] == key(i)[0] and len(groups[-1]) < chunk
        (groups[-1].append(i) if same else groups.append([i]))
    with tqdm(total=len(variants), desc=desc, disable=not progress, leave=False) as bar:
        bar.update(len(variants) - len(todo))
        for group in groups:
            values[group] = plan.run([variants[i] for i in group])
            bar.update(len(group))
    return values, corrupt_metric


class _Plan:
    """The cached corrupted run and everything a batched patched forward needs."""

    def __init__(self, model, n, T, metric, logits, resid, prefix, sources):
        self.model, self.n, self.T, self.metric = model, n, T, metric
        self.logits, self.resid, self.prefix, self.sources = logits, resid, prefix, sources
        self.selected = isinstance(metric, Metric)
        self.logit_pos = [p % T for p in metric.positions] if self.selected else list(range(T))
        self.own_head = prefix is not None and not self._head_matches()

    # ------------------------------------------------------------------ planning
    def _head_matches(self) -> bool:
        """Whether ``apply_ln_final(resid) @ W_U + b_U`` gives this model's logits (checked on the corrupted run);
        if not, the fast path runs the model's own head on every suffix position."""
        pos = sorted(set(self.logit_pos))
        with torch.no_grad():
            ours = self._unembed(self.resid[-1][:, pos])  # resid[-1]: the last block's hook_resid_post
        return bool(torch.allclose(ours, self.logits[:, pos], atol=1e-4, rtol=1e-4))

    def _unembed(self, resid: Tensor) -> Tensor:
        m = self.model
        return m.apply_ln_final(resid) @ m.W_U + m.b_U

    def changes_nothing(self, variant: Variant) -> bool:
        """Every clean patch writes values equal to the corrupted run's (then the run is the corrupted run)."""
        for patch in variant.patches:
            if patch.source != "clean":
                continue
            base = self.sources["corrupt"][patch.site]
            probe = base.clone()
            patch.setter(probe, self.sources["clean"][patch.site], patch.index, 0)
            if not torch.equal(probe, base):
                return False
        return True

    def chunk_size(self, batch_size: int | None, memory_budget: BudgetLike) -> int:
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int (variants per forward); got {batch_size!r}")
        fixed = tensor_bytes(self.sources) + tensor_bytes(self.resid) + self.logits.numel() * self.logits.element_size()
        if self.prefix is not None:
            fixed += self.prefix.nbytes()
        per_variant = self.n * self._row_bytes()
        budget = DEFAULT_MEMORY_BUDGET
        if memory_budget is not None:
            budget = parse_budget(memory_budget, "memory_budget", self.logits.device)  # bytes, "2GiB", "80%", "off"
            if budget < fixed + per_variant:
                raise ValueError(
                    f"memory_budget={memory_budget!r} ({int(budget)} bytes) is too small for one patched forward: the "
                    f"minimum is {fixed + per_variant} bytes ({fixed} for the clean and corrupted caches + "
                    f"{per_variant} for one variant of {self.n} rows)")
        if math.isinf(budget):  # "off": only batch_size bounds a batch
            return int(batch_size or sys.maxsize)
        chunk = max(1, int(budget - fixed) // per_variant)
        return int(min(chunk, batch_size or chunk))

    def _row_bytes(self) -> int:
        """Working memory of one row: twice every activation of one block (measured on a one-row run), plus the
        logits it produces."""
        m = self.model
        names = [s for s in m.site_names() if s.startswith("blocks.0.")]
        with torch.no_grad():
            _, cache = m.run_with_cache(self.resid[0][:1], names_filter=names, start_at_layer=0,
                                        stop_at_layer=1)
        block = sum(t.numel() * t.element_size() for t in cache.values())
        n_logits = len(set(self.logit_pos)) if self.selected and self.prefix is not None and not self.own_head \
            else self.T
        return 2 * block + 3 * n_logits * m.d_vocab * 4

    # ------------------------------------------------------------------ running
    def run(self, variants: list[Variant]) -> Tensor:
        """Metric (mean over prompts) of each variant; they share a first position (fast path) or layer."""
        order = list(range(len(variants)))
        if self.prefix is not None:
            order.sort(key=lambda i: variants[i].start_layer)
            final, offset = self._staggered([variants[i] for i in order]), variants[0].start_pos
        else:
            final, offset = self._full(variants), 0
        inputs = self._metric_inputs(final, offset)  # every row at once: one unembedding matmul
        out = torch.empty(len(variants))
        n = self.n
        for j, i in enumerate(order):
            rows = inputs[j * n:(j + 1) * n]
            out[i] = evaluate_metric(self.metric, rows, n, selected=self.selected).mean()
        return out

    def _metric_inputs(self, final: Tensor, offset: int) -> Tensor:
        """What the metric reads, for all rows at once (one unembedding matmul): the logits at a
        :class:`Metric`'s positions, or all logits. ``final``: logits of every position (fallback), or of positions
        ``offset..`` (fast path with the model's own head), or the final residual of positions ``offset..``."""
        if self.prefix is None:
            return final[:, self.logit_pos] if self.selected else final
        reps = final.shape[0] // self.n
        after = sorted({p for p in self.logit_pos if p >= offset})
        if self.own_head:
            computed = final[:, [p - offset for p in after]]
        else:
            computed = self._unembed(final[:, [p - offset for p in after]]) if after else None
        column = {p: i for i, p in enumerate(after)}
        parts = [computed[:, column[p]] if p >= offset else self.logits[:, p].repeat(reps, 1)
                 for p in self.logit_pos]
        return torch.stack(parts, dim=1)

    def _hooks(self, variants: list[Variant], offset: int, current: dict) -> list[tuple[str, Callable]]:
        """One hook per patched site, writing each variant's patches into that variant's rows (block of ``n``)."""
        by_site: dict[str, list[tuple[slice, Patch]]] = defaultdict(list)
        for i, v in enumerate(variants):
            for patch in v.patches:
                by_site[patch.site].append((slice(i * self.n, (i + 1) * self.n), patch))

        def fn(act: Tensor, *, hook) -> Tensor | None:
            layer = current.get("layer")  # a stop site (the next block's resid_pre) also fires at a call's end
            todo = [(rows, patch) for rows, patch in by_site[hook.name] if layer in (None, patch.layer)]
            if not todo:
                return None
            out = act.clone()
            for rows, patch in todo:
                patch.setter(out[rows], self.sources[patch.source][hook.name], patch.index, offset)
            return out

        return [(site, fn) for site in by_site]

    def _staggered(self, variants: list[Variant]) -> Tensor:
        """Fast path: positions ``p..`` only, block by block; a variant's rows join at its first patched layer.
        ``variants`` are sorted by first layer; returns the final residual ``[len * n, pos - p, d_model]``."""
        m, n, p = self.model, self.n, variants[0].start_pos
        current: dict = {}
        prefix_rows = torch.arange(n).repeat(len(variants))
        h = None
        with torch.no_grad(), m.hooks(self._hooks(variants, p, current)):
            for layer in range(variants[0].start_layer, m.n_layers):
                joining = sum(v.start_layer == layer for v in variants)
                if joining:
                    new = self.resid[layer][:, p:].repeat(joining, 1, 1)
                    h = new if h is None else torch.cat([h, new])
                current["layer"] = layer
                last = layer == m.n_layers - 1 and self.own_head  # then the model's head gives the logits
                h = m.run_suffix(h, layer, p, self.prefix, rows=prefix_rows[:h.shape[0]],
                                 stop_at_layer=None if last else layer + 1)
        return h

    def _full(self, variants: list[Variant]) -> Tensor:
        """Fallback: all positions from the variants' common first layer, one batched forward; returns logits."""
        m, layer = self.model, variants[0].start_layer
        h = self.resid[layer].repeat(len(variants), 1, 1)
        with torch.no_grad(), m.hooks(self._hooks(variants, 0, {})):
            return m(h, start_at_layer=layer)


