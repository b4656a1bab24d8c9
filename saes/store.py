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
_SKIP_STDLIB_DIRS = {"test", "tests", "idlelib", "site-packages", "lib2to3", "ensurepip", "turtledemo", "__pycache__"}


# ---------------------------------------------------------------------------------------------- token sources
def builtin_corpus(name: str = "stdlib-docs", max_chars: int = 4_000_000) -> list[str]:
    """Demo text that needs no download. ``stdlib-docs``: the docstrings (>= 200 characters) of the modules,
    classes and functions of the running Python's standard library, in sorted file order (so the corpus depends
    on the Python version; about 2-3 M characters for 3.11)."""
    import ast
    import sysconfig

    if name != "stdlib-docs":
        raise ValueError(f"unknown builtin corpus {name!r}; available: 'stdlib-docs'")
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if not _SKIP_STDLIB_DIRS & set(p.relative_to(root).parts[:-1]))
    texts, total = [], 0
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 200:
                    texts.append(doc)
                    total += len(doc)
        if total >= max_chars:
            break
    return texts


def pack_texts(texts: list[str], tokenizer, context_length: int) -> Tensor:
    """Tokenise documents, join them with EOS, and cut the stream into rows of ``context_length`` tokens, each
    starting with BOS when the tokenizer has one. Returns ``LongTensor[n_seq, context_length]``."""
    if tokenizer is None:
        raise ValueError("text token sources need a model with a tokenizer; pass token ids instead")
    bos, eos = getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)
    stream: list[int] = []
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        if eos is not None:
            stream.append(eos)
    width = context_length - (bos is not None)
    n = len(stream) // width
    if n == 0:
        raise ValueError(f"the texts give {len(stream)} tokens, fewer than one context of {context_length}")
    rows = torch.tensor(stream[: n * width], dtype=torch.long).view(n, width)
    if bos is not None:
        rows = torch.cat([torch.full((n, 1), bos, dtype=torch.long), rows], dim=1)
    return rows


def load_tokens(source, tokenizer, context_length: int) -> Tensor:
    """Token rows ``LongTensor[n_seq, context_length]`` from a token source:

    - a list of strings (packed by ``pack_texts``);
    - a path to a ``.txt`` file (documents separated by blank lines) or ``builtin:stdlib-docs``;
    - a path to a ``.safetensors`` file with a ``tokens`` tensor, or a LongTensor: ``[n_seq, seq_len]`` rows are
      cut into ``seq_len // context_length`` contexts each, a flat ``[n]`` stream into ``n // context_length``.
    """
    if isinstance(source, (list, tuple)) and source and all(isinstance(t, str) for t in source):
        return pack_texts(list(source), tokenizer, context_length)
    if isinstance(source, (str, Path)):
        text = str(source)
        if text.startswith("builtin:"):
            return pack_texts(builtin_corpus(text.removeprefix("builtin:")), tokenizer, context_length)
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"dataset: no file at {path} (expected a .txt or .safetensors file)")
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                if "tokens" not in f.keys():
                    raise KeyError(f"dataset: {path} has no 'tokens' tensor; it holds {list(f.keys())}")
                source = f.get_tensor("tokens")
        else:
            docs = [d.strip() for d in path.read_text(encoding="utf-8").split("\n\n") if d.strip()]
            return pack_texts(docs, tokenizer, context_length)
    if not isinstance(source, Tensor):
        raise TypeError(f"token source must be a list of strings, a path or a LongTensor; got {type(source).__name__}")
    if source.is_floating_point() or source.ndim not in (1, 2):
        raise ValueError(f"tokens must be an integer tensor [n] or [n_seq, seq_len]; got {source.dtype} "
                         f"{tuple(source.shape)}")
    rows = source.reshape(1, -1) if source.ndim == 1 else source
    per_row = rows.shape[1] // context_length
    if per_row == 0 or rows.shape[0] == 0:
        raise ValueError(f"tokens of shape {tuple(source.shape)} hold no context of length {context_length}")
    return rows[:, : per_row * context_length].reshape(-1, context_length).long()


class _StopForward(Exception):
    """Raised by the grabbing hook to end the forward pass after the site's layer."""


