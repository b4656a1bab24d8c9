"""``ActivationStore``: shuffled batches of activations at one hook site, from a model, a cache or a tensor.

Rows come from an *activation source* in a fixed order (so a run is reproducible and resumable):

- ``ModelActivations``: runs a ``HookedModel`` over token sequences and keeps the activation at ``site``. A hook
  grabs the activation and raises a private exception, so the forward stops right after the site's layer (the
  ``model.hooks`` context removes the hook on that exit path too). Per-position sites ``[batch, pos, *rest]``
  are flattened to ``[batch * pos, prod(rest)]``: ``blocks.12.hook_resid_post`` gives d_in = d_model,
  ``blocks.3.mixer.hook_ssm_state`` [batch, pos, d_inner, d_state] gives d_in = d_inner * d_state.
  BOS / EOS / pad positions are dropped with ``skip_special``.
- ``CachedActivations``: safetensors shards written by ``write_activation_cache`` (read instead of the model).
- ``TensorActivations``: an in-memory ``[n, d_in]`` tensor.

The store keeps a buffer of ``buffer_batches`` batches: it fills it, permutes it with its own seeded generator,
serves half of it batch by batch, refills, permutes again, and so on. ``state_dict()`` captures the buffer, the
generator and the source position, so a resumed run sees exactly the batches the uninterrupted run would have.

Memory: ``memory_budget`` (bytes, ``"2GiB"``, ``"80%"``, ``"off"``; default ``$INTERP_MEMORY_BUDGET`` or half the
available memory, see :mod:`interp.models.memory`) bounds what a store holds: its shuffle buffer (twice, while it
is reshuffled) plus one read from its source. A buffer above it is an error saying what to lower; a source read is
made smaller to fit (fewer sequences per model forward pass, fewer rows per read of a tensor or cache). Reads only
change how the same rows are cut, so with memory to spare (the usual case) nothing changes at all.

Data parallel: a ``rank`` of ``world_size`` gets rows ``[rank * b : (rank + 1) * b]`` of each global batch
(``b = batch_size / world_size``); every rank keeps the same buffer (cheap for cached/tensor sources). For a
model source, each rank instead reads every ``world_size``-th sequence into its own buffer (no duplicated model
compute); batches then differ from a single-process run, but each rank's are still a disjoint slice of the data.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor

from interp.atomic import atomic_save_safetensors, atomic_write_json
from interp.checks import check_device, check_int
from interp.files import check_safetensors, read_json_object
from interp.hooks import StopForward
from interp.models.memory import MemoryBudgetError, format_bytes, resolve_budget
from interp.saes.tokens import builtin_corpus, load_tokens, pack_texts  # noqa: F401  (re-exported)

__all__ = [
    "CACHE_META",
    "ActivationStore",
    "CachedActivations",
    "ModelActivations",
    "TensorActivations",
    "builtin_corpus",
    "load_tokens",
    "pack_texts",
    "site_activations",
    "sites_activations",
    "write_activation_cache",
]

CACHE_META = "activations.json"


def site_activations(model, site: str, tokens: Tensor) -> Tensor:
    """Activations at ``site`` for ``tokens [batch, pos]`` as ``[batch, pos, d_in]`` (trailing dims flattened).

    The forward pass stops right after the site fires.
    """
    return sites_activations(model, [site], tokens)[0]


def sites_activations(model, sites, tokens: Tensor) -> list[Tensor]:
    """Activations at each of ``sites`` for ``tokens [batch, pos]``, each ``[batch, pos, width]`` (trailing dims
    flattened). The forward pass stops right after the last of them fires."""
    sites = [model.check_site(s) for s in sites]
    tokens = model.check_tokens(tokens, arg="tokens")
    if not sites:
        raise ValueError("sites is empty")
    grabbed: dict[str, Tensor] = {}

    def grab(act: Tensor, *, hook) -> None:
        grabbed[hook.name] = act.detach()
        if len(grabbed) == len(set(sites)):
            raise StopForward(act)  # the model's own early stop: the rest of the forward is not needed

    with torch.no_grad(), model.hooks([(s, grab) for s in dict.fromkeys(sites)]):
        model(tokens)
    out = []
    for site in sites:
        if site not in grabbed:
            raise RuntimeError(f"site {site!r} did not fire during the forward pass")
        act = grabbed[site]
        if act.ndim < 2 or tuple(act.shape[:2]) != tuple(tokens.shape):
            raise ValueError(f"site {site!r} has shape {tuple(act.shape)}; an activation store needs a per-position "
                             f"site of shape [batch, pos, ...] matching the tokens {tuple(tokens.shape)}")
        out.append(act.reshape(act.shape[0], act.shape[1], -1))
    return out


def _special_ids(model) -> list[int]:
    tok = getattr(model, "tokenizer", None)
    ids = {getattr(tok, name, None) for name in ("bos_token_id", "eos_token_id", "pad_token_id")} if tok else set()
    return sorted(i for i in ids if i is not None)


def _check_finite(rows: Tensor, where: str, offset: int | None = None) -> Tensor:
    if not torch.isfinite(rows).all():
        bad = (~torch.isfinite(rows)).any(-1).nonzero()[:, 0]
        first = f" (first: row {offset + int(bad[0])})" if offset is not None else ""
        raise ValueError(f"non-finite activations (nan/inf) in {bad.numel()} rows {where}{first}")
    return rows


class ModelActivations:
    """Activation rows from running ``model`` over ``tokens [n_seq, ctx]`` (sequence order, cycling).

    ``site`` may also be a sequence of sites (a transcoder's input and target): each row is then their activations
    side by side, ``widths`` giving each one's width."""

    def __init__(self, model, site, tokens: Tensor, *, model_batch_size: int = 8, skip_special: bool = True,
                 rank: int = 0, world_size: int = 1) -> None:
        self.model = model
        self.sites = (model.check_site(site),) if isinstance(site, str) else tuple(model.check_site(s) for s in site)
        if not self.sites:
            raise ValueError("site: give a site name or a non-empty sequence of them")
        self.site = self.sites[0] if len(self.sites) == 1 else None
        self.tokens = model.check_tokens(tokens, arg="tokens")
        check_int(model_batch_size, "model_batch_size", lo=1)
        world_size = check_int(world_size, "world_size", lo=1)
        check_int(rank, "rank", lo=0, hi=world_size - 1)
        if self.tokens.shape[0] < world_size:
            raise ValueError(f"tokens has {self.tokens.shape[0]} sequences, fewer than world_size={world_size}")
        self.model_batch_size, self.rank, self.world_size = model_batch_size, rank, world_size
        self.special = torch.tensor(_special_ids(model) if skip_special else [], dtype=torch.long)
        self.widths = tuple(a.shape[-1] for a in sites_activations(model, self.sites, self.tokens[:1, :2]))
        self.d_in = sum(self.widths)
        self.next_seq = 0  # sequences this rank has consumed
        self._warned = False

    def read(self) -> Tensor:
        """The next chunk of rows (one model batch, never crossing the end of an epoch), ``[n, d_in]``."""
        n_local = len(range(self.rank, self.tokens.shape[0], self.world_size))  # this rank's sequences per epoch
        start = self.next_seq % n_local
        if self.next_seq >= n_local and not self._warned:
            warnings.warn(f"the token source ({self.tokens.shape[0]} sequences) is exhausted; starting another "
                          "epoch", stacklevel=2)
            self._warned = True
        j = torch.arange(start, min(start + self.model_batch_size, n_local))
        self.next_seq += j.numel()
        idx = self.rank + self.world_size * j
        toks = self.tokens[idx.to(self.tokens.device)]
        acts = torch.cat(sites_activations(self.model, self.sites, toks), dim=-1)
        keep = ~torch.isin(toks, self.special.to(toks.device))
        where = " + ".join(repr(s) for s in self.sites)
        return _check_finite(acts[keep], f"at site {where} (sequences {idx.tolist()})")

    def limit_memory(self, nbytes: float) -> None:
        """Run fewer sequences per forward pass if one pass's activations (and their filtered copy) would not fit
        in ``nbytes``."""
        from interp.models.memory import _estimate_names

        ctx = self.tokens.shape[1]
        one, two = (_estimate_names(self.model, list(self.sites), b, ctx).nbytes for b in (1, 2))
        per_seq = 2 * max(1, two - one)  # the site's activations and the rows kept from them
        fits = int(nbytes // per_seq)
        if fits < 1:
            raise MemoryBudgetError(
                f"one sequence of {ctx} tokens at {'site' if len(self.sites) == 1 else 'sites'} "
                f"{' + '.join(map(repr, self.sites))} needs "
                f"{format_bytes(per_seq)} of activations, "
                f"more than the {format_bytes(max(0, nbytes))} the memory budget leaves beside the store's buffer; "
                "use shorter contexts (context_length), a smaller buffer, or raise memory_budget")
        self.model_batch_size = min(self.model_batch_size, fits)

    def state(self) -> dict[str, Any]:
        return {"kind": "model", "next_seq": self.next_seq}

    def load_state(self, state: dict[str, Any]) -> None:
        self.next_seq = int(state["next_seq"])


class TensorActivations:
    """Activation rows from an in-memory tensor ``[n, d_in]`` (in order, cycling)."""

    def __init__(self, acts: Tensor, chunk_rows: int = 4096, widths: tuple[int, ...] | None = None) -> None:
        if not isinstance(acts, Tensor) or acts.ndim != 2 or acts.shape[0] == 0 or not acts.is_floating_point():
            raise ValueError(f"acts must be a float tensor [n>0, d_in]; got "
                             f"{tuple(acts.shape) if isinstance(acts, Tensor) else type(acts).__name__}")
        self.acts, self.chunk_rows, self.pos = acts, check_int(chunk_rows, "chunk_rows", lo=1), 0
        self.d_in = acts.shape[1]
        self.widths = (self.d_in,) if widths is None else tuple(widths)
        if sum(self.widths) != self.d_in or min(self.widths) < 1:
            raise ValueError(f"widths {widths} must be positive and add up to the row width {self.d_in}")

    def limit_memory(self, nbytes: float) -> None:
        """Read fewer rows at a time if a read (converted to the store's dtype) would not fit in ``nbytes``."""
        self.chunk_rows = _fit_rows(self.chunk_rows, nbytes, self.d_in * self.acts.element_size())

    def read(self) -> Tensor:
        start = self.pos % self.acts.shape[0]
        rows = self.acts[start: start + self.chunk_rows]
        self.pos += rows.shape[0]
        return _check_finite(rows, f"of the activation tensor (rows {start}..{start + rows.shape[0] - 1})", start)

    def state(self) -> dict[str, Any]:
        return {"kind": "tensor", "pos": self.pos}

    def load_state(self, state: dict[str, Any]) -> None:
        self.pos = int(state["pos"])


class CachedActivations:
    """Activation rows from a folder written by ``write_activation_cache`` (shard by shard, cycling)."""

    def __init__(self, folder: str | Path, chunk_rows: int = 4096) -> None:
        self.folder = Path(folder)
        meta_path = self.folder / CACHE_META
        if not meta_path.is_file():
            raise FileNotFoundError(f"activations: {self.folder} holds no {CACHE_META}; write it with "
                                    "write_activation_cache (an interrupted write leaves no metadata)")
        self.meta = read_json_object(meta_path, "the index of an activation cache")
        try:
            self.d_in, self.site = int(self.meta["d_in"]), self.meta.get("site")
            self.files = [str(s["file"]) for s in self.meta["shards"]]
            self.sizes = [int(s["rows"]) for s in self.meta["shards"]]
            self.sites = tuple(self.meta.get("sites") or ([self.site] if self.site else []))
            self.widths = tuple(int(w) for w in (self.meta.get("widths") or [self.d_in]))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{meta_path}: not an activation-cache index (expected 'd_in' and 'shards' with 'file' "
                             f"and 'rows' each; {type(err).__name__}: {err})") from None
        missing = [f for f in self.files if not (self.folder / f).is_file()]
        if missing or not self.files or min(self.sizes) < 1:
            raise ValueError(f"{meta_path}: lists shards that are missing or empty ({missing or self.sizes}); "
                             "write the cache again")
        self.n_rows = sum(self.sizes)
        self.pos, self.chunk_rows = 0, check_int(chunk_rows, "chunk_rows", lo=1)
        self._checked: set[int] = set()

    def limit_memory(self, nbytes: float) -> None:
        """Read fewer rows at a time if a read would not fit in ``nbytes``."""
        self.chunk_rows = _fit_rows(self.chunk_rows, nbytes, self.d_in * 8)  # float64 at most

    def _rows(self, i: int, start: int, stop: int) -> Tensor:
        """Rows ``start:stop`` of shard ``i``, read from disk without loading the rest of the shard."""
        path = self.folder / self.files[i]
        if i not in self._checked:
            keys = check_safetensors(path)
            if "activations" not in keys:
                raise ValueError(f"{path}: holds no 'activations' tensor (it holds {keys})")
            self._checked.add(i)
        with safe_open(str(path), framework="pt") as f:
            part = f.get_slice("activations")
            shape = part.get_shape()
            if len(shape) != 2 or shape[0] != self.sizes[i] or shape[1] != self.d_in:
                raise ValueError(f"{path}: 'activations' has shape {tuple(shape)}; the index says "
                                 f"[{self.sizes[i]}, {self.d_in}]")
            return part[start:stop]

    def read(self) -> Tensor:
        offset, i = self.pos % self.n_rows, 0
        while offset >= self.sizes[i]:
            offset -= self.sizes[i]
            i += 1
        rows = self._rows(i, offset, min(offset + self.chunk_rows, self.sizes[i]))
        self.pos += rows.shape[0]
        return _check_finite(rows, f"in {self.folder / self.meta['shards'][i]['file']}", offset)

    def state(self) -> dict[str, Any]:
        return {"kind": "cache", "pos": self.pos}

    def load_state(self, state: dict[str, Any]) -> None:
        self.pos = int(state["pos"])


class ActivationStore:
    """Shuffled ``[batch, d_in]`` batches from an activation source (see the module docstring)."""

    def __init__(self, source, *, batch_size: int, buffer_batches: int = 8, seed: int = 0, rank: int = 0,
                 world_size: int = 1, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 memory_budget: int | float | str | None = None) -> None:
        if not all(hasattr(source, a) for a in ("read", "state", "load_state", "d_in")):
            raise TypeError(f"source must be an activation source (ModelActivations, TensorActivations, "
                            f"CachedActivations); got {type(source).__name__}")
        check_int(batch_size, "batch_size", lo=1)
        world_size = check_int(world_size, "world_size", lo=1)
        check_int(rank, "rank", lo=0, hi=world_size - 1)
        check_int(seed, "seed", lo=0)
        check_int(buffer_batches, "buffer_batches", lo=2)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point torch.dtype; got {dtype!r}")
        device = check_device(device)
        if batch_size % world_size:
            raise ValueError(f"batch_size ({batch_size}) must be divisible by world_size ({world_size})")
        if buffer_batches < 2:
            raise ValueError(f"buffer_batches must be >= 2; got {buffer_batches}")
        self.source, self.rank, self.world_size = source, rank, world_size
        self.partitioned = isinstance(source, ModelActivations) and world_size > 1
        self.batch_size = batch_size // world_size if self.partitioned else batch_size
        self.local_batch_size = batch_size // world_size
        self.capacity = buffer_batches * self.batch_size
        self.dtype, self.device = dtype, torch.device(device)
        self.d_in = source.d_in
        self.widths = tuple(getattr(source, "widths", (source.d_in,)))
        """Widths of the sites side by side in a row (one entry for an SAE; input and target for a transcoder)."""
        self.generator = torch.Generator().manual_seed(seed + (1_000_003 * rank if self.partitioned else 0))
        self._buffer = torch.empty(0, self.d_in, dtype=dtype, device=self.device)
        self._pending = torch.empty(0, self.d_in, dtype=dtype, device=self.device)
        self._fit_memory(memory_budget, buffer_batches)

    def _fit_memory(self, memory_budget, buffer_batches: int) -> None:
        budget = resolve_budget(memory_budget, self.device)
        if budget.unlimited:
            return
        row_bytes = self.d_in * self.dtype.itemsize
        buffer = 2 * self.capacity * row_bytes  # the buffer and its reshuffled copy during a refill
        if buffer > budget.nbytes:
            raise MemoryBudgetError(
                f"the activation store's shuffle buffer ({buffer_batches} batches × {self.batch_size} rows × d_in "
                f"{self.d_in} × {self.dtype.itemsize} bytes, twice while it is reshuffled) needs "
                f"{format_bytes(buffer)}, above the memory budget of {format_bytes(budget.nbytes)} ({budget.source}); "
                "lower buffer_batches or batch_size, or raise memory_budget")
        if hasattr(self.source, "limit_memory"):
            self.source.limit_memory(budget.nbytes - buffer)

    @classmethod
    def from_model(cls, model, site: str, tokens, *, context_length: int = 128, model_batch_size: int = 8,
                   skip_special: bool = True, **kw) -> ActivationStore:
        """A store over ``model``'s activations at ``site``; ``tokens`` is any source ``load_tokens`` accepts.
        ``kw``: the store's arguments (``batch_size``, ``memory_budget``, ...)."""
        toks = load_tokens(tokens, model.tokenizer, context_length)
        src = ModelActivations(model, site, toks, model_batch_size=model_batch_size, skip_special=skip_special,
                               rank=kw.get("rank", 0), world_size=kw.get("world_size", 1))
        return cls(src, **kw)

    @classmethod
    def from_tensor(cls, acts: Tensor, *, widths: tuple[int, ...] | None = None, **kw) -> ActivationStore:
        """A store over an in-memory ``[n, d_in]`` tensor (cycled in order, then shuffled by the buffer);
        ``widths`` splits paired rows, e.g. ``(d_in, d_out)`` for a transcoder's ``[x, y]``."""
        return cls(TensorActivations(acts, widths=widths), **kw)

    @classmethod
    def from_cache(cls, folder: str | Path, **kw) -> ActivationStore:
        """A store over cached activation shards (``write_activation_cache``)."""
        return cls(CachedActivations(folder), **kw)

    def _take(self, n: int) -> Tensor:
        parts, have = [self._pending], self._pending.shape[0]
        while have < n:
            rows = self.source.read().to(self.device, self.dtype)
            parts.append(rows)
            have += rows.shape[0]
        rows = torch.cat(parts)
        self._pending = rows[n:].clone()
        return rows[:n]

    def _refill(self) -> None:
        rows = torch.cat([self._buffer, self._take(self.capacity - self._buffer.shape[0])])
        perm = torch.randperm(rows.shape[0], generator=self.generator)
        self._buffer = rows[perm.to(rows.device)]

    def next_batch(self) -> Tensor:
        """This rank's next ``[batch_size / world_size, d_in]`` batch."""
        if self._buffer.shape[0] <= self.capacity // 2:
            self._refill()
        batch, self._buffer = self._buffer[: self.batch_size], self._buffer[self.batch_size:]
        if not self.partitioned and self.world_size > 1:
            b = self.local_batch_size
            batch = batch[self.rank * b: (self.rank + 1) * b]
        return batch

    def __iter__(self):
        while True:
            yield self.next_batch()

    def sample(self, n: int) -> Tensor:
        """Up to ``n`` rows of the (filled) buffer, without consuming them (e.g. to initialise ``b_dec``)."""
        check_int(n, "n", lo=1)
        if self._buffer.shape[0] <= self.capacity // 2:
            self._refill()
        return self._buffer[:n]

    def state_dict(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """``(tensors, json)``: buffer, pending rows and generator state; source position."""
        tensors = {"buffer": self._buffer.clone(), "pending": self._pending.clone(),
                   "generator": self.generator.get_state()}
        return tensors, {"source": self.source.state(), "batch_size": self.batch_size, "d_in": self.d_in}

    def load_state_dict(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        if meta["d_in"] != self.d_in or meta["batch_size"] != self.batch_size:
            raise ValueError(f"store state has d_in={meta['d_in']}, batch_size={meta['batch_size']}; this store has "
                             f"d_in={self.d_in}, batch_size={self.batch_size}")
        if meta["source"]["kind"] != self.source.state()["kind"]:
            raise ValueError(f"store state comes from a {meta['source']['kind']!r} source; this store reads a "
                             f"{self.source.state()['kind']!r} source")
        self._buffer = tensors["buffer"].to(self.device, self.dtype)
        self._pending = tensors["pending"].to(self.device, self.dtype)
        self.generator.set_state(tensors["generator"])
        self.source.load_state(meta["source"])


def write_activation_cache(source, folder: str | Path, n_rows: int, *, shard_rows: int = 65536,
                           dtype: torch.dtype = torch.float32, meta: dict[str, Any] | None = None,
                           progress: bool = True, memory_budget: int | float | str | None = None) -> Path:
    """Write the first ``n_rows`` rows of ``source`` (in source order) to safetensors shards in ``folder``.

    Each shard is written atomically; ``activations.json`` (the index) is written last, so an interrupted write
    is never mistaken for a complete cache. ``source`` is an activation source or a ``[n, d_in]`` tensor.
    ``memory_budget`` (see the module docstring) makes shards and source reads smaller so that the rows held at
    once fit.
    """
    from tqdm.auto import tqdm

    if isinstance(source, Tensor):
        source = TensorActivations(source)
    if not all(hasattr(source, a) for a in ("read", "d_in")):
        raise TypeError(f"source must be an activation source or a [n, d_in] tensor; got {type(source).__name__}")
    check_int(n_rows, "n_rows", lo=1)
    shard_rows = check_int(shard_rows, "shard_rows", lo=1)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype; got {dtype!r}")
    if meta is not None and not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict (JSON-able) or None; got {type(meta).__name__}")
    budget = resolve_budget(memory_budget)
    if not budget.unlimited:  # a shard's rows are held twice (pending reads and their concatenation)
        shard_rows = _fit_rows(shard_rows, budget.nbytes / 2, source.d_in * dtype.itemsize, "a shard")
        if hasattr(source, "limit_memory"):
            source.limit_memory(budget.nbytes / 2)
    folder = Path(folder)
    shards, done, pending, have = [], 0, [], 0
    bar = tqdm(total=n_rows, desc="caching activations", unit="tok", disable=not progress)
    while done < n_rows:
        take = min(shard_rows, n_rows - done)
        while have < take:
            pending.append(source.read().to(dtype))
            have += pending[-1].shape[0]
            bar.update(min(pending[-1].shape[0], n_rows - bar.n))
        rows = torch.cat(pending)
        name = f"shard_{len(shards):05d}.safetensors"
        atomic_save_safetensors({"activations": rows[:take].clone()}, folder / name)
        shards.append({"file": name, "rows": take})
        pending, have, done = [rows[take:]], rows.shape[0] - take, done + take
    bar.close()
    index = {**(meta or {}), "d_in": source.d_in, "n_rows": n_rows, "dtype": str(dtype).removeprefix("torch."),
             "site": getattr(source, "site", (meta or {}).get("site")), "shards": shards}
    if len(getattr(source, "widths", ())) > 1:
        index.update(sites=list(getattr(source, "sites", ())), widths=list(source.widths))
    atomic_write_json(index, folder / CACHE_META)
    return folder


def _fit_rows(rows: int, nbytes: float, row_bytes: int, what: str = "a read") -> int:
    """``rows`` lowered so that twice that many rows of ``row_bytes`` fit in ``nbytes``."""
    fits = int(nbytes // (2 * row_bytes))
    if fits < 1:
        raise MemoryBudgetError(f"not even one activation row ({format_bytes(row_bytes)}) of {what} fits in the "
                                f"{format_bytes(max(0, nbytes))} the memory budget leaves; raise memory_budget")
    return min(rows, fits)


def rows_needed(batch_size: int, steps: int, buffer_batches: int) -> int:
    """Rows a run of ``steps`` steps reads from its source, at most (buffer fills included)."""
    return batch_size * (steps + buffer_batches)
