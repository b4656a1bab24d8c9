"""``HookedModel``: the one public interface over every supported architecture.

Subclasses (Hugging Face transformers, TransformerLens models, Mamba) provide:

- ``_site_names()``: the canonical sites this architecture has (TransformerLens names), in forward order;
- ``_logits(tokens, attention_mask)``: the forward pass, calling ``self._registry.fire(name, act)`` at each site it
  exposes (or attaching something that does, in ``_attach``); ``attention_mask`` is None or ``[batch, pos]`` 0/1;
- ``_logits_from(layer, resid, attention_mask)``: the same from the residual stream before block ``layer``;
- ``_attach(name)``: optional; attach what makes ``name`` fire and return a function that detaches it;
- the vocabulary: ``_components(layer)``, ``_embed_weight()``, ``_unembed()``, ``_attention_weights(layer)`` and
  ``_apply_part(which, layer, x)`` where they apply, the capability flags, and the architecture attributes
  (``n_layers``, ``n_heads``, ``n_kv_heads``, ``d_model``, ``d_head``, ``d_vocab``, ``arch``).

Everything else (tokens, validation, caching, nested hook contexts, gradients, losses, stopping and starting at a
layer, generation) lives here once. Analysis code talks to this class only: its capability flags, ``components``
and weights, never ``arch`` strings or a subclass.
"""

from __future__ import annotations

import difflib
import operator
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from interp.cache import ActivationCache, check_cache_args, read_patterns
from interp.checks import is_index
from interp.errors import CapabilityError
from interp.hooks import HookRegistry, StopForward, layer_of
from interp.models.hook_points import HookPointsMixin, HookSpec
from interp.models.tokens import TokensMixin
from interp.models.weights import WeightsMixin

__all__ = ["HookedModel", "NamesFilter", "HookSpec"]

NamesFilter = None | str | Sequence[str] | Callable[[str], bool]
RETURN_TYPES = ("logits", "loss", "both", None)
FINAL_SITE = "ln_final.hook_normalized"
"""The final norm's output: a ``return_type=None`` pass ends once this site's hooks ran (no unembedding) where it
is the model's last site (not on the TransformerLens wrappers, whose unembedding has sites of its own)."""


