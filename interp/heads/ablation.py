"""Head ablation over the hook layer: ``with ablate(model, [(17, 3), (18, 6)], how="mean"): model(tokens)``.

What "a head's output" is, per capability:

- ``has_attention_heads``: the head's slice of ``z`` (``components(layer)["z"]``, ``[batch, pos, head, d_head]``),
  the attention-weighted values before ``W_O``; zeroing it removes the head's whole contribution ``z_h W_O[h]``
  (the output bias ``b_O`` is not the head's and stays).
- ``has_implicit_attention`` (Mamba): the head's channels of the scan output ``y`` (``components(layer)["y"]``:
  Mamba-2's SSM head, ``[batch, pos, head, head_dim]``; Mamba-1's channel group, ``d_inner`` split into
  ``n_heads`` contiguous groups of ``d_head``), before the gate and the output projection. ``y = α x + D x``
  (Ali et al. 2024), so this removes the head's implicit attention and its skip term together, the analogue of
  zeroing ``z``. Mamba's knockout (:func:`interp.mamba.knockout`, Endy et al. 2025) removes flows between
  *positions* in every channel of a layer; it cannot single out a head, so head ablation does not use it. Mamba-2
  normalises ``y * silu(gate)`` per group after this site, so ablating a head also rescales the other heads of
  its group.

``how="zero"`` sets the output to 0 (Wu et al. 2024 mask retrieval heads this way); ``how="mean"`` replaces it by
its mean over every row and position of the same forward pass (mean ablation, as in Wang et al. 2022's IOI circuit:
the head still adds its average contribution, so the model stays closer to its training distribution).
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

from interp.errors import CapabilityError

__all__ = ["ablate", "ablation_hooks", "check_heads", "head_site", "HOW"]

HOW = ("zero", "mean")


def head_site(model, layer: int) -> str:
    """The site holding the per-head outputs of block ``layer`` (see the module docstring)."""
    roles = model.components(layer)
    if model.has_attention_heads:
        if "z" not in roles:
            raise CapabilityError(f"head ablation: this {model.arch} model does not expose hook_z at layer {layer}")
        return roles["z"]
    if model.has_implicit_attention and "y" in roles:
        return roles["y"]
    raise CapabilityError(f"head ablation: this {model.arch} model has no attention heads and no implicit attention "
                          "(see has_attention_heads, has_implicit_attention)")


def check_heads(model, heads, arg: str = "heads") -> list[tuple[int, int]]:
    """Validate a list of ``(layer, head)`` pairs (negative indices count from the end); returns them normalised,
    without duplicates, in the given order."""
    if isinstance(heads, (str, bytes)) or not isinstance(heads, (Sequence, Tensor)):
        raise TypeError(f"{arg} must be a list of (layer, head) pairs; got {type(heads).__name__}")
    out: list[tuple[int, int]] = []
    for item in (heads.tolist() if isinstance(heads, Tensor) else heads):
        if not (isinstance(item, (tuple, list)) and len(item) >= 2):
            raise TypeError(f"{arg}: {item!r} is not a (layer, head) pair")
        layer = model.check_layer(item[0], arg=f"{arg} layer")
        h = item[1]
        if isinstance(h, bool) or not hasattr(h, "__index__"):
            raise TypeError(f"{arg}: head {h!r} is not an int")
        h = operator.index(h)
        if not -model.n_heads <= h < model.n_heads:
            raise IndexError(f"{arg}: head {h} is out of range; this model has {model.n_heads} heads per layer")
        pair = (layer, h % model.n_heads)
        if pair not in out:
            out.append(pair)
    return out


def _heads_view(act: Tensor, n_heads: int, d_head: int) -> Tensor:
    if act.shape[-2:] == (n_heads, d_head):
        return act
    if act.shape[-1] == n_heads * d_head:
        return act.view(*act.shape[:-1], n_heads, d_head)
    raise RuntimeError(f"head ablation: activation of shape {tuple(act.shape)} does not split into {n_heads} heads "
                       f"of {d_head}")


def ablation_hooks(model, masks: Tensor, how: str = "zero") -> list[tuple[str, object]]:
    """Hooks ablating different head sets in different slices of the batch.

    ``masks [n_cond, n_layers, n_heads]`` (bool, True = ablate): the batch is split into ``n_cond`` equal
    consecutive slices and slice ``c`` has the heads of ``masks[c]`` ablated (for ``how="mean"`` the mean is taken
    over slice ``c``'s rows and positions). ``ablate`` is the one-slice case. Layers without an ablated head get no
    hook.
    """
    if how not in HOW:
        raise ValueError(f"how must be one of {HOW}; got {how!r}")
    if not isinstance(masks, Tensor) or masks.dtype != torch.bool or masks.ndim != 3 \
            or tuple(masks.shape[1:]) != (model.n_layers, model.n_heads):
        raise ValueError(f"masks must be a bool tensor [n_cond, n_layers={model.n_layers}, n_heads={model.n_heads}]; "
                         f"got {tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__}")
    n_cond = masks.shape[0]
    pairs = []
    for layer in range(model.n_layers):
        m = masks[:, layer]
        if not bool(m.any()):
            continue

        def hook(act: Tensor, *, hook, m: Tensor = m) -> Tensor:
            b = act.shape[0]
            if b % n_cond:
                raise RuntimeError(f"head ablation over {n_cond} conditions needs a batch that is a multiple of "
                                   f"{n_cond}; got {b}")
            heads = _heads_view(act, model.n_heads, model.d_head)
            x = heads.reshape(n_cond, b // n_cond, *heads.shape[1:])  # [cond, rows, pos, head, d]
            drop = m.to(x.device)[:, None, None, :, None]
            if how == "zero":
                new = x.masked_fill(drop, 0.0)
            else:
                mean = x.mean(dim=(1, 2), keepdim=True).expand_as(x)
                new = torch.where(drop, mean, x)
            return new.reshape(act.shape)

        pairs.append((head_site(model, layer), hook))
    return pairs


@contextmanager
def ablate(model, heads, how: str = "zero") -> Iterator[object]:
    """Ablate ``heads`` (``(layer, head)`` pairs) in every forward pass inside the block.

    ``how="zero"`` removes each head's output, ``how="mean"`` replaces it by its mean over the batch and positions
    of that forward pass; see the module docstring for what a head's output is on transformers and on Mamba.
    Nests with other hook contexts (``model.hooks``, ``run_with_cache``).
    """
    if how not in HOW:
        raise ValueError(f"how must be one of {HOW}; got {how!r}")
    pairs = check_heads(model, heads)
    for layer, _ in pairs:
        head_site(model, layer)  # raises a CapabilityError before anything runs
    mask = torch.zeros(1, model.n_layers, model.n_heads, dtype=torch.bool)
    for layer, h in pairs:
        mask[0, layer, h] = True
    with model.hooks(ablation_hooks(model, mask, how)):
        yield model
