"""Activations for probing: every requested site in one forward pass per batch, read at a position rule.

:func:`collect_activations` tokenises the texts once (right-padded, with the attention mask), runs them in batches
of similar length, and at each site keeps only the rows the position rule reads (the last real token, a named
token, a mean over a span, or every token; see :mod:`interp.probes.positions`), so a recurrent-state site's large
``[batch, pos, ...]`` buffer is never kept. The forward pass stops after the last layer any requested site needs.
Storage is stacked per feature width (``[site, row, d]``, what the batched trainer reads), optionally in float16 or
bfloat16, and checked against a stated memory budget after the first batch, before anything large is allocated.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from interp.models.loading import as_hooked
from interp.probes.positions import Position, resolve

__all__ = ["Activations", "collect_activations", "resolve_sites", "parse_bytes"]

_STORAGE = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@dataclass(frozen=True)
class Activations:
    """Probe inputs read off a model: one row per text (per token for the ``all`` rule) at each site."""

    sites: tuple[str, ...]
    """Site names, in the model's forward order."""
    groups: tuple[tuple[tuple[str, ...], Tensor], ...]
    """Sites of equal feature width and their stacked rows ``[site, row, d]``."""
    row_text: Tensor
    """``LongTensor[row]``: the index of the text each row was read from."""
    types: tuple
    """Per row the word type read (a token id, or a tuple of ids for a mean): the default control-task types."""
    position: Position
    """The position rule the rows were read at."""
    n_texts: int
    """How many texts were read."""

    def __getitem__(self, site: str) -> Tensor:
        """Rows ``[row, d]`` of one site."""
        for names, data in self.groups:
            if site in names:
                return data[names.index(site)]
        raise KeyError(f"site {site!r} was not collected; collected: {', '.join(self.sites)}")

    @property
    def n_rows(self) -> int:
        return int(self.row_text.shape[0])

    @property
    def nbytes(self) -> int:
        return sum(d.numel() * d.element_size() for _, d in self.groups)

    def expand_labels(self, labels: Tensor) -> Tensor:
        """Per-text labels ``[n_texts, ...]`` as per-row labels (the ``all`` rule repeats a text's label)."""
        if labels.shape[0] != self.n_texts:
            raise ValueError(f"labels has {labels.shape[0]} entries for {self.n_texts} texts")
        return labels[self.row_text]


def parse_bytes(value: int | float | str | None) -> int | None:
    """A memory budget in bytes, read as everywhere in the toolkit (:func:`interp.models.memory.parse_budget`:
    ``2_000_000``, ``"512MB"``, ``"2GiB"``, ``"1.5G"`` = 1.5 GiB, ``"80%"`` of the available memory); None and
    ``"off"`` mean no limit (None)."""
    if value is None:
        return None
    from interp.models.memory import parse_budget

    nbytes = parse_budget(value, "memory_budget")
    return None if math.isinf(nbytes) else int(nbytes)


def resolve_sites(model, sites: str | Sequence[str]) -> list[str]:
    """Expand site names and glob patterns (``blocks.*.hook_resid_post``) to the model's sites, in forward order.
    A pattern that matches nothing raises a KeyError suggesting close names."""
    patterns = [sites] if isinstance(sites, str) else list(sites)
    if not patterns or not all(isinstance(p, str) for p in patterns):
        raise TypeError(f"sites must be a site name, a glob pattern or a list of them; got {sites!r}")
    names = model.site_names()
    chosen: set[str] = set()
    for pattern in patterns:
        if any(c in pattern for c in "*?["):
            hits = fnmatch.filter(names, pattern)
            if not hits:
                probe = pattern.replace("*", "0").replace("?", "0")
                close = difflib.get_close_matches(probe, names, n=3, cutoff=0.5)
                hint = f" Close names: {', '.join(repr(c) for c in close)}." if close else ""
                raise KeyError(f"sites: pattern {pattern!r} matches no site of this {model.arch} model.{hint} "
                               "See model.site_names().")
            chosen.update(hits)
        else:
            chosen.add(model.check_site(pattern))
    return [n for n in names if n in chosen]