def site_activations(model, site: str, tokens: Tensor) -> Tensor:
    """Activations at ``site`` for ``tokens [batch, pos]`` as ``[batch, pos, d_in]`` (trailing dims flattened).

    The forward pass stops right after the site fires.
    """
    return sites_activations(model, [site], tokens)[0]


def sites_activations(model, sites, tokens: Tensor) -> list[Tensor]:
    """Activations at each of ``sites`` for ``tokens [batch, pos]``, each ``[batch, pos, width]`` (trailing dims
    flattened). The forward pass stops right after the last of them fires."""
    sites = [model.check_site(s) for s in sites]
    if not sites:
        raise ValueError("sites is empty")
    grabbed: dict[str, Tensor] = {}

    def grab(act: Tensor, *, hook) -> None:
        grabbed[hook.name] = act.detach()
        if len(grabbed) == len(set(sites)):
            raise _StopForward

    with torch.no_grad():
        try:
            with model.hooks([(s, grab) for s in dict.fromkeys(sites)]):
                model(tokens)
        except _StopForward:
            pass
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
        self.acts, self.chunk_rows, self.pos = acts, chunk_rows, 0
        self.d_in = acts.shape[1]
        self.widths = (self.d_in,) if widths is None else tuple(widths)
        if sum(self.widths) != self.d_in or min(self.widths) < 1:
            raise ValueError(f"widths {widths} must be positive and add up to the row width {self.d_in}")

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
        import json

        self.folder = Path(folder)
        meta_path = self.folder / CACHE_META
        if not meta_path.is_file():
            raise FileNotFoundError(f"activations: {self.folder} holds no {CACHE_META}; write it with "
                                    "write_activation_cache (an interrupted write leaves no metadata)")
        self.meta = json.loads(meta_path.read_text())
        self.d_in, self.site = int(self.meta["d_in"]), self.meta.get("site")
        self.sites = tuple(self.meta.get("sites") or ([self.site] if self.site else []))
        self.widths = tuple(self.meta.get("widths") or [self.d_in])
        self.sizes = [int(s["rows"]) for s in self.meta["shards"]]
        self.n_rows = sum(self.sizes)
        self.pos, self.chunk_rows = 0, chunk_rows
        self._loaded: tuple[int, Tensor] | None = None

    def _shard(self, i: int) -> Tensor:
        if self._loaded is None or self._loaded[0] != i:
            with safe_open(str(self.folder / self.meta["shards"][i]["file"]), framework="pt") as f:
                self._loaded = (i, f.get_tensor("activations"))
        return self._loaded[1]

    def read(self) -> Tensor:
        offset, i = self.pos % self.n_rows, 0
        while offset >= self.sizes[i]:
            offset -= self.sizes[i]
            i += 1
        rows = self._shard(i)[offset: offset + self.chunk_rows]
        self.pos += rows.shape[0]
        return _check_finite(rows, f"in {self.folder / self.meta['shards'][i]['file']}", offset)

    def state(self) -> dict[str, Any]:
        return {"kind": "cache", "pos": self.pos}

    def load_state(self, state: dict[str, Any]) -> None:
        self.pos = int(state["pos"])


class ActivationStore:
    """Shuffled ``[batch, d_in]`` batches from an activation source (see the module docstring)."""

    def __init__(self, source, *, batch_size: int, buffer_batches: int = 8, seed: int = 0, rank: int = 0,
                 world_size: int = 1, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> None:
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

    @classmethod
    def from_model(cls, model, site: str, tokens, *, context_length: int = 128, model_batch_size: int = 8,
                   skip_special: bool = True, **kw) -> ActivationStore:
        """A store over ``model``'s activations at ``site``; ``tokens`` is any source ``load_tokens`` accepts."""
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
                           progress: bool = True) -> Path:
    """Write the first ``n_rows`` rows of ``source`` (in source order) to safetensors shards in ``folder``.

    Each shard is written atomically; ``activations.json`` (the index) is written last, so an interrupted write
    is never mistaken for a complete cache. ``source`` is an activation source or a ``[n, d_in]`` tensor.
    """
    from tqdm.auto import tqdm

    if isinstance(source, Tensor):
        source = TensorActivations(source)
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


def rows_needed(batch_size: int, steps: int, buffer_batches: int) -> int:
    """Rows a run of ``steps`` steps reads from its source, at most (buffer fills included)."""
    return batch_size * (steps + buffer_batches)
