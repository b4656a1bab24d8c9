"""``ActivationCache``: the activations one ``run_with_cache`` recorded, by site name."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from interp.models.base import HookedModel

__all__ = ["ActivationCache"]


class ActivationCache(Mapping[str, Tensor]):
    """Read-only mapping from site name to tensor.

    Besides full names, ``cache["pattern", 3]`` is short for ``cache["blocks.3.attn.hook_pattern"]`` (any
    site suffix works: ``cache["resid_post", 0]``, ``cache["ssm_state", 2]``).
    """

    def __init__(self, data: dict[str, Tensor], model: HookedModel | None = None) -> None:
        self._data = data
        self.model = model

    def _key(self, key) -> str:
        if isinstance(key, str):
            if key in self._data:
                return key
            raise KeyError(f"{key!r} is not in this cache; it holds {len(self._data)} sites, "
                           f"e.g. {list(self._data)[:3]}")
        if isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], str) and isinstance(key[1], int):
            short, layer = key
            suffix = short if short.startswith("hook_") else f"hook_{short}"
            hits = [n for n in self._data if n.startswith(f"blocks.{layer}.") and n.endswith("." + suffix)]
            if len(hits) == 1:
                return hits[0]
            raise KeyError(f"{key!r} matches {hits or 'no site'} in this cache")
        raise KeyError(f"cache keys are site names or (short_name, layer) pairs; got {key!r}")

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