def _stop_layer(model, sites: list[str]) -> int | None:
    """The smallest ``stop_at_layer`` whose run still fires every site (None: the full forward is needed)."""
    order = {n: i for i, n in enumerate(model.site_names())}
    last = max(order[s] for s in sites)
    for layer in range(model.n_layers + 1):
        stop = f"blocks.{layer}.hook_resid_pre" if layer < model.n_layers else \
            f"blocks.{model.n_layers - 1}.hook_resid_post"
        if stop in order and order[stop] >= last:
            return layer
    return None


def collect_activations(model, texts: Sequence[str] | Tensor, sites: str | Sequence[str] = "blocks.*.hook_resid_post",
                        position: str | int | Position = "last", *, attention_mask: Tensor | None = None,
                        batch_size: int = 16, dtype: torch.dtype | None = None,
                        memory_budget: int | str | None = None, progress: bool = True) -> Activations:
    """Read ``sites`` for every text at ``position`` in one forward pass per batch.

    ``texts``: strings (tokenised with a prepended BOS where the tokenizer has one, padded and masked), or token
    ids ``[n, pos]`` with an optional ``attention_mask`` (then no position counts as a BOS). ``sites``: names or
    glob patterns. ``dtype``: storage dtype (default float32; float16/bfloat16 halve the memory; a value that
    overflows raises). ``memory_budget``: bytes (or ``"2GiB"``) the stored rows may take; checked after the first
    batch, before the rest is allocated.
    """
    model = as_hooked(model, "collect_activations")
    from tqdm.auto import tqdm

    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    dtype = torch.float32 if dtype is None else dtype
    if dtype not in _STORAGE:
        raise ValueError(f"dtype must be one of {[str(d) for d in _STORAGE]}; got {dtype}")
    budget = parse_bytes(memory_budget)
    position = Position.parse(position)
    names = resolve_sites(model, sites)
    tokens, mask, strings, bos = _tokenize(model, texts, attention_mask)
    n = tokens.shape[0]
    lengths = mask.sum(1)
    order = torch.argsort(lengths, stable=True)  # batches of similar length pad less
    stop = _stop_layer(model, names)

    where = resolve(position, model, tokens, mask, strings, bos)  # every text checked before any forward pass
    if position.kind == "all":
        counts = where.weights.bool().sum(1)
        offsets = torch.cumsum(counts, 0) - counts
        row_text = torch.repeat_interleave(torch.arange(n), counts)
    else:
        row_text = torch.arange(n)
    n_rows = int(row_text.shape[0])
    views: dict[str, Tensor] = {}
    groups: list[tuple[tuple[str, ...], Tensor]] = []
    batches = [order[i: i + batch_size] for i in range(0, n, batch_size)]
    for bi, idx in enumerate(tqdm(batches, desc=f"activations at {len(names)} site(s)",
                                  disable=not progress or len(batches) < 2)):
        cols = mask[idx].bool().any(0).nonzero().flatten()    # the batch's columns holding real tokens
        span = slice(int(cols[0]), int(cols[-1]) + 1)            # (padding may be on either side)
        tok, msk, weights = tokens[idx, span], mask[idx, span], where.weights[idx, span]
        if position.kind == "all":
            rows_at = torch.cat([offsets[i] + torch.arange(int(counts[i])) for i in idx.tolist()])
        else:
            rows_at = idx
        grabbed = _run_batch(model, names, tok, msk, weights, position, stop)
        if bi == 0:
            views, groups = _allocate(names, grabbed, n_rows, dtype, budget)
        for name, rows in grabbed.items():
            stored = rows.to(dtype)
            if not torch.isfinite(stored).all():
                raise ValueError(f"site {name!r}: activations are not finite once stored as {dtype} (overflow?); "
                                 "use dtype=torch.float32 (or bfloat16)" if torch.isfinite(rows).all() else
                                 f"site {name!r}: the model produced non-finite activations (nan/inf)")
            views[name][rows_at] = stored
    return Activations(tuple(names), tuple(groups), row_text, tuple(where.types), position, n)


