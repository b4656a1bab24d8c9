"""``HookedModel``: the one public interface over every supported architecture.

Subclasses (Hugging Face transformers, TransformerLens models, Mamba) provide four things:

- ``_site_names()``: the canonical sites this architecture has (TransformerLens names);
- ``_logits(tokens)``: the forward pass, calling ``self._registry.fire(name, act)`` at each site it exposes
  (or installing something that does, in ``_install``);
- ``_install(names)``: optional; attach whatever makes ``names`` fire and return a function that detaches it;
- the architecture attributes (``n_layers``, ``n_heads``, ``n_kv_heads``, ``d_model``, ``d_head``, ``arch``).

Everything else (token handling, validation, caching, hook contexts, attention patterns) lives here once.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from interp.cache import ActivationCache
from interp.hooks import HookFn, HookRegistry, layer_of

__all__ = ["HookedModel", "NamesFilter"]

NamesFilter = None | str | Sequence[str] | Callable[[str], bool]


class HookedModel(nn.Module):
    """A causal LM with TransformerLens-style hook sites.

    Attributes: ``n_layers``, ``n_heads`` (query heads), ``n_kv_heads``, ``d_model``, ``d_head``, ``d_vocab``,
    ``tokenizer`` (may be None), ``arch`` (e.g. ``"llama"``, ``"gpt2"``, ``"mamba"``, ``"mamba2"``).
    """

    arch: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_vocab: int

    def __init__(self, tokenizer: Any = None) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self._registry = HookRegistry()
        self._sites_cache: tuple[str, ...] | None = None

    # ------------------------------------------------------------------ subclass API
    def _site_names(self) -> list[str]:
        raise NotImplementedError

    def _logits(self, tokens: Tensor) -> Tensor:
        raise NotImplementedError

    def _install(self, names: frozenset[str]) -> Callable[[], None]:
        """Attach what makes ``names`` fire; return the undo. Models that fire inline need nothing."""
        return lambda: None

    # ------------------------------------------------------------------ sites
    def site_names(self) -> list[str]:
        """All hook sites of this model, in forward order."""
        if self._sites_cache is None:
            self._sites_cache = tuple(self._site_names())
        return list(self._sites_cache)

    def check_site(self, name: str) -> str:
        """Return ``name`` if it is a site of this model, else raise a KeyError suggesting the closest."""
        sites = self.site_names()
        if name in sites:
            return name
        layer = layer_of(name) if isinstance(name, str) else None
        if layer is not None and not 0 <= layer < self.n_layers:
            raise KeyError(
                f"site {name!r}: layer {layer} is out of range; this {self.arch} model has layers "
                f"0..{self.n_layers - 1}"
            )
        close = difflib.get_close_matches(str(name), sites, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise KeyError(f"unknown hook site {name!r} for this {self.arch} model.{hint} See model.site_names().")

    def resolve_names(self, names_filter: NamesFilter) -> list[str]:
        """Expand a names filter (None = all, a name, a list of names, or a predicate) to site names."""
        sites = self.site_names()
        if names_filter is None:
            return sites
        if isinstance(names_filter, str):
            return [self.check_site(names_filter)]
        if callable(names_filter):
            return [s for s in sites if names_filter(s)]
        if isinstance(names_filter, Sequence):
            return [self.check_site(n) for n in names_filter]
        raise TypeError(
            f"names_filter must be None, a site name, a list of names or a predicate; got {type(names_filter).__name__}"
        )

    def check_layers(self, layers: int | Sequence[int] | None, arg: str = "layers") -> list[int]:
        """Normalise a layer selection (None = all), raising on out-of-range indices."""
        if layers is None:
            return list(range(self.n_layers))
        out = [layers] if isinstance(layers, int) else list(layers)
        for layer in out:
            if not isinstance(layer, int) or not -self.n_layers <= layer < self.n_layers:
                raise IndexError(f"{arg}: layer {layer!r} is out of range; this model has {self.n_layers} layers")
        return [layer % self.n_layers for layer in out]

    # ------------------------------------------------------------------ tokens
    def to_tokens(self, text: str | Sequence[str], prepend_bos: bool = True, padding_side: str = "right") -> Tensor:
        """Tokenise text into ``LongTensor[batch, pos]``; ``prepend_bos`` adds the BOS token if the tokenizer has one.

        Several strings are padded (with the pad or EOS token) to the longest.
        """
        tok = self._need_tokenizer()
        texts = [text] if isinstance(text, str) else list(text)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise TypeError("text must be a string or a non-empty list of strings")
        ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        bos = getattr(tok, "bos_token_id", None)
        if prepend_bos and bos is not None:
            ids = [[bos, *seq] for seq in ids]
        width = max(len(s) for s in ids)
        if width == 0:
            raise ValueError("text tokenises to nothing; pass a non-empty string or prepend_bos=True")
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        rows = [s + [pad] * (width - len(s)) if padding_side == "right" else [pad] * (width - len(s)) + s for s in ids]
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    def to_str_tokens(self, tokens: str | Tensor | Sequence[int],
                      prepend_bos: bool = True) -> list[str] | list[list[str]]:
        """Token strings of a text or of token ids (a list per row for a 2-D batch)."""
        tok = self._need_tokenizer()
        if isinstance(tokens, str):
            tokens = self.to_tokens(tokens, prepend_bos=prepend_bos)[0]
        if isinstance(tokens, Tensor):
            if tokens.ndim == 2:
                return [self.to_str_tokens(row) for row in tokens]  # type: ignore[misc]
            tokens = tokens.tolist()
        return [tok.decode([int(t)]) for t in tokens]

    def to_string(self, tokens: Tensor | Sequence[int]) -> str:
        """Decode token ids back to text."""
        ids = tokens.tolist() if isinstance(tokens, Tensor) else list(tokens)
        return self._need_tokenizer().decode(ids)

    def _need_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer; pass token ids (LongTensor[batch, pos]) instead of text")
        return self.tokenizer

    def check_tokens(self, tokens: Tensor | str | Sequence[str], arg: str = "tokens") -> Tensor:
        """Validate (or tokenise) model input: an integer tensor [batch, pos] with ids in the vocabulary."""
        if isinstance(tokens, str) or (isinstance(tokens, (list, tuple)) and tokens and isinstance(tokens[0], str)):
            return self.to_tokens(tokens)
        if not isinstance(tokens, Tensor):
            raise TypeError(f"{arg} must be a LongTensor[batch, pos] or text; got {type(tokens).__name__}")
        if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
            raise TypeError(f"{arg} must hold integer token ids (torch.long); got dtype {tokens.dtype}")
        if tokens.ndim == 1:
            tokens = tokens.unsqueeze(0)
        if tokens.ndim != 2:
            raise ValueError(f"{arg} must have shape [batch, pos]; got {tuple(tokens.shape)}")
        if tokens.shape[0] == 0 or tokens.shape[1] == 0:
            raise ValueError(f"{arg} is empty (shape {tuple(tokens.shape)}); expected at least one token in one row")
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= self.d_vocab:
            raise ValueError(f"{arg} holds ids in [{lo}, {hi}] but the vocabulary has ids 0..{self.d_vocab - 1}")
        return tokens.to(device=self.device, dtype=torch.long)

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    # ------------------------------------------------------------------ running
    def forward(self, tokens: Tensor | str | Sequence[str]) -> Tensor:
        """Logits ``[batch, pos, d_vocab]``."""
        return self._logits(self.check_tokens(tokens))

    @contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str | Callable[[str], bool], HookFn]] = ()) -> Iterator[HookedModel]:
        """Activate forward hooks for the ``with`` block; they are removed on every exit path.

        ``fwd_hooks`` holds ``(name_or_predicate, fn)`` pairs; ``fn(act, *, hook)`` may return a replacement
        of the same shape (``hook.name``, ``hook.layer`` tell where it is called).
        """
        pairs: list[tuple[str, HookFn]] = []
        for i, item in enumerate(fwd_hooks):
            if not (isinstance(item, (tuple, list)) and len(item) == 2 and callable(item[1])):
                raise TypeError(f"fwd_hooks[{i}] must be a (name_or_predicate, fn) pair; got {item!r}")
            target, fn = item
            names = [self.check_site(target)] if isinstance(target, str) else self.resolve_names(target)
            pairs.extend((n, fn) for n in names)
        with ExitStack() as stack:
            stack.enter_context(self._registry.active(pairs))
            undo = self._install(self._registry.hooked_names())
            stack.callback(undo)
            yield self

    def run_with_hooks(self, tokens, fwd_hooks: Sequence[tuple[str | Callable[[str], bool], HookFn]] = ()) -> Tensor:
        """Logits of one forward pass with ``fwd_hooks`` active."""
        tokens = self.check_tokens(tokens)
        with self.hooks(fwd_hooks):
            return self._logits(tokens)

    def run_with_cache(
        self, tokens, names_filter: NamesFilter = None, *, device: str | torch.device | None = None,
        fwd_hooks: Sequence[tuple[str | Callable[[str], bool], HookFn]] = (),
    ) -> tuple[Tensor, ActivationCache]:
        """Run the model and record activations at the selected sites (after any ``fwd_hooks``).

        Returns ``(logits, cache)`` where ``cache[name]`` is a detached tensor (``hook_pattern``:
        ``[batch, head, query, key]``). ``device`` moves cached tensors (e.g. ``"cpu"``).
        """
        tokens = self.check_tokens(tokens)
        names = self.resolve_names(names_filter)
        store: dict[str, Tensor] = {}

        def save(act: Tensor, *, hook) -> None:
            t = act.detach()
            store[hook.name] = t.to(device) if device is not None else t.clone() if t._base is not None else t

        with torch.no_grad(), self.hooks([*fwd_hooks, *((n, save) for n in names)]):
            logits = self._logits(tokens)
        ordered = {n: store[n] for n in names if n in store}
        return logits, ActivationCache(ordered, self)

    def attention_patterns(self, tokens, layers: int | Sequence[int] | None = None) -> Tensor:
        """Attention probabilities ``[layer, batch, head, query, key]`` for the chosen layers (all by default)."""
        layers = self.check_layers(layers)
        names = [f"blocks.{layer}.attn.hook_pattern" for layer in layers]
        _, cache = self.run_with_cache(tokens, names_filter=names)
        return torch.stack([cache[n] for n in names])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(arch={self.arch!r}, n_layers={self.n_layers}, n_heads={self.n_heads}, "
            f"n_kv_heads={self.n_kv_heads}, d_model={self.d_model}, d_head={self.d_head}, d_vocab={self.d_vocab})"
        )
