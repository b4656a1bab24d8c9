"""The function vector and its effect on zero-shot prompts (Todd et al. 2024, "Function Vectors in Large Language
Models", ICLR, sections 2.2 and 3).

Function vector (eq. 3): ``v_t = sum over the top-k heads by CIE of a_bar[l, h]`` (the heads' mean outputs, in
residual-stream space). It is added to the hidden state at one layer, at the last token of a zero-shot prompt
(``Q: x\\nA:``), and the top-1 accuracy of the next token is compared with the unpatched prompt and with a vector
summed from the same number of random heads. Here the hidden state "at layer l" is ``blocks.{l}.hook_resid_pre``
(the stream entering block l).
"""

from __future__ import annotations

import random

import torch
from torch import Tensor
from tqdm.auto import tqdm

__all__ = ["top_heads", "function_vector", "accuracy", "add_at_last_token", "layer_sweep", "random_heads"]


def top_heads(cie: Tensor, k: int) -> list[tuple[int, int]]:
    """The ``k`` (layer, head) pairs of largest CIE ``[layer, head]``, best first."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= cie.numel():
        raise ValueError(f"k must be an int in 1..{cie.numel()} (heads to sum); got {k!r}")
    H = cie.shape[1]
    return [(int(i) // H, int(i) % H) for i in cie.flatten().argsort(descending=True, stable=True)[:k]]


def random_heads(n_layers: int, n_heads: int, k: int, seed: int) -> list[tuple[int, int]]:
    """``k`` distinct (layer, head) pairs drawn uniformly with ``seed``."""
    cells = random.Random(seed).sample(range(n_layers * n_heads), k)
    return [(c // n_heads, c % n_heads) for c in cells]


def function_vector(means: Tensor, heads: list[tuple[int, int]]) -> Tensor:
    """``sum_{(l, h) in heads} means[l, h]``: ``[d_model]`` (Todd et al. eq. 3)."""
    if not heads:
        raise ValueError("heads is empty; pass at least one (layer, head)")
    L, H = means.shape[:2]
    for layer, head in heads:
        if not (0 <= layer < L and 0 <= head < H):
            raise IndexError(f"heads: ({layer}, {head}) is outside [layer < {L}, head < {H}]")
    return torch.stack([means[layer, head] for layer, head in heads]).sum(0)


def _check_layer(model, layer) -> int:
    if isinstance(layer, bool) or not isinstance(layer, int) or not -model.n_layers <= layer < model.n_layers:
        raise ValueError(f"layer must be an int in 0..{model.n_layers - 1}; got {layer!r}")
    return layer % model.n_layers


def add_at_last_token(model, vector: Tensor, layer: int) -> list:
    """Hooks (for ``model.hooks``) adding ``vector [d_model]`` (or one per row, ``[rows, d_model]``) to the last
    token of ``blocks.{layer}.hook_resid_pre``."""
    site = model.components(_check_layer(model, layer))["resid_pre"]

    def add(act: Tensor, *, hook) -> Tensor:
        out = act.clone()
        out[:, -1] += vector.to(act.dtype)
        return out

    return [(site, add)]


def accuracy(model, tokens: Tensor, answers: Tensor, *, hooks=(), batch_size: int = 64) -> Tensor:
    """Per prompt, whether the top-1 next token at the last position is its answer: ``[n]`` bool."""
    hits = []
    with torch.no_grad(), model.hooks(list(hooks)):
        for rows in torch.split(torch.arange(tokens.shape[0]), batch_size):
            logits = model(tokens[rows])[:, -1]
            hits.append(logits.argmax(-1) == answers[rows].to(logits.device))
    return torch.cat(hits).cpu()


def layer_sweep(model, tokens: Tensor, answers: Tensor, vector: Tensor, *, layers=None,
                progress: bool = False) -> Tensor:
    """Zero-shot accuracy with ``vector`` added at each layer of ``layers`` (default all): ``[len(layers)]``."""
    layers = list(range(model.n_layers)) if layers is None else [_check_layer(model, la) for la in layers]
    out = []
    for layer in tqdm(layers, desc="FV layer sweep", disable=not progress, leave=False):
        out.append(accuracy(model, tokens, answers, hooks=add_at_last_token(model, vector, layer)).float().mean())
    return torch.stack(out)
