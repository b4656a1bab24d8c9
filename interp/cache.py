"""``ActivationCache``: the activations one ``run_with_cache`` recorded, by site name; and the checks shared by
analyses that read their inputs from a cache instead of running a forward pass (``cache=``)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from interp.attribution import AttributionMixin
from interp.residual import ResidualMixin

if TYPE_CHECKING:
    from interp.models.base import HookedModel

_BLOCK = re.compile(r"blocks\.(\d+)\.")

__all__ = ["ActivationCache", "check_cache_args", "read_sites", "check_cached_tokens", "read_patterns"]


class ActivationCache(ResidualMixin, AttributionMixin, Mapping[str, Tensor]):
    """Read-only mapping from site name to tensor, with TransformerLens's analysis helpers (``accumulated_resid``,
    ``decompose_resid``, ``stack_head_results``, ``logit_attrs``, ... : :mod:`interp.residual`,
    :mod:`interp.attribution`).

    Besides full names, ``cache["pattern", 3]`` is short for ``cache["blocks.3.attn.hook_pattern"]`` (any
    site suffix works: ``cache["resid_post", 0]``, ``cache["ssm_state", 2]``; TransformerLens's aliases too:
    ``cache["attn", 3]``), a negative layer counts from the end (``cache["resid_post", -1]``), and
    ``cache["normalized", 3, "ln1"]`` is TransformerLens's ``(name, layer, layer_type)`` form
    (:func:`interp.utils.get_act_name`).
    """

    def __init__(self, data: dict[str, Tensor], model: HookedModel | None = None) -> None:
        self._data = data
        self.model = model
        self.has_batch_dim = True
        """False after :meth:`remove_batch_dim`."""

    def _key(self, key) -> str:
        if isinstance(key, str):
            if key in self._data:
                return key
            from interp.utils import get_act_name

            full = get_act_name(key) if key else key  # TransformerLens: "embed", "scale", "k6", "pattern3a"
            if full in self._data:
                return full
            raise KeyError(f"{key!r} is not in this cache; it holds {len(self._data)} sites, "
                           f"e.g. {list(self._data)[:3]}")
        if isinstance(key, tuple) and len(key) == 3 and key[2] is None:  # TransformerLens: no layer_type
            key = key[:2]
        if isinstance(key, tuple) and len(key) in (2, 3) and isinstance(key[0], str) and key[1] is None:
            from interp.utils import get_act_name  # ("embed", None), ("scale", None, "ln_final"): no layer

            return self._key(get_act_name(key[0], None, key[2] if len(key) == 3 else None))
        if isinstance(key, tuple) and len(key) in (2, 3) and isinstance(key[0], str) \
                and isinstance(key[1], int) and not isinstance(key[1], bool) \
                and (len(key) == 2 or isinstance(key[2], str)):
            from interp.utils import get_act_name

            short, layer = key[0], self._layer(key[1], key)
            if len(key) == 3:  # TransformerLens's (name, layer, layer_type): exactly get_act_name's site
                return self._key(get_act_name(short, layer, key[2]))
            if not short.startswith("hook_"):  # TransformerLens aliases: "attn" = pattern, "mlp_post" = post, ...
                short = get_act_name(short, 0).rsplit(".", 1)[-1]
            hits = [n for n in self._data if n.startswith(f"blocks.{layer}.") and n.endswith("." + short)]
            if len(hits) == 1:
                return hits[0]
            raise KeyError(f"{key!r} matches {hits or 'no site'} in this cache")
        raise KeyError(f"cache keys are site names, (short_name, layer) or (short_name, layer, layer_type) tuples; "
                       f"got {key!r}")

    def _layer(self, layer: int, key) -> int:
        """``layer``, counted from the end when negative (over the model's blocks, or the cached ones)."""
        if layer >= 0:
            return layer
        if self.model is not None:
            n = self.model.n_layers
        else:
            found = [int(m.group(1)) for m in map(_BLOCK.match, self._data) if m]
            n = max(found) + 1 if found else 0
        if not -n <= layer:
            raise KeyError(f"{key!r}: layer {layer} is out of range for {n} layers")
        return layer + n

    def __getitem__(self, key) -> Tensor:
        return self._data[self._key(key)]

    def __contains__(self, key) -> bool:
        try:
            self._key(key)
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def stack(self, suffix: str) -> Tensor:
        """Stack one site over layers: ``cache.stack("hook_pattern")`` -> ``[layer, ...]``."""
        names = [n for n in self._data if n.endswith("." + suffix) and n.startswith("blocks.")]
        if not names:
            raise KeyError(f"no cached site ends with {suffix!r}")
        return torch.stack([self._data[n] for n in names])

    def nbytes(self) -> int:
        """Total bytes held by the cached tensors."""
        return sum(t.numel() * t.element_size() for t in self._data.values())

    def __repr__(self) -> str:
        return f"ActivationCache({len(self._data)} sites, {self.nbytes() / 2**20:.1f} MiB)"


# ---------------------------------------------------------------------------------------------- cache= arguments
def check_cache_args(fn: str, model: HookedModel, tokens, cache, attention_mask) -> None:
    """The argument checks of an analysis ``fn`` of ``model`` that runs a forward on ``tokens`` or, given
    ``cache=``, reads the recorded sites instead: without a cache ``tokens`` is required; a cache must be a mapping
    from site name to tensor, and an ``ActivationCache`` must have been recorded by ``model`` itself (another
    model's activations with the same shapes would give a silently wrong result; a plain ``dict(cache)`` skips this
    check); ``attention_mask`` is refused with a cache (the cache already holds its run, masked or not)."""
    if cache is None:
        if tokens is None:
            raise TypeError(f"{fn}: tokens is None; pass token ids [batch, pos], or cache= (an ActivationCache from "
                            "model.run_with_cache) to read the recorded sites without a forward pass")
        return
    if not isinstance(cache, Mapping):
        raise TypeError(f"{fn}: cache must be an ActivationCache (from model.run_with_cache) or a mapping from site "
                        f"name to tensor; got {type(cache).__name__}")
    if isinstance(cache, ActivationCache) and cache.model is not None and cache.model is not model:
        raise ValueError(f"{fn}: cache was recorded by another model object ({cache.model!r}), not by this "
                         f"one ({model!r}); its activations belong to that model's weights. Record the cache with this "
                         "model's run_with_cache (or pass dict(cache) if the two models share their weights)")
    if attention_mask is not None:
        raise ValueError(f"{fn}: attention_mask cannot be combined with cache=: the cache already holds its run's "
                         "activations (masked if that run had an attention_mask); pass the mask to run_with_cache "
                         "when recording, and drop attention_mask here")


def read_sites(cache: Mapping, names: Sequence[str], fn: str, names_filter: str) -> list[Tensor]:
    """The tensors at the full site ``names`` in ``cache`` (no short names), detached. A KeyError names every
    missing site and says how to record them (``names_filter``: a filter that keeps them, as the user would type
    it); a TypeError names a value that is not a floating-point tensor."""
    missing = [n for n in names if n not in cache]
    if missing:
        shown = ", ".join(repr(n) for n in missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        raise KeyError(f"{fn}: cache lacks {len(missing)} of the {len(names)} sites it needs: {shown}; record them "
                       f"with model.run_with_cache(tokens, names_filter={names_filter}) (or names_filter=None: every "
                       "site)")
    out = []
    for n in names:
        t = cache[n]
        if not isinstance(t, Tensor) or not t.is_floating_point():
            what = f"a {t.dtype} tensor" if isinstance(t, Tensor) else type(t).__name__
            raise TypeError(f"{fn}: cache[{n!r}] must be a floating-point tensor; got {what}")
        out.append(t.detach())
    return out


def check_cached_tokens(model: HookedModel, tokens, batch_pos: tuple[int, int], fn: str, site: str) -> None:
    """With ``cache=``, ``tokens`` may be None; given, they must have the cached run's ``(batch, pos)`` (read from
    ``site``), else a ValueError naming both shapes."""
    if tokens is None:
        return
    shape = tuple(model.check_tokens(tokens).shape)
    if shape != tuple(batch_pos):
        raise ValueError(f"{fn}: tokens has shape {shape} but the cache was recorded on [batch, pos] = "
                         f"{tuple(batch_pos)} (from {site!r}); pass the tokens of the cached run, or tokens=None")


def read_patterns(model: HookedModel, cache: Mapping, names: Sequence[str], tokens) -> Tensor:
    """``[layer, batch, head, query, key]``: the attention patterns at the ``hook_pattern`` sites ``names`` of a
    cache (``HookedModel.attention_patterns(cache=...)``), each checked to be ``[batch, n_heads, pos, pos]`` with
    one batch and pos for all (and those of ``tokens``, if given)."""
    fn = "attention_patterns"
    pats = read_sites(cache, names, fn, "lambda n: n.endswith('hook_pattern')")
    first = tuple(pats[0].shape)
    b, T = (first[0], first[-1]) if len(first) == 4 else (-1, -1)
    for name, p in zip(names, pats, strict=True):
        if tuple(p.shape) != (b, model.n_heads, T, T):
            raise ValueError(f"{fn}: cache[{name!r}] has shape {tuple(p.shape)}; this model expects [batch, "
                             f"{model.n_heads} heads, pos, pos], with the same batch and pos at every layer "
                             f"({names[0]!r}: {first}): is the cache from another model, from several runs, or from "
                             "run_suffix?")
    check_cached_tokens(model, tokens, (b, T), fn, names[0])
    return torch.stack(pats)