def _tokenize(model, texts, attention_mask):
    if isinstance(texts, Tensor):
        tokens = model.check_tokens(texts, arg="texts").cpu()
        if attention_mask is None:
            return tokens, torch.ones_like(tokens), None, False
        mask = attention_mask.unsqueeze(0) if attention_mask.ndim == 1 else attention_mask
        if tuple(mask.shape) != tuple(tokens.shape) or mask.is_floating_point() \
                or bool(((mask != 0) & (mask != 1)).any()) or not bool(mask.bool().any(1).all()):
            raise ValueError(f"attention_mask must be 0/1 integers of the tokens' shape {tuple(tokens.shape)} with a "
                             "real token in every row")
        return tokens, mask.long().cpu(), None, False
    if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts \
            or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a non-empty list of strings or token ids [n, pos]; got "
                        f"{type(texts).__name__}")
    if attention_mask is not None:
        raise ValueError("attention_mask: pass it with token ids, not with text (text is padded and masked)")
    tokens, mask = model.to_tokens(list(texts), return_attention_mask=True)
    bos = getattr(model.tokenizer, "bos_token_id", None) is not None
    return tokens.cpu(), mask.cpu(), list(texts), bos


def _run_batch(model, names: list[str], tokens: Tensor, mask: Tensor, weights: Tensor, position: Position,
               stop: int | None) -> dict[str, Tensor]:
    """One forward pass with a reading hook at every site: ``{site: rows [r, d]}``."""
    device = model.device
    w = weights.to(device)
    picked = w.argmax(1) if position.single else None
    flags = w.bool() if position.kind == "all" else None
    out: dict[str, Tensor] = {}

    def read(act: Tensor, *, hook) -> None:
        a = act.detach()
        if a.ndim < 2 or tuple(a.shape[:2]) != tuple(tokens.shape):
            raise ValueError(f"site {hook.name!r} has shape {tuple(a.shape)}; probing needs a per-position site "
                             f"[batch, pos, ...] matching the tokens {tuple(tokens.shape)}")
        a = a.reshape(a.shape[0], a.shape[1], -1)
        if picked is not None:   # a copy of one row per text, so a large states buffer can be freed
            rows = a[torch.arange(a.shape[0], device=a.device), picked]
        elif flags is not None:
            rows = a[flags]
        else:
            rows = torch.einsum("bt,btd->bd", w.to(torch.float32), a.float())
        out[hook.name] = rows.float().cpu()

    real_mask = None if bool(mask.all()) else mask.to(device)
    with torch.no_grad(), model.hooks([(n, read) for n in names]):
        model(tokens.to(device), attention_mask=real_mask, return_type=None, stop_at_layer=stop)
    missing = [n for n in names if n not in out]
    if missing:
        raise RuntimeError(f"sites {missing[:4]} did not fire in the forward pass")
    return out


def _allocate(names: list[str], grabbed: dict[str, Tensor], n_rows: int, dtype: torch.dtype,
              budget: int | None) -> tuple[dict[str, Tensor], list[tuple[tuple[str, ...], Tensor]]]:
    widths = {n: grabbed[n].shape[1] for n in names}
    need = n_rows * sum(widths.values()) * torch.empty(0, dtype=dtype).element_size()
    if budget is not None and need > budget:
        raise MemoryError(
            f"memory_budget: storing {n_rows} rows at {len(names)} site(s) ({sum(widths.values())} features) as "
            f"{dtype} needs {need / 2**20:.1f} MiB, over the budget of {budget / 2**20:.1f} MiB; use fewer sites, "
            "dtype=torch.float16, a single-token position rule or fewer texts")
    stacks: dict[int, list[str]] = {}
    for n in names:
        stacks.setdefault(widths[n], []).append(n)
    views, groups = {}, []
    for d, group in stacks.items():
        data = torch.empty(len(group), n_rows, d, dtype=dtype)
        groups.append((tuple(group), data))
        for k, n in enumerate(group):
            views[n] = data[k]
    return views, groups