class HookedModel(TokensMixin, WeightsMixin, HookPointsMixin, nn.Module):
    """A causal LM with TransformerLens-style hook sites.

    Attributes: ``n_layers``, ``n_heads`` (query heads; Mamba: SSM heads or channel groups), ``n_kv_heads``,
    ``d_model``, ``d_head``, ``d_vocab``, ``tokenizer`` (may be None), ``arch`` (informative only).

    Capability flags (what analyses ask instead of ``arch``): ``has_attention_heads`` (softmax attention with
    ``W_Q``..``W_O`` and ``hook_pattern``), ``has_mlp``, ``has_ssm_state`` (``hook_ssm_state``),
    ``has_implicit_attention`` (``attention_patterns`` is the SSM's implicit attention), ``has_ssm_heads``
    (Mamba-2's heads; Mamba-1's ``n_heads`` are channel groups).
    """

    arch: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_vocab: int
    n_ctx: int | None = None  # the longest sequence the model accepts (None: no hard limit)
    has_attention_heads: bool = False
    has_mlp: bool = False
    has_ssm_state: bool = False
    has_implicit_attention: bool = False
    has_ssm_heads: bool = False
    has_prefix_reuse: bool = False
    """``record_prefix`` / ``run_suffix`` work: a run can continue from any (layer, position) of a recorded one."""
    has_query_rows: bool = False
    """``query_rows`` works: attention patterns of chosen query rows, read beside the fast attention path."""

    def __init__(self, tokenizer: Any = None) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self._registry = HookRegistry()
        self._sites_cache: tuple[str, ...] | None = None
        self._attached: dict[str, Callable[[], None]] = {}

    # ------------------------------------------------------------------ subclass API
    def _site_names(self) -> list[str]:
        raise NotImplementedError

    def _logits(self, tokens: Tensor, attention_mask: Tensor | None) -> Tensor:
        raise NotImplementedError

    def _logits_from(self, layer: int, resid: Tensor, attention_mask: Tensor | None) -> Tensor:
        raise CapabilityError(f"this {self.arch} model cannot start a forward pass at a layer")

    def _attach(self, name: str) -> Callable[[], None]:
        """Attach what makes ``name`` fire; return the undo. Models that fire inline need nothing."""
        return _nothing

    def _components(self, layer: int) -> dict[str, str]:
        raise NotImplementedError

    def _embed_weight(self) -> Tensor:
        raise NotImplementedError

    def _unembed(self) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _attention_weights(self, layer: int) -> dict[str, Tensor]:
        raise CapabilityError(f"this {self.arch} model has no attention heads")

    def _apply_part(self, which: str, layer: int | None, x: Tensor) -> Tensor:
        raise CapabilityError(f"this {self.arch} model has no {which}")

    def _record_prefix(self, tokens: Tensor) -> Any:
        raise CapabilityError(f"this {self.arch} model cannot record a prefix")

    def _run_suffix(self, layer: int, pos: int, resid: Tensor, prefix: Any, rows: Tensor) -> Tensor:
        raise CapabilityError(f"this {self.arch} model cannot run a suffix")

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
        """Normalise a layer selection (None = all; negatives count from the end), raising on bad indices."""
        if layers is None:
            return list(range(self.n_layers))
        items = [layers] if is_index(layers) else layers
        if isinstance(items, (str, bytes)) or not isinstance(items, (Sequence, range, Tensor)):
            raise TypeError(f"{arg} must be a layer index or a sequence of them; got {type(layers).__name__}")
        out = []
        for layer in (items.tolist() if isinstance(items, Tensor) else items):
            if not is_index(layer):
                raise TypeError(f"{arg}: {layer!r} is not a layer index (expected an int, not "
                                f"{type(layer).__name__})")
            i = operator.index(layer)
            if not -self.n_layers <= i < self.n_layers:
                raise IndexError(f"{arg}: layer {i} is out of range; this model has {self.n_layers} layers")
            out.append(i % self.n_layers)
        if not out:
            raise ValueError(f"{arg} is empty; pass None for every layer")
        return out

    def check_layer(self, layer: int, arg: str = "layer") -> int:
        """Normalise one layer index (negatives count from the end), raising on anything else."""
        if not is_index(layer):
            raise TypeError(f"{arg} must be one layer index (an int); got {layer!r}")
        return self.check_layers(operator.index(layer), arg)[0]

    def components(self, layer: int) -> dict[str, str]:
        """Role -> site name for block ``layer``, so analyses name roles, not strings.

        Every model: ``resid_pre``, ``resid_post``. Transformers: ``ln1``, ``q``, ``k``, ``v``, (``rot_q``,
        ``rot_k``), ``attn_scores``, ``pattern``, ``z``, ``result``, ``attn_out``, ``resid_mid``, ``ln2``, ``mlp_post``,
        ``mlp_out`` (those the model has). Mamba: ``x`` (in_proj's conv input), ``gate``, ``conv`` (conv + SiLU
        output, the scan input), ``dt``, ``B``, ``C``, ``ssm_state``, ``ssm`` and ``y`` (the scan output), ``out``
        and ``mixer_out`` (the mixer's output); Sharma et al. 2024 trace ``conv``, ``ssm``, ``gate``, ``out``.
        """
        return dict(self._components(self.check_layer(layer)))

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    # ------------------------------------------------------------------ running
    def forward(self, input, *, attention_mask: Tensor | None = None, return_type: str | None = "logits",
                loss_per_token: bool = False, stop_at_layer: int | None = None, start_at_layer: int | None = None,
                tokens: Tensor | None = None):
        """Run the model.

        ``input``: token ids ``[batch, pos]`` or text (a list of strings is padded and masked); with
        ``start_at_layer=l``, the residual stream ``[batch, pos, d_model]`` before block ``l`` (then ``tokens=``
        is needed for a loss). ``attention_mask`` ``[batch, pos]`` (1 = real token) makes padded rows equal their
        unpadded runs. ``return_type``: ``"logits"`` ``[batch, pos, d_vocab]``, ``"loss"`` (mean next-token
        cross-entropy over real targets; per token ``[batch, pos - 1]`` with ``loss_per_token``, 0 where the
        target or the input is padding), ``"both"`` (``(logits, loss)``) or None (returns None; where
        ``ln_final.hook_normalized`` is the last site, the pass ends after its hooks, without the unembedding
        matmul). ``stop_at_layer=l`` returns the residual stream before block ``l`` (``blocks.{l}.hook_resid_pre``,
        after its hooks; ``l = n_layers``: the last ``hook_resid_post``) without running the rest.
        """
        # return_type=None needs no logits: end the pass once the final norm's hooks ran (no unembedding matmul)
        final = return_type is None and stop_at_layer is None and self.site_names()[-1] == FINAL_SITE
        out, tokens, mask = self._run(input, attention_mask, stop_at_layer, start_at_layer, tokens, final)
        if final:
            return None
        if stop_at_layer is not None:
            if return_type not in ("logits", None):
                raise ValueError(f"return_type={return_type!r} needs logits; stop_at_layer returns the residual stream")
            return out
        return self._finish(out, tokens, mask, return_type, loss_per_token)

    def _run(self, input, attention_mask, stop_at_layer, start_at_layer, tokens, stop_at_final: bool = False):
        if start_at_layer is None:
            if tokens is not None:
                raise ValueError("tokens= is only for start_at_layer runs (input is the token ids otherwise)")
            tokens, mask = self._prepare(input, attention_mask)
            start, resid = None, None
        else:
            start = self._layer_bound(start_at_layer, "start_at_layer", allow_end=False)
            resid = self._check_resid(input)
            mask = self._check_mask(attention_mask, resid.shape[:2])
            if tokens is not None:
                tokens = self._prepare(tokens, None, "tokens")[0]
                if tokens.shape != resid.shape[:2]:
                    raise ValueError(f"tokens has shape {tuple(tokens.shape)}; expected {tuple(resid.shape[:2])} "
                                     "(the residual stream's batch and pos)")
        stop = None if stop_at_layer is None else self._layer_bound(stop_at_layer, "stop_at_layer", allow_end=True)
        if start is not None and stop is not None and stop <= start:
            raise ValueError(f"stop_at_layer={stop_at_layer} must come after start_at_layer={start_at_layer}")
        with self._layer_window(start, stop, FINAL_SITE if stop_at_final else None):
            try:
                out = self._logits(tokens, mask) if start is None else self._logits_from(start, resid, mask)
            except StopForward as stopped:
                return stopped.act, tokens, mask
        if stop is not None:
            raise RuntimeError(f"stop_at_layer={stop_at_layer}: the stop site {self._stop_site(stop)!r} never fired")
        return out, tokens, mask

    def _layer_bound(self, value, arg: str, allow_end: bool) -> int:
        if not is_index(value):
            raise TypeError(f"{arg} must be an int layer index; got {type(value).__name__}")
        i, n = operator.index(value), self.n_layers
        hi = n if allow_end else n - 1
        if not -n <= i <= hi:
            raise IndexError(f"{arg}={i} is out of range; expected -{n}..{hi}")
        return i % n if i < 0 else i

    def _stop_site(self, layer: int) -> str:
        return f"blocks.{layer}.hook_resid_pre" if layer < self.n_layers else f"blocks.{layer - 1}.hook_resid_post"

    def _sites_before(self, layer: int) -> list[str]:
        sites = self.site_names()
        return sites[: sites.index(f"blocks.{layer}.hook_resid_pre")]

    def _sites_through(self, layer: int) -> list[str]:
        sites = self.site_names()
        return sites[: sites.index(self._stop_site(layer)) + 1]

    def _check_resid(self, resid) -> Tensor:
        if not isinstance(resid, Tensor) or not resid.dtype.is_floating_point or resid.ndim != 3 \
                or resid.shape[-1] != self.d_model:
            got = f"shape {tuple(resid.shape)}, {resid.dtype}" if isinstance(resid, Tensor) else type(resid).__name__
            raise ValueError(f"with start_at_layer, input must be the residual stream [batch, pos, "
                             f"d_model={self.d_model}] (float); got {got}")
        return resid.to(self.device)

    def _finish(self, logits: Tensor, tokens: Tensor | None, mask: Tensor | None, return_type, loss_per_token):
        if return_type not in RETURN_TYPES:
            raise ValueError(f"return_type must be one of {RETURN_TYPES}; got {return_type!r}")
        if return_type == "logits":
            return logits
        if return_type is None:
            return None
        if tokens is None:
            raise ValueError("a loss needs the token ids: pass tokens= with start_at_layer")
        loss = next_token_loss(logits, tokens, mask, per_token=loss_per_token)
        return loss if return_type == "loss" else (logits, loss)

    def run_with_cache(
        self, tokens, names_filter: NamesFilter = None, *, grad: bool = False,
        device: str | torch.device | None = None, fwd_hooks: HookSpec = (), attention_mask: Tensor | None = None,
        memory_budget: int | float | str | None = None, **forward_kwargs,
    ) -> tuple[Any, ActivationCache]:
        """Run the model and record activations at the selected sites (after any hooks, including ``fwd_hooks``
        and those of enclosing ``hooks(...)`` contexts).

        Returns ``(output, cache)``: ``output`` as :meth:`forward` returns it (``forward_kwargs``: ``return_type``,
        ``stop_at_layer``, ...), ``cache[name]`` a tensor (``hook_pattern``: ``[batch, head, query, key]``).
        ``grad=True`` runs with gradients and keeps the cached activations in the graph (for gradient-based
        methods: ``torch.autograd.grad(loss, cache[name])``); by default the run is under ``no_grad`` and the
        tensors are detached. ``device`` moves cached tensors (e.g. ``"cpu"``). A site asked for by name that did
        not fire raises; asking for one that a ``stop_at_layer``/``start_at_layer`` run skips is an error up front.
        A cache estimated (without running the model, :meth:`cache_size`) above ``memory_budget`` (bytes, ``"2GiB"``,
        ``"80%"``, ``"off"``; default ``$INTERP_MEMORY_BUDGET`` or half the available memory) is refused with a
        ``MemoryBudgetError`` saying the estimate and how to reduce it (see :mod:`interp.models.memory`).
        """
        names = self.resolve_names(names_filter)
        stop, start = forward_kwargs.get("stop_at_layer"), forward_kwargs.get("start_at_layer")
        reachable = set(self.site_names())
        if stop is not None:
            reachable &= set(self._sites_through(self._layer_bound(stop, "stop_at_layer", True)))
        if start is not None:
            reachable -= set(self._sites_before(self._layer_bound(start, "start_at_layer", False)))
        skipped = [n for n in names if n not in reachable]
        if skipped and not callable(names_filter) and names_filter is not None:
            raise ValueError(f"sites {skipped[:4]} are never reached by this run (stop_at_layer={stop}, "
                             f"start_at_layer={start}); drop them or change the layers")
        names = [n for n in names if n in reachable]
        from interp.models.memory import check_cache_budget  # the memory guard: refuse a cache above the budget

        check_cache_budget(self, tokens, names, memory_budget=memory_budget, device=device,
                           attention_mask=attention_mask, **forward_kwargs)
        store: dict[str, Tensor] = {}

        def save(act: Tensor, *, hook) -> None:
            if grad:
                store[hook.name] = act if device is None else act.to(device)
                return
            t = act.detach()
            store[hook.name] = t.to(device) if device is not None else t.clone() if t._base is not None else t

        with ExitStack() as stack:
            if not grad:
                stack.enter_context(torch.no_grad())
            stack.enter_context(self.hooks([*fwd_hooks, *((n, save) for n in names)]))
            out = self(tokens, attention_mask=attention_mask, **forward_kwargs)
        missing = [n for n in names if n not in store]
        if missing:
            raise RuntimeError(f"sites {missing[:5]} were hooked but did not fire in this forward pass "
                               f"({len(missing)} in all); this is a bug in the {type(self).__name__} wrapper")
        return out, ActivationCache({n: store[n] for n in names}, self)

    def cache_size(self, tokens, names_filter: NamesFilter = None, **forward_kwargs) -> int:
        """Estimated bytes of the cache ``run_with_cache(tokens, names_filter, **forward_kwargs)`` would hold, from
        the sites' shapes, without running the model on ``tokens`` (token ids, text, or a ``(batch, pos)`` shape);
        see :mod:`interp.models.memory`."""
        from interp.models.memory import cache_size

        return cache_size(self, tokens, names_filter, **forward_kwargs)

    def attention_patterns(self, tokens, layers: int | Sequence[int] | None = None, *, normalize: bool = True,
                           attention_mask: Tensor | None = None, cache: ActivationCache | None = None) -> Tensor:
        """Attention maps ``[layer, batch, head, query, key]`` for the chosen layers (all by default).

        The one contract across architectures: for transformers these are the softmax attention probabilities
        (``hook_pattern``; rows already sum to 1, so ``normalize`` changes nothing). Mamba models return their
        implicit attention (Ali et al. 2024): per head the mean |α| over the head's channels, and with
        ``normalize=True`` (the default) each query row divided by its sum, so rows sum to 1 and compare with
        attention probabilities; ``normalize=False`` returns the raw mean |α| (not bounded by 1).

        ``cache``: an :class:`~interp.cache.ActivationCache` recorded by this model (``run_with_cache``; or a plain
        mapping from full site names to tensors) to read the maps' inputs from instead of running a forward pass
        (transformers: the ``hook_pattern`` sites of ``layers``, returned as cached; Mamba: each layer's Δ, B, C).
        ``tokens`` may then be None (given, they must have the cached batch and length); ``attention_mask`` is
        refused (the cache already holds its run). The result is detached and equals the one from the same tokens,
        bit for bit, when the cached run computed the same thing: a transformer run that also recorded
        ``attn.hook_result`` sums the heads' outputs itself, which can move later layers' patterns in the last bit.
        """
        if not self.has_attention_heads:
            raise CapabilityError(f"attention_patterns: this {self.arch} model has no attention patterns")
        check_cache_args("attention_patterns", self, tokens, cache, attention_mask)
        layers = self.check_layers(layers)
        names = [self.components(layer)["pattern"] for layer in layers]
        if cache is None:
            _, cache = self.run_with_cache(tokens, names_filter=names, attention_mask=attention_mask)
            return torch.stack([cache[n] for n in names])
        return read_patterns(self, cache, names, tokens)

    @contextmanager
    def query_rows(self, rows: Tensor) -> Iterator[HookedModel]:
        """Within the block, ``hook_attn_scores`` and ``hook_pattern`` fire with the query positions ``rows
        [batch, R]`` only (``[batch, head, R, key]``; row ``r`` of batch row ``b`` is query ``rows[b, r]``),
        computed beside the model's fast attention path, which is what the forward pass uses: hooks there may read
        (cache, reduce) but not replace them. Equal to those rows of the full patterns. Reading a few rows of long
        sequences (e.g. the answer positions of a needle-in-a-haystack trial) so costs O(R T) per head, not O(T²).
        Only where ``has_query_rows``; contexts do not nest."""
        from interp.models.attention import query_rows

        with query_rows(self, rows):
            yield self

    def record_prefix(self, tokens):
        """Run ``tokens`` ``[batch, pos]`` once (under any active hooks) and keep, for every layer and position, what
        :meth:`run_suffix` needs to continue this run from there: the keys and values (transformers) or the conv
        inputs and SSM states (Mamba). Returns a :class:`~interp.models.prefix.Prefix`. Models without this
        (``has_prefix_reuse`` False) raise ``CapabilityError``."""
        from interp.models.prefix import record_prefix

        return record_prefix(self, tokens)

    def run_suffix(self, resid: Tensor, start_at_layer: int, start_pos: int, prefix, *, rows=None,
                   stop_at_layer: int | None = None) -> Tensor:
        """Blocks ``start_at_layer..`` on positions ``start_pos..start_pos + S - 1`` of the run ``prefix`` recorded,
        reading what positions ``< start_pos`` contribute from ``prefix`` instead of recomputing them.

        ``resid`` ``[B, S, d_model]``: the residual stream before block ``start_at_layer`` at those positions.
        ``rows`` ``[B]``: the prefix row each resid row continues (default: the same row, or row 0 of a one-row
        prefix). Returns logits ``[B, S, d_vocab]`` for those positions, or with ``stop_at_layer`` the residual
        stream before that block (``n_layers``: the last ``hook_resid_post``). Equals the same positions of a full
        run whose positions ``< start_pos`` are the recorded ones. Sites of blocks ``>= start_at_layer`` fire with
        the suffix's positions only (``hook_pattern`` / ``hook_attn_scores``: ``[B, head, S, start_pos + S]``);
        earlier sites are muted. No attention mask (the prefix is unpadded)."""
        from interp.models.prefix import run_suffix

        return run_suffix(self, resid, start_at_layer, start_pos, prefix, rows=rows, stop_at_layer=stop_at_layer)

    def generate(self, tokens, max_new_tokens: int = 10, **kwargs) -> Any:
        """Extend ``tokens`` by up to ``max_new_tokens``; see :func:`interp.models.generate.generate`."""
        from interp.models.generate import generate

        return generate(self, tokens, max_new_tokens, **kwargs)

    def _next_logits(self, tokens: Tensor, mask: Tensor | None, state: Any) -> tuple[Tensor, Any]:
        """Logits at the last position for generation, and a state for the next call. Default: a full forward pass
        each step (hooks see the whole sequence); models with a KV cache override it."""
        return self._logits(tokens, mask)[:, -1], None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(arch={self.arch!r}, n_layers={self.n_layers}, n_heads={self.n_heads}, "
            f"n_kv_heads={self.n_kv_heads}, d_model={self.d_model}, d_head={self.d_head}, d_vocab={self.d_vocab})"
        )


def next_token_loss(logits: Tensor, tokens: Tensor, mask: Tensor | None = None, *, per_token: bool = False) -> Tensor:
    """Next-token cross-entropy: ``[batch, pos - 1]`` per token (0 where the input or target is padding), or its
    mean over real targets."""
    if tokens.shape[1] < 2:
        raise ValueError(f"a loss needs at least 2 positions (a token and its successor); got {tokens.shape[1]}")
    b, T = tokens.shape
    ce = nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten(),
                                     reduction="none").view(b, T - 1)
    if mask is None:
        return ce if per_token else ce.mean()
    valid = (mask[:, 1:] * mask[:, :-1]).to(ce.dtype)
    ce = ce * valid
    return ce if per_token else ce.sum() / valid.sum().clamp_min(1)


def _nothing() -> None:
    return None
